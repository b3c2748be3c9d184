"""Real local Ray cluster, real vLLM engines, real learner: a short RLVR run end to end."""
import json
import math

import pytest
import ray

from cluster.config import RunConfig
from cluster.controller import Controller
from cluster.report import write_report
from cluster.weight_sync import ParityError

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
STEPS = 3


VARIANTS = {
    "grpo": {"algorithm": {"name": "grpo"}},
    # PPO with its critic, adaptive KL in the reward, DAPO dynamic sampling and overlong shaping
    "ppo": {"algorithm": {"name": "ppo", "kl": {"target": 0.05}, "critic": {"lr": 1e-3},
                          "dynamic_sampling": {"enabled": True, "max_rounds": 2},
                          "overlong": {"buffer": 1, "penalty": 0.5}}},
    # the asynchronous pipeline (one step ahead) feeding two data-parallel learners (gloo)
    "grpo-async-2learners": {"algorithm": {"name": "grpo"}, "rollout": {"max_staleness": 1},
                             "resources": {"learners": 2}},
    # weights broadcast in a gloo group of the learner and the engines, sent while the learner trains on
    "grpo-async-broadcast": {"algorithm": {"name": "grpo"}, "rollout": {"max_staleness": 1, "sync_transport": "broadcast"}},
    # two learners that shard the policy's layers with FSDP2 (gloo)
    "grpo-2learners-fsdp2": {"algorithm": {"name": "grpo"}, "resources": {"learners": 2, "learner_sharding": "fsdp2"}},
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def run(request, assets, generators, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp(f"run-{request.param}")
    cfg = RunConfig.model_validate({
        "steps": STEPS,
        "policy": {"model_dir": str(assets / "model")},
        "data": {"train_path": str(assets / "data/train.jsonl"), "eval_path": str(assets / "data/eval.jsonl")},
        "rollout": {"num_generators": 2, "prompts_per_step": 8, "samples_per_prompt": 8,
                    **VARIANTS[request.param].get("rollout", {})},
        "algorithm": VARIANTS[request.param]["algorithm"],
        "resources": VARIANTS[request.param].get("resources", {}),
        "learner": {"lr": 1e-3},
        "logging": {"eval_every": STEPS, "eval_size": 32, "parity_every": 1, "progress": False},
    })
    controller = Controller(cfg, run_dir, generators)
    controller.variant = request.param
    digest0 = ray.get(controller.learner.weights_digest.remote())
    controller.critic_digest0 = ray.get(controller.learner.weights_digest.remote("critic"))
    assert controller.router.sizes() == {"verifiers": 1}
    # what `threefold scale RUN_DIR --verifiers 2` writes; applied before the first step
    (run_dir / "scale.json").write_text('{"verifiers": 2}')
    summary = controller.run(progress=False)
    yield controller, summary, digest0, run_dir
    controller.shutdown()


def test_learner_weights_changed(run):
    controller, _, digest0, _ = run
    assert ray.get(controller.learner.weights_digest.remote()) != digest0
    assert ray.get([ln.get_version.remote() for ln in controller.learners]) == [STEPS] * len(controller.learners)
    # data-parallel learners apply the same summed gradients: their weights stay identical
    assert len({ray.get(ln.weights_digest.remote()) for ln in controller.learners}) == 1
    sharded = ray.get([ln.__ray_call__.remote(lambda self: self.trainer.sharded) for ln in controller.learners])
    assert sharded == [controller.cfg.resources.learner_sharding == "fsdp2"] * len(controller.learners)


def test_every_generator_reports_new_version(run):
    controller, *_ = run
    assert ray.get([g.get_version.remote() for g in controller.generators]) == [STEPS] * 2


def test_parity_holds_after_every_sync(run):
    controller, _, _, run_dir = run
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(STEPS + 1))
    diffs = [r["parity_max_abs_diff"] for r in records]
    assert all(d <= 1e-3 for d in diffs), diffs
    assert controller.sync.check_parity() <= 1e-3


def test_metrics_are_recorded(run):
    controller, summary, _, run_dir = run
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    k = controller.cfg.rollout.max_staleness
    assert k == (1 if controller.variant.startswith("grpo-async") else 0)
    assert {r["pools"]["learner"] for r in records[1:]} == {len(controller.learners)}
    lags = [r["policy_version"] - 1 - r["rollout_version"] for r in records[1:]]
    assert lags == [0] * STEPS if k == 0 else lags == [0] + [1] * (STEPS - 1), lags  # a batch ahead when async
    for r in records[1:]:
        assert r["version_lag"] == r["policy_version"] - 1 - r["rollout_version"]
        assert -0.5 <= r["reward_mean"] <= 1.0 and r["response_len"] > 0 and r["tokens_per_s"] > 0  # ppo: overlong ≥ −0.5
        assert math.isfinite(r["kl"]) and r["entropy"] > 0
        assert all(r[f"time_{p}"] > 0 for p in ("generate", "reward", "learn", "step"))
        assert r["time_sync"] > 0 or k  # asynchronous: the driver does not wait for the loads
        assert r["sync_bytes"] == controller.sync.nbytes > 4 * 1_000_000  # the demo model: ~1.07M fp32 weights
    assert summary["eval_accuracy_end"] == records[-1]["eval_accuracy"]
    report = write_report(run_dir, "e2e", 1.0)
    assert (run_dir / "report.png").stat().st_size > 10_000 and "held-out greedy score (math)" in report.read_text()


def test_verifier_pool_resized_while_running(run):
    controller, _, _, run_dir = run
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["verifiers"] for r in records[1:]] == [2] * STEPS
    done = ray.get([a.info.remote() for a in controller.router.pools()["verifiers"][0].actors])
    assert len(done) == 2


