"""Unit tests for loomk.bus.topics: topic and pattern grammar, the matcher and the TopicTrie."""

from __future__ import annotations

import pytest

from loomk.bus.topics import (
    TopicTrie,
    is_wildcard,
    pattern_matches,
    validate_pattern,
    validate_topic,
)
from loomk.errors import LoomkError, TopicError

GOOD_TOPICS = ["a", "camera.front.face", "a.b.c.d.e", "x-y_z.9", "ünï.cødé", "a" * 1024]
GOOD_PATTERNS = [*GOOD_TOPICS, "*", ">", "a.*", "*.b", "a.>", "*.*.>", "a.*.c.>", "*.>"]

# (input, reason fragment) rejected by both validate_topic and validate_pattern
BAD_COMMON: list[tuple[object, str]] = [
    ("", "must not be empty"),
    (None, "must be a str, got NoneType"),
    (5, "must be a str, got int"),
    (b"a.b", "must be a str, got bytes"),
    (["a"], "must be a str, got list"),
    (".a", "empty token"),
    ("a.", "empty token"),
    ("a..b", "empty token"),
    (".", "empty token"),
    ("a b", "whitespace"),
    (" a", "whitespace"),
    ("a\tb", "whitespace"),
    ("a\nb", "whitespace"),
    ("a.b\r", "whitespace"),
    ("a\x00b", "NUL"),
    ("a" * 1025, "longer than 1024"),
]


# ---- validate_topic / validate_pattern ---------------------------------------------------


def test_topic_error_is_a_value_error_with_a_code() -> None:
    assert issubclass(TopicError, ValueError)
    assert issubclass(TopicError, LoomkError)
    with pytest.raises(TopicError) as info:
        validate_topic("")
    assert info.value.code == "TOPIC_INVALID"


@pytest.mark.parametrize("topic", GOOD_TOPICS)
def test_validate_topic_accepts_and_returns_good_topics(topic: str) -> None:
    assert validate_topic(topic) == topic


@pytest.mark.parametrize("pattern", GOOD_PATTERNS)
def test_validate_pattern_accepts_and_returns_good_patterns(pattern: str) -> None:
    assert validate_pattern(pattern) == pattern


@pytest.mark.parametrize(("bad", "reason"), BAD_COMMON)
def test_validate_topic_rejects(bad: object, reason: str) -> None:
    with pytest.raises(TopicError) as info:
        validate_topic(bad)
    assert reason in info.value.reason
    assert reason in str(info.value)
    if isinstance(bad, str) and len(bad) <= 1024:
        assert info.value.topic == bad


@pytest.mark.parametrize(("bad", "reason"), BAD_COMMON)
def test_validate_pattern_rejects(bad: object, reason: str) -> None:
    with pytest.raises(TopicError) as info:
        validate_pattern(bad)
    assert reason in info.value.reason
    if isinstance(bad, str) and len(bad) <= 1024:
        assert info.value.topic == bad


def test_too_long_error_names_a_shortened_topic() -> None:
    with pytest.raises(TopicError) as info:
        validate_topic("a" * 5000)
    assert isinstance(info.value.topic, str)
    assert info.value.topic.startswith("a" * 40)
    assert len(str(info.value)) < 200


def test_non_str_error_keeps_the_object() -> None:
    with pytest.raises(TopicError) as info:
        validate_topic(42)
    assert info.value.topic == 42


@pytest.mark.parametrize("topic", ["*", ">", "a.*", "a.>", "*.b", "a*", "b>c", "a.b*"])
def test_validate_topic_rejects_wildcards(topic: str) -> None:
    with pytest.raises(TopicError) as info:
        validate_topic(topic)
    assert "wildcards" in info.value.reason
    assert info.value.topic == topic


def test_validate_topic_rejection_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"invalid topic 'a\.\*'"):
        validate_topic("a.*")


@pytest.mark.parametrize("pattern", [">.a", "a.>.b", ">.>", ">.*"])
def test_validate_pattern_rejects_tail_wildcard_not_last(pattern: str) -> None:
    with pytest.raises(TopicError) as info:
        validate_pattern(pattern)
    assert "'>' may only be the last token" in info.value.reason
    assert info.value.topic == pattern


@pytest.mark.parametrize(
    ("pattern", "token"),
    [("a*", "a*"), ("b>c", "b>c"), ("x.a*", "a*"), ("**", "**"), (">>", ">>"), ("a.*b.c", "*b")],
)
def test_validate_pattern_rejects_wildcard_inside_token(pattern: str, token: str) -> None:
    with pytest.raises(TopicError) as info:
        validate_pattern(pattern)
    assert "wildcard inside token" in info.value.reason
    assert repr(token) in info.value.reason


def test_length_limit_is_inclusive() -> None:
    dotted = ".".join(["ab"] * 341) + ".x"  # 1024 characters
    assert len(dotted) == 1024
    assert validate_topic(dotted) == dotted
    with pytest.raises(TopicError):
        validate_topic(dotted + "y")
    with pytest.raises(TopicError):
        validate_pattern("a" * 1024 + ".>")


