"""Reward pools on Ray Serve during a real training run: load on the verifier application scales
it up and, once the load stops, back down (replica counts read from Serve's status), while the
judge application keeps its one replica and a run that scores through both apps completes.

The judge app reaches a real vLLM server (the demo policy, structured to end with a verdict)."""
import json
import socket
import threading
import time
from pathlib import Path

import pytest
import ray
import yaml
from ray import serve

from cluster.cli import main
from cluster.config import RunConfig
from cluster.controller import Controller
from cluster.judge_servers import start_served, stop_served
from rewards.judge.config import EnsembleConfig

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[2]
STEPS = 8
VERDICT = r"[0-9]{1,3}\nVerdict: \[\[(A|B|tie)\]\]"
SLOW = {"kind": "code", "program": "import time\ntime.sleep(6)\ndef add(a, b):\n    return a + b\n",
        "tests": {"type": "function", "entry_point": "add", "cases": [{"args": [1, 2], "expected": 3}]},
        "limits": {"timeout_s": 60}}


def running(app: str) -> int:
    """RUNNING replicas, from Serve's status details. Not serve.status(): the run's thread calls that
    for its pool sizes, and two threads in serve.status() at once trip over Ray's pickling registry."""
    return len(replica_ids(app))


def replica_ids(app: str) -> set[str]:
    found = serve.context._get_global_client().get_serve_details()["applications"].get(app)
    deps = found["deployments"] if found else {}
    return {r["replica_id"] for d in deps.values() for r in d["replicas"] if r["state"] == "RUNNING"}


def app(cfg: dict, name: str) -> dict:
    return next(a for a in cfg["applications"] if a["name"] == name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def apps(ray_cluster, assets, tmp_path_factory):
    """The verifier and judge applications of deploy/serve.yaml, sized for this box, on the shared cluster."""
    tmp = tmp_path_factory.mktemp("serve-run")
    (tmp / "chat.jinja").write_text("{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    served = EnsembleConfig.model_validate({"judges": [{
        "name": "policy", "model": "judge", "max_tokens": 24, "max_concurrency": 16,
        "extra_body": {"structured_outputs": {"regex": VERDICT}},
        "serve": {"model_dir": str(assets / "model"), "max_model_len": 64, "dtype": "float32",
                  "chat_template": str(tmp / "chat.jinja"), "num_cpus": 0.3}}]})
    with_url, servers = start_served(served)
    judges = {"pairwise_template": "{response_a}\n{response_b}\n{prompt}", "retry": {"max_retries": 1},
              "judges": [{k: v for k, v in with_url.judges[0].model_dump(mode="json").items() if k != "serve"}]}
    (tmp / "judges.yaml").write_text(yaml.safe_dump(judges))
    cfg = yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text())
    cfg["http_options"] = {"host": "127.0.0.1", "port": free_port()}
    cfg["applications"] = [a for a in cfg["applications"] if a["name"] in ("verifiers", "judges")]
    verifier = app(cfg, "verifiers")["deployments"][0]
    verifier["autoscaling_config"] = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2,
                                      "upscale_delay_s": 1, "downscale_delay_s": 2, "look_back_period_s": 2}
    verifier["graceful_shutdown_timeout_s"] = 1
    app(cfg, "verifiers")["args"]["sandbox_slots"] = 4
    judge = app(cfg, "judges")
    judge["args"] = {"judges": str(tmp / "judges.yaml"), "share": 2}
    # autoscaled too, but the run's judging stays far below its target: any change would come from elsewhere
    judge["deployments"][0]["autoscaling_config"].update(min_replicas=1, max_replicas=2, target_ongoing_requests=64)
    judge["deployments"][0]["max_ongoing_requests"] = 128
    for a in cfg["applications"]:
        a["deployments"][0]["ray_actor_options"] = {"num_cpus": 0.25}  # no verifier_node/judge_node here
    path = tmp / "serve.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["serve", str(path), "--wait", "240"]) == 0
    yield tmp
    serve.shutdown()
    stop_served(servers)


def test_verifier_app_scales_up_and_down_under_a_run_while_the_judge_app_stays(apps, assets, generators):
    rows = [json.loads(x) for x in (assets / "data" / "train.jsonl").read_text().splitlines()[:64]]
    (apps / "train.jsonl").write_text("".join(json.dumps({**r, "reference": r["answer"]}) + "\n" for r in rows))
    cfg = RunConfig.model_validate({
        "steps": STEPS, "policy": {"model_dir": str(assets / "model")},
        "data": {"train_path": str(apps / "train.jsonl"), "eval_path": str(assets / "data" / "eval.jsonl")},
        "rollout": {"num_generators": 2, "prompts_per_step": 4, "samples_per_prompt": 4},
        "reward": {"sources": [{"name": "math", "type": "math", "serve_app": "verifiers", "weight": 0.5},
                               {"name": "judges", "type": "judge", "serve_app": "judges", "judge_mode": "reference",
                                "weight": 0.5}],
                   "eval": [{"name": "gold", "type": "math", "serve_app": "verifiers"}]},
        "learner": {"lr": 1e-3},
        "logging": {"eval_every": STEPS, "eval_size": 16, "parity_every": STEPS, "progress": False},
    })
    controller = Controller(cfg, apps / "run", generators)
    outcome = {}
    run = threading.Thread(target=lambda: outcome.update(summary=controller.run(progress=False)), daemon=True)
    try:
        assert (running("verifiers"), running("judges")) == (1, 1)
        judge_replica = replica_ids("judges")
        run.start()
        handle = serve.get_app_handle("verifiers")
        judges_seen, t0 = {running("judges")}, time.monotonic()
        load = [handle.verify.remote([{**SLOW, "id": i}]) for i in range(8)]  # 8 in flight: 2 replicas wanted
        while running("verifiers") < 2 and time.monotonic() - t0 < 90:
            judges_seen.add(running("judges"))
            time.sleep(0.5)
        up_s, alive_at_upscale = time.monotonic() - t0, run.is_alive()
        assert running("verifiers") == 2, f"no upscale in {up_s:.0f} s"
        assert all(r.result(timeout_s=120)[0]["status"] == "passed" for r in load)
        t1 = time.monotonic()
        while running("verifiers") > 1 and time.monotonic() - t1 < 120:
            judges_seen.add(running("judges"))
            time.sleep(0.5)
        down_s = time.monotonic() - t1
        assert running("verifiers") == 1, f"no downscale {down_s:.0f} s after the load stopped"
        print(f"verifiers: up to 2 replicas in {up_s:.1f} s, back to 1 in {down_s:.1f} s after the load")
        run.join(timeout=600)
        judges_seen.add(running("judges"))
        assert judges_seen == {1}  # the judge app never changed while the verifiers scaled
        assert replica_ids("judges") == judge_replica  # nor restarted
        assert alive_at_upscale, "the run had ended before the verifiers scaled: nothing was shown"
        assert ray.get(controller.learner.get_version.remote()) == STEPS
    finally:
        run.join(timeout=600)
        controller.shutdown()
    assert "summary" in outcome, "the run did not finish"
    recs = [json.loads(x) for x in (apps / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(STEPS + 1))
    for r in recs[1:]:
        m, j = r["sources"]["math"], r["sources"]["judges"]
        assert m["samples"] == j["samples"] == r["samples"] == 16 and m["failures"] == 0
        assert j["calls"] > 0 and set(j["statuses"]) <= {"judged", "abstain"}
