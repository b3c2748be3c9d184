"""Issue 12 acceptance: placement on a three-node cluster, and `threefold submit` running a short job there.

The cluster is a head plus two worker nodes, each a separate `ray start --block` process on this machine
with its own temp dir and ports, token authentication on (RAY_AUTH_MODE=token, one RAY_AUTH_TOKEN for all),
so it never meets the in-process cluster the other e2e tests share (conftest.ray_cluster). Worker A carries
the custom resource `verifier_node`, worker B `gpu_box`. The run's placement config pins the generators and
the learner (one STRICT_PACK group) to B and the verifiers (SPREAD) to A; the test asks the cluster's state
API where each actor ran (dead actors keep their node id there), then reads the run's metrics and report
at `--storage`. Every process is stopped by its process id, its process session, or its temp dir (all
under one unique directory), never with `ray stop`, which would stop every Ray cluster on the machine."""
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from cluster import submit_cmd
from cluster.cli import build_parser
from ray_procs import free_ports, kill, pids_matching

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[2]
RAY_CLI = Path(sys.executable).parent / "ray"
STEPS = 2


class Cluster:
    """A head and worker nodes started with `ray start --block`, all under one temp directory."""

    def __init__(self, token: str):
        self.root = tempfile.mkdtemp(prefix="tfmn-", dir="/tmp")  # short: Ray's socket paths live under it
        self.token = token
        self.procs: list[tuple[str, subprocess.Popen, object]] = []
        self.gcs = self.dash = None
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token,
                   PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""))
        self.env = env

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dash}"

    def _start(self, name: str, args: list[str]) -> None:
        temp = Path(self.root) / name
        temp.mkdir()
        node_mgr, obj_mgr, metrics, agent, agent_grpc, rt_agent = free_ports(6)
        cmd = [str(RAY_CLI), "start", "--block", *args, "--node-ip-address", "127.0.0.1",
               "--node-manager-port", str(node_mgr), "--object-manager-port", str(obj_mgr),
               "--metrics-export-port", str(metrics), "--dashboard-agent-listen-port", str(agent),
               "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port", str(rt_agent),
               "--object-store-memory", str(100 * 1024 * 1024), "--temp-dir", str(temp), "--disable-usage-stats"]
        log = open(Path(self.root) / f"{name}.log", "w")
        proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, proc, log))

    def start_head(self, num_cpus: int) -> None:
        self.gcs, self.dash, client = free_ports(3)
        self._start("head", ["--head", "--port", str(self.gcs), "--num-cpus", str(num_cpus),
                             "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                             "--dashboard-port", str(self.dash), "--ray-client-server-port", str(client)])

    def start_worker(self, name: str, num_cpus: int, resources: dict) -> None:
        self._start(name, ["--address", f"127.0.0.1:{self.gcs}", "--num-cpus", str(num_cpus),
                           "--resources", json.dumps(resources)])

    def check_running(self) -> None:
        for name, proc, _ in self.procs:
            if proc.poll() is not None:
                pytest.fail(f"`ray start` of {name} exited with {proc.returncode}:\n"
                            + (Path(self.root) / f"{name}.log").read_text()[-3000:])

    def state(self, kind: str) -> list[dict]:
        """The state API's list of `kind` (nodes, actors), with every detail, through the dashboard."""
        req = urllib.request.Request(f"{self.address}/api/v0/{kind}?detail=1&limit=10000",
                                     headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = json.loads(r.read().decode())
        return body["data"]["result"]["result"]

    def wait_up(self, nodes: int, timeout_s: float = 240) -> list[dict]:
        """Alive nodes once `nodes` are, and the job server answers an authenticated request."""
        deadline, last = time.monotonic() + timeout_s, None
        while True:
            self.check_running()
            try:
                submit_cmd.make_client(self.address, {"Authorization": f"Bearer {self.token}"}).list_jobs()
                alive = [n for n in self.state("nodes") if n["state"] == "ALIVE"]
                if len(alive) >= nodes:
                    return alive
                last = f"{len(alive)} of {nodes} nodes alive"
            except Exception as e:  # noqa: BLE001 - not up yet
                last = e
            if time.monotonic() > deadline:
                pytest.fail(f"the cluster at {self.address} was not up in {timeout_s:g} s: {last}\n"
                            + "\n".join(f"--- {n}.log\n" + (Path(self.root) / f"{n}.log").read_text()[-1500:]
                                        for n, _, _ in self.procs))
            time.sleep(2)

    def stop(self) -> None:
        sessions = {proc.pid for _, proc, _ in self.procs}  # start_new_session: each `ray start` leads one
        for _, proc, _ in reversed(self.procs):  # workers first; `ray start --block` stops its node on SIGTERM
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc, _ in reversed(self.procs):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        time.sleep(2)
        for pid in sessions:
            try:
                os.killpg(pid, signal.SIGKILL)  # whatever is left of the group each `ray start` led
            except ProcessLookupError:
                pass
        kill(pids_matching(self.root, sessions), signal.SIGKILL)  # and what left the group or the session
        for _, _, log in self.procs:
            log.close()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def three_nodes():
    """(cluster, {"head"|"a"|"b": node id}): a head with 1 CPU, worker A (1 CPU, verifier_node) and worker B
    (2 CPUs, gpu_box), one token for all; B holds the generators and learner, A the verifiers."""
    cluster = Cluster(secrets.token_hex(24))
    try:
        cluster.start_head(num_cpus=1)
        cluster.wait_up(1)
        cluster.start_worker("a", num_cpus=1, resources={"verifier_node": 1})
        cluster.start_worker("b", num_cpus=2, resources={"gpu_box": 1})
        alive = cluster.wait_up(3)
        ids = {"head": next(n["node_id"] for n in alive if n["is_head_node"]),
               "a": next(n["node_id"] for n in alive if "verifier_node" in n["resources_total"]),
               "b": next(n["node_id"] for n in alive if "gpu_box" in n["resources_total"])}
        assert len(set(ids.values())) == 3, alive
        yield cluster, ids
    finally:
        cluster.stop()


def test_submit_runs_a_placed_job_on_three_nodes(three_nodes, assets, tmp_path, monkeypatch, capsys):
    from ray.job_submission import JobStatus

    cluster, nodes = three_nodes
    store, run_name = tmp_path / "store", f"multinode-{secrets.token_hex(3)}"
    shipped = yaml.safe_load((ROOT / "deploy" / "runtime_env.yaml").read_text())
    runtime_env = tmp_path / "runtime_env.yaml"  # the shipped one less pip: this box has no package index
    runtime_env.write_text(yaml.safe_dump({"env_vars": shipped["env_vars"], "excludes": shipped["excludes"]}))
    for var in ("RAY_AUTH_MODE", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN", cluster.token)
    assets = assets.resolve()
    sets = [f"policy.model_dir={assets / 'model'}", f"data.train_path={assets / 'data/train.jsonl'}",
            f"data.eval_path={assets / 'data/eval.jsonl'}", f"steps={STEPS}", "rollout.num_generators=2",
            "rollout.prompts_per_step=4", "rollout.samples_per_prompt=4", f"logging.eval_every={STEPS}",
            "logging.eval_size=16", "logging.progress=false", f"logging.run_name={run_name}",
            # one STRICT_PACK group for the generators and the learner, pinned to B; the verifiers to A
            "resources.placement.generators=STRICT_PACK", "resources.placement.learner=STRICT_PACK",
            "resources.placement.verifiers=SPREAD", "resources.placement.timeout_s=120",
            "resources.custom.generators.gpu_box=0.01", "resources.custom.learner.gpu_box=0.01",
            "resources.custom.verifiers.verifier_node=0.01"]
    args = build_parser().parse_args(
        ["submit", str(ROOT / "configs" / "rlvr-arith.yaml"), "--address", cluster.address,
         "--runtime-env", str(runtime_env), "--storage", str(store), *[w for s in sets for w in ("--set", s)]])
    t0 = time.monotonic()
    rc = submit_cmd.cmd_submit(args)
    out, err = capsys.readouterr()
    took = time.monotonic() - t0
    driver = [line for line in out.splitlines() if not line.startswith(("\x1b[36m(", "(", "Loading"))]
    with capsys.disabled():  # for the record: what the job's driver printed (not its actors), and the time
        print(f"\nthreefold submit took {took:.0f} s; the driver's lines:\n  " + "\n  ".join(driver[-15:]))
    assert rc == 0, out[-6000:] + err[-3000:]
    job_id = re.search(r"job id: (raysubmit_\w+)", out).group(1)
    assert f"job {job_id} SUCCEEDED; outputs: {store}/{run_name}" in out
    assert "auth:       token from $RAY_AUTH_TOKEN" in out and cluster.token not in out + err
    client = submit_cmd.make_client(cluster.address, {"Authorization": f"Bearer {cluster.token}"})
    assert client.get_job_status(job_id) == JobStatus.SUCCEEDED
    with pytest.raises(Exception, match="(?i)auth|token|401|unauthori"):  # token authentication is on
        submit_cmd.make_client(cluster.address, {}).get_job_status(job_id)

    # where each actor ran: the state API keeps the run's (now dead) actors with their node ids
    placed: dict[str, list[str]] = {}
    for actor in cluster.state("actors"):
        placed.setdefault(actor["class_name"], []).append(actor["node_id"])
    assert placed.get("RolloutGenerator") == [nodes["b"]] * 2, (placed, nodes)
    assert placed.get("Learner") == [nodes["b"]], (placed, nodes)
    assert placed.get("Verifier") and set(placed["Verifier"]) == {nodes["a"]}, (placed, nodes)

    # the job's outputs at the configured location
    outputs = store / run_name
    records = [json.loads(line) for line in (outputs / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(STEPS + 1))
    assert all(r["response_len"] > 0 and r["tokens_per_s"] > 0 for r in records[1:])
    assert "eval_accuracy" in records[-1]
    report = (outputs / "report.md").read_text()
    assert run_name in report and "held-out greedy score (math)" in report
    assert (outputs / "report.png").stat().st_size > 10_000
    assert (outputs / "checkpoint").is_dir() and any((outputs / "checkpoint").iterdir())
