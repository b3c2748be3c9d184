"""Control of a running job through Ray (no Ray imports here): the RunControl actor's name, the status
it holds, scale requests, throughput, the CLI's address rules and the status table.

A run's controller starts a RunControl actor named `threefold-run:<run_name>` in the Ray namespace
`threefold`, pushes its status after each step and evaluation, and takes the scale requests clients
left there before each step. The Ray side is cluster/control_link.py."""
from __future__ import annotations

import json
import time
from collections import deque
from datetime import datetime, timezone
from urllib.parse import urlparse

NAMESPACE = "threefold"
PREFIX = "threefold-run:"
POOLS = ("verifiers", "rm", "judges")  # what `threefold scale` resizes
STATUS_POOLS = ("generators", "verifiers", "judges", "rm")
STATES = ("running", "finished", "failed", "stopped")  # stopped: by a signal, after a checkpoint
THROUGHPUT_STEPS = 5  # samples/s over this many recent steps
EXIT_FOUND, EXIT_NOT_FOUND = 0, 2


class RunNameTaken(ValueError):
    """Another live run holds this run's control actor name."""


class AddressError(ValueError):
    """An address `threefold status` / `scale --run` cannot use; the message says which to give."""


def actor_name(run_name: str) -> str:
    return PREFIX + run_name


def run_name_of(actor: str) -> str | None:
    """The run name of a control actor's name, or None for any other actor."""
    return actor[len(PREFIX):] if actor.startswith(PREFIX) else None


def runs_in(named_actors: list[dict]) -> list[str]:
    """Run names among ray.util.list_named_actors(all_namespaces=True), sorted."""
    return sorted(r for a in named_actors if a.get("namespace") == NAMESPACE
                  and (r := run_name_of(a.get("name", ""))) is not None)


def validate_request(raw) -> dict[str, int]:
    """A scale request {pool: size}; ValueError naming the first bad key or size."""
    if not isinstance(raw, dict):
        raise ValueError(f"a scale request is a mapping of {', '.join(POOLS)} to sizes, not {type(raw).__name__}")
    out = {}
    for key, size in raw.items():
        if key not in POOLS:
            raise ValueError(f"unknown pool {key!r}; scalable pools: {', '.join(POOLS)}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"{key} must be a whole number of at least 1, not {size!r}")
        out[key] = size
    return out


def merge_requests(file_now: dict[str, int], file_seen: dict[str, int], taken: dict[str, int]) -> dict[str, int]:
    """What to apply before a step: the entries of RUN_DIR/scale.json that changed since last applied, then
    the requests taken from the control actor (newer; they win for the same pool). An unchanged scale.json
    is not applied again, so it never undoes a later request through the actor."""
    changed = {k: v for k, v in file_now.items() if file_seen.get(k) != v}
    return {**changed, **taken}


class Throughput:
    """Samples per second over the last `steps` steps (the steps' samples over their wall time)."""

    def __init__(self, steps: int = THROUGHPUT_STEPS):
        self.recent: deque[tuple[int, float]] = deque(maxlen=steps)

    def add(self, samples: int, seconds: float) -> None:
        self.recent.append((samples, seconds))

    def rate(self) -> float | None:
        seconds = sum(s for _, s in self.recent)
        return sum(n for n, _ in self.recent) / seconds if seconds > 0 else None


def initial_status(run: str, total_steps: int, run_dir: str, storage: str | None, pools: dict[str, int],
                   now: float | None = None) -> dict:
    """The status a run starts with; `pools` lists the sizes it has (absent kinds are 0)."""
    now = time.time() if now is None else now
    return {"run": run, "state": "running", "started": now, "updated": now, "step": 0, "total_steps": total_steps,
            "policy_version": 0, "pools": pool_sizes(pools), "samples_per_s": None, "eval_accuracy": None,
            "eval_step": None, "run_dir": run_dir, "storage": storage, "error": None}


def pool_sizes(sizes: dict[str, int]) -> dict[str, int]:
    return {k: int(sizes.get(k, 0)) for k in STATUS_POOLS}


# ---- the CLI side ---------------------------------------------------------------------------------

def cluster_address(address: str | None, env) -> str:
    """The address ray.init gets: --address, else $RAY_ADDRESS, else `auto` (a cluster on this machine).
    A job server (dashboard) URL is refused: Ray's GCS or client port is another one."""
    given = address or env.get("RAY_ADDRESS") or "auto"
    scheme = urlparse(given).scheme if "://" in given else ""
    if scheme in ("http", "https"):
        where = "--address" if address else "$RAY_ADDRESS"
        host = urlparse(given).hostname or "HEAD"
        raise AddressError(
            f"{where} {given} is a job server (dashboard) address, as `threefold submit` uses; status and scale "
            f"talk to the cluster itself: give its GCS address {host}:6379 (from inside the cluster's network), "
            f"ray://{host}:10001 (Ray client, e.g. through `kubectl port-forward`), or auto (a cluster on this "
            "machine)")
    if scheme and scheme != "ray":
        raise AddressError(f"--address {given}: use auto, HOST:6379 (GCS) or ray://HOST:10001 (Ray client)")
    return given


def host_port(address: str) -> tuple[str, int] | None:
    """(host, port) that a GCS (default port 6379) or ray:// (10001) address connects to; None for auto."""
    if address == "auto":
        return None
    ray_client = address.startswith("ray://")
    parsed = urlparse(address if ray_client else f"gcs://{address}")
    return parsed.hostname or "", parsed.port or (10001 if ray_client else 6379)


def token_env(token_header: dict) -> dict[str, str]:
    """Environment for ray.init from the job-server header ray_jobs.auth_headers found: Ray's own client
    reads the token from RAY_AUTH_TOKEN once RAY_AUTH_MODE=token."""
    bearer = token_header.get("Authorization", "").removeprefix("Bearer ")
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": bearer} if bearer else {}


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_status(s: dict, now: float | None = None) -> str:
    """The status table `threefold status RUN_NAME` prints."""
    now = time.time() if now is None else now
    pools = s.get("pools") or {}
    rate = s.get("samples_per_s")
    acc = s.get("eval_accuracy")
    rows = [
        ("run", s.get("run")),
        ("state", s.get("state") + (f" ({s['error']})" if s.get("error") else "")),
        ("started", _when(s.get("started"))),
        ("updated", f"{_when(s.get('updated'))} ({max(0, now - (s.get('updated') or now)):.0f} s ago)"),
        ("step", f"{s.get('step')} / {s.get('total_steps')}"),
        ("policy version", s.get("policy_version")),
        ("throughput", "-" if rate is None else f"{rate:.1f} samples/s (last {THROUGHPUT_STEPS} steps)"),
        ("held-out", "-" if acc is None else f"{acc:.1%} (step {s.get('eval_step')})"),
        ("pools", ", ".join(f"{k} {pools.get(k, 0)}" for k in STATUS_POOLS)),
        ("run dir", s.get("run_dir")),
        ("storage", s.get("storage") or "- (no logging.storage)"),
    ]
    return "\n".join(f"{k:<15}{v}" for k, v in rows)


def format_runs(statuses: dict[str, dict | None]) -> str:
    """One line per run for `threefold status` without a name ({run: status, or None if unreadable})."""
    lines = []
    for run, s in sorted(statuses.items()):
        if s is None:
            lines.append(f"{run:<32}(no answer from its control actor)")
        else:
            lines.append(f"{run:<32}{s['state']:<10}step {s['step']}/{s['total_steps']}")
    return "\n".join(lines)


def to_json(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True)
