"""Judge prompts in, verdicts out: render the templates, parse replies strictly, read P(first) from log-probs.

Parsing never guesses. A reply counts only when its last non-empty line is exactly
`Verdict: [[A]]`, `Verdict: [[B]]` or `Verdict: [[tie]]` (pointwise: `Score: [[N]]`, N in 1..10),
that is the only `[[...]]` in the reply, and the reply was not cut off; anything else abstains.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from rewards.judge.guard import framed

# One generated token: (text, log-prob, ((alternative text, log-prob), ...)).
TokenLogprob = tuple[str, float, tuple[tuple[str, float], ...]]

_VERDICT = re.compile(r"Verdict:[ \t]*\[\[(A|B|tie)\]\]")
_SCORE = re.compile(r"Score:[ \t]*\[\[(10|[1-9])\]\]")
_BRACKETS = re.compile(r"\[\[")
MAX_SCORE = 10


@dataclass(frozen=True)
class Parsed:
    """A parsed reply: `value` ("A"/"B"/"tie", or an int score) or None with the `reason` it abstained.
    `offset` is the character index of the value in the reply (for the log-prob lookup)."""

    value: str | int | None
    reason: str = ""
    offset: int = -1


def pairwise_messages(template: str, system: str | None, prompt: str, first: str, second: str) -> list[dict]:
    """Chat messages showing `first` as Response A and `second` as Response B (each framed, see guard)."""
    return _messages(system, template.format(prompt=prompt, response_a=framed(first), response_b=framed(second)))


def pointwise_messages(template: str, system: str | None, prompt: str, response: str) -> list[dict]:
    return _messages(system, template.format(prompt=prompt, response=framed(response)))


def _messages(system: str | None, user: str) -> list[dict]:
    head = [{"role": "system", "content": system}] if system else []
    return head + [{"role": "user", "content": user}]


def _parse_last_line(text: object, finish_reason: str | None, pattern: re.Pattern, what: str) -> Parsed:
    if not isinstance(text, str) or not text.strip():
        return Parsed(None, "empty reply")
    if finish_reason == "length":
        return Parsed(None, "reply cut off at max_tokens")
    stripped = text.rstrip()
    line_start = stripped.rfind("\n") + 1
    m = pattern.fullmatch(stripped[line_start:].strip())
    if m is None:
        return Parsed(None, f"last line is not a {what} line")
    if len(_BRACKETS.findall(text)) != 1:
        return Parsed(None, "more than one [[...]] in the reply")
    lead = len(stripped[line_start:]) - len(stripped[line_start:].lstrip())
    return Parsed(m.group(1), "", line_start + lead + m.start(1))


def parse_verdict(text: object, finish_reason: str | None = None) -> Parsed:
    """"A" or "B" (the response shown first or second) or "tie"; None (abstain) with a reason."""
    return _parse_last_line(text, finish_reason, _VERDICT, '"Verdict: [[A|B|tie]]"')


def parse_score(text: object, finish_reason: str | None = None) -> Parsed:
    """An int score 1..10; None (abstain) with a reason."""
    p = _parse_last_line(text, finish_reason, _SCORE, '"Score: [[1-10]]"')
    return Parsed(int(p.value), "", p.offset) if p.value is not None else p


def normalise_score(score: int) -> float:
    """1..10 → [0, 1]: 1 → 0.0, 10 → 1.0."""
    return (score - 1) / (MAX_SCORE - 1)


def _token_at(text: str, tokens: list[TokenLogprob], offset: int) -> TokenLogprob | None:
    """The generated token covering character `offset` of `text`. Tokens that are not in the text
    (special tokens such as <pad> or </s> that the server leaves out of the content) are skipped;
    if the tokens cannot be lined up with the text, None."""
    pos = 0
    for tok in tokens:
        piece = tok[0]
        if not piece or not text.startswith(piece, pos):
            continue  # not part of the visible text
        if pos <= offset < pos + len(piece):
            return tok
        pos += len(piece)
    return None


def p_first(text: str, tokens: list[TokenLogprob] | None, offset: int) -> float | None:
    """P(first-shown answer) = p(A) / (p(A) + p(B)) at the verdict token, from the log-probs of that
    token and its alternatives; None when there are no log-probs, the token is not found, or neither
    A nor B is among the alternatives."""
    if not tokens or offset < 0:
        return None
    tok = _token_at(text, tokens, offset)
    if tok is None:
        return None
    seen = dict(tok[2])
    seen.setdefault(tok[0], tok[1])
    mass = {"A": 0.0, "B": 0.0}
    for piece, lp in seen.items():
        key = piece.strip()
        if key in mass and lp is not None and math.isfinite(lp):
            mass[key] += math.exp(lp)
    total = mass["A"] + mass["B"]
    return mass["A"] / total if total > 0 else None
