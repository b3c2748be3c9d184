"""Resize reward pools of a running job between steps: `threefold scale RUN_DIR --verifiers N --rm N
--judges N` writes RUN_DIR/scale.json; the controller applies it before its next step."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SCALE_FILE = "scale.json"
POOLS = ("verifiers", "rm", "judges")


def read_request(run_dir: Path) -> dict[str, int]:
    """The requested pool sizes, or {} when there is none or it is malformed (reported, not fatal)."""
    path = run_dir / SCALE_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {k: int(v) for k, v in raw.items() if k in POOLS and int(v) >= 1}
    except (ValueError, TypeError, AttributeError) as e:
        print(f"warning: ignoring {path}: {e}", file=sys.stderr)
        return {}


def register(sub) -> None:
    p = sub.add_parser("scale", help="resize the reward pools of a running job (applied before its next step)")
    p.add_argument("run_dir", help="the run directory (logging.output_dir/logging.run_name)")
    p.add_argument("--verifiers", type=int, help="verifier actors (math and code sources) from the next step on")
    p.add_argument("--rm", type=int, help="RewardModelScorer actors of every rm source from the next step on")
    p.add_argument("--judges", type=int, help="judge actors of every judge source from the next step on")
    p.set_defaults(fn=cmd_scale)


def cmd_scale(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        print(f"error: {run_dir} is not a run directory (no metrics.jsonl)", file=sys.stderr)
        return 2
    want = {k: getattr(args, k) for k in POOLS if getattr(args, k) is not None}
    if not want:
        print("error: give at least one of --verifiers N, --rm N, --judges N", file=sys.stderr)
        return 2
    bad = [k for k, v in want.items() if v < 1]
    if bad:
        print(f"error: --{bad[0]} must be at least 1", file=sys.stderr)
        return 2
    path = run_dir / SCALE_FILE
    merged = {**read_request(run_dir), **want}  # an earlier request for another pool stays
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(merged))
    tmp.replace(path)  # the job never reads a half-written file
    print("requested " + ", ".join(f"{k}={v}" for k, v in want.items()) + "; the job applies it before its next step")
    return 0
