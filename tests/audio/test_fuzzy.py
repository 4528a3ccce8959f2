"""Fuzzy wake-phrase matching: Loom's transcript wake rules and wake-phrase stripping."""

from __future__ import annotations

import pytest

from loomk_audio._fuzzy import (
    find_phrase,
    jaro_winkler,
    levenshtein,
    normalise,
    strip_wake_phrase,
)


def test_levenshtein_counts_edits() -> None:
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("loom", "loom") == 0
    assert levenshtein("luke", "loom") == 3
    assert levenshtein("lom", "loom") == 1


def test_jaro_winkler_matches_the_reference_values() -> None:
    assert jaro_winkler("martha", "marhta") == pytest.approx(0.9611, abs=1e-4)
    assert jaro_winkler("dixon", "dicksonx") == pytest.approx(0.8133, abs=1e-4)
    assert jaro_winkler("abc", "abc") == 1.0
    assert jaro_winkler("abc", "xyz") == 0.0
    assert jaro_winkler("", "abc") == 0.0


def test_normalise_keeps_words_only() -> None:
    assert normalise("  Hey, LOOM!  what's   up? ") == "hey loom whats up"


def test_a_phrase_at_the_start_leaves_the_rest() -> None:
    found = find_phrase("Hey loom what's up", ["hey loom", "loom"])
    assert found is not None
    assert (found.phrase, found.position, found.remainder) == ("hey loom", 0, "whats up")


def test_one_edit_per_word_still_matches() -> None:
    found = find_phrase("hey lom turn on the lights", ["hey loom"])
    assert found is not None
    assert found.remainder == "turn on the lights"


def test_a_one_word_phrase_is_found_anywhere_unless_told_not_to() -> None:
    found = find_phrase("okay so loom what time is it", ["loom"])
    assert found is not None
    assert (found.position, found.remainder) == (2, "what time is it")
    assert find_phrase("okay so loom what time is it", ["loom"], match_anywhere=False) is None


def test_a_longer_phrase_slides_along_the_text() -> None:
    found = find_phrase("um hey loom play music", ["hey loom"])
    assert found is not None
    assert (found.position, found.remainder) == (1, "play music")


def test_unrelated_text_does_not_wake() -> None:
    assert find_phrase("what is the weather in paris", ["hey loom", "loom"]) is None


def test_the_first_phrase_that_matches_wins() -> None:
    found = find_phrase("hey loom lights", ["loom", "hey loom"])
    assert found is not None
    assert found.phrase == "loom"
    assert found.remainder == "lights"


@pytest.mark.parametrize(
    "heard",
    [
        "hey jarvis what time is it",
        "Hey, Jarvis: what time is it?",
        "he jarvis what time is it",
        "jarvis what time is it",
        "travis what time is it",
        "what time is it",
    ],
)
def test_the_wake_phrase_a_transcript_starts_with_is_stripped(heard: str) -> None:
    assert strip_wake_phrase(heard, "hey jarvis") == "what time is it"


def test_stripping_stops_at_the_first_other_word_and_keeps_later_ones() -> None:
    assert strip_wake_phrase("set a timer hey jarvis", "hey jarvis") == "set a timer hey jarvis"
    assert strip_wake_phrase("hey jarvis", "hey jarvis") == ""
