"""rollout.dtype bfloat16: a real vLLM engine of the run's own computes in bf16 from the fp32
learner's synced weights, parity holds within the widened default and the loop trains."""
import json

import pytest
import ray

from cluster.config import RunConfig
from cluster.controller import Controller

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
STEPS = 3


def engine_dtype(generator) -> str:
    """The dtype of the engine's parameters, read inside its worker."""
    def read(actor):
        return actor.llm.collective_rpc(lambda w: str(next(w.model_runner.get_model().parameters()).dtype))[0]
    return ray.get(generator.__ray_call__.remote(read))


@pytest.fixture(scope="module")
def bf16_run(assets, ray_cluster, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run-bf16")
    cfg = RunConfig.model_validate({
        "steps": STEPS,
        "policy": {"model_dir": str(assets / "model")},
        "data": {"train_path": str(assets / "data/train.jsonl"), "eval_path": str(assets / "data/eval.jsonl")},
        "rollout": {"num_generators": 1, "prompts_per_step": 8, "samples_per_prompt": 8, "dtype": "bfloat16",
                    "max_staleness": 1},
        "learner": {"lr": 1e-3},
        "logging": {"eval_every": STEPS, "eval_size": 32, "parity_every": 1, "progress": False},
    })
    controller = Controller(cfg, run_dir)  # engines of its own: the shared ones run in float32
    digest0 = ray.get(controller.learner.weights_digest.remote())
    summary = controller.run(progress=False)
    yield controller, summary, digest0, run_dir
    controller.shutdown()


def test_the_engine_computes_in_bf16_from_the_learners_fp32_weights(bf16_run):
    controller, _, digest0, _ = bf16_run
    assert engine_dtype(controller.generators[0]) == "torch.bfloat16"
    assert ray.get(controller.learner.weights_digest.remote()) != digest0
    assert ray.get(controller.generators[0].get_version.remote()) == STEPS
    assert controller.sync.tol == 0.1  # logging.parity_tol unset: the default for bf16 engines


def test_parity_after_every_sync_shows_bf16_rounding_within_the_default(bf16_run):
    controller, _, _, run_dir = bf16_run
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    diffs = [r["parity_max_abs_diff"] for r in records]
    assert len(diffs) == STEPS + 1
    # bf16 rounding is visible (an fp32 engine agrees within 1e-5) and far below the tolerance
    assert all(1e-4 < d <= 0.1 for d in diffs), diffs
    assert all(0.0 <= r["reward_mean"] <= 1.0 and r["samples"] == 64 for r in records[1:])
    first = records[1]  # trained on the first batch, sampled from the same weights: the ratio to the
    assert first["rollout_version"] == 0  # bf16 behaviour log-probs differs from 1 by rounding only
    assert abs(first["ratio_mean"] - 1.0) < 0.05 and first["clip_frac_low"] + first["clip_frac_high"] < 0.1, first


def test_behaviour_logprobs_agree_with_the_learner_within_bf16_rounding(bf16_run):
    controller, *_ = bf16_run
    gen = controller.generators[0]
    batch = ray.get(gen.generate.remote(controller.eval_rows[:4], 4, 1.0, 4))
    ids = [p + r for p, r in zip(batch.prompt_ids, batch.response_ids)]
    worst = 0.0
    for seq, resp, got in zip(ids, batch.response_ids, batch.behaviour_logprobs):
        want = ray.get(controller.learner.probe_logprobs.remote(seq))[-len(resp):]
        worst = max(worst, max(abs(a - b) for a, b in zip(want, got)))
    assert 1e-5 < worst < 0.25, worst
