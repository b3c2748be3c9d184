"""Judge prompts in, verdicts out: render the templates, parse replies strictly, read P(first) from log-probs.

Parsing never guesses. A reply counts only when its last non-empty line is exactly
`Verdict: [[A]]`, `Verdict: [[B]]` or `Verdict: [[tie]]` (pointwise: `Score: [[N]]`, N in 1..10),
that is the only `[[...]]` in the reply, and the reply was not cut off; anything else abstains.
Under per_principle the reply must also hold exactly one `name: [[A|B|tie]]` (pointwise
`name: [[N]]`) line per principle before it, and no other `[[...]]`: a missing, repeated or
unknown principle, a malformed line or a wrong token abstains the whole reply.

Replies are folded with NFKC before this strict reading (per line; offsets still point into the
reply as sent), so full-width forms count as their ASCII twins (`Verdict：［［Ａ］］`, `[[３]]`);
a score may be written in any one script's decimal digits (`[[٣]]`, `[[१०]]`), never mixed.
The guard (rewards.judge.guard) folds responses the same way before defusing markers, so
whatever this parser would read as a verdict is defused in a response.
"""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

from rewards.judge.guard import framed
from rewards.judge.principles import render_list, system_block, uses_placeholder

# One generated token: (text, log-prob, ((alternative text, log-prob), ...)).
TokenLogprob = tuple[str, float, tuple[tuple[str, float], ...]]

_VERDICT = re.compile(r"Verdict:[ \t]*\[\[([^\[\]]{1,3})\]\]")
_SCORE = re.compile(r"Score:[ \t]*\[\[([^\[\]]{1,2})\]\]")
_PRINCIPLE = re.compile(r"([A-Za-z][A-Za-z0-9_]*):[ \t]*\[\[([^\[\]]{1,3})\]\]")
_BRACKETS = re.compile(r"\[\[")
MAX_SCORE = 10
VERDICTS = ("A", "B", "tie")
_SCORES = {str(n): n for n in range(1, MAX_SCORE + 1)}


@dataclass(frozen=True)
class Parsed:
    """A parsed reply: `value` ("A"/"B"/"tie", or an int score) or None with the `reason` it abstained.
    `offset` is the character index of the value in the reply (for the log-prob lookup);
    `principles` the per-principle (name, value, offset) lines, in reply order."""

    value: str | int | None
    reason: str = ""
    offset: int = -1
    principles: tuple[tuple[str, str | int, int], ...] = ()


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _system(system: str | None, template: str, principles, pointwise: bool, per_principle: bool) -> str | None:
    if not principles or uses_placeholder(template):
        return system
    block = system_block(principles, pointwise, per_principle)
    return f"{system}\n\n{block}" if system else block


def pairwise_messages(template: str, system: str | None, prompt: str, first: str, second: str,
                      principles=(), per_principle: bool = False) -> list[dict]:
    """Chat messages showing `first` as Response A and `second` as Response B (each framed, see
    guard). With principles: in the template's {principles}, else appended to the system prompt."""
    user = template.format(prompt=prompt, response_a=framed(first), response_b=framed(second),
                           principles=render_list(principles))
    return _messages(_system(system, template, principles, False, per_principle), user)


def pointwise_messages(template: str, system: str | None, prompt: str, response: str,
                       principles=(), per_principle: bool = False) -> list[dict]:
    user = template.format(prompt=prompt, response=framed(response), principles=render_list(principles))
    return _messages(_system(system, template, principles, True, per_principle), user)


def _messages(system: str | None, user: str) -> list[dict]:
    head = [{"role": "system", "content": system}] if system else []
    return head + [{"role": "user", "content": user}]


def _verdict_value(s: str) -> str | None:
    return s if s in VERDICTS else None


def _score_value(s: str) -> int | None:
    """1..10 written in one script's decimal digits (ASCII, Arabic-Indic, Devanagari, ...), no leading 0."""
    if not s or not all(c.isdecimal() for c in s):
        return None
    if len({ord(c) - unicodedata.decimal(c) for c in s}) != 1:  # digits of one script only
        return None
    return _SCORES.get("".join(str(unicodedata.decimal(c)) for c in s))


