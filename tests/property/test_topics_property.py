"""Property tests: the TopicTrie agrees with the reference matcher ``pattern_matches``."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loomk.bus.topics import TopicTrie, pattern_matches, validate_pattern, validate_topic

LITERALS = ["a", "b", "c"]

PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

topics = st.lists(st.sampled_from(LITERALS), min_size=1, max_size=5).map(".".join)


@st.composite
def patterns(draw: st.DrawFn) -> str:
    """1..5 tokens from a, b, c, '*'; the last may also be '>'."""
    size = draw(st.integers(min_value=1, max_value=5))
    tokens = draw(st.lists(st.sampled_from([*LITERALS, "*"]), min_size=size - 1, max_size=size - 1))
    tokens.append(draw(st.sampled_from([*LITERALS, "*", ">"])))
    return ".".join(tokens)


@PROPERTY_SETTINGS
@given(
    entries=st.lists(patterns(), min_size=0, max_size=30),
    removed=st.sets(st.integers(min_value=0, max_value=29)),
    probes=st.lists(topics, min_size=1, max_size=10),
    key_offset=st.integers(min_value=-1000, max_value=1000),
    reverse_keys=st.booleans(),
)
def test_trie_matches_exactly_the_reference_matcher(
    entries: list[str],
    removed: set[int],
    probes: list[str],
    key_offset: int,
    reverse_keys: bool,
) -> None:
    trie: TopicTrie[str] = TopicTrie()
    # Distinct keys, inserted in an order unrelated to key order when reverse_keys is set.
    keyed = [
        ((len(entries) - index if reverse_keys else index) + key_offset, pattern)
        for index, pattern in enumerate(entries)
    ]
    for key, pattern in keyed:
        trie.insert(pattern, key, pattern)
    live: dict[int, str] = {}
    for index, (key, pattern) in enumerate(keyed):
        if index in removed:
            assert trie.remove(pattern, key) is True
            assert trie.remove(pattern, key) is False
        else:
            live[key] = pattern
    assert len(trie) == len(live)
    assert sorted(trie) == sorted(live.items())
    for topic in probes:
        expected = sorted(
            (key, pattern) for key, pattern in live.items() if pattern_matches(pattern, topic)
        )
        assert trie.match(topic) == expected
    for key, pattern in live.items():
        assert trie.remove(pattern, key) is True
    assert len(trie) == 0
    assert list(trie) == []
    for topic in probes:
        assert trie.match(topic) == []


@PROPERTY_SETTINGS
@given(pattern=patterns(), topic=topics)
def test_single_pattern_trie_agrees_with_reference(pattern: str, topic: str) -> None:
    trie: TopicTrie[None] = TopicTrie()
    trie.insert(pattern, 1, None)
    assert (trie.match(topic) != []) is pattern_matches(pattern, topic)


@PROPERTY_SETTINGS
@given(pattern=patterns(), topic=topics)
def test_reference_matcher_token_semantics(pattern: str, topic: str) -> None:
    # An independent restatement of the grammar: '*' one token, '>' one or more trailing.
    p_tokens = pattern.split(".")
    t_tokens = topic.split(".")
    if p_tokens[-1] == ">":
        head = p_tokens[:-1]
        expected = len(t_tokens) > len(head) and all(
            p in ("*", t) for p, t in zip(head, t_tokens, strict=False)
        )
    else:
        expected = len(t_tokens) == len(p_tokens) and all(
            p in ("*", t) for p, t in zip(p_tokens, t_tokens, strict=True)
        )
    assert pattern_matches(pattern, topic) is expected


@PROPERTY_SETTINGS
@given(pattern=patterns())
def test_validate_pattern_accepts_generated_patterns(pattern: str) -> None:
    assert validate_pattern(pattern) == pattern


@PROPERTY_SETTINGS
@given(topic=topics)
def test_validate_topic_accepts_generated_topics(topic: str) -> None:
    assert validate_topic(topic) == topic
    assert validate_pattern(topic) == topic
    assert pattern_matches(topic, topic)
