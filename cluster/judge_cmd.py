"""`threefold judge IN.jsonl -o OUT.jsonl --judges judges.yaml [--pairs PAIRS.parquet]`: AI preference labels.

Rows {"id", "prompt", "response_a", "response_b"} become {"id", "winner": "A"|"B"|"tie"|"abstain",
"p_a", "votes": [...]}, one per input row, in input order. A bad row gets `"error": "IN.jsonl:LINE: ..."`
(and winner "abstain") and never stops the batch. With --pairs, rows with a winner also become
(prompt, chosen, rejected) preference pairs in Parquet for reward-model training.

Exit codes: 0 the batch ran (bad rows are reported per row), 2 the judges config, an API key
variable or the input file is unusable (nothing is judged).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import get_args, get_origin

from pydantic import BaseModel, ValidationError

from cluster.config_loader import read_yaml
from rewards.judge.config import EnsembleConfig

ROW_KEYS = ("id", "prompt", "response_a", "response_b")


class JudgesConfigError(Exception):
    """A judges YAML that cannot run; the message names the file, line and key."""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "judge", help="label response pairs with an LLM-judge ensemble (JSONL in, JSONL/Parquet out)",
        description="Judge {id, prompt, response_a, response_b} rows with every judge in both orders; "
                    "write one verdict per row, in input order.")
    p.add_argument("input", help="JSONL rows: {\"id\", \"prompt\", \"response_a\", \"response_b\"}")
    p.add_argument("-o", "--output", required=True, help="output JSONL: {id, winner, p_a, votes}")
    p.add_argument("--judges", help="judges YAML (see configs/judges-example.yaml)")
    p.add_argument("--url", help="instead of --judges: a Serve judges app, e.g. http://HOST:8000/judges (threefold "
                                 "serve deploy/serve.yaml); rows of a failed request abstain with an error")
    p.add_argument("--pairs", help="also write (id, prompt, chosen, rejected, p_chosen) pairs as Parquet")
    p.add_argument("--metrics", help="also write per-judge metrics as JSON")
    p.add_argument("--batch", type=int, default=256, help="rows judged at once (default 256); each judge's "
                   "max_concurrency still bounds its requests in flight")
    p.set_defaults(fn=cmd_judge)
    return p


def _allowed_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = EnsembleConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue  # a list item: same model as the list's items
        field = model.model_fields.get(str(part))
        ann = field.annotation if field else None
        ann = get_args(ann)[0] if get_origin(ann) is list else ann
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def load_judges(path: str | Path) -> EnsembleConfig:
    """Judges YAML → EnsembleConfig; JudgesConfigError names the file, line and key of each mistake."""
    path = Path(path)
    raw, lines = read_yaml(path, "judges config", JudgesConfigError, "a mapping with a `judges:` list")
    try:
        # a constitution file named by `principles:` is relative to this YAML
        return _resolved(EnsembleConfig.model_validate(raw, context={"base_dir": path.parent}))
    except ValidationError as err:
        msgs = []
        for e in err.errors():
            loc = tuple(e["loc"])
            key = ".".join(map(str, loc)) or "(top level)"
            line = lines.get(tuple(map(str, loc))) or lines.get(tuple(map(str, loc[:-1])))
            if e["type"] == "extra_forbidden":
                msg = f"unknown key; allowed here: {', '.join(_allowed_keys(loc))}"
            else:
                msg = "required key is missing" if e["type"] == "missing" else e["msg"].removeprefix("Value error, ")
            msgs.append(f"{path}{f':{line}' if line else ''}: {key}: {msg}")
        raise JudgesConfigError("invalid judges config\n  " + "\n  ".join(msgs)) from None


def _resolved(cfg: EnsembleConfig) -> EnsembleConfig:
    """Served judges' paths made absolute (relative to where threefold runs, like the run config's),
    so the server actor finds them whatever its working directory."""
    judges = []
    for j in cfg.judges:
        if j.serve is not None:
            fix = {k: getattr(j.serve, k).resolve() for k in ("model_dir", "chat_template") if getattr(j.serve, k)}
            j = j.model_copy(update={"serve": j.serve.model_copy(update=fix)})
        judges.append(j)
    return cfg.model_copy(update={"judges": judges})


def parse_row(line: str, where: str) -> tuple[object, tuple[str, str, str] | None, str | None]:
    """(id, (prompt, response_a, response_b), None) for a good line, (id or None, None, error) for a bad one."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        return None, None, f"{where}: not valid JSON ({e.msg})"
    if not isinstance(row, dict):
        return None, None, f"{where}: expected a JSON object with keys {', '.join(ROW_KEYS)}"
    rid = row.get("id")
    missing = [k for k in ROW_KEYS if k not in row]
    if missing:
        return rid, None, f"{where}: missing key(s) {', '.join(map(repr, missing))}"
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        return None, None, f"{where}: 'id' must be a string or an integer, got {type(rid).__name__}"
    for k in ROW_KEYS[1:]:
        if not isinstance(row[k], str):
            return rid, None, f"{where}: {k!r} must be a string, got {type(row[k]).__name__}"
    return rid, (row["prompt"], row["response_a"], row["response_b"]), None


