"""The facts demo's questions: seeded, split by question, every accepted form passes the real
`exact` verifier and near misses do not, and short enough for the demo model and config."""
import json
import random
from pathlib import Path

import pytest
import yaml

from cluster.facts_demo import CONVERSIONS, Recipe, build, fact_row, fact_rows, written_answer
from learners.char_tokenizer import build_char_tokenizer

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]
R = Recipe()


@pytest.fixture(scope="module")
def rows():
    return fact_rows(R.max_n, R.held_out, R.seed)


def test_a_row_by_hand():
    row = fact_row("km", "m", 1000, ("m", "metres", "meters"), 7)
    assert row["prompt"] == "7 km in m:" and row["kind"] == "exact" and row["value"] == 7000
    assert row["answers"] == ["7000", "7000 m", "7000 metres", "7000 meters", "7,000", "7,000 m", "7,000 metres",
                              "7,000 meters"]
    assert fact_row("week", "days", 7, ("days", "d"), 3)["answers"] == ["21", "21 days", "21 d"]  # no commas under 1000


def test_rows_are_deterministic_and_held_out_questions_are_never_trained_on(rows):
    train, held = rows
    assert (len(train), len(held)) == (842, 148) == (len(CONVERSIONS) * 99 - 148, round(990 * R.held_out))
    assert fact_rows(R.max_n, R.held_out, R.seed) == rows
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}
    assert {r["unit"] for r in held} == {c[1] for c in CONVERSIONS}  # every conversion is tested


def test_the_teacher_writes_several_accepted_forms(rows):
    train, _ = rows
    rng = random.Random(0)
    big = [r for r in train if r["value"] >= 1000][:50]
    written = [written_answer(r, rng) for r in big for _ in range(4)]
    assert all(w in r["answers"] for w, r in zip(written, [r for r in big for _ in range(4)]))
    assert {"," in w for w in written} == {True, False} and any(" " in w for w in written)


def test_prompts_and_answers_fit_the_model_and_the_config(rows):
    cfg = yaml.safe_load((ROOT / "configs" / "rlvr-facts.yaml").read_text())
    tok = build_char_tokenizer()
    train, held = rows
    longest_prompt = max(len(tok(r["prompt"])["input_ids"]) for r in train + held)  # with <s>
    rng = random.Random(1)
    longest_answer = max(len(written_answer(r, rng)) for r in train + held for _ in range(4))
    assert (longest_prompt, longest_answer) == (19, 10)  # "<s>99 dozen in items:", "1188 items"
    assert longest_answer + 1 <= cfg["rollout"]["max_new_tokens"]  # + </s>
    assert longest_prompt + cfg["rollout"]["max_new_tokens"] <= R.model["max_positions"]
    assert cfg["data"]["eval_path"].endswith("facts/data/eval.jsonl") and cfg["logging"]["eval_size"] >= len(held)
    assert [s["type"] for s in cfg["reward"]["sources"]] == ["exact"]


def test_build_writes_the_assets_and_skips_an_unchanged_recipe(tmp_path, capsys):
    tiny = Recipe(max_n=5, sft_steps=2, sft_batch=4,
                  model={"hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64, "max_positions": 64})
    out = build(tmp_path / "facts", tiny)
    stamp = json.loads((out / "recipe.json").read_text())
    assert stamp["digest"] == tiny.digest() and (stamp["train_questions"], stamp["held_out_questions"]) == (42, 8)
    held = [json.loads(line) for line in (out / "data" / "eval.jsonl").read_text().splitlines()]
    assert held == fact_rows(5, tiny.held_out, tiny.seed)[1]
    mtime = (out / "model" / "model.safetensors").stat().st_mtime_ns
    build(tmp_path / "facts", tiny)
    assert "up to date" in capsys.readouterr().out
    assert (out / "model" / "model.safetensors").stat().st_mtime_ns == mtime
    assert Recipe(sft_steps=201).digest() != Recipe().digest()
