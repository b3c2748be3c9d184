"""The code demo's tasks: seeded, split by function, solvable in the real sandbox, not solvable by
reproducing the shown examples, and short enough for the demo model and config."""
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from cluster.code_demo import PREFIX, Recipe, build, code_rows, function_bodies, task_row
from learners.char_tokenizer import build_char_tokenizer
from rewards.code.sandbox import Sandbox
from rewards.math.answer import MathChecker
from rewards.verify import VerifySettings, verify_row

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]
R = Recipe()


@pytest.fixture(scope="module")
def rows():
    return code_rows(R.max_offset, R.held_out, R.seed)


@pytest.fixture(scope="module")
def verify():
    box, checker = Sandbox("auto", slots=2), MathChecker()

    def run(rows_and_bodies):
        def one(item):
            row, body = item
            return verify_row({"id": 0, "kind": "code", "program": row["program_prefix"] + body, "tests": row["tests"]},
                              box, checker, VerifySettings())
        with ThreadPoolExecutor(max_workers=2) as pool:
            return list(pool.map(one, rows_and_bodies))

    yield run
    box.close()
    checker.close()


def test_a_task_row_by_hand():
    row = task_row("3*x+7")
    assert row["prompt"] == "f(0)=7,f(1)=10,f(2)=13:"
    assert row["program_prefix"] == PREFIX == "def f(x):\n    return "
    assert row["tests"] == {"type": "function", "entry_point": "f", "cases": [
        {"args": [1], "expected": 10}, {"args": [2], "expected": 13}, {"args": [5], "expected": 22},
        {"args": [8], "expected": 31}, {"args": [11], "expected": 40}]}
    assert [c["expected"] for c in task_row("20-4*x")["tests"]["cases"]] == [16, 12, 0, -12, -24]
    assert [c["expected"] for c in task_row("x//2+5")["tests"]["cases"]] == [5, 6, 7, 9, 10]
    assert task_row("x%2+4")["prompt"] == "f(0)=4,f(1)=5,f(2)=4:"
    assert task_row("2*x*x+1")["prompt"] == "f(0)=1,f(1)=3,f(2)=9:"


def test_tasks_are_distinct_functions():
    bodies = function_bodies(R.max_offset)
    assert len(bodies) == 2210
    assert len({tuple(c["expected"] for c in task_row(b)["tests"]["cases"]) for b in bodies}) == len(bodies)
    assert len({task_row(b)["prompt"] for b in bodies}) == len(bodies)  # one prompt, one answer


def test_rows_are_deterministic_per_seed(rows):
    assert code_rows(R.max_offset, R.held_out, R.seed) == rows
    other = code_rows(R.max_offset, R.held_out, R.seed + 1)
    assert {r["solution"] for r in other[1]} != {r["solution"] for r in rows[1]}


def test_held_out_functions_are_never_trained_on(rows):
    train, held = rows
    assert (len(train), len(held)) == (1989, 221)
    assert not {r["solution"] for r in train} & {r["solution"] for r in held}
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}
    assert sorted(r["solution"] for r in train + held) == sorted(function_bodies(R.max_offset))
    families = [lambda b: "x*x" in b, lambda b: "%" in b, lambda b: "//" in b, lambda b: b[0].isdigit()]
    assert all(sum(map(f, (r["solution"] for r in held))) >= 5 for f in families)  # every family is held out


def test_every_reference_body_passes_in_the_sandbox(rows, verify):
    train, held = rows
    got = verify([(r, r["solution"]) for r in train + held])
    assert [g["status"] for g in got] == ["passed"] * len(train + held)
    assert {g["reward"] for g in got} == {1.0}


def test_reproducing_the_shown_examples_fails_the_hidden_cases(rows, verify):
    held = rows[1]

    def lookup(row):  # a body that knows exactly the examples in the prompt
        shown = dict(part.removeprefix("f(").split(")=") for part in row["prompt"][:-1].split(","))
        return "{" + ",".join(f"{x}:{y}" for x, y in shown.items()) + "}[x]"

    got = verify([(r, lookup(r)) for r in held])
    assert [(g["status"], g["passed"], g["total"]) for g in got] == [("runtime_error", 2, 5)] * len(held)
    assert {g["reward"] for g in got} == {0.4}  # the two shown inputs pass, the three hidden ones fail


def test_prompts_and_bodies_fit_the_model_and_the_config(rows):
    cfg = yaml.safe_load((ROOT / "configs" / "rlvr-code.yaml").read_text())
    tok = build_char_tokenizer()
    train, held = rows
    longest_prompt = max(len(tok(r["prompt"])["input_ids"]) for r in train + held)  # with <s>
    longest_body = max(len(tok(r["solution"], add_special_tokens=False)["input_ids"]) for r in train + held)
    assert (longest_prompt, longest_body) == (27, 8)
    assert longest_body + 1 <= cfg["rollout"]["max_new_tokens"]  # + </s>
    assert longest_prompt + cfg["rollout"]["max_new_tokens"] <= R.model["max_positions"]
    assert cfg["data"]["eval_path"].endswith("code/data/eval.jsonl") and cfg["logging"]["eval_size"] >= len(held)


def test_build_writes_the_assets_and_skips_an_unchanged_recipe(tmp_path, capsys):
    tiny = Recipe(max_offset=5, sft_steps=2, sft_batch=4,
                  model={"hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64, "max_positions": 64})
    out = build(tmp_path / "code", tiny)
    stamp = json.loads((out / "recipe.json").read_text())
    assert stamp["digest"] == tiny.digest() and (stamp["train_tasks"], stamp["held_out_tasks"]) == (81, 9)
    assert (out / "model" / "config.json").is_file() and (out / "model" / "model.safetensors").is_file()
    held = [json.loads(line) for line in (out / "data" / "eval.jsonl").read_text().splitlines()]
    assert held == code_rows(5, tiny.held_out, tiny.seed)[1]
    mtime = (out / "model" / "model.safetensors").stat().st_mtime_ns
    build(tmp_path / "code", tiny)
    assert "up to date" in capsys.readouterr().out
    assert (out / "model" / "model.safetensors").stat().st_mtime_ns == mtime
    assert Recipe(sft_steps=451).digest() != Recipe().digest()
