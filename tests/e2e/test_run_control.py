"""Run control through Ray on a real local cluster: a run's control actor started the way the controller
starts it, read and asked to scale by `threefold status` / `threefold scale --run` in separate processes
(through the cluster's GCS address, with the token this cluster was started with), and the controller's
apply_scaling merging those requests with RUN_DIR/scale.json."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import ray

from cluster.control import NAMESPACE, RunNameTaken, actor_name, initial_status, pool_sizes
from cluster.control_link import ControlLink

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).parent / "threefold"


def threefold(*argv, env_drop=("RAY_ADDRESS", "RAY_AUTH_MODE"), **env_set) -> subprocess.CompletedProcess:
    """The installed command in a fresh process. RAY_AUTH_MODE is dropped: the token must come from
    threefold's own lookup (~/.ray/auth_token for a cluster on this machine), as on a user's shell."""
    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    env.update(env_set, PYTHONPATH=str(ROOT))
    cmd = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "cluster.cli"]
    with tempfile.TemporaryDirectory() as elsewhere:  # another working directory: no run directory in reach
        return subprocess.run(cmd + list(argv), cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def gcs(ray_cluster):
    return ray.get_runtime_context().gcs_address


def open_run(name: str, **fields) -> ControlLink:
    link = ControlLink.open(initial_status(name, 10, f"/runs/{name}", f"s3://bucket/tf/{name}", {}))
    if fields:
        link.push(**fields)
    ray.get(link.actor.status.remote())  # the push is in (calls from one caller run in order) before others read
    return link


def takes(link: ControlLink, n: int = 4) -> list[dict]:
    """What n takes return, each waiting for the call in flight (as a step would, given time)."""
    return [got for _ in range(n) if (got := link.take(timeout=10))]


def test_status_and_scale_from_another_process(gcs):
    link = open_run("ctl-e2e", step=3, policy_version=3, samples_per_s=21.5, eval_accuracy=0.625, eval_step=3,
                    pools=pool_sizes({"verifiers": 2, "generators": 2}))
    try:
        got = threefold("status", "ctl-e2e", "--address", gcs, "--json")
        assert got.returncode == 0, got.stderr
        s = json.loads(got.stdout)
        assert (s["run"], s["state"], s["step"], s["total_steps"], s["policy_version"]) == (
            "ctl-e2e", "running", 3, 10, 3)
        assert s["pools"] == {"generators": 2, "verifiers": 2, "judges": 0, "rm": 0}
        assert (s["eval_accuracy"], s["eval_step"], s["samples_per_s"]) == (0.625, 3, 21.5)
        assert (s["run_dir"], s["storage"]) == ("/runs/ctl-e2e", "s3://bucket/tf/ctl-e2e")

        table = threefold("status", "ctl-e2e", "--address", gcs)
        assert table.returncode == 0, table.stderr
        assert "step           3 / 10" in table.stdout and "held-out       62.5% (step 3)" in table.stdout

        listed = threefold("status", "--address", gcs, "--json")
        assert listed.returncode == 0 and json.loads(listed.stdout)["ctl-e2e"]["step"] == 3

        assert takes(link, 1) == []  # nothing requested yet
        asked = threefold("scale", "--run", "ctl-e2e", "--verifiers", "3", "--address", gcs)
        assert asked.returncode == 0, asked.stderr
        assert "requested verifiers=3 for run ctl-e2e" in asked.stdout
        assert takes(link) == [{"verifiers": 3}]  # exactly once

        no_pool = threefold("scale", "--run", "ctl-e2e", "--judges", "2", "--address", gcs)
        assert no_pool.returncode == 2 and "has no judges pool" in no_pool.stderr
        missing = threefold("status", "no-such-run", "--address", gcs)
        assert missing.returncode == 2 and f"no run 'no-such-run' on the Ray cluster at {gcs}" in missing.stderr
        assert "ctl-e2e" in missing.stderr  # the runs that are there
        assert takes(link) == []  # the refused request left nothing
    finally:
        link.close("finished")
    done = threefold("scale", "--run", "ctl-e2e", "--verifiers", "1", "--address", gcs)
    assert done.returncode == 2 and "has finished" in done.stderr


def test_wrong_token_or_no_cluster_exits_2(gcs):
    open_run("ctl-auth").close("finished")
    wrong = threefold("status", "--address", gcs, RAY_AUTH_TOKEN="not-the-token")
    assert wrong.returncode == 2 and f"cannot connect to the Ray cluster at {gcs}" in wrong.stderr
    assert "not-the-token" not in wrong.stdout + wrong.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    t0 = time.monotonic()
    nobody = threefold("status", "--address", f"127.0.0.1:{port}")
    assert nobody.returncode == 2 and f"cannot connect to the Ray cluster at 127.0.0.1:{port}" in nobody.stderr
    assert time.monotonic() - t0 < 90
    dashboard = threefold("status", "--address", "http://127.0.0.1:8265")
    assert dashboard.returncode == 2 and "job server (dashboard) address" in dashboard.stderr


def test_live_name_is_refused_and_a_leftover_replaced(ray_cluster):
    first = open_run("ctl-dup", step=4)
    with pytest.raises(RunNameTaken, match=r"'ctl-dup' is taken by a live run .*\(step 4/10"):
        open_run("ctl-dup")
    first.close("failed", "RuntimeError: boom")
    second = open_run("ctl-dup")
    try:
        held = ray.get(ray.get_actor(actor_name("ctl-dup"), namespace=NAMESPACE).status.remote())
        assert (held["state"], held["step"], held["error"]) == ("running", 0, None)
        # the old link notices its actor is gone (at the latest when the take sent after the kill fails)
        assert first.take(timeout=10) == {} and first.take(timeout=10) == {} and not first.alive
    finally:
        second.close("finished")


class FakeRouter:
    def __init__(self):
        self.pools, self.calls = {"verifiers": 1, "rm": 1}, []

    def sizes(self):
        return dict(self.pools)

    def resize(self, key, size):
        self.calls.append((key, size))
        self.pools[key] = size

    def serve_apps(self):
        return {}  # no pool here is a Serve application


def test_controller_merges_scale_file_and_actor_requests(ray_cluster, tmp_path):
    from cluster.controller import Controller

    c = Controller.__new__(Controller)  # only what apply_scaling uses: no engines, no learner
    c.run_dir, c.router, c.scale_seen, c.generators = tmp_path, FakeRouter(), {}, [object()]
    c.control = open_run("ctl-merge")
    actor = ray.get_actor(actor_name("ctl-merge"), namespace=NAMESPACE)
    try:
        def steps(until, extra: int = 10):
            """apply_scaling and a push, as around each step, until `until` was applied, then `extra` more."""
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and until not in c.router.calls:
                c.apply_scaling()
                c.control.push(step=1)
                time.sleep(0.02)
            for _ in range(extra):
                c.apply_scaling()
                c.control.push(step=2)
                time.sleep(0.02)

        (tmp_path / "scale.json").write_text('{"verifiers": 2}')
        ray.get(actor.request_scale.remote({"rm": 4}))
        steps(("rm", 4))
        assert c.router.calls == [("verifiers", 2), ("rm", 4)]  # each once
        ray.get(actor.request_scale.remote({"verifiers": 5}))
        steps(("verifiers", 5))  # the unchanged scale.json (verifiers 2) never undoes the later request
        assert c.router.calls == [("verifiers", 2), ("rm", 4), ("verifiers", 5)]
        (tmp_path / "scale.json").write_text('{"verifiers": 2, "rm": 4}')  # changed: its new entries apply
        steps(("rm", 4), extra=3)
        assert c.router.calls == [("verifiers", 2), ("rm", 4), ("verifiers", 5), ("rm", 4)]
        assert c.pool_sizes() == {"generators": 1, "verifiers": 5, "judges": 0, "rm": 4}
    finally:
        c.control.close("finished")
