"""`threefold verify IN.jsonl [-o OUT.jsonl] [--workers N] [--knowledge FILE]`: sandboxed code tests, math
checks and exact-answer checks, offline."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

from rewards.verify import VerifySettings, invalid


def read_jsonl(path: str) -> list:
    """Every line becomes a row; a line that is not JSON becomes a marker that verifies as invalid_input."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                rows.append({"__invalid__": f"{path}:{lineno}: not valid JSON ({e.msg})"})
    return rows


def with_knowledge(row, default: str | None):
    """An exact row with a `key` gets the default knowledge file when it names none; paths become
    absolute here, since verifier actors may run in another directory."""
    if not (isinstance(row, dict) and row.get("kind") == "exact" and "key" in row):
        return row
    path = row.get("knowledge", default)
    return {**row, "knowledge": os.path.abspath(path)} if isinstance(path, str) and path else row


def register(sub) -> None:
    p = sub.add_parser("verify", help="run code tests in a sandbox and check math answers (JSONL in, JSONL out)",
                       description="Verify rows of IN.jsonl; one verdict per input row, in input order.")
    p.add_argument("input", help="JSONL rows: {id, kind: code, program, tests, limits?}, {id, kind: math, response, answer} "
                                 "or {id, kind: exact, response, answers | key, knowledge?}")
    p.add_argument("-o", "--output", default="-", help="output JSONL (default: stdout)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="sandboxes running at once (default: CPU count)")
    p.add_argument("--actors", type=int, default=1, help="verifier actors the workers are spread over (default 1)")
    p.add_argument("--isolation", choices=["auto", "bwrap", "rlimits", "none"], default="auto",
                   help="sandbox isolation (auto: strongest available; none must be asked for explicitly)")
    p.add_argument("--pids-cgroup", action="store_true",
                   help="also cap processes with a cgroup pids.max (root; costs ~10 ms per program on cgroup v1)")
    p.add_argument("--all-or-nothing", action="store_true", help="reward 1 only when every case passes (default: fraction)")
    p.add_argument("--knowledge", metavar="FILE",
                   help="knowledge file (JSONL or Parquet of {key, answers}) for exact rows that give a key and no 'knowledge'")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster to join (default: local)")
    p.add_argument("--url", help="send the rows to a Serve verifiers app instead of starting actors, e.g. "
                                 "http://HOST:8000/verifiers (threefold serve deploy/serve.yaml); its args decide "
                                 "isolation and limits, so --workers/--actors/--isolation do not apply")
    p.set_defaults(fn=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        rows = read_jsonl(args.input)
    except OSError as e:
        print(f"error: cannot read {args.input}: {e.strerror}", file=sys.stderr)
        return 2
    if args.knowledge:
        from rewards.exact import KnowledgeError, load_knowledge

        try:
            load_knowledge(args.knowledge)  # a broken file is one error here, not one per row
        except KnowledgeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    rows = [with_knowledge(r, args.knowledge) for r in rows]
    from tqdm import tqdm

    bad = {i: invalid(None, r["__invalid__"]) for i, r in enumerate(rows) if isinstance(r, dict) and "__invalid__" in r}
    todo = [i for i in range(len(rows)) if i not in bad]
    with tqdm(total=len(rows), desc="verify", unit="row", file=sys.stderr, initial=len(bad)) as bar:
        got = (_over_http if args.url else _with_actors)(args, [rows[i] for i in todo], bar.update)
    results = dict(bad) | dict(zip(todo, got))
    lines = "".join(json.dumps(results[i]) + "\n" for i in range(len(rows)))
    if args.output == "-":
        sys.stdout.write(lines)
    else:
        with open(args.output, "w") as f:
            f.write(lines)
    summary = {}
    for r in results.values():
        summary[r["status"]] = summary.get(r["status"], 0) + 1
    print("verify: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.items())), file=sys.stderr)
    return 0


def _with_actors(args: argparse.Namespace, rows: list, on_done) -> list[dict]:
    import ray

    from cluster.run import init_ray
    from cluster.verifier_pool import VerifierPool

    init_ray(args.address, quiet=True)
    slots = max(1, math.ceil(args.workers / args.actors))
    pool = VerifierPool(args.actors, slots, VerifySettings(all_or_nothing=args.all_or_nothing), args.isolation,
                        pids_cgroup=args.pids_cgroup)
    try:
        return pool.verify(rows, on_done=on_done)
    finally:
        ray.shutdown()


def _over_http(args: argparse.Namespace, rows: list, on_done) -> list[dict]:
    """Rows to a Serve verifiers app; the rows of a request that failed get status sandbox_error."""
    from cluster.serve_pools import post_chunks

    def lost(reason: str, i: int) -> dict:
        return {**invalid(rows[i].get("id") if isinstance(rows[i], dict) else None, reason), "status": "sandbox_error"}
    return post_chunks(args.url, {"rows": rows}, "verdicts", lost, on_done=on_done)
