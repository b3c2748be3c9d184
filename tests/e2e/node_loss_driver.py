"""Run by tests/e2e/test_node_loss.py in its own process (the pytest process is connected to the shared
e2e cluster and cannot join another): a `ray.cluster_utils.Cluster` with a head (the driver and the
learner) and worker A holding the generators and verifiers (custom resource `rollout_node`). After
step 2, worker B joins and A is removed (its raylet killed, no grace): its generators and verifiers die
with it. The run must complete every step; prints a JSON summary on its last line.

usage: python node_loss_driver.py ASSETS_DIR RUN_DIR"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

STEPS, PROMPTS, SAMPLES = 5, 4, 8


def main(assets: Path, run_dir: Path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from cluster.config import RunConfig
    from cluster.controller import Controller

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    node_a = cluster.add_node(num_cpus=2, resources={"rollout_node": 10})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="threefold", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    on_rollout_node = {"rollout_node": 0.1}
    cfg = RunConfig.model_validate({
        "steps": STEPS, "seed": 11,
        "policy": {"model_dir": str(assets / "model")},
        "data": {"train_path": str(assets / "data/train.jsonl"), "eval_path": str(assets / "data/eval.jsonl")},
        "rollout": {"num_generators": 2, "prompts_per_step": PROMPTS, "samples_per_prompt": SAMPLES},
        "reward": {"verifiers": 2},
        "learner": {"lr": 1e-3},
        "resources": {"generator_cpus": 0.5, "learner_cpus": 0.5, "verifier_cpus": 0.25,
                      "custom": {"generators": on_rollout_node, "verifiers": on_rollout_node},
                      # custom resources are reserved through placement groups; Ray moves a group's
                      # bundles to another node when theirs dies
                      "placement": {"generators": "SPREAD", "verifiers": "SPREAD", "timeout_s": 120}},
        "logging": {"eval_every": STEPS, "eval_size": 16, "parity_every": 1, "progress": False, "rollouts": True},
    })
    ctrl = Controller(cfg, run_dir)
    where = {}

    def nodes_of(actors) -> list[str]:
        return [ray.get(a.__ray_call__.remote(lambda _self: ray.get_runtime_context().get_node_id())) for a in actors]

    class RemoveNodeAfter2:
        def write(self, record):
            if record["step"] == 2 and "before" not in where:
                where["a"] = node_a.node_id
                where["before"] = nodes_of(ctrl.generators + ctrl.router.sources[0].pool.actors)
                node_b = cluster.add_node(num_cpus=2, resources={"rollout_node": 10})
                cluster.wait_for_nodes()
                where["b"] = node_b.node_id
                cluster.remove_node(node_a, allow_graceful=False)

    ctrl.metrics.sinks.append(RemoveNodeAfter2())
    try:
        ctrl.run(progress=False)
        where["after"] = nodes_of(ctrl.generators + ctrl.router.sources[0].pool.actors)
    finally:
        ctrl.shutdown()
        ray.shutdown()
        cluster.shutdown()
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rollouts = [json.loads(x) for x in (run_dir / "rollouts.jsonl").read_text().splitlines()]
    print(json.dumps({"steps": [r["step"] for r in records], "recovery": records[-1]["recovery"],
                      "failures": [r["sources"]["math"]["failures"] for r in records[1:]],
                      "samples": [r["samples"] for r in records[1:]],
                      "ids": {r["step"]: sorted(s["id"] for s in r["samples"]) for r in rollouts},
                      "where": where, "prompts": PROMPTS, "samples_per_prompt": SAMPLES}))


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve())
