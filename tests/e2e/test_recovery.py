"""Kill tests on a real local Ray cluster during real runs: a generator, a verifier and a judge actor
killed mid-step, then the learner. Every step completes and the rollout record holds every expected
sample exactly once. The judge endpoint is the scripted OpenAI-compatible test double (tests/doubles);
the kills are real `ray.kill`s of the run's actors."""
import json

import pytest
import ray
import yaml

from cluster.config import RunConfig
from cluster.controller import Controller
from tests.doubles.judge_helpers import config as judge_config, prefers
from tests.doubles.openai_double import OpenAIDouble

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
PROMPTS, SAMPLES = 4, 8


def run_config(assets, tmp_path, steps: int, sources: list | None = None, **extra) -> RunConfig:
    return RunConfig.model_validate({
        # seed 0: a generator replaced here goes back into the shared fixture's list, and its label
        # (generator[seed 0 + rank]) must stay what the other e2e tests expect
        "steps": steps, "seed": 0,
        "policy": {"model_dir": str(assets / "model")},
        "data": {"train_path": str(assets / "data/train.jsonl"), "eval_path": str(assets / "data/eval.jsonl")},
        "rollout": {"num_generators": 2, "prompts_per_step": PROMPTS, "samples_per_prompt": SAMPLES},
        "reward": {"sources": sources or [{"name": "math", "type": "math"}], "verifiers": 2,
                   "eval": [{"name": "gold", "type": "math"}]},
        "learner": {"lr": 1e-3},
        "logging": {"eval_every": steps, "eval_size": 16, "parity_every": 1, "progress": False, "rollouts": True,
                    "output_dir": str(tmp_path)},
        **extra,
    })


def lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def assert_every_sample_once(run_dir, steps: int) -> None:
    record = lines(run_dir / "rollouts.jsonl")
    assert [r["step"] for r in record] == list(range(1, steps + 1))
    for r in record:  # step s trains on draws (s-1)·P … s·P−1, each with samples 0…G−1, once each
        first = (r["step"] - 1) * PROMPTS
        want = sorted((d, j) for d in range(first, first + PROMPTS) for j in range(SAMPLES))
        assert sorted(tuple(s["id"]) for s in r["samples"]) == want, r["step"]


def test_generator_verifier_and_judge_killed_mid_step(assets, generators, tmp_path):
    with OpenAIDouble(prefers("1")) as judge_double:
        judges = tmp_path / "judges.yaml"
        judges.write_text(yaml.safe_dump(judge_config(judge_double.base_url, "m", pool={"size": 1, "num_cpus": 0.1})
                                         .model_dump(mode="json")))
        cfg = run_config(assets, tmp_path, 4, [{"name": "math", "type": "math"},
                                               {"name": "judge", "type": "judge", "judges": str(judges),
                                                "judge_mode": "group", "weight": 0.1}])
        ctrl = Controller(cfg, tmp_path / "kills", generators)
        math_src, judge_src = ctrl.router.sources
        killed = {}
        queue, score = ctrl.pipeline.queue, ctrl.router.score

        def queue_then_kill(step, *a):  # step 2's generation is in flight on generator 1: kill it
            queue(step, *a)
            if step == 2 and "generator" not in killed:
                killed["generator"] = ctrl.generators[1]
                ray.kill(ctrl.generators[1])

        def kill_then_score(*a, **kw):  # the first shard of step 3 reaches dead reward actors
            if ctrl.pipeline.sampler.drawn >= 3 * PROMPTS and "verifier" not in killed:
                killed["verifier"], killed["judge"] = math_src.pool.actors[0], judge_src.pool.actors[0]
                ray.kill(killed["verifier"])
                ray.kill(killed["judge"])
            return score(*a, **kw)

        ctrl.pipeline.queue, ctrl.router.score = queue_then_kill, kill_then_score
        try:
            ctrl.run(progress=False)
        finally:
            ctrl.shutdown()
    assert set(killed) == {"generator", "verifier", "judge"}
    assert killed["generator"] not in ctrl.generators and killed["verifier"] not in math_src.pool.actors
    assert killed["judge"] not in judge_src.pool.actors
    steps = lines(tmp_path / "kills" / "metrics.jsonl")
    assert [r["step"] for r in steps] == [0, 1, 2, 3, 4]
    last = steps[-1]["recovery"]
    assert last["generator_restarts"] == 1 and last["samples_redone"] >= PROMPTS // 2 * SAMPLES
    for r in steps[1:]:  # no sample lost to a failure: the dead actors' work was redone
        assert r["sources"]["math"]["failures"] == 0 and r["sources"]["judge"]["failures"] == 0, r["step"]
        assert r["samples"] == PROMPTS * SAMPLES
    assert math_src.pool.replaced >= 1
    assert_every_sample_once(tmp_path / "kills", 4)
    assert max(r["parity_max_abs_diff"] for r in steps) <= 1e-3  # the replacement got the current weights


def test_a_killed_learner_restarts_from_its_checkpoint(assets, generators, tmp_path):
    cfg = run_config(assets, tmp_path, 5, checkpoint={"every": 2})
    run_dir = tmp_path / "learner"
    ctrl = Controller(cfg, run_dir, generators)
    seen = {}

    class KillAfter3:
        def write(self, record):
            if record["step"] == 3 and "step3" not in seen:
                seen["step3"] = lines(run_dir / "rollouts.jsonl")[2]
                seen["learner"] = ctrl.learner
                ray.kill(ctrl.learner)

    ctrl.metrics.sinks.append(KillAfter3())
    try:
        ctrl.run(progress=False)
        assert ray.get(ctrl.learner.get_version.remote()) == 5 and ctrl.learner is not seen["learner"]
    finally:
        ctrl.shutdown()
    steps = lines(run_dir / "metrics.jsonl")
    assert [r["step"] for r in steps] == [0, 1, 2, 3, 4, 5]  # step 3 replayed, recorded once
    assert steps[-1]["recovery"]["learner_restarts"] == 1 and steps[-1]["recovery"]["steps_replayed"] == 1
    assert_every_sample_once(run_dir, 5)
    replayed = lines(run_dir / "rollouts.jsonl")[2]
    assert replayed["samples"] == seen["step3"]["samples"]  # the same tokens, from the checkpoint's state
