"""Resize reward pools of a running job between steps: `threefold scale RUN_DIR --verifiers N`
writes RUN_DIR/scale.json; the controller applies it before its next step."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SCALE_FILE = "scale.json"
POOLS = ("verifiers",)


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
    p.add_argument("--verifiers", type=int, required=True, help="verifier actors to run from the next step on")
    p.set_defaults(fn=cmd_scale)


def cmd_scale(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        print(f"error: {run_dir} is not a run directory (no metrics.jsonl)", file=sys.stderr)
        return 2
    if args.verifiers < 1:
        print("error: --verifiers must be at least 1", file=sys.stderr)
        return 2
    (run_dir / SCALE_FILE).write_text(json.dumps({"verifiers": args.verifiers}))
    print(f"requested verifiers={args.verifiers}; the job applies it before its next step")
    return 0
