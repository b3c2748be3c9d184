"""The Ray side of run control (rules in cluster/control.py): the controller's end of a run's RunControl
actor, and the client's connection for `threefold status` and `threefold scale --run`."""
from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import contextmanager

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from cluster.control import (NAMESPACE, AddressError, RunNameTaken, actor_name, cluster_address, host_port,
                             runs_in, token_env, validate_request)

log = logging.getLogger("threefold.control")
ANSWER_S = 10.0  # how long a client or a starting run waits for a control actor to answer
# For ray.init from the CLI (unless set): give up on a GCS that refuses us (a wrong token) after ~5 s of
# retries, not ~20 s.
CLI_RAY_ENV = {"RAY_gcs_server_port_wait_time_s": "5"}


class ControlError(Exception):
    """The client could not reach the cluster or the run (exit 2); the message says what to check."""


# ---- the controller's end -------------------------------------------------------------------------

class ControlLink:
    """Pushes the run's status and takes scale requests without blocking a step. One take_scale call is
    always in flight; a push or a take collects its answer if it is in (ray.wait with no timeout) and
    sends the next, so a push at the end of a step asks for what the next step's take returns."""

    def __init__(self, actor, status: dict):
        self.actor, self.status, self.alive = actor, dict(status), True
        self._take, self._taken = None, {}  # the call in flight; requests collected, not yet taken

    @classmethod
    def open(cls, status: dict) -> "ControlLink":
        """Start the run's control actor. A leftover of a run that ended (or does not answer) is replaced;
        RunNameTaken when a live run holds the name."""
        from actors.control import RunControl

        run, name = status["run"], actor_name(status["run"])
        for _ in range(50):
            try:
                old = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                old = None
            if old is not None:
                held = read_status(old)
                if held and held.get("state") == "running":
                    raise RunNameTaken(
                        f"run name {run!r} is taken by a live run on this cluster (step {held.get('step')}/"
                        f"{held.get('total_steps')}, run dir {held.get('run_dir')}); set another "
                        f"logging.run_name or let that run end (`threefold status {run}` shows it)")
                ray.kill(old)  # a finished or failed run's leftover
            try:
                actor = RunControl.options(name=name, namespace=NAMESPACE).remote(status)
            except ValueError:  # the leftover's name is not released yet, or another run just took it
                time.sleep(0.1)
                continue
            return cls(actor, status)
        raise RunNameTaken(f"run name {run!r}: its control actor name {name!r} stayed taken")

    def push(self, **fields) -> None:
        fields["updated"] = time.time()
        self.status.update(fields)
        if self.alive:
            self.actor.update.remote(fields)  # ordered after earlier pushes; nothing waits for it
            self._collect(0.0)

    def take(self, timeout: float = 0.0) -> dict[str, int]:
        """The scale requests collected since the last take ({} when none). `timeout`: how long to wait
        for the call in flight (0: whatever has arrived)."""
        if self.alive:
            self._collect(timeout)
        out, self._taken = self._taken, {}
        return out

    def _collect(self, timeout: float) -> None:
        if self._take is None:
            self._take = self.actor.take_scale.remote()
        ready, _ = ray.wait([self._take], timeout=timeout)
        if not ready:
            return
        ref, self._take = self._take, None
        try:
            got = ray.get(ref)
        except RayActorError as e:  # someone killed it: the run goes on without remote control
            log.warning("the run's control actor is gone (%s); `threefold scale --run` no longer reaches it", e)
            self.alive = False
            return
        try:
            self._taken.update(validate_request(got))
        except ValueError as e:
            log.warning("ignoring a scale request: %s", e)
        self._take = self.actor.take_scale.remote()

    def close(self, state: str, error: str | None = None) -> None:
        """Mark the run finished or failed; the actor lives on while the driver does (it is not detached)."""
        self.push(state=state, error=error)
        if not self.alive:
            return
        try:
            ray.get(self.actor.status.remote(), timeout=ANSWER_S)  # the last push arrived
        except (RayActorError, GetTimeoutError):
            pass


# ---- the client's end -----------------------------------------------------------------------------