def test_scale_command_writes_request(run, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    _, _, _, run_dir = run
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "scale", str(run_dir), "--verifiers", "3"],
                          cwd=root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and json.loads((run_dir / "scale.json").read_text()) == {"verifiers": 3}
    bad = subprocess.run([sys.executable, "-m", "cluster.cli", "scale", str(tmp_path), "--verifiers", "3"],
                         cwd=root, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a run directory" in bad.stderr


def test_parity_check_catches_wrong_weights(run):
    controller, *_ = run
    from learners.weight_pack import pack, unpack

    state = {k: v.clone() for k, v in unpack(ray.get(controller.learner.export.remote()))}
    state["model.norm.weight"] = state["model.norm.weight"] * 1.05
    ray.get(controller.generators[1].load_weights.remote(pack(state.items()), STEPS))
    with pytest.raises(ParityError, match="generator 1"):
        controller.sync.check_parity()
    controller.sync.push(STEPS)  # restore
    assert controller.sync.check_parity() <= 1e-3


def test_a_sync_is_one_call_per_generator_whatever_the_tensor_count(run):
    controller, *_ = run
    buckets = ray.get(controller.learner.export.remote())
    tensors = sum(len(b.names) for b in buckets)
    assert len(buckets) == 1 and tensors >= 30  # the demo model's 39 tensors travel as one buffer
    loads = lambda: ray.get([g.__ray_call__.remote(lambda self: self.loads) for g in controller.generators])  # noqa: E731
    before = loads()
    controller.sync.push(STEPS)
    assert [b + 1 for b in before] == loads()
    assert controller.sync.check_parity() <= 1e-3
    # the default reload copies into the engine's parameters; the sync_bytes metric is one export
    how = ray.get([g.__ray_call__.remote(lambda self: self.reloaded_by) for g in controller.generators])
    assert how == ["inplace", "inplace"]
    assert controller.sync.nbytes == sum(b.nbytes for b in buckets)


def test_broadcast_moves_the_weights_in_a_group_of_their_own(run):
    controller, *_ = run
    if controller.cfg.rollout.sync_transport != "broadcast":
        pytest.skip("this run syncs through the object store")
    assert controller.sync.formed == 1  # one group for the whole run
    received = ray.get([g.__ray_call__.remote(lambda self: self.llm.collective_rpc(
        lambda worker: sum(b.numel() for b in worker.weight_receiver.buffers))) for g in controller.generators])
    assert received == [[controller.sync.nbytes]] * 2  # each engine's receive buffers hold one export
    backend = ray.get(controller.learner.__ray_call__.remote(lambda self: self.sender.group.backend))
    assert backend == "gloo"


def test_inplace_and_vllm_reloads_load_the_same_weights_and_bf16_moves_half(run):
    controller, *_ = run
    from cluster.weight_sync import ObjectStoreSync
    from learners.weight_pack import pack, unpack

    state = {k: v.clone() for k, v in unpack(ray.get(controller.learner.export.remote()))}
    changed = pack({k: v * 1.1 if "mlp" in k else v for k, v in state.items()}.items())
    g0, g1 = controller.generators
    ray.get([g0.load_weights.remote(changed, STEPS, "inplace"), g1.load_weights.remote(changed, STEPS, "vllm")])
    assert ray.get([g.__ray_call__.remote(lambda self: self.reloaded_by) for g in (g0, g1)]) == ["inplace", "vllm"]
    probe = controller.sync.probe_ids
    a, b = ray.get([g0.probe_logprobs.remote(probe), g1.probe_logprobs.remote(probe)])
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4
    with pytest.raises(ParityError):  # they hold the changed weights, not the learner's
        controller.sync.check_parity()
    half = ObjectStoreSync(controller.learner, controller.generators, probe, 5e-2, "bfloat16")
    assert half.nbytes < 0.55 * controller.sync.nbytes
    half.push(STEPS)
    assert 0 < half.check_parity() <= 5e-2  # rounded to bf16: close to the learner, not equal
    controller.sync.push(STEPS)  # restore
    assert controller.sync.check_parity() <= 1e-5


def test_actors_say_their_role(run):
    """Ray shows an actor's repr on the dashboard and in its log lines."""
    controller, *_ = run
    name = lambda actor: ray.get(actor.__ray_call__.remote(lambda self: repr(self)))  # noqa: E731
    n = len(controller.learners)
    assert [name(ln) for ln in controller.learners] == (["learner"] if n == 1 else
                                                        [f"learner[rank {r}/{n}]" for r in range(n)])
    assert [name(g) for g in controller.generators] == ["generator[seed 0]", "generator[seed 1]"]
    verifiers = [name(a) for a in controller.router.pools()["verifiers"][0].actors]
    assert len(verifiers) == 2 and all(v.startswith("verifier[uids ") for v in verifiers)
    assert len(set(verifiers)) == 2  # each its own uid range


def test_checkpoint_loads_in_transformers_and_matches_learner(run):
    controller, _, _, run_dir = run
    from transformers import AutoModelForCausalLM

    from learners.policy import sequence_logprobs

    model = AutoModelForCausalLM.from_pretrained(run_dir / "checkpoint")
    probe = controller.sync.probe_ids
    expected = ray.get(controller.learner.probe_logprobs.remote(probe))
    assert max(abs(a - b) for a, b in zip(sequence_logprobs(model, probe), expected)) < 1e-5


def test_ppo_trains_its_critic(run):
    controller, _, _, run_dir = run
    if controller.cfg.algorithm.name != "ppo":
        pytest.skip("the critic exists for ppo only")
    from transformers import AutoModelForTokenClassification

    assert controller.critic_digest0 is not None
    assert ray.get(controller.learner.weights_digest.remote("critic")) != controller.critic_digest0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][1:]
    for r in records:
        assert r["value_loss"] > 0 and math.isfinite(r["explained_variance"]) and r["kl_coef"] > 0
        assert r["groups_dropped"] >= 0 and 0 <= r["extra_rounds"] <= 2 and r["samples"] % 8 == 0
    assert records[-1]["kl_coef"] != 0.01  # the adaptive controller moved β
    critic = AutoModelForTokenClassification.from_pretrained(run_dir / "checkpoint" / "critic")
    assert critic.config.num_labels == 1


