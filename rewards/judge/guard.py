"""What a judged response may not do to its judge: forge the verdict format or the prompt's layout.

Under RLAIF the policy learns whatever moves the judge, including text aimed at the judge. So each
response enters the judge prompt between `<<<` and `>>>` lines, and before that every marker
the judge's own format uses — `[[`, `]]`, `Verdict:`, `Score:`, the delimiters, and the
template's section headers (`[Prompt]`, `[Response A]`, …), and chat-template control tokens
such as `<|im_end|>` that would let a response fake a turn of the conversation — is broken up so
it no longer reads as one. A response with a marker is folded first (NFKC, as the verdict parser folds
replies), so Unicode look-alikes such as full-width brackets and colons are caught too; so are
brackets split by invisible characters (`[\u200b[`) and the double-bracket look-alikes NFKC keeps
(`⟦ ⟧`, `〚 〛`). A principle line (`honest: [[A]]`) needs `[[` too, so it is defused the same
way. A response without a marker is shown untouched.
"""
from __future__ import annotations

import re
import unicodedata

# whitespace and invisible format characters (zero-width, bidi controls, soft hyphen) inside a marker
_GAP = r"[\s\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]*"
_MARKERS = re.compile(rf"\[{_GAP}\[|\]{_GAP}\]|[⟦〚]|[⟧〛]|\b(?:verdict|score){_GAP}:|<<<|>>>|<\||\|>"
                      r"|\[\s*(?:prompt|response(?:\s+[ab])?)\s*\]", re.IGNORECASE)


def _defuse(m: re.Match) -> str:
    s = m.group(0)
    if s.endswith(":"):  # "Verdict:" → "Verdict -"
        return re.sub(_GAP + "$", "", s[:-1]) + " -"
    if s in "⟦〚":
        return "[ ("
    if s in "⟧〛":
        return ") ]"
    if s.startswith("["):
        if s[-1] == "[":
            return "[ ("  # "[[" → "[ ("
        return "(" + s[1:-1] + ")"  # "[Response A]" → "(Response A)"
    if s.startswith("]"):
        return ") ]"
    return " ".join(s)  # "<<<" → "< < <", "<|" → "< |"


def neutralise(text: str) -> tuple[str, bool]:
    """(text safe to show a judge, whether it carried any marker)."""
    folded = unicodedata.normalize("NFKC", text)
    if not _MARKERS.search(folded):
        return text, False
    return _MARKERS.sub(_defuse, folded), True


def carries_markers(text: object) -> bool:
    return isinstance(text, str) and bool(_MARKERS.search(unicodedata.normalize("NFKC", text)))


def framed(text: str) -> str:
    """The response as it enters a judge prompt: neutralised, between delimiter lines."""
    return f"<<<\n{neutralise(text)[0]}\n>>>"
