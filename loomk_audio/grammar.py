"""Command grammars for the recognizer, from the sentence templates the local model reads.

A closed grammar makes a small offline recognizer hear commands well (Rhasspy's approach):
the sentences it may hear are the ones the intent engine understands. They come from
:func:`loomk.llm.local.sentences.command_templates` (Home Assistant's speech-to-phrase
templates for lights, timers, time, date and weather, and the local model's own for places,
math, greetings and help) with their lists filled by
:func:`~loomk.llm.local.sentences.slot_values` (rooms, cities, numbers as words):

* :func:`command_grammar`: a JSGF grammar for pocketsphinx (``add_jsgf_string``), one rule
  per intent and per list, so it stays small however many rooms or numbers there are; only
  words in the recognizer's dictionary (:func:`sphinx_vocabulary` by default) are kept;
* :func:`command_phrases`: the same sentences spelled out, for Vosk-style phrase lists,
  bounded by ``limit`` and taken in turn from every template so a short list still covers
  every command; :func:`command_examples` labels each with its intent.

The templates are expanded once per process (hassil parses them; ~0.1 s) and cached.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from loomk_audio._deps import require

if TYPE_CHECKING:
    from hassil import Expression

__all__ = [
    "DEFAULT_LIMIT",
    "command_examples",
    "command_grammar",
    "command_phrases",
    "sphinx_vocabulary",
]

DEFAULT_LIMIT = 2000
GRAMMAR_NAME = "commands"
_LIST = re.compile(r"\{(\w+)\}")
_T = TypeVar("_T")
Words = tuple[str, ...]  # a sentence's words; a "{list}" word stands for a list's values


@dataclass(frozen=True, slots=True)
class _Sentences:
    """Every template spelled out but for its lists: (intent, words) in template order,
    and the lists' values as words."""

    variants: tuple[tuple[str, Words], ...]
    lists: dict[str, tuple[Words, ...]]


def command_grammar(vocabulary: Collection[str] | None = None) -> str:
    """A JSGF grammar of every command (see the module notes) whose words are all in
    ``vocabulary`` (default: pocketsphinx's US-English dictionary); ValueError if that
    leaves none."""
    known = sphinx_vocabulary() if vocabulary is None else vocabulary
    sentences = _usable(_sentences(), known)
    intents = list(dict.fromkeys(intent for intent, _ in sentences.variants))
    if not intents:
        raise ValueError("the vocabulary cannot say any command")
    lines = [
        "#JSGF V1.0;",
        f"grammar {GRAMMAR_NAME};",
        "public <command> = " + " | ".join(f"<{_rule(i)}>" for i in intents) + ";",
    ]
    for intent in intents:
        bodies = [_jsgf(words) for name, words in sentences.variants if name == intent]
        lines.append(f"<{_rule(intent)}> = " + " | ".join(bodies) + ";")
    for name, values in sentences.lists.items():
        lines.append(f"<{_rule(name)}> = " + " | ".join(" ".join(v) for v in values) + ";")
    return "\n".join(lines) + "\n"


def command_examples(
    limit: int = DEFAULT_LIMIT, vocabulary: Collection[str] | None = None
) -> list[tuple[str, str]]:
    """Up to ``limit`` (intent, phrase) pairs, one intent after another and within one,
    one template after another, so a short list still has every command; only words in
    ``vocabulary`` (default: any word)."""
    if limit < 0:
        raise ValueError(f"limit must be 0 or more, not {limit}")
    sentences = _sentences() if vocabulary is None else _usable(_sentences(), vocabulary)
    by_intent: dict[str, list[Iterator[str]]] = {}
    for intent, words in sentences.variants:
        by_intent.setdefault(intent, []).append(_spell(words, sentences.lists))
    turns = _in_turn(
        [zip(itertools.repeat(i), _in_turn(spelled)) for i, spelled in by_intent.items()]
    )
    examples: list[tuple[str, str]] = []
    seen: set[str] = set()
    for intent, phrase in turns:
        if len(examples) >= limit:
            break
        if phrase not in seen:
            seen.add(phrase)
            examples.append((intent, phrase))
    return examples


def command_phrases(
    limit: int = DEFAULT_LIMIT, vocabulary: Collection[str] | None = None
) -> list[str]:
    """Up to ``limit`` command phrases (see :func:`command_examples`), for a recognizer
    that takes a phrase list."""
    return [phrase for _, phrase in command_examples(limit, vocabulary)]


