"""RLAIF end to end on a real local Ray cluster: the run starts its own vLLM judge server (an actor
owning it, health-checked), the judge ensemble is the only reward, and the verifier scores only
held-out greedy answers (the gold metric). The judge here is the demo policy itself, with vLLM's
structured outputs holding it to "<its own answer>\\nVerdict: [[A|B|tie]]": what is checked is the
plumbing (real requests, log-probs, per-step judge metrics), not the judge's wisdom."""
import json
import socket
from urllib.parse import urlparse

import pytest
import ray
import yaml

from cluster.config import RunConfig
from cluster.controller import Controller
from rewards.judge.ensemble import JudgeEnsemble
from rewards.judge.reward import reference_rewards
from tests.doubles.judge_helpers import run as run_ensemble

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
STEPS = 3
VERDICT = r"[0-9]{1,3}\nVerdict: \[\[(A|B|tie)\]\]"
PAIRWISE_TEMPLATE = "{response_a}\n{response_b}\n{prompt}"  # the question last, right before the judge's answer
CHAT_TEMPLATE = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"  # no chat format


def greedy_answers(model_dir, prompts: list[str]) -> list[str]:
    """The policy's own greedy answers: the references its samples are judged against."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    enc = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    return [t.strip() for t in tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]


@pytest.fixture(scope="module")
def rlaif(assets, generators, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rlaif")
    (tmp / "chat.jinja").write_text(CHAT_TEMPLATE)
    judges = {"pairwise_template": PAIRWISE_TEMPLATE, "pool": {"size": 1, "num_cpus": 0.1},
              "retry": {"max_retries": 1, "backoff_base_s": 0.05},
              "judges": [{"name": "served", "model": "judge", "max_tokens": 24, "max_concurrency": 32,
                          "extra_body": {"structured_outputs": {"regex": VERDICT}},
                          "serve": {"model_dir": str(assets / "model"), "max_model_len": 64, "dtype": "float32",
                                    "chat_template": str(tmp / "chat.jinja"), "num_cpus": 0.5}}]}
    (tmp / "judges.yaml").write_text(yaml.safe_dump(judges))
    rows = [json.loads(x) for x in (assets / "data" / "train.jsonl").read_text().splitlines()[:64]]
    refs = greedy_answers(assets / "model", [r["prompt"] for r in rows])
    assert sum(x == r["answer"] for x, r in zip(refs, rows)) >= 8  # the warm start half knows addition
    (tmp / "train.jsonl").write_text("".join(json.dumps({**r, "reference": x}) + "\n" for r, x in zip(rows, refs)))
    cfg = RunConfig.model_validate({
        "steps": STEPS,
        "policy": {"model_dir": str(assets / "model")},
        "data": {"train_path": str(tmp / "train.jsonl"), "eval_path": str(assets / "data" / "eval.jsonl")},
        "rollout": {"num_generators": 2, "prompts_per_step": 8, "samples_per_prompt": 8},
        "reward": {"sources": [{"name": "judges", "type": "judge", "judges": str(tmp / "judges.yaml"),
                                "judge_mode": "reference"}],
                   "eval": [{"name": "gold", "type": "math"}]},
        "learner": {"lr": 1e-3},
        "logging": {"eval_every": STEPS, "eval_size": 32, "parity_every": STEPS, "progress": False},
    })
    controller = Controller(cfg, tmp / "run", generators)
    (source,) = controller.router.sources
    url = source.pool.config.judges[0].base_url
    server = source.servers["served"]
    summary = controller.run(progress=False)
    yield controller, summary, tmp / "run", url, server
    controller.shutdown()


def test_judges_are_the_only_reward_with_per_step_judge_metrics(rlaif):
    _, summary, run_dir, _, _ = rlaif
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(STEPS + 1))
    for r in recs[1:]:
        assert set(r["sources"]) == {"judges"}  # the verifier never scored a training sample
        m = r["sources"]["judges"]
        assert m["samples"] == r["samples"] == 64 and set(m["statuses"]) <= {"judged", "abstain"}
        assert m["failures"] == m["statuses"].get("abstain", 0)
        per = m["judges"]["served"]
        assert m["calls"] == per["calls"] > 0 and m["calls"] % 2 == 0  # every comparison in both orders
        assert 0 < m["latency_p50_s"] <= m["latency_p95_s"] < 60
        assert m["tokens"] == per["prompt_tokens"] + per["completion_tokens"] > 0
        assert 0.0 <= m["abstain_rate"] <= 1.0 and m["neutralised"] == 0
        assert m["agreement"] == 1.0  # a lone judge is the ensemble whenever it voted
    assert set(recs[-1]["eval_by_source"]) == {"gold"}
    assert summary["eval_sources"] == "gold"


def test_prometheus_endpoint_has_the_judge_pool(rlaif, prometheus):
    _, _, run_dir, _, _ = rlaif
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()][1:]
    last = recs[-1]["sources"]["judges"]
    calls = ("threefold_judge_calls", (("judge", "served"), ("source", "judges")))
    got = prometheus(run_dir.name, ("threefold_pool_size", "threefold_pool_items_per_s"),
                     want={calls: last["judges"]["served"]["calls"]})
    assert got[("threefold_pool_size", (("pool", "judges"),))] == 1
    assert got[("threefold_pool_items_per_s", (("pool", "judges"), ("source", "judges")))] > 0
    assert got[("threefold_judge_calls", (("judge", "served"), ("source", "judges")))] == last["judges"]["served"]["calls"]
    assert got[("threefold_source_latency_p50_s", (("pool", "judges"), ("source", "judges")))] == \
        pytest.approx(last["latency_p50_s"])


def test_in_loop_rewards_equal_judging_the_same_samples_again(rlaif):
    controller, _, _, url, _ = rlaif
    batch, _ = controller.sample_scored(4)
    (source,) = controller.router.sources
    prompts = [m["prompt"] for m in batch.metadata]
    ens = JudgeEnsemble(source.pool.config)
    again = run_ensemble(ens, reference_rewards(ens, prompts, batch.texts, [m["reference"] for m in batch.metadata]))
    judged = [i for i, s in enumerate(batch.statuses) if s == "judged"]
    assert len(judged) >= len(batch) // 2
    for i in judged:
        assert again[i].status == "judged"
        assert batch.rewards[i] == pytest.approx(again[i].score, abs=1e-3)  # P(sample beats reference)
    assert ens.config.judges[0].base_url == url


def test_the_run_stops_its_judge_server(rlaif):
    controller, _, _, url, server = rlaif
    assert ray.get(server.healthy.remote())
    controller.shutdown()
    host, port = urlparse(url).hostname, urlparse(url).port
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=2).close()
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(server.healthy.remote())
