"""`threefold status [RUN_NAME]`: a running job's state, read from its control actor through Ray, from
any machine that can reach the cluster (rules in cluster/control.py, Ray side in cluster/control_link.py).

Exit codes: 0 the run was found (without RUN_NAME: at least one run), 2 not found, or the cluster could
not be reached (the message names the address and what to check).
"""
from __future__ import annotations

import argparse
import sys

from cluster.control import format_runs, format_status, to_json

ADDRESS_HELP = ("the Ray cluster: auto (a cluster on this machine), HOST:6379 (its GCS) or ray://HOST:10001 "
                "(Ray client); default $RAY_ADDRESS, else auto. Not the job server's http://HOST:8265")
TOKEN_EPILOG = ("token authentication: $RAY_AUTH_TOKEN, else the file $RAY_AUTH_TOKEN_PATH, else "
                "~/.ray/auth_token (with\nRAY_AUTH_MODE=token or for a cluster on this machine), as for "
                "`threefold submit`.")


def register(sub) -> None:
    p = sub.add_parser(
        "status", help="a running job's state through Ray: step, pools, throughput, held-out score",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Show a run's status from its control actor (step, policy version, pool sizes, samples/s, "
                    "last held-out score, run dir, storage, start time, state); without RUN_NAME, list the "
                    "runs on the cluster.",
        epilog="exit codes: 0 found (without RUN_NAME: at least one run), 2 not found or the cluster not "
               "reachable.\n" + TOKEN_EPILOG)
    p.add_argument("run", nargs="?", metavar="RUN_NAME", help="the run's name (logging.run_name; the run "
                   "directory's name)")
    p.add_argument("--address", default=None, help=ADDRESS_HELP)
    p.add_argument("--json", action="store_true", help="print JSON (the status object; without RUN_NAME "
                   "{run: status})")
    p.set_defaults(fn=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    from cluster.control_link import ControlError, answering, find, list_runs, read_status, session

    try:
        with session(args.address) as address:
            if args.run:
                _, status = answering(args.run, address)
                print(to_json(status) if args.json else format_status(status))
                return 0
            runs = list_runs()
            if not runs:
                raise ControlError(f"no threefold run on the Ray cluster at {address}; a run is reachable while "
                                   "its driver (`threefold train`) is alive")
            statuses = {r: (read_status(a) if (a := find(r)) else None) for r in runs}
            print(to_json(statuses) if args.json else format_runs(statuses))
            return 0
    except ControlError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
