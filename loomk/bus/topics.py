"""Topic grammar and the token trie that matches published topics to subscription patterns.

Topics are dot-separated tokens (``camera.front.face``) of text without whitespace, NUL or
lone surrogates (a topic goes on the wire as UTF-8). A pattern may use ``*`` for exactly
one token and ``>`` for one or more trailing tokens (last position only): the NATS subject
grammar, so topics map one-to-one onto NATS subjects. Matching walks a trie of pattern
tokens, so its cost depends on the topic's length and the wildcards on its path, never on
the number of subscriptions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from loomk._wire import text_problem
from loomk.errors import TopicError

__all__ = ["TopicTrie", "is_wildcard", "pattern_matches", "validate_pattern", "validate_topic"]

MAX_TOPIC_LENGTH = 1024
_WHITESPACE = frozenset(" \t\r\n\v\f\x00")

T = TypeVar("T")
_MISSING: object = object()
_NONE: dict[Any, Any] = {}  # shared empty map of trie nodes: replaced, never written


def _check_common(topic: object) -> str:
    if not isinstance(topic, str):
        raise TopicError(topic, f"must be a str, got {type(topic).__name__}")
    if not topic:
        raise TopicError(topic, "must not be empty")
    if len(topic) > MAX_TOPIC_LENGTH:
        raise TopicError(topic[:40] + "...", f"longer than {MAX_TOPIC_LENGTH} characters")
    if not _WHITESPACE.isdisjoint(topic):
        raise TopicError(topic, "must not contain whitespace or NUL")
    problem = text_problem(topic)
    if problem:
        raise TopicError(topic, problem)
    if topic[0] == "." or topic[-1] == "." or ".." in topic:
        raise TopicError(topic, "has an empty token (leading, trailing or double dot)")
    return topic


_TOKEN = r"[^ \t\r\n\v\f\x00\ud800-\udfff.*>]+"  # no lone surrogate: topics are UTF-8
_VALID_TOPIC = re.compile(rf"{_TOKEN}(?:\.{_TOKEN})*")
_VALID_PATTERN = re.compile(rf"(?:{_TOKEN}|\*)(?:\.(?:{_TOKEN}|\*))*(?:\.>)?|>")


def validate_topic(topic: object) -> str:
    """Check a publish topic: non-empty dot tokens, no whitespace, no wildcards."""
    if (
        topic.__class__ is str
        and len(topic) <= MAX_TOPIC_LENGTH
        and _VALID_TOPIC.fullmatch(topic) is not None
    ):
        return topic
    _check_common(topic)
    assert isinstance(topic, str)
    if "*" in topic or ">" in topic:
        raise TopicError(topic, "wildcards '*' and '>' are only allowed in subscription patterns")
    return topic


def validate_pattern(pattern: object) -> str:
    """Check a subscription pattern: like a topic, plus whole-token ``*`` and a final ``>``."""
    if (
        pattern.__class__ is str
        and len(pattern) <= MAX_TOPIC_LENGTH
        and _VALID_PATTERN.fullmatch(pattern) is not None
    ):
        return pattern
    _check_common(pattern)
    assert isinstance(pattern, str)
    tokens = pattern.split(".")
    last = len(tokens) - 1
    for index, token in enumerate(tokens):
        if token == ">":
            if index != last:
                raise TopicError(pattern, "'>' may only be the last token")
        elif token != "*" and ("*" in token or ">" in token):
            raise TopicError(pattern, f"wildcard inside token {token!r}: '*' and '>' stand alone")
    return pattern


def is_wildcard(pattern: str) -> bool:
    """Whether a (valid) pattern contains a wildcard token."""
    return "*" in pattern or ">" in pattern


def pattern_matches(pattern: str, topic: str) -> bool:
    """Reference matcher for one pattern and one topic (the trie must agree with it)."""
    p_tokens = pattern.split(".")
    t_tokens = topic.split(".")
    for index, token in enumerate(p_tokens):
        if token == ">":
            return len(t_tokens) > index
        if index >= len(t_tokens):
            return False
        if token != "*" and token != t_tokens[index]:
            return False
    return len(p_tokens) == len(t_tokens)


class _Node(Generic[T]):
    __slots__ = ("children", "star", "tail", "values")

    # Empty maps are one shared, never-written dict until a node needs its own: most nodes
    # use one of the three, and a kernel can hold hundreds of thousands of nodes.
    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] = _NONE
        self.star: _Node[T] | None = None
        self.tail: dict[int, T] = _NONE  # patterns ending in '>' here
        self.values: dict[int, T] = _NONE  # patterns ending exactly here

    def is_empty(self) -> bool:
        return not (self.children or self.star or self.tail or self.values)


class TopicTrie(Generic[T]):
    """Values stored under subscription patterns, found by matching a concrete topic.

    Each value is stored under a caller-chosen integer key (unique per stored value), so the
    same pattern can hold many values and removal is exact. Patterns without wildcards (most
    of them, e.g. every agent's ``agent.{id}.replies``) live in a plain dict beside the trie.
    """

    __slots__ = ("_exact", "_root", "_size")

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        self._exact: dict[str, dict[int, T]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def insert(self, pattern: str, key: int, value: T) -> None:
        """Store ``value`` under ``pattern`` (which must already be valid)."""
        self._size += 1
        if not is_wildcard(pattern):
            values = self._exact.get(pattern)
            if values is None:
                values = self._exact[pattern] = {}
            values[key] = value
            return
        node = self._root
        tokens = pattern.split(".")
        for token in tokens[:-1]:
            node = self._child(node, token)
        last = tokens[-1]
        if last == ">":
            if node.tail is _NONE:
                node.tail = {}
            node.tail[key] = value
        else:
            node = self._child(node, last)
            if node.values is _NONE:
                node.values = {}
            node.values[key] = value

    def remove(self, pattern: str, key: int) -> bool:
        """Remove the value stored under ``pattern`` and ``key``; False if absent."""
        if not is_wildcard(pattern):
            values = self._exact.get(pattern)
            if values is None or values.pop(key, _MISSING) is _MISSING:
                return False
            if not values:
                del self._exact[pattern]
            self._size -= 1
            return True
        path: list[tuple[_Node[T], str]] = []
        node: _Node[T] | None = self._root
        tokens = pattern.split(".")
        for token in tokens[:-1]:
            assert node is not None
            path.append((node, token))
            node = node.star if token == "*" else node.children.get(token)
            if node is None:
                return False
        assert node is not None
        last = tokens[-1]
        if last == ">":
            removed = node.tail.pop(key, _MISSING) is not _MISSING
        else:
            path.append((node, last))
            node = node.star if last == "*" else node.children.get(last)
            if node is None:
                return False
            removed = node.values.pop(key, _MISSING) is not _MISSING
        if removed:
            self._size -= 1
            self._prune(path, node)
        return removed

    def has_exact(self, pattern: str) -> bool:
        """Whether some value is stored under exactly ``pattern`` (a literal topic)."""
        return bool(self._exact.get(pattern))

    def match(self, topic: str) -> list[tuple[int, T]]:
        """Every (key, value) whose pattern matches ``topic``, in ascending key order."""
        exact = self._exact.get(topic)
        found: list[tuple[int, T]] = [] if exact is None else list(exact.items())
        root = self._root
        if root.children or root.star is not None or root.tail:
            self._collect(root, topic.split("."), 0, found)
        if len(found) > 1:
            found.sort(key=_first)
        return found

    def __iter__(self) -> Iterator[tuple[int, T]]:
        for values in self._exact.values():
            yield from values.items()
        stack = [self._root]
        while stack:
            node = stack.pop()
            yield from node.values.items()
            yield from node.tail.items()
            stack.extend(node.children.values())
            if node.star is not None:
                stack.append(node.star)

    # ---- internals ------------------------------------------------------------------------

    @staticmethod
    def _child(node: _Node[T], token: str) -> _Node[T]:
        if token == "*":
            if node.star is None:
                node.star = _Node()
            return node.star
        child = node.children.get(token)
        if child is None:
            if node.children is _NONE:
                node.children = {}
            child = node.children[token] = _Node()
        return child

    @staticmethod
    def _prune(path: list[tuple[_Node[T], str]], node: _Node[T]) -> None:
        while path and node.is_empty():
            parent, token = path.pop()
            if token == "*":
                parent.star = None
            else:
                del parent.children[token]
            node = parent

    def _collect(
        self, node: _Node[T], tokens: list[str], index: int, found: list[tuple[int, T]]
    ) -> None:
        if index == len(tokens):
            found.extend(node.values.items())
            return
        if node.tail:
            found.extend(node.tail.items())  # '>' here matches the one-or-more tokens left
        child = node.children.get(tokens[index])
        if child is not None:
            self._collect(child, tokens, index + 1, found)
        if node.star is not None:
            self._collect(node.star, tokens, index + 1, found)


def _first(item: tuple[int, object]) -> int:
    return item[0]