def read_rows(path: str) -> list[tuple[object, tuple | None, str | None]]:
    """Every non-blank line of the input, parsed; bad lines carry their error (file:line: why)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return [parse_row(line, f"{path}:{n}") for n, line in enumerate(f, 1) if line.strip()]


async def judge_rows(ens, rows: list, out, batch: int) -> tuple[list[dict], list[tuple]]:
    """Judge `rows` in batches, writing each output line in input order as soon as its batch is done.
    Returns (the output records, the (id, prompt, chosen, rejected, p_chosen) preference pairs)."""
    try:
        return await _judge_batches(ens, rows, out, batch)
    finally:
        await ens.aclose()


async def _judge_batches(ens, rows: list, out, batch: int) -> tuple[list[dict], list[tuple]]:
    records, pairs = [], []
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        verdicts = iter(await ens.judge_pairs([r for _, r, err in chunk if err is None]))
        for rid, row, err in chunk:
            if err is not None:
                rec = {"id": rid, "winner": "abstain", "p_a": None, "votes": [], "error": err}
            else:
                rec = {"id": rid, **next(verdicts).to_dict()}
                if rec["winner"] in ("A", "B"):
                    pairs.append(_pair(rid, row, rec["winner"], rec["p_a"]))
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            records.append(rec)
    return records, pairs


def _pair(rid, row: tuple, winner: str, p_a: float | None) -> tuple:
    prompt, a, b = row
    if winner == "A":
        return str(rid), prompt, a, b, p_a
    return str(rid), prompt, b, a, None if p_a is None else 1.0 - p_a


def write_pairs(path: str, pairs: list[tuple]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = ["id", "prompt", "chosen", "rejected", "p_chosen"]
    types = [pa.string(), pa.string(), pa.string(), pa.string(), pa.float64()]
    cols = list(zip(*pairs)) if pairs else [[] for _ in names]
    pq.write_table(pa.table([pa.array(c, type=t) for c, t in zip(cols, types)], names=names), path)


def _missing_keys(cfg: EnsembleConfig) -> list[str]:
    return [f"judge {j.name!r}: environment variable {j.api_key_env} (api_key_env) is not set"
            for j in cfg.judges if j.api_key_env and not os.environ.get(j.api_key_env)]


def serve_locally(cfg: EnsembleConfig, log_dir: Path) -> tuple[EnsembleConfig, list]:
    """Start each judge with `serve` as a local vLLM server (offline use; a training run starts them
    as Ray actors instead); returns the config with their URLs and the servers to stop."""
    from rewards.judge.server import VLLMServer

    servers, judges = [], []
    for j in cfg.judges:
        if j.serve is None:
            judges.append(j)
            continue
        server = VLLMServer(j.serve, j.model, log_dir / f"judge-{j.name}.log", host="127.0.0.1")
        servers.append(server)
        try:
            server.start()
            server.wait_ready()
        except Exception:
            for started in servers:
                started.stop()
            raise
        judges.append(j.model_copy(update={"base_url": f"http://127.0.0.1:{server.port}/v1"}))
    return cfg.model_copy(update={"judges": judges}), servers


def cmd_judge(args: argparse.Namespace) -> int:
    from rewards.judge.ensemble import JudgeEnsemble
    from rewards.judge.metrics import format_principles, format_table, principle_summary

    if bool(args.judges) == bool(args.url):
        print("error: give either --judges YAML or --url http://HOST:8000/judges", file=sys.stderr)
        return 2
    try:
        cfg = load_judges(args.judges) if args.judges else None
        rows = read_rows(args.input)
    except JudgesConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot read {args.input}: {e.strerror}", file=sys.stderr)
        return 2
    if args.url:
        return _judge_over_http(args, rows)
    problems = _missing_keys(cfg) + ([] if args.batch >= 1 else ["--batch must be at least 1"])
    if problems:
        print("error: " + "\n  ".join(problems), file=sys.stderr)
        return 2
    servers = []
    try:
        cfg, servers = serve_locally(cfg, Path(args.output).parent)
        ens = JudgeEnsemble(cfg)
        with open(args.output, "w", encoding="utf-8") as out:
            records, pairs = asyncio.run(judge_rows(ens, rows, out, args.batch))
    except RuntimeError as e:  # a served judge that would not start
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        for server in servers:
            server.stop()
    if args.pairs:
        write_pairs(args.pairs, pairs)
    metrics = ens.metrics()
    if args.metrics:
        Path(args.metrics).write_text(json.dumps(metrics, indent=2))
    by_principle = format_principles(principle_summary(ens.stats))  # empty without per_principle judges
    _report(records, pairs, format_table(metrics) + (f"\n\n{by_principle}" if by_principle else ""), args)
    return 0


def _report(records: list[dict], pairs: list, table: str, args: argparse.Namespace) -> None:
    bad = [r["error"] for r in records if "error" in r]
    for msg in bad[:20]:
        print(f"bad row: {msg}", file=sys.stderr)
    if len(bad) > 20:
        print(f"... and {len(bad) - 20} more bad rows (see 'error' in {args.output})", file=sys.stderr)
    counts = {w: sum(r["winner"] == w for r in records if "error" not in r) for w in ("A", "B", "tie", "abstain")}
    print(f"judged {len(records) - len(bad)} rows ({', '.join(f'{k} {v}' for k, v in counts.items())}); "
          f"{len(bad)} bad rows; output: {args.output}" + (f"; {len(pairs)} pairs: {args.pairs}" if args.pairs else ""),
          file=sys.stderr)
    print(table, file=sys.stderr)


class _Served:
    """A Serve judges app over HTTP in place of a local ensemble: `judge_pairs` as JudgeEnsemble's."""

    def __init__(self, url: str):
        self.url = url

    async def judge_pairs(self, rows: list) -> list:
        from cluster.serve_pools import post_chunks

        lost = lambda reason, i: {"winner": "abstain", "p_a": None, "votes": [], "error": reason}  # noqa: E731
        got = await asyncio.to_thread(post_chunks, self.url, {"pairs": [list(r) for r in rows]}, "verdicts", lost)
        return [_Verdict(g) for g in got]

    async def aclose(self) -> None:
        pass


class _Verdict:
    def __init__(self, record: dict):
        self.record = record

    def to_dict(self) -> dict:
        return self.record


def _judge_over_http(args: argparse.Namespace, rows: list) -> int:
    with open(args.output, "w", encoding="utf-8") as out:
        records, pairs = asyncio.run(judge_rows(_Served(args.url), rows, out, max(1, args.batch)))
    if args.pairs:
        write_pairs(args.pairs, pairs)
    _report(records, pairs, f"(per-judge metrics are the Serve app's; judged by {args.url})", args)
    return 0
