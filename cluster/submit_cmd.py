"""`threefold submit CONFIG`: a training run as a Ray job, through Ray's job submission SDK.

The repository root travels as the job's working_dir (less the runtime_env's excludes), the
runtime_env comes from deploy/runtime_env.yaml (pip or image, env vars, excludes), and the entrypoint
is `python -m cluster.cli train CONFIG --set ...`. The config is validated here first. The run's
outputs go to `logging.storage` (or --storage), since the job's working directory is temporary.
Token authentication: the token is sent as an `Authorization: Bearer` header, never printed.

Exit codes: 0 the job SUCCEEDED (with --no-wait: it was submitted; --stop: the stop was requested),
1 it FAILED or was STOPPED, 2 nothing was submitted (bad config or arguments, no storage location,
the job server unreachable or refusing the token), 130 interrupted while following (the job goes on).
"""
from __future__ import annotations

import argparse
import asyncio
import fnmatch
import os
import re
import shlex
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath

import yaml

from cluster import storage as run_storage
from cluster.ray_jobs import DEFAULT_ADDRESS, SubmitError, auth_headers, make_client, resolve_address  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUNTIME_ENV = "deploy/runtime_env.yaml"
OUTPUT_FILES = "metrics.jsonl, report.md, report.png, checkpoint/"
META_OUTPUTS = "threefold_outputs"
PATH_MISSING = re.compile(r"does not exist|has no config\.json")


@dataclass
class Plan:
    """What `threefold submit CONFIG` sends: built and checked before anything talks to the cluster."""
    config: str  # relative to the repository root, as the job sees it
    entrypoint: str
    runtime_env: dict
    run_name: str
    storage: str
    warnings: list[str] = field(default_factory=list)

    @property
    def outputs(self) -> str:
        return run_storage.destination(self.storage, self.run_name)


# ---- building the job -----------------------------------------------------------------------------