def test_is_wildcard() -> None:
    assert is_wildcard("*")
    assert is_wildcard("a.>")
    assert is_wildcard("a.*.c")
    assert not is_wildcard("a.b.c")


# ---- pattern_matches ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("a", "a", True),
        ("a.b", "a.b", True),
        ("a.b", "a.c", False),
        ("a.b", "a", False),
        ("a", "a.b", False),
        ("a.b", "a.b.c", False),
        ("ab", "a", False),
        ("*", "a", True),
        ("*", "a.b", False),
        ("a.*", "a.b", True),
        ("a.*", "a", False),
        ("a.*", "a.b.c", False),
        ("*.b", "x.b", True),
        ("*.b", "x.c", False),
        ("a.*.c", "a.x.c", True),
        ("a.*.c", "a.x.d", False),
        ("*.*", "a.b", True),
        ("*.*", "a", False),
        (">", "a", True),
        (">", "a.b.c", True),
        ("a.>", "a", False),
        ("a.>", "a.b", True),
        ("a.>", "a.b.c.d", True),
        ("a.>", "b.c", False),
        ("a.*.>", "a.b", False),
        ("a.*.>", "a.b.c", True),
        ("*.>", "a", False),
        ("*.>", "a.b", True),
    ],
)
def test_pattern_matches(pattern: str, topic: str, expected: bool) -> None:
    assert pattern_matches(pattern, topic) is expected


# ---- TopicTrie ---------------------------------------------------------------------------


def test_empty_trie() -> None:
    trie: TopicTrie[str] = TopicTrie()
    assert len(trie) == 0
    assert list(trie) == []
    assert trie.match("a") == []


def test_insert_and_exact_match() -> None:
    trie: TopicTrie[str] = TopicTrie()
    trie.insert("a.b", 1, "ab")
    trie.insert("a.c", 2, "ac")
    trie.insert("a", 3, "a")
    assert len(trie) == 3
    assert trie.match("a.b") == [(1, "ab")]
    assert trie.match("a.c") == [(2, "ac")]
    assert trie.match("a") == [(3, "a")]
    assert trie.match("a.d") == []
    assert trie.match("a.b.c") == []
    assert trie.match("b") == []


def test_wildcard_matching() -> None:
    trie: TopicTrie[str] = TopicTrie()
    trie.insert("a.*", 1, "a.*")
    trie.insert("a.>", 2, "a.>")
    trie.insert("*.b", 3, "*.b")
    trie.insert("a.b", 4, "a.b")
    trie.insert("a.*.c", 5, "a.*.c")
    assert trie.match("a.b") == [(1, "a.*"), (2, "a.>"), (3, "*.b"), (4, "a.b")]
    assert trie.match("a.x") == [(1, "a.*"), (2, "a.>")]
    assert trie.match("a.x.c") == [(2, "a.>"), (5, "a.*.c")]
    assert trie.match("a") == []
    assert trie.match("z.b") == [(3, "*.b")]


def test_several_values_under_one_pattern() -> None:
    trie: TopicTrie[str] = TopicTrie()
    trie.insert("a.b", 7, "seven")
    trie.insert("a.b", 3, "three")
    trie.insert("a.b", 5, "five")
    assert len(trie) == 3
    assert trie.match("a.b") == [(3, "three"), (5, "five"), (7, "seven")]
    assert trie.remove("a.b", 5) is True
    assert trie.match("a.b") == [(3, "three"), (7, "seven")]
    assert len(trie) == 2


def test_match_returns_ascending_key_order_across_patterns() -> None:
    trie: TopicTrie[int] = TopicTrie()
    patterns = [">", "a.>", "a.*.c", "*.b.c", "a.b.c", "*.*.*", "a.b.>", "*.>"]
    keys = [90, 10, 55, 3, 71, 42, 18, 64]
    for pattern, key in zip(patterns, keys, strict=True):
        trie.insert(pattern, key, key)
    found = trie.match("a.b.c")
    assert [key for key, _ in found] == sorted(keys)
    assert [value for _, value in found] == sorted(keys)


def test_remove_is_exact() -> None:
    trie: TopicTrie[str] = TopicTrie()
    trie.insert("a.*", 1, "one")
    trie.insert("a.b", 2, "two")
    trie.insert("a.>", 3, "three")
    # wrong pattern for the key, or wrong key for the pattern: nothing removed
    assert trie.remove("a.b", 1) is False
    assert trie.remove("a.*", 2) is False
    assert trie.remove("a.>", 1) is False
    assert trie.remove("a.*", 3) is False
    assert len(trie) == 3
    assert trie.match("a.b") == [(1, "one"), (2, "two"), (3, "three")]
    assert trie.remove("a.*", 1) is True
    assert trie.match("a.b") == [(2, "two"), (3, "three")]
    assert trie.match("a.x") == [(3, "three")]
    assert len(trie) == 2


