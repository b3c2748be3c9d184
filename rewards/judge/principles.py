"""Constitutional-AI style principles for the judges: the model, the constitution file, the prompt text.

A principle is {name, text, weight}. `name` is a simple identifier (an ASCII letter, then letters,
digits or `_`, at most 32 characters; not `verdict` or `score`), distinct from the others ignoring
case, because under `per_principle` the judge writes one `name: [[...]]` line per principle and the
parser matches the name exactly. A plain string is a principle too: its name is derived from its
first three words (`"Be honest: never invent facts"` → `be_honest_never`), or `p<i>` (1-based
position) when the text has no ASCII word, e.g. a rule written in another script. `text` may be in
any language. `weight` (default 1) weighs the principle when a judge's per-principle verdicts are
combined (rewards.judge.vote).

How the principles reach the judge: a template may place them itself with `{principles}`, which
renders one `name: text` line per principle; such a template also owns the wording, so under
per_principle it must ask for the per-principle lines itself. A template without `{principles}`
(the built-in ones) leaves them to the system prompt: `system_block` is appended to it (or becomes
it), with the principles and, under per_principle, the reply format.
"""
from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
RESERVED = ("verdict", "score")  # the final line's keywords


class Principle(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: str
    """Identifier used in per-principle reply lines and metrics (letters, digits, _; starts with a letter)."""
    text: str = Field(min_length=1)
    """The rule itself, as the judge reads it (any language)."""
    weight: float = Field(1.0, gt=0.0, le=1000.0)
    """Weight of this principle when a judge's per-principle verdicts are combined."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.fullmatch(v):
            raise ValueError(f"principle name {v!r} must be a simple identifier: an ASCII letter, then letters, "
                             "digits or _ (at most 32 characters), e.g. honest or no_harm")
        if v.lower() in RESERVED:
            raise ValueError(f"principle name {v!r} is reserved (it would read as the final line)")
        return v

    @field_validator("text")
    @classmethod
    def _text(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("principle text is empty")
        return " ".join(v.split())  # one line: a rule never breaks the `name: text` layout


def derive_name(text: str, position: int) -> str:
    """A name for a principle given as text: its first three ASCII words, lower-cased, joined by _."""
    words = re.findall(r"[A-Za-z0-9]+", text)[:3]
    slug = "_".join(w.lower() for w in words)[:32].rstrip("_")
    if not slug or not slug[0].isalpha():
        slug = f"p{position}" if not slug else f"p_{slug}"[:32].rstrip("_")
    return slug


def as_items(raw: Any) -> list:
    """Plain strings and name-less mappings given names (before validation)."""
    if not isinstance(raw, list):
        raise ValueError("principles must be a list (of strings or {name, text, weight}) or the path "
                         "of a constitution YAML file")
    out = []
    for i, item in enumerate(raw, 1):
        if isinstance(item, str):
            item = {"text": item}
        if isinstance(item, dict) and "name" not in item and isinstance(item.get("text"), str):
            item = {"name": derive_name(item["text"], i), **item}
        out.append(item)
    return out


def check_distinct(principles: list[Principle]) -> list[Principle]:
    names = [p.name.lower() for p in principles]
    dup = sorted({p.name for p in principles if names.count(p.name.lower()) > 1})
    if dup:
        raise ValueError(f"principle names must be distinct (ignoring case); {', '.join(map(repr, dup))} "
                         "repeats; give each principle its own `name`")
    return principles


def load_constitution(path: Path) -> list[Principle]:
    """The principles of a constitution YAML: `principles:` list (optional `description:`), or a bare list."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"cannot read constitution file {path} ({e.strerror})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ValueError(f"{path}{f':{mark.line + 1}' if mark else ''}: invalid YAML") from None
    if isinstance(raw, dict):
        extra = set(raw) - {"principles", "description"}
        if extra or "principles" not in raw:
            raise ValueError(f"{path}: a constitution has a `principles:` list (and an optional `description:`)"
                             + (f"; unknown key(s) {', '.join(sorted(map(str, extra)))}" if extra else ""))
        raw = raw["principles"]
    try:
        items = as_items(raw)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    out = []
    for i, item in enumerate(items):
        try:
            out.append(Principle.model_validate(item))
        except ValidationError as err:
            why = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'item'}: {e['msg'].removeprefix('Value error, ')}"
                            for e in err.errors())
            raise ValueError(f"{path}: principles[{i}]: {why}") from None
    if not out:
        raise ValueError(f"{path}: the constitution has no principles")
    try:
        return check_distinct(out)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def uses_placeholder(template: str) -> bool:
    return any(f == "principles" for _, f, _, _ in string.Formatter().parse(template))


def render_list(principles) -> str:
    """What `{principles}` renders: one `name: text` line per principle, in order."""
    return "\n".join(f"{p.name}: {p.text}" for p in principles)


def system_block(principles, pointwise: bool, per_principle: bool) -> str:
    """The principles (and, under per_principle, the reply format) for the system prompt."""
    head = "Judge by these principles (one per line, name: rule):\n" + render_list(principles)
    if not per_principle:
        return head
    example = principles[0].name
    if pointwise:
        how = (f'"<name>: [[N]]", where N is a whole number from 1 (violates the principle) to 10 '
               f'(follows it fully), e.g. "{example}: [[7]]"')
    else:
        how = (f'"<name>: [[A]]" if Response A follows that principle better, "<name>: [[B]]" if '
               f'Response B does, or "<name>: [[tie]]" if neither does, e.g. "{example}: [[A]]"')
    return (f"{head}\n\nBefore your final line, write one line per principle, each principle exactly "
            f"once, in exactly this form: {how}. Use [[ ]] nowhere else.")
