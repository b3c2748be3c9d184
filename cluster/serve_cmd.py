"""`threefold serve CONFIG [--app NAME] [--address ADDR] [--status] [--shutdown]`: deploy the reward
pools of a Serve config (deploy/serve.yaml) on the current cluster, report them, or remove them.

Without --address (or with a Ray address such as `auto` or HOST:6379) it connects to the running
cluster through Ray (`ray start --head` on a laptop); with a job-server URL (http://HEAD:8265) it goes
through the dashboard's Serve REST API, as `serve deploy` does, with Ray's token auth. Applications
on the cluster that the request does not name keep running, untouched.

Exit codes: 0 done (every named application RUNNING), 1 an application failed to deploy or did not
become RUNNING in --wait seconds, 2 nothing was done (bad config, unknown --app, cluster not reachable).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from urllib.parse import urlparse


DONE = ("RUNNING",)
FAILED = ("DEPLOY_FAILED", "UNHEALTHY")


class ServeConfigError(Exception):
    """The Serve config cannot be used; the message names the file, line and key."""


def _where(path: Path, lines: dict, loc: tuple) -> str:
    line = lines.get(tuple(map(str, loc))) or lines.get(tuple(map(str, loc[:-1])))
    return f"{path}{f':{line}' if line else ''}: {'.'.join(map(str, loc)) or '(top level)'}"


def load_serve_config(path: str | Path, apps: list[str] | None = None) -> dict:
    """The Serve config as a dict, checked against Serve's ServeDeploySchema and, for threefold's
    applications, their `args` (deploy/serve_apps.py); ServeConfigError lists every mistake."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    from cluster.config_loader import read_yaml

    path = Path(path)
    raw, lines = read_yaml(path, "the Serve config", ServeConfigError, "a mapping with an `applications:` list")
    msgs = []
    try:
        ServeDeploySchema.model_validate(raw)
    except ValidationError as err:
        msgs += [f"{_where(path, lines, tuple(e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in err.errors()]
    for i, app in enumerate(raw.get("applications") or []):
        if isinstance(app, dict):
            msgs += [f"{_where(path, lines, ('applications', i, *loc))}: {msg}" for loc, msg in _app_problems(app)]
    if msgs:
        raise ServeConfigError("invalid Serve config\n  " + "\n  ".join(msgs))
    names = [a["name"] for a in raw["applications"]]
    unknown = [a for a in apps or [] if a not in names]
    if unknown:
        raise ServeConfigError(f"{path}: no application {unknown[0]!r} (applications: {', '.join(names)})")
    return raw


def _app_problems(app: dict) -> list[tuple[tuple, str]]:
    """(key path, message) for the args of threefold's apps and each deployment's autoscaling_config
    (Serve's schema takes any mapping there and fails only at deploy time)."""
    from pydantic import ValidationError
    from ray.serve.config import AutoscalingConfig

    from deploy.serve_apps import BUILDERS

    out = []
    checks = [(("args",), BUILDERS.get(app.get("import_path")), app.get("args") or {})]
    for j, dep in enumerate(app.get("deployments") or []):
        auto = dep.get("autoscaling_config") if isinstance(dep, dict) else None
        if isinstance(auto, dict):
            checks.append((("deployments", j, "autoscaling_config"), AutoscalingConfig, auto))
    for prefix, model, value in checks:
        try:
            model and model.model_validate(value)
        except ValidationError as err:
            out += [((*prefix, *e["loc"]), "unknown key" if e["type"] == "extra_forbidden" else
                     e["msg"].removeprefix("Value error, ")) for e in err.errors()]
    return out


def merged(file_cfg: dict, details: dict, names: list[str], remove: bool = False) -> dict:
    """The config to apply: every application the cluster runs now, as deployed, with the named ones
    taken from the file (or removed). Serve applies a config as a whole; the apps it did not change
    keep their replicas."""
    apps = {n: a["deployed_app_config"] for n, a in (details.get("applications") or {}).items()
            if a.get("deployed_app_config")}
    for app in file_cfg["applications"]:
        if app["name"] in names:
            apps.pop(app["name"], None)
            if not remove:
                apps[app["name"]] = app
    return {**{k: v for k, v in file_cfg.items() if k != "applications"}, "applications": list(apps.values())}


class Cluster:
    """Serve on a cluster, through Ray (`client` from Serve's API) or the dashboard's REST API."""

    def __init__(self, address: str | None, file_cfg: dict, start: bool):
        self.rest = bool(address) and urlparse(address).scheme in ("http", "https")
        if self.rest:
            from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

            from cluster.ray_jobs import ADDRESS_VARS, auth_headers, env_vars

            headers, _ = auth_headers(address)
            with env_vars({}, ADDRESS_VARS):
                self.client = ServeSubmissionClient(address, headers=headers or None)
            self.host = urlparse(address).hostname
            return
        import ray

        if not ray.is_initialized():  # with the token from where `threefold submit` finds it
            from cluster.control_link import connect

            connect(address)
        host = (file_cfg.get("http_options") or {}).get("host", "0.0.0.0")
        self.host = ray.util.get_node_ip_address() if host in ("0.0.0.0", "::") else host
        if start:
            from ray.serve._private.api import serve_start

            self.client = serve_start(http_options=file_cfg.get("http_options"),
                                      proxy_location=file_cfg.get("proxy_location"))
        else:
            from ray.serve.context import _get_global_client

            self.client = _get_global_client()

    def details(self) -> dict:
        got = self.client.get_serve_details()
        return got if isinstance(got, dict) else got.model_dump()

    def apply(self, cfg: dict) -> None:
        if not cfg["applications"]:
            self.client.delete_applications() if self.rest else self.client.delete_all_apps()
        elif self.rest:
            self.client.deploy_applications(cfg)
        else:
            from ray.serve.schema import ServeDeploySchema

            self.client.deploy_apps(ServeDeploySchema.model_validate(cfg))


def wait(cluster: Cluster, names: list[str], timeout_s: float) -> dict:
    """Application details once every named one is RUNNING or failed (or at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        apps = cluster.details().get("applications") or {}
        states = [_state(apps.get(n, {}).get("status")) for n in names]
        if all(s in DONE + FAILED for s in states) or time.monotonic() > deadline:
            return apps
        time.sleep(1.0)


def _state(value) -> str:
    """A Serve status as its name (details hold enums through Ray, strings through REST)."""
    return str(getattr(value, "value", value) or "")


def describe(apps: dict, names: list[str], host: str, port: int) -> tuple[str, bool]:
    """One line per application (status, URL, replicas) and whether all are RUNNING."""
    out, ok = [], True
    for n in names:
        a = apps.get(n)
        if a is None:
            out.append(f"{n}: not deployed")
            ok = False
            continue
        reps = {d: sum(_state(r.get("state")) == "RUNNING" for r in dep.get("replicas") or [])
                for d, dep in (a.get("deployments") or {}).items()}
        line = (f"{n}: {_state(a.get('status'))}  http://{host}:{port}{a.get('route_prefix') or ''}  "
                + ", ".join(f"{d} {k} replica(s)" for d, k in reps.items()))
        if _state(a.get("status")) not in DONE:
            ok = False
            line += f"\n  {a.get('message') or ''}".rstrip()
        out.append(line)
    return "\n".join(out), ok


def register(sub) -> None:
    p = sub.add_parser("serve", help="deploy the reward pools of a Serve config (deploy/serve.yaml) on the cluster",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Deploy verifier, reward-model and judge pools as Ray Serve applications.",
                       epilog="exit codes: 0 done, 1 an application failed or was not RUNNING in time, 2 nothing done.")
    p.add_argument("config", help="Serve config YAML (the format `serve deploy` takes; see deploy/serve.yaml)")
    p.add_argument("--app", action="append", default=[], metavar="NAME",
                   help="only this application of the config (repeatable); the others on the cluster stay as they are")
    p.add_argument("--address", default=None,
                   help="Ray address (default: $RAY_ADDRESS, else the cluster on this machine) or a job-server URL "
                        "http://HEAD:8265 (Serve REST API, Ray token auth as for `threefold submit`)")
    p.add_argument("--status", action="store_true", help="only report the config's applications on the cluster")
    p.add_argument("--shutdown", action="store_true", help="remove the config's (or --app's) applications")
    p.add_argument("--wait", type=float, default=300.0, help="seconds to wait for RUNNING (default 300)")
    p.set_defaults(fn=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    try:
        cfg = load_serve_config(args.config, args.app)
    except ServeConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    names = args.app or [a["name"] for a in cfg["applications"]]
    address = args.address or os.environ.get("RAY_ADDRESS")
    try:
        cluster = Cluster(address, cfg, start=not (args.status or args.shutdown))
        if not args.status:
            cluster.apply(merged(cfg, cluster.details(), names, remove=args.shutdown))
    except Exception as e:  # noqa: BLE001 - no cluster, no Serve, a refused request: say so, exit 2
        print(f"error: Serve on {address or 'the local cluster'}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    if args.shutdown:
        return _gone(cluster, names, args.wait)
    apps = wait(cluster, names, 0 if args.status else args.wait)
    text, ok = describe(apps, names, cluster.host, (cfg.get("http_options") or {}).get("port", 8000))
    print(text)
    return 0 if ok else 1


def _gone(cluster: Cluster, names: list[str], timeout_s: float) -> int:
    """Waits until Serve has deleted the named applications."""
    deadline = time.monotonic() + timeout_s
    while set(names) & set(cluster.details().get("applications") or {}):
        if time.monotonic() > deadline:
            print(f"error: still deleting after {timeout_s:g} s: {', '.join(names)}", file=sys.stderr)
            return 1
        time.sleep(0.5)
    print(f"removed {', '.join(names)}")
    return 0
