"""Fuzzy text matching for wake phrases: Loom's transcript-based wake, and wake-phrase stripping.

Speech recognisers rarely spell a wake phrase right ("hey loom" comes out "hey luke", "hey
jarvis" as "he jarvis"), so both uses compare tokens by edit distance and Jaro-Winkler
similarity. :func:`find_phrase` reproduces Loom's ``wake.rs`` detection exactly;
:func:`strip_wake_phrase` removes the wake phrase a transcript starts with (the speech
recogniser hears the end of the wake word when it decodes from before the wake).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "PhraseMatch",
    "find_phrase",
    "jaro_winkler",
    "levenshtein",
    "normalise",
    "strip_wake_phrase",
    "tokens_match",
]

_NOT_WORD = re.compile(r"[^\w\s]|_")


def normalise(text: str) -> str:
    """Lowercase, alphanumerics and whitespace only, whitespace collapsed (Loom's rule)."""
    return " ".join(_NOT_WORD.sub("", text.lower()).split())


def levenshtein(a: str, b: str) -> int:
    """The edit distance (insertions, deletions, substitutions) between ``a`` and ``b``."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            cost = 0 if char_a == char_b else 1
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost))
        previous = current
    return previous[-1]


def jaro_winkler(a: str, b: str) -> float:
    """Jaro-Winkler similarity (0 to 1; prefix scale 0.1, up to 4 characters), as ``strsim``."""
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    reach = max(max(len(a), len(b)) // 2 - 1, 0)
    taken = [False] * len(b)
    matched_a: list[str] = []
    for i, char in enumerate(a):
        for j in range(max(0, i - reach), min(len(b), i + reach + 1)):
            if not taken[j] and b[j] == char:
                taken[j] = True
                matched_a.append(char)
                break
    if not matched_a:
        return 0.0
    matched_b = [char for j, char in enumerate(b) if taken[j]]
    transpositions = sum(x != y for x, y in zip(matched_a, matched_b, strict=True)) // 2
    m = len(matched_a)
    jaro = (m / len(a) + m / len(b) + (m - transpositions) / m) / 3
    prefix = 0
    for x, y in zip(a[:4], b[:4], strict=False):
        if x != y:
            break
        prefix += 1
    return jaro + prefix * 0.1 * (1 - jaro)


@dataclass(frozen=True, slots=True)
class PhraseMatch:
    """Where a wake phrase was found: the phrase, the index of its first token in the
    transcript's tokens, and the text after it (normalised)."""

    phrase: str
    position: int
    remainder: str


def _window_matches(
    window: Sequence[str], phrase: Sequence[str], max_distance: int, jw_threshold: float
) -> bool:
    distances = [levenshtein(w, p) for w, p in zip(window, phrase, strict=True)]
    if all(d <= max_distance for d in distances):
        return True
    if sum(distances) <= max_distance * len(phrase):
        return True
    similarity = sum(jaro_winkler(w, p) for w, p in zip(window, phrase, strict=True))
    return similarity / len(phrase) >= jw_threshold


def find_phrase(
    text: str,
    phrases: Sequence[str],
    *,
    max_distance: int = 1,
    match_anywhere: bool = True,
    jw_threshold: float = 0.90,
) -> PhraseMatch | None:
    """The first of ``phrases`` found in ``text``, by Loom's rules, or None.

    A window of tokens matches a phrase when every token is within ``max_distance`` edits,
    or the summed distance is within ``max_distance`` per token, or the mean Jaro-Winkler
    similarity reaches ``jw_threshold``. A match at the start wins; with ``match_anywhere``
    a one-word phrase takes the best token anywhere (fewest edits, then most similar) and a
    longer phrase slides along the text. The remainder is the tokens after the match.
    """
    words = normalise(text).split()
    for phrase in phrases:
        target = normalise(phrase).split()
        if not target or len(words) < len(target):
            continue
        size = len(target)
        if _window_matches(words[:size], target, max_distance, jw_threshold):
            return PhraseMatch(phrase, 0, " ".join(words[size:]))
        if not match_anywhere:
            continue
        if size == 1:
            best: tuple[int, float, int] | None = None
            for index, word in enumerate(words):
                distance = levenshtein(word, target[0])
                similarity = jaro_winkler(word, target[0])
                if distance > max_distance and similarity < jw_threshold:
                    continue
                key = (distance, -similarity, index)
                if best is None or key < best:
                    best = key
            if best is not None:
                index = best[2]
                return PhraseMatch(phrase, index, " ".join(words[index + 1 :]))
            continue
        for start in range(1, len(words) - size + 1):
            if _window_matches(words[start : start + size], target, max_distance, jw_threshold):
                return PhraseMatch(phrase, start, " ".join(words[start + size :]))
    return None


def tokens_match(word: str, target: str, *, jw_threshold: float = 0.8) -> bool:
    """Whether a recognised ``word`` may be a misheard ``target``: within a third of its
    length in edits (at least one), or Jaro-Winkler similar ("jarvis", "travis", "he"/"hey")."""
    if levenshtein(word, target) <= max(1, len(target) // 3):
        return True
    return len(word) > 2 and jaro_winkler(word, target) >= jw_threshold


def strip_wake_phrase(text: str, phrase: str, *, jw_threshold: float = 0.8) -> str:
    """``text`` (normalised) without the wake phrase it starts with.

    Leading words that each resemble a word of ``phrase`` are dropped, at most one more
    than the phrase has (a wake word heard as two words), stopping at the first that does
    not: "hey jarvis what time is it", "jarvis what time is it" and "travis what time is
    it" all give "what time is it".
    """
    words = normalise(text).split()
    targets = normalise(phrase).split()
    if not targets:
        return " ".join(words)
    dropped = 0
    while dropped < min(len(words), len(targets) + 1) and any(
        tokens_match(words[dropped], target, jw_threshold=jw_threshold) for target in targets
    ):
        dropped += 1
    return " ".join(words[dropped:])
