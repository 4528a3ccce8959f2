"""The command grammar: from the templates the local model reads, loaded by pocketsphinx,
hearing flite's speech word for word, and understood by the local model phrase by phrase."""

from __future__ import annotations

import re
from typing import Any

import pytest
from audio_support import Speech

from loomk.llm.local import understand
from loomk_audio.grammar import (
    DEFAULT_LIMIT,
    command_examples,
    command_grammar,
    command_phrases,
    sphinx_vocabulary,
)

INTENTS = {"lights", "timer", "time", "date", "weather", "math", "greeting", "help"}


@pytest.fixture(scope="module")
def decoder() -> Any:
    """pocketsphinx held to the command grammar (loading it takes about half a second)."""
    from pocketsphinx import Decoder

    loaded = Decoder(samprate=16000, lm=None, loglevel="FATAL")
    loaded.add_jsgf_string("commands", command_grammar())
    loaded.activate_search("commands")
    return loaded


def test_the_grammar_is_jsgf_with_every_rule_defined_and_only_known_words() -> None:
    grammar = command_grammar()
    lines = grammar.splitlines()
    assert lines[:2] == ["#JSGF V1.0;", "grammar commands;"]
    assert lines[2].startswith("public <command> = <lights> | <timer>")
    defined = {m.group(1) for m in re.finditer(r"^<([\w-]+)> =", grammar, re.MULTILINE)}
    used = set(re.findall(r"<([\w-]+)>", grammar)) - {"command"}
    assert used == defined
    assert defined >= INTENTS
    words = set(re.sub(r"<[\w-]+>|[=|;]", " ", "\n".join(lines[3:])).split())
    assert words <= sphinx_vocabulary()
    assert len(grammar) < 20_000  # rules for lists: not one line per phrase


def test_a_vocabulary_without_a_word_drops_what_needs_it() -> None:
    vocabulary = sphinx_vocabulary() - {"kitchen", "percent"}
    grammar = command_grammar(vocabulary)
    assert "kitchen" not in grammar.split()
    assert "living room" in grammar
    assert "percent" not in grammar
    assert "brightness to <brightness>;" in grammar or "brightness to <brightness> |" in grammar
    with pytest.raises(ValueError, match="cannot say any command"):
        command_grammar(frozenset())


@pytest.mark.parametrize(
    "text",
    [
        "turn on the kitchen lights",
        "set a timer for twenty five minutes",
        "what's the weather like in paris tomorrow",
        "what time is it in tokyo",
        "what is seven times eight",
    ],
)
def test_pocketsphinx_hears_flite_saying_a_command_exactly(
    decoder: Any, speech: Speech, text: str
) -> None:
    samples = speech.flite(text)
    decoder.start_utt()
    decoder.process_raw(samples.tobytes(), full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    assert hypothesis is not None
    assert hypothesis.hypstr == text


def test_phrases_are_bounded_distinct_and_cover_every_intent_early() -> None:
    phrases = command_phrases()
    assert len(phrases) == DEFAULT_LIMIT
    assert len(set(phrases)) == len(phrases)
    assert "turn on the lights in the attic" in phrases
    first = command_examples(limit=120)
    assert {intent for intent, _ in first} == INTENTS
    assert command_phrases(limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        command_phrases(limit=-1)


def test_phrases_keep_to_a_vocabulary() -> None:
    phrases = command_phrases(limit=500, vocabulary=sphinx_vocabulary() - {"attic"})
    assert phrases
    assert not any("attic" in p.split() for p in phrases)


def test_every_phrase_is_understood_as_its_intent() -> None:
    """The grammar offers nothing the local model would not understand: every sentence of
    every template (the first 600 phrases, which take every template in turn, then every
    30th), read as the intent it came
    from; the rooms and durations as said."""
    examples = command_examples(limit=100_000)
    checked = examples[:600] + examples[600::30]
    wrong = [(i, p, understand(p).name) for i, p in checked if understand(p).name != i]
    assert wrong == []
    lights = understand("turn off the lights in the living room")
    assert lights.slots == {"state": "off", "room": "living room"}
    assert understand("set a timer for forty five seconds").slots == {"seconds": 45}
    assert understand("remind me in twelve minutes").slots == {"seconds": 720}
