"""RLHF and a hybrid run end to end on a real local Ray cluster with real vLLM engines:
annotated pairs → reward model → PPO against the scorer pool; and one run whose rows are routed
to the verifier and the reward model by kind."""
import json
import math

import pytest
import ray

from cluster.config import RunConfig
from cluster.controller import Controller
from cluster.rlhf_demo import PrefRecipe, build_preferences, round_number_utility
from learners.preference_data import load_pairs
from learners.reward_model import RMTrainSettings, save, train_reward_model
from rewards.rm.scorer import RMScorer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
STEPS = 3


@pytest.fixture(scope="module")
def rm_dir(assets):
    prefs = build_preferences(assets, PrefRecipe(train_prompts=400))
    train, held = load_pairs(prefs / "train.jsonl").pairs, load_pairs(prefs / "eval.jsonl").pairs
    settings = RMTrainSettings(steps=80, lr=1e-3, eval_every=40, max_length=64)
    model, tok, history = train_reward_model(assets / "model", train, held, settings)
    assert history[-1]["held_out_accuracy"] >= 0.8  # even 80 steps learn the annotators' taste
    return save(model, tok, assets / "rm", settings, {"held_out_accuracy": history[-1]["held_out_accuracy"]})


def records(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def make_run(assets, generators, run_dir, reward: dict, data: tuple[str, str], algorithm: dict):
    cfg = RunConfig.model_validate({
        "steps": STEPS,
        "policy": {"model_dir": str(assets / "model")},
        "data": {"train_path": str(assets / data[0]), "eval_path": str(assets / data[1])},
        "rollout": {"num_generators": 2, "prompts_per_step": 8, "samples_per_prompt": 8},
        "reward": reward, "algorithm": algorithm, "learner": {"lr": 1e-3},
        "logging": {"eval_every": STEPS, "eval_size": 32, "parity_every": 1, "progress": False},
    })
    return Controller(cfg, run_dir, generators)


@pytest.fixture(scope="module")
def rlhf(assets, generators, rm_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("rlhf")
    reward = {"sources": [{"name": "rm", "type": "rm", "model_dir": str(rm_dir), "scorers": 1, "batch_size": 16}],
              "eval": [{"name": "gold", "type": "rule", "function": "cluster.rlhf_demo:round_number_utility"}]}
    algo = {"name": "ppo", "kl": {"coef": 1.0, "target": 0.1}, "critic": {"lr": 1e-3}}
    controller = make_run(assets, generators, run_dir, reward, ("data/train.jsonl", "data/eval.jsonl"), algo)
    (run_dir / "scale.json").write_text('{"rm": 2}')  # what `threefold scale RUN_DIR --rm 2` writes
    summary = controller.run(progress=False)
    yield controller, summary, run_dir
    controller.shutdown()


def test_rlhf_run_trains_against_the_scorer_pool(rlhf):
    controller, summary, run_dir = rlhf
    recs = records(run_dir)
    assert [r["step"] for r in recs] == list(range(STEPS + 1))
    for r in recs[1:]:
        assert r["rm"] == 2 and r["samples"] == 64  # the pool was resized before step 1
        src = r["sources"]["rm"]
        assert src["samples"] == 64 and src["statuses"] == {"scored": 64} and src["failures"] == 0
        assert src["weighted_sum"] == pytest.approx(r["reward_mean"] * 64, rel=1e-6, abs=1e-6)
        assert math.isfinite(r["kl"]) and r["value_loss"] > 0 and "accuracy" not in r
        assert r["parity_max_abs_diff"] <= 1e-3
    assert ray.get(controller.learner.get_version.remote()) == STEPS
    assert 0.0 <= summary["eval_accuracy_end"] <= 1.0 and summary["eval_sources"] == "gold"


def test_prometheus_endpoint_has_the_rm_pool(rlhf, prometheus):
    _, _, run_dir = rlhf
    mean = ("threefold_source_mean", (("pool", "rm"), ("source", "rm")))
    last = records(run_dir)[-1]["sources"]["rm"]["mean"]
    got = prometheus(run_dir.name, ("threefold_pool_size", "threefold_pool_items_per_s"), want={mean: last})
    assert got[("threefold_pool_size", (("pool", "rm"),))] == 2
    assert got[("threefold_pool_items_per_s", (("pool", "rm"), ("source", "rm")))] > 0
    assert got[mean] == pytest.approx(last)  # the last step's value, not an earlier one


def test_rm_scores_in_the_loop_match_offline_scoring_and_gold_is_the_hidden_preference(rlhf, rm_dir):
    controller, _, _ = rlhf
    batch, info = controller.sample_scored(4)
    prompts = [m["prompt"] for m in batch.metadata]
    offline = RMScorer(rm_dir).score(prompts, batch.texts)
    assert batch.rewards == pytest.approx([o.score for o in offline], abs=1e-4)
    assert all(d == {"rm": {"score": pytest.approx(r, abs=1e-9), "status": "scored"}}
               for d, r in zip(batch.reward_detail, batch.rewards))
    assert len({round(r, 3) for r in batch.rewards}) > 1
    # the gold metric is the hidden preference on greedy answers, not the reward model
    texts = ray.get(controller.generators[0].greedy.remote([r["prompt"] for r in controller.eval_rows], 4))
    gold = sum(round_number_utility(r["prompt"], t) for r, t in zip(controller.eval_rows, texts)) / len(texts)
    assert controller.evaluate() == pytest.approx(gold, abs=1e-9)  # two engines, same weights: same greedy answers


@pytest.fixture(scope="module")
def hybrid(assets, generators, rm_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("hybrid")
    reward = {"sources": [{"name": "exact", "type": "math", "kinds": ["math"]},
                          {"name": "style", "type": "rm", "kinds": ["style"], "model_dir": str(rm_dir), "normalize": True}],
              "eval": [{"name": "exact", "type": "math", "kinds": ["math"]},
                       {"name": "style-gold", "type": "rule", "kinds": ["style"],
                        "function": "cluster.rlhf_demo:round_number_utility"}]}
    controller = make_run(assets, generators, run_dir, reward, ("rlhf/hybrid_train.jsonl", "rlhf/hybrid_eval.jsonl"),
                          {"name": "grpo"})
    controller.run(progress=False)
    yield controller, run_dir
    controller.shutdown()


def test_hybrid_routes_each_sample_to_the_source_of_its_kind(hybrid):
    controller, _ = hybrid
    batch, _ = controller.sample_scored(8)
    kinds = {m["kind"] for m in batch.metadata}
    assert kinds == {"math", "style"}  # the sampler mixes both kinds
    for meta, text, detail, reward in zip(batch.metadata, batch.texts, batch.reward_detail, batch.rewards):
        if meta["kind"] == "math":
            assert set(detail) == {"exact"}
            digits = text.strip()
            correct = digits.isdigit() and int(digits) == int(meta["answer"])
            assert reward == (1.0 if correct else 0.0) and (detail["exact"]["status"] == "passed") == correct
        else:
            assert set(detail) == {"style"} and detail["style"]["status"] == "scored" and reward == detail["style"]["score"]


def test_hybrid_per_source_metrics_add_up(hybrid):
    _, run_dir = hybrid
    recs = records(run_dir)[1:]
    assert len(recs) == STEPS
    for r in recs:
        exact, style = r["sources"]["exact"], r["sources"]["style"]
        assert exact["samples"] + style["samples"] == r["samples"] == 64
        assert exact["samples"] > 0 and style["samples"] > 0
        assert exact["weighted_sum"] + style["weighted_sum"] == pytest.approx(r["reward_mean"] * 64, abs=1e-6)
        assert sum(exact["statuses"].values()) == exact["samples"] and style["statuses"] == {"scored": style["samples"]}
        assert exact["mean"] == pytest.approx(exact["statuses"].get("passed", 0) / (exact["samples"] - exact["failures"]))
        assert "norm_mean" in style and style["norm_std"] > 0
        assert r["verifiers"] == 1 and r["rm"] == 1
    final = records(run_dir)[-1]
    assert set(final["eval_by_source"]) == {"exact", "style-gold"}
    assert all(0.0 <= v <= 1.0 for v in final["eval_by_source"].values())
    from cluster.report import write_report

    text = write_report(run_dir, "hybrid", 1.0, "exact, style-gold").read_text()
    for name, kind in (("exact", "math"), ("style", "rm")):
        assert f"| {name} | {kind} | {sum(r['sources'][name]['samples'] for r in recs)} |" in text