def test_remove_absent_returns_false() -> None:
    trie: TopicTrie[str] = TopicTrie()
    assert trie.remove("a", 1) is False
    assert trie.remove("a.b.c", 1) is False
    assert trie.remove(">", 1) is False
    assert trie.remove("*", 1) is False
    assert trie.remove("x.>", 1) is False
    trie.insert("a.b", 1, "v")
    assert trie.remove("a.b.c", 1) is False
    assert trie.remove("a", 1) is False
    assert trie.remove("a.b.>", 1) is False
    assert trie.remove("a.b", 1) is True
    assert trie.remove("a.b", 1) is False  # already removed
    assert len(trie) == 0


def test_removing_everything_prunes_to_an_empty_trie() -> None:
    trie: TopicTrie[str] = TopicTrie()
    entries = [
        ("a.b.c", 1),
        ("a.b", 2),
        ("a.*.c", 3),
        ("a.>", 4),
        ("*", 5),
        (">", 6),
        ("*.*.>", 7),
        ("a.b.c", 8),
        ("x.y.z.w", 9),
    ]
    for pattern, key in entries:
        trie.insert(pattern, key, pattern)
    assert len(trie) == len(entries)
    assert sorted(trie) == sorted((key, pattern) for pattern, key in entries)
    for pattern, key in reversed(entries):
        assert trie.remove(pattern, key) is True
    assert len(trie) == 0
    assert list(trie) == []
    for topic in ["a", "a.b", "a.b.c", "x.y.z.w", "q.r.s"]:
        assert trie.match(topic) == []
    # fully pruned: the root has no children left
    assert trie._root.is_empty()


def test_partial_removal_prunes_only_empty_branches() -> None:
    trie: TopicTrie[str] = TopicTrie()
    trie.insert("a.b.*", 1, "deep")
    trie.insert("a.>", 2, "shallow")
    assert trie.remove("a.b.*", 1) is True
    assert trie.match("a.b.c") == [(2, "shallow")]
    assert list(trie) == [(2, "shallow")]
    assert "b" not in trie._root.children["a"].children
    assert trie.remove("a.>", 2) is True
    assert trie._root.is_empty()


def test_literal_patterns_leave_no_trie_nodes_behind() -> None:
    trie: TopicTrie[str] = TopicTrie()
    trie.insert("agent.a.replies", 1, "a")
    trie.insert("agent.*.replies", 2, "any")
    assert trie.match("agent.a.replies") == [(1, "a"), (2, "any")]
    assert trie.remove("agent.a.replies", 1) is True
    assert trie.remove("agent.a.replies", 1) is False
    assert trie.match("agent.a.replies") == [(2, "any")]
    assert trie.remove("agent.*.replies", 2) is True
    assert trie._root.is_empty()
    assert trie._exact == {}
    assert len(trie) == 0


def test_iteration_yields_every_entry_once() -> None:
    trie: TopicTrie[str] = TopicTrie()
    trie.insert("a", 1, "x")
    trie.insert("a", 2, "y")
    trie.insert("*.b", 3, "z")
    trie.insert("a.>", 4, "w")
    assert sorted(trie) == [(1, "x"), (2, "y"), (3, "z"), (4, "w")]


def test_tail_at_root_matches_everything() -> None:
    trie: TopicTrie[str] = TopicTrie()
    trie.insert(">", 1, "all")
    for topic in ["a", "a.b", "x.y.z.w.v"]:
        assert trie.match(topic) == [(1, "all")]


def test_star_at_root_matches_one_token_topics_only() -> None:
    trie: TopicTrie[str] = TopicTrie()
    trie.insert("*", 1, "one")
    assert trie.match("a") == [(1, "one")]
    assert trie.match("zzz") == [(1, "one")]
    assert trie.match("a.b") == []
    assert trie.match("a.b.c") == []


def test_remove_root_wildcards() -> None:
    trie: TopicTrie[str] = TopicTrie()
    trie.insert("*", 1, "star")
    trie.insert(">", 2, "tail")
    assert trie.remove(">", 2) is True
    assert trie.match("a.b") == []
    assert trie.match("a") == [(1, "star")]
    assert trie.remove("*", 1) is True
    assert trie.match("a") == []
    assert len(trie) == 0


def test_values_are_generic_and_returned_as_stored() -> None:
    trie: TopicTrie[object] = TopicTrie()
    marker = object()
    trie.insert("a", 1, marker)
    [(key, value)] = trie.match("a")
    assert key == 1
    assert value is marker


@pytest.mark.parametrize("value", [None, 0, "", False])
def test_falsy_values_can_be_stored_and_removed(value: object) -> None:
    trie: TopicTrie[object] = TopicTrie()
    trie.insert("a.b", 1, value)
    trie.insert("a.>", 2, value)
    assert trie.match("a.b") == [(1, value), (2, value)]
    assert trie.remove("a.b", 1) is True
    assert trie.remove("a.>", 2) is True
    assert len(trie) == 0
    assert list(trie) == []