@functools.cache
def sphinx_vocabulary() -> frozenset[str]:
    """The words of pocketsphinx's bundled US-English dictionary (``cmudict-en-us.dict``)."""
    pocketsphinx = require("pocketsphinx", pip="pocketsphinx", purpose="the command grammar")
    path = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
    words = set()
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            word = line.split(" ", 1)[0]
            words.add(word.split("(", 1)[0])  # "read(2)" is a second way to say "read"
    return frozenset(words)


def _in_turn(iterators: list[Iterator[_T]]) -> Iterator[_T]:
    """One item from each of ``iterators`` in turn, until all are done."""
    active = list(iterators)
    while active:
        still = []
        for iterator in active:
            item = next(iterator, None)
            if item is not None:
                still.append(iterator)
                yield item
        active = still


def _rule(name: str) -> str:
    return name.replace("_", "-")


def _jsgf(words: Words) -> str:
    return " ".join(f"<{_rule(m.group(1))}>" if (m := _LIST.fullmatch(w)) else w for w in words)


def _spell(words: Words, lists: dict[str, tuple[Words, ...]]) -> Iterator[str]:
    """Every phrase ``words`` stands for, its lists' values in order."""
    slots = [lists[m.group(1)] if (m := _LIST.fullmatch(w)) else ((w,),) for w in words]
    for choice in itertools.product(*slots):
        yield " ".join(word for part in choice for word in part)


def _usable(sentences: _Sentences, vocabulary: Collection[str]) -> _Sentences:
    """``sentences`` with only words in ``vocabulary``: a list keeps the values it can say,
    and a sentence is dropped if it has another word or an empty list."""
    lists = {
        name: kept
        for name, values in sentences.lists.items()
        if (kept := tuple(v for v in values if all(w in vocabulary for w in v)))
    }
    variants = tuple(
        (intent, words)
        for intent, words in sentences.variants
        if all(m.group(1) in lists if (m := _LIST.fullmatch(w)) else w in vocabulary for w in words)
    )
    used = {m.group(1) for _, words in variants for w in words if (m := _LIST.fullmatch(w))}
    return _Sentences(variants, {name: lists[name] for name in lists if name in used})


@functools.cache
def _sentences() -> _Sentences:
    """The templates spelled out (lists kept as "{name}"); a sentence naming a list with
    no values here (a device name, a floor, free text) is left out."""
    from hassil import parse_sentence

    from loomk.llm.local.sentences import command_templates, expansion_rules, slot_values

    values = slot_values()
    rules = {name: parse_sentence(text).expression for name, text in expansion_rules().items()}
    variants: dict[tuple[str, Words], None] = {}
    for intent, template in command_templates():
        for text in _expand(parse_sentence(template).expression, rules):
            words = tuple(text.lower().split())
            if words and all(
                m.group(1) in values if (m := _LIST.fullmatch(w)) else "{" not in w for w in words
            ):
                variants[(intent, words)] = None
    lists = {name: tuple(tuple(v.lower().split()) for v in vs) for name, vs in values.items()}
    return _Sentences(tuple(variants), lists)


def _expand(expression: Expression, rules: dict[str, Expression]) -> list[str]:
    """The texts a hassil template stands for, its ``{lists}`` kept as ``{name}``. Parts
    join as written ("hour[s]" gives "hour" and "hours")."""
    from hassil import (
        Alternative,
        ListReference,
        Permutation,
        RuleReference,
        Sequence,
        TextChunk,
    )

    if isinstance(expression, TextChunk):
        return [expression.text]
    if isinstance(expression, ListReference):
        return [f"{{{expression.list_name}}}"]
    if isinstance(expression, RuleReference):
        return _expand(rules[expression.rule_name], rules)
    if isinstance(expression, Alternative):
        return [text for item in expression.items for text in _expand(item, rules)]
    if isinstance(expression, Permutation):
        orders = itertools.permutations(expression.items)
        return [
            " ".join(texts)
            for order in orders
            for texts in itertools.product(*(_expand(item, rules) for item in order))
        ]
    if isinstance(expression, Sequence):
        parts = [_expand(item, rules) for item in expression.items]
        return ["".join(texts) for texts in itertools.product(*parts)]
    raise TypeError(f"unexpected template part {expression!r}")
