"""Helpers for the judge tests: ensemble configs pointed at the OpenAI-compatible test double, and
scripted judge behaviours for it (test code, not product code)."""
from __future__ import annotations

import asyncio

from rewards.judge.ensemble import JudgeEnsemble
from rewards.judge.config import EnsembleConfig
from tests.doubles.openai_double import Reply

GOOD = "A is correct and B is not.\nVerdict: [[{}]]"


def config(base_url: str, *models: str, judge: dict | None = None, **top) -> EnsembleConfig:
    """One judge per model on `base_url`; `judge` overrides every judge's fields, `top` the ensemble's.
    Retries back off briefly by default so the tests stay fast."""
    judges = [{"base_url": base_url, "model": m, **(judge or {})} for m in models]
    top.setdefault("retry", {"backoff_base_s": 0.01, "backoff_max_s": 0.05})
    return EnsembleConfig.model_validate({"judges": judges, **top})


def ensemble(base_url: str, *models: str, judge: dict | None = None, **top) -> JudgeEnsemble:
    return JudgeEnsemble(config(base_url, *models, judge=judge, **top))


def run(ens: JudgeEnsemble, coro):
    """Run `coro` in a fresh event loop and close the ensemble's HTTP clients before it ends."""
    async def main():
        try:
            return await coro
        finally:
            await ens.aclose()
    return asyncio.run(main())


def pairs(ens: JudgeEnsemble, rows):
    return run(ens, ens.judge_pairs(rows))


def prefers(word: str):
    """A consistent judge: picks whichever response contains `word`, in either order."""
    def script(seen) -> Reply:
        text = seen.user
        a, b = text.index("[Response A]"), text.index("[Response B]")
        first_has = word in text[a:b]
        return Reply(GOOD.format("A" if first_has else "B"))
    return script
