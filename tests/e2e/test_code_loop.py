"""Code RLVR in the loop: every sampled program runs in the sandboxed verifier pool during
training (real Ray, real vLLM, real sandbox), in the strongest sandbox mode this machine has."""
import json

import pytest

from cluster.config import RunConfig
from cluster.controller import Controller
from rewards.code.sandbox import default_python, detect_mode

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
STEPS = 3
PREFIX = "def f(x):\n    return "


def code_rows(n: int, offset: int) -> list[dict]:
    """f(x) = a·x + b shown by two examples; the policy writes the body after PREFIX."""
    rows = []
    for i in range(offset, offset + n):
        a, b = i % 4 + 1, i % 7
        cases = [{"args": [x], "expected": a * x + b} for x in (1, 2, 5)]
        rows.append({"prompt": f"f(1)={a + b},f(2)={2 * a + b}:", "kind": "code", "program_prefix": PREFIX,
                     "tests": {"type": "function", "entry_point": "f", "cases": cases}})
    return rows


@pytest.fixture(scope="module")
def run(assets, generators, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("code")
    for name, rows in (("train", code_rows(40, 0)), ("eval", code_rows(16, 100))):
        (tmp / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = RunConfig.model_validate({
        "steps": STEPS,
        "policy": {"model_dir": str(assets / "model")},
        "data": {"train_path": str(tmp / "train.jsonl"), "eval_path": str(tmp / "eval.jsonl")},
        "rollout": {"num_generators": 2, "prompts_per_step": 8, "samples_per_prompt": 8},
        "reward": {"sources": [{"name": "tests", "type": "code", "kinds": ["code"]}], "sandbox_slots": 2},
        "learner": {"lr": 1e-3},
        "logging": {"eval_every": STEPS, "eval_size": 16, "parity_every": STEPS, "progress": False},
    })
    controller = Controller(cfg, tmp / "run", generators)
    controller.run(progress=False)
    yield controller, tmp / "run"
    controller.shutdown()


def test_every_program_ran_in_the_strongest_sandbox(run):
    _, run_dir = run
    strongest = detect_mode(default_python())[0]  # what auto isolation must pick here
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()][1:]
    assert len(recs) == STEPS
    for r in recs:
        m = r["sources"]["tests"]
        assert m["samples"] == r["samples"] == 64 and sum(m["statuses"].values()) == 64
        assert m["sandbox_mode"] == strongest and m["per_second"] > 0
        assert m["pass_rate"] == m["statuses"].get("passed", 0) / 64
        assert set(m["statuses"]) <= {"passed", "failed", "runtime_error", "syntax_error", "timeout"}


def test_rewards_match_verifying_the_same_programs_offline(run):
    controller, _ = run
    batch, _ = controller.sample_scored(4)
    pool = controller.router.pools()["verifiers"][0]
    rows = [{"id": i, "kind": "code", "program": PREFIX + text, "tests": meta["tests"]}
            for i, (text, meta) in enumerate(zip(batch.texts, batch.metadata))]
    offline = pool.verify(rows)
    assert batch.rewards == [v["reward"] for v in offline]
    assert batch.statuses == [v["status"] for v in offline]
    assert all(set(d) == {"tests"} for d in batch.reward_detail)
