"""Utterances as plain tokens, so the intent rules never see case, accents or filler.

Everything the intent engine matches on comes through :func:`tokenize`: "What's 2 * 3?"
and "what is 2 * 3" give the same tokens (as do curly quotes, typographic minus, times and
division signs, and their plain forms), so the rules can stay small and exact.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

__all__ = ["has_phrase", "tokenize", "without_filler", "word_set"]

_CHARS = str.maketrans(
    {
        "\u2019": "'",  # right single quotation mark
        "\u2018": "'",
        "`": "'",
        "\u00b4": "'",  # acute accent
        "\u00d7": "*",  # multiplication sign
        "\u00f7": "/",  # division sign
        "\u2212": "-",  # minus sign
        "\u2013": "-",  # en dash
        "\u2044": "/",  # fraction slash
    }
)
_CONTRACTIONS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), r)
    for p, r in (
        (r"\b(what|that|it|how|where|who|there|here|when|why)'s\b", r"\1 is"),
        (r"\bwhats\b", "what is"),
        (r"\blet's\b", "let us"),
        (r"\bi'm\b", "i am"),
        (r"\bwon't\b", "will not"),
        (r"\bcan't\b", "can not"),
        (r"n't\b", " not"),
        (r"'re\b", " are"),
        (r"'ll\b", " will"),
        (r"'d\b", " would"),
        (r"'ve\b", " have"),
        (r"'s\b", ""),  # possessive: tomorrow's date
    )
]
_THOUSANDS = re.compile(r"(?<=[0-9]),(?=[0-9]{3}(?![0-9]))")
_WORD_HYPHEN = re.compile(r"(?<=[^\W\d_])-(?=[^\W\d_])")
_TOKEN = re.compile(r"[0-9]+(?:\.[0-9]+)?|\*\*|[-+*/^()%=]|[^\W\d_]+")

_FILLER: list[tuple[str, ...]] = [
    tuple(p.split())
    for p in (
        "please",
        "pls",
        "kindly",
        "hey loom",
        "hi loom",
        "ok loom",
        "okay loom",
        "hello loom",
        "loom",
        "hey",
        "ok",
        "okay",
        "um",
        "uh",
        "can you",
        "could you",
        "would you",
        "will you",
        "can i",
        "could i",
        "do you know",
        "tell me",
        "let me know",
        "i want to know",
        "i would like to know",
        "i wonder",
        "just",
        "quickly",
        "thanks",
        "thank you",
        "for me",
    )
]


def word_set(text: str) -> frozenset[str]:
    """The space-separated words of ``text``, for writing vocabularies compactly."""
    return frozenset(text.split())


def tokenize(text: str) -> list[str]:
    """Lower-case words, numerals and arithmetic symbols of ``text``, accents removed."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(c for c in text if not unicodedata.combining(c)).translate(_CHARS)
    text = _THOUSANDS.sub("", text)
    for pattern, replacement in _CONTRACTIONS:
        text = pattern.sub(replacement, text)
    return _TOKEN.findall(_WORD_HYPHEN.sub(" ", text))


def without_filler(tokens: Sequence[str]) -> list[str]:
    """``tokens`` without politeness and wake words ("please", "hey loom", "can you")."""
    return _remove(tokens, _FILLER)


def has_phrase(text: str, *phrases: str) -> bool:
    """Whether the space-joined ``text`` contains one of ``phrases`` as whole words."""
    padded = f" {text} "
    return any(f" {phrase} " in padded for phrase in phrases)


def _remove(tokens: Sequence[str], phrases: Sequence[tuple[str, ...]]) -> list[str]:
    """``tokens`` without any of ``phrases`` (longest first, wherever they occur)."""
    ordered = sorted(phrases, key=len, reverse=True)
    kept: list[str] = []
    i = 0
    while i < len(tokens):
        for phrase in ordered:
            if tuple(tokens[i : i + len(phrase)]) == phrase:
                i += len(phrase)
                break
        else:
            kept.append(tokens[i])
            i += 1
    return kept
