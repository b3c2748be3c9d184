"""`threefold label …`: pairs for people to label, the labelling app, export and agreement.

  make-pairs --policy DIR --prompts FILE -o pairs.parquet   two different samples per prompt (vLLM actors)
  add-annotator NAME --db labels.sqlite                     prints the annotator's token (only its hash is kept)
  serve pairs.parquet --db labels.sqlite [--k K]            the web app (stand-alone, or --ray: Ray Serve)
  export labels.sqlite -o prefs.parquet [--policy P]        (prompt, chosen, rejected, n_votes, agreement) rows
  agreement labels.sqlite [--judged judged.jsonl]           human-human κ, position bias, judge-human agreement
Exit codes: 0 done, 2 bad input (the message names the file, row or key).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PAIR_KEYS = ("id", "prompt", "response_a", "response_b")


def register(sub) -> None:
    p = sub.add_parser("label", help="human preference labels: make-pairs, add-annotator, serve, export, agreement")
    lsub = p.add_subparsers(dest="label_command", required=True)
    m = lsub.add_parser("make-pairs", help="sample two different responses per prompt from a policy (vLLM actors)")
    m.add_argument("--policy", required=True, help="Hugging Face policy directory (e.g. .cache/demo/model)")
    m.add_argument("--prompts", required=True, help="JSONL or Parquet rows with a `prompt` (an `id` is kept)")
    m.add_argument("-o", "--output", required=True, help="output Parquet: id, prompt, response_a, response_b")
    m.add_argument("--generators", type=int, default=1, help="RolloutGenerator actors (default 1)")
    m.add_argument("--n", type=int, default=4, help="samples drawn per prompt to find two different ones (default 4)")
    m.add_argument("--temperature", type=float, default=1.0)
    m.add_argument("--max-new-tokens", type=int, default=64)
    m.add_argument("--max-model-len", type=int, default=256)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--batch", type=int, default=64, help="prompts per generate call (default 64)")
    m.add_argument("--address", help="Ray cluster to join (default: an embedded local one)")
    m.set_defaults(fn=cmd_make_pairs)
    a = lsub.add_parser("add-annotator", help="create an annotator and print their sign-in token")
    a.add_argument("name")
    a.add_argument("--db", required=True, help="the label database (sqlite; created if missing)")
    a.set_defaults(fn=cmd_add_annotator)
    s = lsub.add_parser("serve", help="start the labelling web app")
    s.add_argument("pairs", help="pairs Parquet or JSONL from make-pairs (loaded into the database; ids already there are kept)")
    s.add_argument("--db", required=True, help="the label database (sqlite, WAL)")
    s.add_argument("--k", type=int, help="labels wanted per pair from different annotators (stored in the database; default 1)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--ray", action="store_true", help="run as a Ray Serve application on the cluster instead")
    s.add_argument("--address", help="with --ray: the Ray cluster (default: $RAY_ADDRESS or a local one)")
    s.set_defaults(fn=cmd_serve)
    e = lsub.add_parser("export", help="write preference pairs for `threefold rm train`")
    e.add_argument("db")
    e.add_argument("-o", "--output", required=True, help="output Parquet")
    e.add_argument("--policy", default="majority", choices=("drop", "majority", "margin"),
                   help="ties and disagreements: drop (unanimous only), majority (default), margin (majority + margin column)")
    e.add_argument("--min-votes", type=int, default=1, help="pairs with fewer A/B/tie votes are left out (default 1)")
    e.set_defaults(fn=cmd_export)
    g = lsub.add_parser("agreement", help="human-human agreement (κ), position bias, judge-human agreement")
    g.add_argument("db")
    g.add_argument("--judged", help="`threefold judge` output JSONL on the same pair ids")
    g.add_argument("--json", help="also write the numbers as JSON")
    g.set_defaults(fn=cmd_agreement)


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _db(path: str, must_exist: bool = True):
    from rewards.human.store import LabelStore

    if must_exist and not Path(path).is_file():
        raise ValueError(f"{path}: label database does not exist (threefold label serve creates it)")
    return LabelStore(path)


def read_pairs(path: str) -> list[dict]:
    """Rows with id, prompt, response_a, response_b as strings; a bad row names its row and key."""
    from cluster.data import read_rows

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{path}: pairs file does not exist")
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows, where = pq.read_table(p).to_pylist(), lambda i: f"{path}: row {i}"
    else:
        rows, where = list(read_rows(path)), lambda i: f"{path}:{i + 1}"
    for i, row in enumerate(rows):
        for key in PAIR_KEYS:
            if not isinstance(row.get(key), (str, int)) or (key != "id" and not isinstance(row[key], str)):
                raise ValueError(f"{where(i)}: key {key!r} must be a string (rows need {', '.join(PAIR_KEYS)})")
    if not rows:
        raise ValueError(f"{path}: no pairs")
    return rows


def first_two_distinct(texts: list[str]) -> tuple[str, str] | None:
    distinct = list(dict.fromkeys(texts))
    return (distinct[0], distinct[1]) if len(distinct) >= 2 else None


def make_pairs(generators: list, rows: list[tuple], n: int, temperature: float, max_tokens: int,
               bar=None, batch: int = 64) -> tuple[list[dict], list]:
    """(pairs, ids of prompts without two different samples) from RolloutGenerator actors; batches of
    `batch` prompts go round-robin to the generators, so the bar moves per finished batch."""
    import ray

    chunks = [rows[i:i + batch] for i in range(0, len(rows), batch)]
    refs = {generators[i % len(generators)].generate.remote([{"prompt": p, "id": rid} for rid, p in c], n,
                                                             temperature, max_tokens): c
            for i, c in enumerate(chunks)}
    by_id: dict = {}
    while refs:
        done, _ = ray.wait(list(refs), num_returns=1)
        chunk, batch = refs.pop(done[0]), ray.get(done[0])
        groups: dict[int, list[str]] = {}
        for text, gid in zip(batch.texts, batch.group_ids):
            groups.setdefault(gid, []).append(text)
        for j, (rid, prompt) in enumerate(chunk):
            by_id[rid] = (prompt, first_two_distinct(groups.get(j, [])))
        if bar is not None:
            bar.update(len(chunk))
    pairs, missing = [], []
    for rid, _ in rows:
        prompt, two = by_id[rid]
        if two is None:
            missing.append(rid)
        else:
            pairs.append({"id": str(rid), "prompt": prompt, "response_a": two[0], "response_b": two[1]})
    return pairs, missing


def write_pairs(pairs: list[dict], path: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({k: pa.array([r[k] for r in pairs], type=pa.string()) for k in PAIR_KEYS}), path)


def cmd_make_pairs(args: argparse.Namespace) -> int:
    import ray
    from tqdm import tqdm

    from actors.generator import RolloutGenerator
    from cluster.sample_cmd import read_prompts

    if args.n < 2 or args.batch < 1 or args.generators < 1:
        return _fail("--n must be at least 2, --batch and --generators at least 1")
    if not (Path(args.policy) / "config.json").is_file():
        return _fail(f"--policy {args.policy}: not a Hugging Face model directory (no config.json)")
    try:
        rows = read_prompts(args.prompts)
    except (OSError, ValueError, KeyError) as e:
        return _fail(f"{args.prompts}: {e}" if isinstance(e, KeyError) else str(e))
    ray.init(address=args.address or "local", include_dashboard=False, log_to_driver=False)
    try:
        gens = [RolloutGenerator.remote(str(Path(args.policy).resolve()), args.seed + i, args.max_model_len)
                for i in range(args.generators)]
        with tqdm(total=len(rows), desc="make-pairs", unit="prompt", file=sys.stderr) as bar:
            pairs, missing = make_pairs(gens, rows, args.n, args.temperature, args.max_new_tokens, bar, args.batch)
    finally:
        ray.shutdown()
    write_pairs(pairs, args.output)
    if missing:
        print(f"make-pairs: {len(missing)} prompts without two different samples in {args.n} (ids: "
              f"{', '.join(map(str, missing[:20]))}{' …' if len(missing) > 20 else ''}); raise --n or --temperature",
              file=sys.stderr)
    print(f"make-pairs: {len(pairs)} pairs from {len(rows)} prompts; output: {args.output}", file=sys.stderr)
    return 0


def cmd_add_annotator(args: argparse.Namespace) -> int:
    from rewards.human.store import LabelStoreError

    try:
        token = _db(args.db, must_exist=False).add_annotator(args.name)
    except LabelStoreError as e:
        return _fail(str(e))
    print(token)  # the only place the token is ever shown
    print(f"annotator {args.name!r} added to {args.db}; give them the token above (it is not stored)", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from rewards.human.store import LabelStore

    if args.k is not None and args.k < 1:
        return _fail("--k must be at least 1")
    try:
        rows = read_pairs(args.pairs)
    except ValueError as e:
        return _fail(str(e))
    store = LabelStore(args.db, args.k)
    added, k = store.add_pairs(rows), store.k
    store.close()
    print(f"label serve: {added} new pairs ({len(rows)} in {args.pairs}), k = {k}; http://{args.host}:{args.port}/",
          file=sys.stderr)
    if args.ray:
        return _serve_on_ray(args)
    import uvicorn

    from cluster.label_app import create_app

    uvicorn.run(create_app(args.db), host=args.host, port=args.port, log_level="warning")
    return 0


def _serve_on_ray(args: argparse.Namespace) -> int:
    import os
    import time

    import ray
    from ray import serve

    from cluster.label_app import serve_deployment

    ray.init(address=args.address or os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False)
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(serve_deployment(str(Path(args.db).resolve())), name="label", route_prefix="/")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.delete("label")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from rewards.human.export import export_rows, write_parquet

    try:
        labels = _db(args.db).labels()
    except ValueError as e:
        return _fail(str(e))
    rows, dropped = export_rows(labels, args.policy, args.min_votes)
    if not rows:
        return _fail(f"{args.db}: no pair passes --policy {args.policy} (dropped: {dropped or 'no labels'}); "
                     "label more pairs or use --policy majority")
    write_parquet(rows, args.output)
    print(f"export: {len(rows)} pairs ({args.policy}); dropped {sum(dropped.values())} {dropped}; output: {args.output}",
          file=sys.stderr)
    return 0


def read_judged(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or "id" not in row or "winner" not in row:
                raise ValueError(f"{path}:{n}: a judged row needs keys 'id' and 'winner' (threefold judge output)")
            rows.append(row)
    return rows


def cmd_agreement(args: argparse.Namespace) -> int:
    from cluster.label_report import agreement_report

    try:
        labels = _db(args.db).labels()
        judged = read_judged(args.judged) if args.judged else None
    except (OSError, ValueError) as e:
        return _fail(str(e))
    text, numbers = agreement_report(labels, judged)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(numbers, indent=2, default=list))
    return 0