def load_runtime_env(path: str | Path, root: Path | None = None) -> dict:
    p, root = Path(path), root or ROOT
    if not p.is_file() and not p.is_absolute() and (root / p).is_file():
        p = root / p
    try:
        env = yaml.safe_load(p.read_text()) or {}
    except OSError as e:
        raise SubmitError(f"{path}: cannot read the runtime_env file ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise SubmitError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(env, dict):
        raise SubmitError(f"{path}: a runtime_env file is a mapping (pip, env_vars, excludes, ...)")
    return env


def build_runtime_env(base: dict, root: Path | None = None) -> dict:
    """The job's runtime_env: the file's, with the repository root as working_dir and its excludes
    (threefold's usual ones when the file names none)."""
    from cluster.run import SHIP_EXCLUDES

    env = dict(base)
    env["working_dir"] = str(root or ROOT)
    env["excludes"] = list(base.get("excludes") or SHIP_EXCLUDES)
    return env


def is_excluded(rel: str | Path, excludes: list[str]) -> str | None:
    """The exclude pattern that leaves the repository-relative path `rel` out of the working_dir, if any."""
    parts = PurePosixPath(Path(rel).as_posix()).parts
    for pattern in excludes:
        pat = pattern.strip("/")
        if "/" in pat.removeprefix("**/"):
            if fnmatch.fnmatch("/".join(parts), pat) or fnmatch.fnmatch("/".join(parts), pat + "/*"):
                return pattern
        elif any(fnmatch.fnmatch(part, pat.removeprefix("**/")) for part in parts):
            return pattern
    return None


def build_entrypoint(config: str, sets: list[str]) -> str:
    """`python -m cluster.cli train CONFIG --set K=V ...`, each word quoted for the job's shell."""
    return shlex.join(["python", "-m", "cluster.cli", "train", config, *[w for s in sets for w in ("--set", s)]])


@contextmanager
def _cwd(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


PATH_KEYS = {"model_dir", "train_path", "eval_path", "judges", "knowledge"}  # config keys that name input files


def _path_values(node, prefix: str = ""):
    """(key path, value) of every input path in a raw config (logging.* are outputs)."""
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if key == "logging":
                continue
            if k in PATH_KEYS and isinstance(v, str):
                yield key, Path(v)
            else:
                yield from _path_values(v, key)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _path_values(v, f"{prefix}[{i}]")


def prepare(config: str, sets: list[str], storage: str | None = None, runtime_env: str = DEFAULT_RUNTIME_ENV,
            root: Path | None = None, now: datetime | None = None) -> Plan:
    """Validate the config as the job will see it (from the repository root) and build the job."""
    from cluster.cli import parse_overrides
    from cluster.config_loader import ConfigError, load_config, set_dotted

    root = (root or ROOT).resolve()
    path = Path(config).resolve()
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        raise SubmitError(f"{config} is outside the repository ({root}); the job reads its config from the "
                          "working_dir, so put it under configs/") from None
    env = build_runtime_env(load_runtime_env(runtime_env, root), root)
    if (pattern := is_excluded(rel, env["excludes"])):
        raise SubmitError(f"{config} is left out of the working_dir by the runtime_env's exclude {pattern!r}; "
                          "put the config under configs/")
    sets = list(sets)
    try:
        overrides = parse_overrides(sets)
    except SystemExit as e:
        raise SubmitError(str(e).removeprefix("error: ")) from None
    warnings: list[str] = []
    with _cwd(root):  # the job's working directory: relative paths mean the same here as there
        try:
            cfg = load_config(rel, overrides)
            logging_cfg = cfg.logging.model_dump(mode="json")
        except ConfigError as e:
            problems = str(e).splitlines()[1:]
            if not problems or not all(PATH_MISSING.search(p) for p in problems):
                raise SubmitError(str(e)) from None
            # Only paths missing here: they are read on the cluster's nodes, where they may well exist.
            warnings += [f"{p.strip()} (on this machine; it must exist on the cluster's nodes)" for p in problems]
            logging_cfg = None
        raw = yaml.safe_load(Path(rel).read_text()) or {}
    for dotted, value in overrides.items():
        set_dotted(raw, dotted, value)
    if logging_cfg is None:  # the rest of the config is valid, so these values are too
        logging_cfg = raw.get("logging") or {}
    unshipped = [(key, value, pattern) for key, value in _path_values(raw)
                 if not value.is_absolute() and (pattern := is_excluded(value, env["excludes"]))]
    if unshipped:
        raise SubmitError("\n  ".join(
            ["these input paths are relative, so the job looks for them in its working_dir, which leaves them "
             "out (runtime_env excludes); give paths that exist on the cluster's nodes (shared storage or the "
             "node image), e.g. on a local cluster:"]
            + [f"--set {key}={(root / value).as_posix()}   (now {value}; excluded by {pattern!r})"
               for key, value, pattern in unshipped]))
    where = storage or logging_cfg.get("storage")
    if not where:
        raise SubmitError("no storage location for the run's outputs: pass --storage URI or set logging.storage "
                          "(a path the cluster's nodes share, e.g. --storage $PWD/runs on a local cluster, or "
                          "s3://bucket/prefix); without it they stay in the job's temporary working directory")
    normalized = run_storage.normalize(str(where))
    if storage or normalized != where:  # a relative path means the job's temporary directory there: pin it
        sets.append(f"logging.storage={normalized}")
    run_name = logging_cfg.get("run_name")
    if not run_name:  # named here, so that the outputs' location is known before the job starts
        run_name = f"{Path(rel).stem}-{(now or datetime.now()):%Y%m%d-%H%M%S}"
        sets.append(f"logging.run_name={run_name}")
    return Plan(config=rel, entrypoint=build_entrypoint(rel, sets), runtime_env=env, run_name=run_name,
                storage=normalized, warnings=warnings)


def _redact(text: str, secret: str | None) -> str:
    text = re.sub(r"([A-Za-z][\w+.-]*://)[^/@\s]*@", r"\1", text)  # credentials inside URIs
    return text.replace(secret, "***") if secret else text


def _print(text: str = "", err: bool = False, secret: str | None = None) -> None:
    print(_redact(text, secret), file=sys.stderr if err else sys.stdout, flush=True)


async def _tail(client, job_id: str) -> None:
    async for chunk in client.tail_job_logs(job_id):
        sys.stdout.write(chunk)
        sys.stdout.flush()


def follow(client, job_id: str, poll_s: float = 0.5):
    """Stream the job's logs until it ends; its final JobStatus."""
    try:
        asyncio.run(_tail(client, job_id))
    except RuntimeError as e:  # the stream broke (head restarted, proxy timeout): wait for the end anyway
        _print(f"warning: log stream ended early ({e}); waiting for the job to finish", err=True)
        poll_s = max(poll_s, 2.0)
    while True:  # the status can trail the end of the log stream by a moment
        status = client.get_job_status(job_id)
        if status.is_terminal():
            return status
        time.sleep(poll_s)


def finish(client, job_id: str, status) -> int:
    info = client.get_job_info(job_id)
    outputs = (info.metadata or {}).get(META_OUTPUTS)
    where = f"; outputs: {outputs}" if outputs else ""
    status_name = getattr(status, "value", str(status))
    message = f": {info.message}" if status_name in ("FAILED", "STOPPED") and info.message else ""
    _print(f"job {job_id} {status_name}{message}{where}")
    return 0 if status_name == "SUCCEEDED" else 1


# ---- the command ----------------------------------------------------------------------------------

def register(sub) -> None:
    p = sub.add_parser(
        "submit", help="run a training config as a Ray job on a cluster (Ray job submission)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Submit `threefold train CONFIG` as a Ray job: the repository root is the working_dir "
                    "(less the runtime_env's excludes), the runtime_env comes from --runtime-env, and the run's "
                    "outputs go to logging.storage (--storage). Prints the job id, its dashboard page and where "
                    "the outputs will be, then streams the job's logs.",
        epilog="exit codes: 0 the job SUCCEEDED (--no-wait: submitted; --stop: stop requested), 1 it FAILED or "
               "was STOPPED,\n2 nothing submitted (bad config or arguments, no storage, job server unreachable "
               "or token refused),\n130 interrupted while following (the job keeps running).\n"
               "token authentication: $RAY_AUTH_TOKEN, else the file $RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token "
               "(sent\nwith RAY_AUTH_MODE=token or to a cluster on this machine); the token is never printed.")
    p.add_argument("config", nargs="?", help="run config YAML inside this repository (e.g. configs/cluster-gpu.yaml)")
    p.add_argument("--address", default=None,
                   help=f"the job server, http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS, "
                        f"else {DEFAULT_ADDRESS})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, as for `threefold train` (repeatable)")
    p.add_argument("--runtime-env", default=DEFAULT_RUNTIME_ENV, metavar="FILE",
                   help=f"runtime_env YAML: pip or image_uri, env_vars, excludes (default: {DEFAULT_RUNTIME_ENV})")
    p.add_argument("--storage", metavar="URI",
                   help="where the run's outputs go (sets logging.storage): a path the nodes share or a pyarrow "
                        "filesystem URI such as s3://bucket/prefix")
    p.add_argument("--no-wait", action="store_true",
                   help="return once the job is submitted instead of streaming its logs (with --logs: print the "
                        "logs so far)")
    jobs = p.add_mutually_exclusive_group()
    jobs.add_argument("--logs", metavar="JOB_ID", help="stream a job's logs until it ends (exit code as for submit)")
    jobs.add_argument("--status", metavar="JOB_ID", help="print a job's status and where its outputs go")
    jobs.add_argument("--stop", metavar="JOB_ID", help="stop a job")
    p.set_defaults(fn=cmd_submit)


def cmd_submit(args: argparse.Namespace, *, entrypoint: str | None = None, client_factory=make_client) -> int:
    """`entrypoint` replaces the training command (tests run a tiny command through the same path)."""
    job_id = args.logs or args.status or args.stop
    secret = None
    try:
        if job_id and args.config:
            raise SubmitError("give either CONFIG (submit a run) or --logs/--status/--stop JOB_ID, not both")
        if not job_id and not args.config:
            raise SubmitError("give the run config to submit (threefold submit CONFIG), or --logs/--status/--stop JOB_ID")
        plan = None
        if not job_id:
            plan = prepare(args.config, args.set, args.storage, args.runtime_env)
            for w in plan.warnings:
                _print(f"warning: {w}", err=True)
        address = resolve_address(args.address)
        headers, auth_note = auth_headers(address)
        secret = headers.get("Authorization", "").removeprefix("Bearer ") or None
        client = client_factory(address, headers)
        if plan is not None:
            return _submit(client, plan, entrypoint, address, auth_note, args.no_wait)
        return _manage(client, args, job_id)
    except SubmitError as e:
        _print(f"error: {e}", err=True, secret=secret)
        return 2
    except KeyboardInterrupt:
        _print("\ninterrupted: the job keeps running (threefold submit --stop JOB_ID stops it)", err=True)
        return 130
    except Exception as e:  # noqa: BLE001 - the client's errors, shown without a traceback
        from ray.exceptions import AuthenticationError

        if isinstance(e, AuthenticationError):
            _print(f"error: the job server refused the request: {e}\nexport RAY_AUTH_TOKEN (`ray get-auth-token` "
                   "on the head prints it) or RAY_AUTH_MODE=token with the token in ~/.ray/auth_token",
                   err=True, secret=secret)
        elif isinstance(e, ConnectionError):
            _print(f"error: cannot reach the job server at {resolve_address(args.address)} ({e}); is the head "
                   "running and its dashboard port (8265) reachable, e.g. through `kubectl port-forward` or "
                   "`ray dashboard`?", err=True, secret=secret)
        else:
            _print(f"error: {type(e).__name__}: {e}", err=True, secret=secret)
        return 2


def _submit(client, plan: Plan, entrypoint: str | None, address: str, auth_note: str, no_wait: bool) -> int:
    job_id = client.submit_job(entrypoint=entrypoint or plan.entrypoint, runtime_env=plan.runtime_env,
                               metadata={"threefold_config": plan.config, "threefold_run_name": plan.run_name,
                                         META_OUTPUTS: plan.outputs})
    base = client.get_address().rstrip("/")
    _print(f"job id: {job_id}")
    _print(f"  dashboard:  {base}/#/jobs/{job_id}")
    _print(f"  outputs:    {plan.outputs}/ ({OUTPUT_FILES})")
    _print(f"  entrypoint: {entrypoint or plan.entrypoint}")
    _print(f"  auth:       {auth_note}")
    addr = f" --address {shlex.quote(address)}"
    _print(f"  logs: threefold submit --logs {job_id}{addr}   stop: threefold submit --stop {job_id}{addr}")
    if no_wait:
        return 0
    _print("streaming the job's logs (Ctrl-C stops following, not the job):")
    return finish(client, job_id, follow(client, job_id))


def _manage(client, args: argparse.Namespace, job_id: str) -> int:
    if args.stop:
        if client.stop_job(job_id):
            _print(f"stop requested for job {job_id}")
        else:
            _print(f"job {job_id} had already ended ({client.get_job_status(job_id).value})")
        return 0
    if args.logs and not args.no_wait:
        return finish(client, job_id, follow(client, job_id))
    if args.logs:
        sys.stdout.write(client.get_job_logs(job_id))
        return 0
    info = client.get_job_info(job_id)
    _print(f"job {job_id}: {info.status.value}" + (f" ({info.message})" if info.message else ""))
    _print(f"  dashboard: {client.get_address().rstrip('/')}/#/jobs/{job_id}")
    outputs = (info.metadata or {}).get(META_OUTPUTS)
    _print(f"  outputs:   {outputs}/" if outputs else "  outputs:   (not submitted by threefold submit)")
    return 1 if info.status.value in ("FAILED", "STOPPED") else 0
