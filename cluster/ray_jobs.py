"""Reaching a Ray job server: its address, Ray's token authentication, and the job client."""
from __future__ import annotations

import ipaddress
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
ADDRESS_VARS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")  # what Ray's client prefers over its argument
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


class SubmitError(Exception):
    """Nothing was submitted (exit 2); the message says why."""


def resolve_address(address: str | None, env=os.environ) -> str:
    return address or next((env[v] for v in ADDRESS_VARS if env.get(v)), None) or DEFAULT_ADDRESS


def is_local(address: str) -> bool:
    host = urlparse(address if "://" in address else f"http://{address}").hostname or ""
    return host in LOCAL_HOSTS or host == socket.gethostname() or _own_ip(host)


def _own_ip(host: str) -> bool:
    """A literal IP address of this machine (e.g. the node IP a local cluster's GCS listens on)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return False
    try:
        with socket.socket(family) as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


def auth_headers(address: str, env=os.environ, home: Path | None = None) -> tuple[dict, str]:
    """Ray's token authentication for the job server: ({"Authorization": "Bearer …"} or {}, where the
    token came from). Like Ray: the token is $RAY_AUTH_TOKEN, else the file $RAY_AUTH_TOKEN_PATH, else
    ~/.ray/auth_token; the last is sent only with RAY_AUTH_MODE=token or to a cluster on this machine
    (the one `ray start` here protects with it). RAY_AUTH_MODE=disabled sends none."""
    mode = env.get("RAY_AUTH_MODE", "").strip().lower()
    if mode == "disabled":
        return {}, "none (RAY_AUTH_MODE=disabled)"
    token, source = "", ""
    if env.get("RAY_AUTH_TOKEN", "").strip():
        token, source = env["RAY_AUTH_TOKEN"].strip(), "$RAY_AUTH_TOKEN"
    elif env.get("RAY_AUTH_TOKEN_PATH"):
        try:
            token, source = Path(env["RAY_AUTH_TOKEN_PATH"]).read_text().strip(), "$RAY_AUTH_TOKEN_PATH"
        except OSError as e:
            raise SubmitError(f"RAY_AUTH_TOKEN_PATH={env['RAY_AUTH_TOKEN_PATH']}: cannot read it ({e.strerror})") from None
    else:
        default = (home or Path.home()) / ".ray" / "auth_token"
        if default.is_file() and (mode == "token" or is_local(address)):
            token, source = default.read_text().strip(), "~/.ray/auth_token"
    if token:
        return {"Authorization": f"Bearer {token}"}, f"token from {source}"
    if mode == "token":
        raise SubmitError("RAY_AUTH_MODE=token but no token found: export RAY_AUTH_TOKEN (on the head, "
                          "`ray get-auth-token` prints it), or point RAY_AUTH_TOKEN_PATH at a file holding it, "
                          "or put it in ~/.ray/auth_token")
    return {}, "none"


@contextmanager
def env_vars(set_vars: dict, drop=()):
    """os.environ with `set_vars` set and `drop` removed, restored afterwards."""
    saved = {n: os.environ.get(n) for n in (*set_vars, *drop)}
    for n in drop:
        os.environ.pop(n, None)
    os.environ.update(set_vars)
    try:
        yield
    finally:
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


def make_client(address: str, headers: dict):
    from ray.job_submission import JobSubmissionClient

    with env_vars({}, ADDRESS_VARS):  # Ray's client prefers these to its argument; --address must win
        return JobSubmissionClient(address, headers=dict(headers) or None)
