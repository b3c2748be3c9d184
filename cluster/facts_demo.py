"""The factual-answer demo's task and policy: unit conversions with known answers and aliases.

A question is `7 km in m:`; the accepted answers are the number and its aliases (`7000`, `7000 m`,
`7,000 m`), checked by the `exact` verifier after normalisation. Conversions by 10, 100 and 1000
only append zeros; by 7, 12, 24 and 60 they need real multiplication, which a tiny char model gets
wrong often, so there is room to learn. Train and held-out rows are different (conversion, number)
questions: held-out ones are never trained on. The warm start is a supervised run from scratch (the
arithmetic demo's architecture) stopped early, and it writes the answer in mixed forms (`7000`,
`7,000`, `7000 m`), so the aliases matter from the first step.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from cluster.demo_build import recipe_digest, up_to_date, warm_start_and_save

# (from unit, to unit, factor, to-unit words accepted as a suffix)
CONVERSIONS = (("km", "m", 1000, ("m", "metres", "meters")), ("m", "cm", 100, ("cm",)),
               ("cm", "mm", 10, ("mm",)), ("kg", "g", 1000, ("g", "grams")),
               ("h", "min", 60, ("min", "minutes")), ("min", "s", 60, ("s", "seconds")),
               ("week", "days", 7, ("days", "d")), ("day", "h", 24, ("h", "hours")),
               ("ft", "in", 12, ("in", "inches")), ("dozen", "items", 12, ("items",)))
CODE = ("learners/char_tokenizer.py", "learners/warm_start.py", "cluster/arith.py", "cluster/demo_build.py",
        "cluster/facts_demo.py")


def with_commas(n: int) -> str:
    return f"{n:,}"


def fact_row(src: str, dst: str, factor: int, words: tuple[str, ...], n: int) -> dict:
    value = n * factor
    answers = [str(value)] + [f"{value} {w}" for w in words]
    if value >= 1000:
        answers += [with_commas(value)] + [f"{with_commas(value)} {w}" for w in words]
    return {"prompt": f"{n} {src} in {dst}:", "kind": "exact", "answers": answers, "value": value, "unit": dst}


def fact_rows(max_n: int, held_out: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held_out) rows, one per (conversion, number); the split is by question and seeded."""
    rows = [fact_row(*c, n) for c in CONVERSIONS for n in range(1, max_n + 1)]
    random.Random(seed).shuffle(rows)
    cut = round(len(rows) * held_out)
    return rows[cut:], rows[:cut]


def written_answer(row: dict, rng: random.Random) -> str:
    """How the warm start's teacher writes an answer: the bare number, with thousands commas, or
    with the unit, so the policy starts out using several accepted forms."""
    value, form = row["value"], rng.random()
    if form < 0.5:
        return str(value)
    if form < 0.75 and value >= 1000:
        return with_commas(value)
    return f"{value} {row['unit']}"


@dataclass(frozen=True)
class Recipe:
    max_n: int = 99
    held_out: float = 0.15
    sft_steps: int = 150  # stopped early on purpose (held-out: ~33% after 100 steps, ~43% after 200, ~77% after 700)
    sft_batch: int = 64
    sft_lr: float = 1e-3
    seed: int = 0
    model: dict = field(default_factory=lambda: {"hidden_size": 128, "layers": 4, "heads": 4,
                                                 "intermediate_size": 512, "max_positions": 64})

    def digest(self) -> str:
        return recipe_digest(self, CODE)


def build(out_dir: str | Path = ".cache/demo/facts", recipe: Recipe = Recipe(), force: bool = False) -> Path:
    """Writes <out>/model (HF format), <out>/data/{train,eval}.jsonl; returns <out>."""
    out = Path(out_dir)
    digest = recipe.digest()
    if not force and up_to_date(out, digest, "facts-demo"):
        return out
    train, held_out = fact_rows(recipe.max_n, recipe.held_out, recipe.seed)
    rng = random.Random(recipe.seed)
    pairs = [(r["prompt"], written_answer(r, rng)) for r in train for _ in range(4)]
    return warm_start_and_save(out, recipe, digest, "facts-demo", pairs, train, held_out, "questions")