_KINDS = {"verdict": (_VERDICT, _verdict_value, '"Verdict: [[A|B|tie]]"'),
          "score": (_SCORE, _score_value, '"Score: [[1-10]]"')}


def _orig_index(line: str, norm_idx: int) -> int:
    """Index in `line` of the character whose NFKC form covers index `norm_idx` of NFKC(line)."""
    if _nfkc(line) == line:
        return norm_idx
    for j in range(len(line)):
        if len(_nfkc(line[:j + 1])) > norm_idx:
            return j
    return len(line) - 1


def _value_at(start: int, line: str, norm: str, m: re.Match, group: int) -> int:
    lead = len(norm) - len(norm.lstrip())
    return start + _orig_index(line, lead + m.start(group))


def parse_reply(text: object, finish_reason: str | None = None, kind: str = "verdict",
                names: tuple[str, ...] = ()) -> Parsed:
    """The strict reader behind parse_verdict / parse_score; `names`: the principles expected
    (one line each before the final line), none for the plain format."""
    pattern, convert, what = _KINDS[kind]
    if not isinstance(text, str) or not text.strip():
        return Parsed(None, "empty reply")
    if finish_reason == "length":
        return Parsed(None, "reply cut off at max_tokens")
    lines, start = [], 0
    for line in text.split("\n"):  # NFKC never makes or removes a "\n": folding per line is folding the whole
        lines.append((start, line, _nfkc(line)))
        start += len(line) + 1
    lines = [x for x in lines if x[2].strip()]
    start, line, norm = lines[-1]
    m = pattern.fullmatch(norm.strip())
    value = convert(m.group(1)) if m else None
    if value is None:
        return Parsed(None, f"last line is not a {what} line")
    found = sum(len(_BRACKETS.findall(n)) for _, _, n in lines)
    if found != len(names) + 1:
        if not names:
            return Parsed(None, "more than one [[...]] in the reply")
        return Parsed(None, f"expected {len(names) + 1} [[...]] (one per principle, then the final line), "
                            f"found {found}")
    final = _value_at(start, line, norm, m, 1)
    if not names:
        return Parsed(value, "", final)
    got: dict[str, tuple] = {}
    for start, line, norm in lines[:-1]:
        if "[[" not in norm:
            continue  # reasoning text
        pm = _PRINCIPLE.fullmatch(norm.strip())
        if pm is None:
            return Parsed(None, f"malformed principle line {norm.strip()[:60]!r}")
        name, v = pm.group(1), convert(pm.group(2))
        if name not in names:
            return Parsed(None, f"unknown principle {name!r}")
        if name in got:
            return Parsed(None, f"principle {name!r} repeats")
        if v is None:
            return Parsed(None, f"principle {name!r}: {pm.group(2)!r} is not a {what.split(':')[0][1:]} value")
        got[name] = (name, v, _value_at(start, line, norm, pm, 2))
    missing = [n for n in names if n not in got]
    if missing:
        return Parsed(None, f"missing principle(s) {', '.join(missing)}")
    return Parsed(value, "", final, tuple(got.values()))


def parse_verdict(text: object, finish_reason: str | None = None, names: tuple[str, ...] = ()) -> Parsed:
    """"A" or "B" (the response shown first or second) or "tie"; None (abstain) with a reason.
    With `names`, also one verdict per principle (Parsed.principles)."""
    return parse_reply(text, finish_reason, "verdict", names)


def parse_score(text: object, finish_reason: str | None = None, names: tuple[str, ...] = ()) -> Parsed:
    """An int score 1..10; None (abstain) with a reason. With `names`, also one score per principle."""
    return parse_reply(text, finish_reason, "score", names)


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
        key = _nfkc(piece).strip()  # a full-width Ａ is an A, as in the parser
        if key in mass and lp is not None and math.isfinite(lp):
            mass[key] += math.exp(lp)
    total = mass["A"] + mass["B"]
    return mass["A"] / total if total > 0 else None
