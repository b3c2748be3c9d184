"""The code RLVR demo's task and policy: write a one-line Python body from input/output examples.

A task is a small integer function (`7*x+83`, `40-3*x`, `2*x*x+5`, `x%2+4`, `x//2+7`). Its prompt
shows f(0), f(1), f(2); the policy writes only the body after the trusted prefix
`def f(x):\n    return `, and the sandbox runs it on two shown and three hidden inputs, so a body
that only reproduces the examples fails. Train and held-out rows are different functions: held-out
ones are never trained on. The warm start is a supervised run from scratch (the arithmetic demo's
architecture) stopped early on purpose, just before the model has learned to read the slope off
the examples, so that RL has room to improve.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from cluster.demo_build import recipe_digest, up_to_date, warm_start_and_save

PREFIX = "def f(x):\n    return "
SHOWN = (0, 1, 2)
TESTED = (1, 2, 5, 8, 11)  # two shown inputs and three hidden ones (odd and even, so x%2 and x//2 show)
CODE = ("learners/char_tokenizer.py", "learners/warm_start.py", "cluster/arith.py", "cluster/demo_build.py",
        "cluster/code_demo.py")


def _term(coef: int, var: str) -> str:
    return var if coef == 1 else f"{coef}*{var}"


def _plus(b: int) -> str:
    return f"+{b}" if b else ""


def function_bodies(max_offset: int) -> list[str]:
    """Every task body, in a fixed order: a*x+b, b-a*x, c*x*x+b, x%2+b, x//2+b with 0 <= b <= max_offset.
    The shown values f(0), f(1), f(2) are never negative: signed arithmetic is much harder for a
    tiny char model, and the slope is then one unsigned subtraction, f(1) - f(0) or f(0) - f(1)."""
    offsets = range(max_offset + 1)
    bodies = [_term(a, "x") + _plus(b) for a in range(1, 10) for b in offsets]
    bodies += [f"{b}-{_term(a, 'x')}" for a in range(1, 10) for b in offsets if b >= 2 * a]
    bodies += [_term(c, "x*x") + _plus(b) for c in (1, 2, 3) for b in offsets]
    bodies += ["x%2" + _plus(b) for b in offsets] + ["x//2" + _plus(b) for b in offsets]
    return bodies


def apply(body: str, x: int) -> int:
    """The value of a task body at x (bodies are trusted: they come from function_bodies)."""
    return eval(body, {"__builtins__": {}}, {"x": x})  # noqa: S307 - our own arithmetic, never a model's


def task_row(body: str) -> dict:
    prompt = ",".join(f"f({x})={apply(body, x)}" for x in SHOWN) + ":"
    cases = [{"args": [x], "expected": apply(body, x)} for x in TESTED]
    return {"prompt": prompt, "kind": "code", "program_prefix": PREFIX, "solution": body,
            "tests": {"type": "function", "entry_point": "f", "cases": cases}}


def code_rows(max_offset: int, held_out: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held_out) rows, one per task; the split is by task and seeded."""
    bodies = function_bodies(max_offset)
    random.Random(seed).shuffle(bodies)
    cut = round(len(bodies) * held_out)
    return [task_row(b) for b in bodies[cut:]], [task_row(b) for b in bodies[:cut]]


@dataclass(frozen=True)
class Recipe:
    max_offset: int = 99
    held_out: float = 0.1
    sft_steps: int = 450  # stopped early on purpose: held-out pass rate ~33% here, ~88% by 700 steps
    sft_batch: int = 64
    sft_lr: float = 1e-3
    seed: int = 0
    model: dict = field(default_factory=lambda: {"hidden_size": 128, "layers": 4, "heads": 4,
                                                 "intermediate_size": 512, "max_positions": 64})

    def digest(self) -> str:
        return recipe_digest(self, CODE)


def build(out_dir: str | Path = ".cache/demo/code", recipe: Recipe = Recipe(), force: bool = False) -> Path:
    """Writes <out>/model (HF format), <out>/data/{train,eval}.jsonl; returns <out>."""
    out = Path(out_dir)
    digest = recipe.digest()
    if not force and up_to_date(out, digest, "code-demo"):
        return out
    train, held_out = code_rows(recipe.max_offset, recipe.held_out, recipe.seed)
    pairs = [(r["prompt"], r["solution"]) for r in train]
    return warm_start_and_save(out, recipe, digest, "code-demo", pairs, train, held_out, "tasks")