def test_prometheus_endpoint_has_every_pool_of_the_run(run, prometheus):
    controller, _, _, run_dir = run
    got = prometheus(run_dir.name, ("threefold_pool_size", "threefold_pool_items_per_s"),
                     want={("threefold_steps_total", ()): STEPS, ("threefold_policy_version", ()): STEPS})
    assert got[("threefold_pool_size", (("pool", "generators"),))] == 2
    assert got[("threefold_pool_size", (("pool", "verifiers"),))] == 2  # resized by scale.json before step 1
    assert got[("threefold_pool_size", (("pool", "learner"),))] == len(controller.learners)
    for pool, source in (("generators", ""), ("learner", ""), ("verifiers", "math")):
        assert got[("threefold_pool_items_per_s", (("pool", pool), ("source", source)))] > 0, pool
    assert got[("threefold_steps_total", ())] == STEPS
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][1:]
    assert got[("threefold_samples_total", ())] == sum(r["samples"] for r in records)
    assert got[("threefold_policy_version", ())] == STEPS
    assert got[("threefold_staleness", ())] == controller.cfg.rollout.max_staleness  # the last step's lag
    math = records[-1]["sources"]["math"]  # every sample the source scored in the step (ppo: all rounds)
    rate = ("threefold_source_status_rate", (("pool", "verifiers"), ("source", "math"), ("status", "passed")))
    got = prometheus(run_dir.name, (), want={rate: math["statuses"].get("passed", 0) / math["samples"]})
    assert got[rate] == pytest.approx(math["statuses"].get("passed", 0) / math["samples"])