def _reload_auth_mode() -> None:
    """Ray reads RAY_AUTH_MODE into its config once (at import); re-read it, as ray.init does itself when
    it turns token authentication on for a new local cluster."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):  # another Ray: it reads the environment when connecting
        pass


def use_token(headers: dict) -> None:
    """Hand the token found for a cluster (ray_jobs.auth_headers) to Ray for this process: its own client
    reads it from the environment, and only sends it in token mode."""
    if (auth := token_env(headers)):
        os.environ.update(auth)
        _reload_auth_mode()


def connect(address: str | None, env=os.environ) -> str:
    """ray.init to the cluster at --address / $RAY_ADDRESS / auto, in the threefold namespace; the address
    used. The token comes from where `threefold submit` finds it (cluster/ray_jobs.py)."""
    from cluster.ray_jobs import SubmitError, auth_headers, env_vars

    try:
        addr = cluster_address(address, env)
        headers, _ = auth_headers("127.0.0.1" if addr == "auto" else addr, env)
    except (AddressError, SubmitError) as e:
        raise ControlError(str(e)) from None
    if (hp := host_port(addr)) is not None:  # Ray would retry an address where nothing listens for minutes
        try:
            socket.create_connection(hp, timeout=5).close()
        except OSError as e:
            raise ControlError(f"cannot connect to the Ray cluster at {addr}: nothing answers at {hp[0]}:{hp[1]} "
                               f"({e.strerror or e}); is the cluster running, and is that its GCS port (6379 "
                               "unless `ray start --port` set another) or its Ray client port (ray://, 10001), "
                               "reachable from here?") from None
    use_token(headers)
    quiet = {k: v for k, v in CLI_RAY_ENV.items() if k not in os.environ}
    try:
        with env_vars(quiet, ("RAY_ADDRESS",)):  # ray.init prefers $RAY_ADDRESS to `auto`
            ray.init(address=addr, namespace=NAMESPACE, logging_level=logging.ERROR, log_to_driver=False)
    except Exception as e:  # noqa: BLE001 - Ray's connection errors, shown without a traceback
        from ray.exceptions import AuthenticationError

        if isinstance(e, AuthenticationError):
            hint = ("the cluster refused the token: export RAY_AUTH_TOKEN (`ray get-auth-token` on the head "
                    "prints it) or RAY_AUTH_MODE=token with the token in ~/.ray/auth_token")
        else:
            hint = ("is it running (`ray status` on the head), is the address its GCS address HOST:6379 or "
                    "ray://HOST:10001 (Ray client) and reachable from here, and is the token right if it uses "
                    "token authentication ($RAY_AUTH_TOKEN)?")
        raise ControlError(f"cannot connect to the Ray cluster at {addr}: {type(e).__name__}: {e}\n{hint}") from None
    return addr


def list_runs() -> list[str]:
    return runs_in(ray.util.list_named_actors(all_namespaces=True))


def find(run: str):
    """The run's control actor, or None."""
    try:
        return ray.get_actor(actor_name(run), namespace=NAMESPACE)
    except ValueError:
        return None


def read_status(actor, timeout: float = ANSWER_S) -> dict | None:
    """The actor's status, or None when it does not answer (dead or dying)."""
    try:
        return ray.get(actor.status.remote(), timeout=timeout)
    except (RayActorError, GetTimeoutError):
        return None


def not_found(run: str, address: str) -> ControlError:
    runs = list_runs()
    there = f"runs there: {', '.join(runs)}" if runs else "no threefold run is there"
    return ControlError(f"no run {run!r} on the Ray cluster at {address} ({there}); a run is reachable while "
                        "its driver (`threefold train`) is alive")


@contextmanager
def session(address: str | None):
    """Connected to the cluster for one command (yields the address used); disconnects after."""
    used = connect(address)
    try:
        yield used
    finally:
        ray.shutdown()


def answering(run: str, address: str) -> tuple[object, dict]:
    """The run's control actor and its status; ControlError when it is not there or does not answer."""
    actor = find(run)
    if actor is None:
        raise not_found(run, address)
    status = read_status(actor)
    if status is None:
        raise ControlError(f"run {run!r} on the Ray cluster at {address} does not answer (its driver just ended?)")
    return actor, status
