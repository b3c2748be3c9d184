"""Resize reward pools of a running job between steps: `threefold scale RUN_DIR --verifiers N --rm N
--judges N` writes RUN_DIR/scale.json; `threefold scale --run RUN_NAME --address ADDR ...` leaves the
request with the run's control actor through Ray (cluster/control_link.py). The controller applies
either before its next step.

Exit codes: 0 the request was recorded, 2 nothing was requested (bad arguments, not a run directory,
the run not found or not running, the cluster not reachable).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cluster.control import POOLS

SCALE_FILE = "scale.json"


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
    from cluster.status_cmd import ADDRESS_HELP, TOKEN_EPILOG

    p = sub.add_parser("scale", help="resize the reward pools of a running job (applied before its next step)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="exit codes: 0 the request was recorded, 2 nothing requested (bad arguments, not a "
                              "run directory,\nthe run not found or not running, the cluster not reachable).\n"
                              + TOKEN_EPILOG)
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="the run directory (logging.output_dir/logging.run_name), on a "
                   "disk this shell shares with the run's driver")
    p.add_argument("--run", metavar="RUN_NAME", help="instead of RUN_DIR: the run's name, reached through Ray "
                   "from any machine that can reach the cluster (see threefold status)")
    p.add_argument("--address", default=None, help="with --run: " + ADDRESS_HELP)
    p.add_argument("--verifiers", type=int, help="verifier actors (math and code sources) from the next step on")
    p.add_argument("--rm", type=int, help="RewardModelScorer actors of every rm source from the next step on")
    p.add_argument("--judges", type=int, help="judge actors of every judge source from the next step on")
    p.set_defaults(fn=cmd_scale)


def cmd_scale(args: argparse.Namespace) -> int:
    if bool(args.run_dir) == bool(args.run):
        print("error: give either RUN_DIR or --run RUN_NAME", file=sys.stderr)
        return 2
    if args.address and not args.run:
        print("error: --address goes with --run RUN_NAME (RUN_DIR is a local path)", file=sys.stderr)
        return 2
    want = {k: getattr(args, k) for k in POOLS if getattr(args, k) is not None}
    if not want:
        print("error: give at least one of --verifiers N, --rm N, --judges N", file=sys.stderr)
        return 2
    bad = [k for k, v in want.items() if v < 1]
    if bad:
        print(f"error: --{bad[0]} must be at least 1", file=sys.stderr)
        return 2
    if args.run:
        return scale_run(args.run, args.address, want)
    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        print(f"error: {run_dir} is not a run directory (no metrics.jsonl)", file=sys.stderr)
        return 2
    path = run_dir / SCALE_FILE
    merged = {**read_request(run_dir), **want}  # an earlier request for another pool stays
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(merged))
    tmp.replace(path)  # the job never reads a half-written file
    print("requested " + ", ".join(f"{k}={v}" for k, v in want.items()) + "; the job applies it before its next step")
    return 0


def scale_run(run: str, address: str | None, want: dict[str, int]) -> int:
    """The request through the run's control actor; refused for a run that ended or lacks the pool."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    from cluster.control_link import ANSWER_S, ControlError, answering, session

    try:
        with session(address) as used:
            actor, status = answering(run, used)
            if status.get("state") != "running":
                raise ControlError(f"run {run!r} has {status.get('state')}; there is nothing to resize")
            served = {k: v for k, v in (status.get("serve_apps") or {}).items() if k in want}
            if served:  # its replicas follow the application's autoscaling, not the run
                key, apps = next(iter(served.items()))
                raise ControlError(f"run {run!r} scores {key} with the Serve application(s) {', '.join(apps)}: "
                                   "change min_replicas/max_replicas in the Serve config and run `threefold serve "
                                   "CONFIG --app NAME` again")
            pools = status.get("pools") or {}
            missing = [k for k in want if pools.get("generators") and not pools.get(k)]
            if missing:  # known once the run has built its pools (it has generators then)
                have = ", ".join(f"{k} {v}" for k, v in pools.items() if v) or "none"
                raise ControlError(f"run {run!r} has no {missing[0]} pool (its pools: {have})")
            try:
                pending = ray.get(actor.request_scale.remote(want), timeout=ANSWER_S)
            except (RayActorError, GetTimeoutError) as e:
                raise ControlError(f"run {run!r} did not take the request ({type(e).__name__}); did it just end?")
    except ControlError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("requested " + ", ".join(f"{k}={v}" for k, v in want.items()) + f" for run {run}"
          + f" (pending: {', '.join(f'{k}={v}' for k, v in pending.items())}); the run applies it before its next step")
    return 0
