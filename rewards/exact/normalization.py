"""Normalisation of short factual answers, so that spellings of one answer compare equal.

`normalize` applies the rules below in order; each is a small function with its own test:
NFKC, Unicode digits → ASCII, case-fold, thousands separators joined, numbers in canonical form,
punctuation stripped (decimal points and minus signs of numbers kept), whitespace collapsed,
one leading English article (a, an, the) dropped.
"""
from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation

# Arabic decimal and thousands separators, and the Unicode minus sign, as their ASCII forms.
_SIGNS = str.maketrans({"\u066b": ".", "\u066c": ",", "\u2212": "-"})
# Groups of exactly three digits after a 1-3 digit head, one separator kind throughout.
_GROUPED = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?!,?\d)"
                      r"|(?<![\d.])\d{1,3}(?: \d{3})+(?! ?\d)"
                      r"|(?<![\d._])\d{1,3}(?:_\d{3})+(?!_?\d)")
# A number on its own: not glued to a word before it, and not a version-like "1.2.3".
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d+(?:\.\d+)?|\.\d+)(?:e[+-]?\d+)?(?![\d]|\.\d)")
_MAX_EXPONENT = 100  # past this a number is left as written rather than spelled out in full
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_NUMBER_MINUS = re.compile(r"(?<![\w])-(?=\.?\d)")
_DELETED = frozenset("'\u2019.")  # apostrophes and dots join: "don't" = "dont", "U.S." = "us"
_ARTICLES = ("a ", "an ", "the ")


def nfkc(s: str) -> str:
    """Compatibility forms become plain ones: fullwidth "３０００" → "3000", "ﬁ" → "fi", NBSP → space."""
    return unicodedata.normalize("NFKC", s)


def ascii_digits(s: str) -> str:
    """Every decimal digit (Arabic-Indic ٣, Devanagari ३, ...) becomes its ASCII digit; the Arabic
    decimal and thousands separators and the minus sign U+2212 become "." "," "-"."""
    out = []
    for ch in s.translate(_SIGNS):
        if ch.isdigit() and not ch.isascii():
            d = unicodedata.decimal(ch, None)
            out.append(str(d) if d is not None else ch)
        else:
            out.append(ch)
    return "".join(out)


def casefold(s: str) -> str:
    return s.casefold()


def join_thousands(s: str) -> str:
    """ "3,000" / "3 000" / "3_000" → "3000" (only well-formed three-digit groups)."""
    return _GROUPED.sub(lambda m: re.sub(r"[, _]", "", m.group(0)), s)


def _canonical(m: re.Match) -> str:
    text = m.group(0)
    try:
        d = Decimal(text)
    except InvalidOperation:
        return text
    if not d.is_finite() or abs(d.adjusted()) > _MAX_EXPONENT or re.match(r"-?0\d", text):
        return text  # "007" and "02139" are codes, not numbers
    if d == 0:
        return "0"
    return format(d.normalize(), "f")


def canonical_numbers(s: str) -> str:
    """Each number in one form: "3000.0" → "3000", "1e3" → "1000", "0.50" → "0.5", "-0" → "0".
    Leading zeros ("007") and huge exponents are left as written."""
    return _NUMBER.sub(_canonical, s)


def strip_punctuation(s: str) -> str:
    """Unicode punctuation (categories P*) goes: apostrophes and dots are deleted, the rest becomes
    a space ("Jean-Paul" = "Jean Paul", "東京。" = "東京"). A number's decimal point and minus sign stay."""
    keep = {m.start() for m in _DECIMAL_POINT.finditer(s)} | {m.start() for m in _NUMBER_MINUS.finditer(s)}
    out = []
    for i, ch in enumerate(s):
        if i in keep or not unicodedata.category(ch).startswith("P"):
            out.append(ch)
        elif ch not in _DELETED:
            out.append(" ")
    return "".join(out)


def collapse_whitespace(s: str) -> str:
    return " ".join(s.split())


def drop_article(s: str) -> str:
    """One leading "a", "an" or "the" goes ("the Nile" = "Nile"), unless nothing would be left."""
    for article in _ARTICLES:
        if s.startswith(article) and s[len(article):].strip():
            return s[len(article):]
    return s


RULES = (nfkc, ascii_digits, casefold, join_thousands, canonical_numbers, strip_punctuation,
         collapse_whitespace, drop_article)


def normalize(s: str) -> str:
    """The comparable form of an answer; "" when nothing answer-like is left (only punctuation)."""
    for rule in RULES:
        s = rule(s)
    return s
