"""Loom's prompt adapter (``promptbundle_to_messages_and_text``): message roles, fused-text
sections, the character budget and the order things are trimmed in; and the bundle and
budget types read from JSON. Properties: the fused text never exceeds the budget, and
nothing raises, whatever the text (non-ASCII included).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loomk.errors import LLMError
from loomk.llm.client import PromptBundle, TokenBudget, to_messages_and_text


def budget(tokens: int) -> TokenBudget:
    return TokenBudget(max_input_tokens=tokens, max_output_tokens=32)


# --- roles and sections ------------------------------------------------------------------


def test_every_part_has_its_role_and_its_section() -> None:
    bundle = PromptBundle(
        system="Be brief.",
        instructions="What now?",
        context_docs=("doc one", "doc two"),
        history=("earlier", "later"),
    )
    messages, fused = to_messages_and_text(bundle, TokenBudget())
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Context:\n- doc one\n- doc two\n"},
        {"role": "user", "content": "earlier"},
        {"role": "user", "content": "later"},
        {"role": "user", "content": "What now?"},
    ]
    assert fused == (
        "System:\nBe brief.\n\n"
        "Context:\n- doc one\n- doc two\n\n"
        "History:\n- earlier\n- later\n\n"
        "User:\nWhat now?\n"
    )


def test_loom_system_and_context_case() -> None:
    bundle = PromptBundle(system="You are helpful", instructions="Use tools", context_docs=("x",))
    messages, fused = to_messages_and_text(bundle)
    assert [m["role"] for m in messages] == ["system", "system", "user"]
    assert "System:" in fused
    assert "Context:" in fused
    assert "User:\nUse tools\n" in fused


@pytest.mark.parametrize(
    ("bundle", "fused"),
    [
        (PromptBundle(instructions="hi"), "User:\nhi\n"),
        (PromptBundle(system="s"), "System:\ns\n\n"),
        (PromptBundle(context_docs=("d",)), "Context:\n- d\n\n"),
        (PromptBundle(history=("h",)), "History:\n- h\n\n"),
    ],
)
def test_sections_appear_only_when_not_empty(bundle: PromptBundle, fused: str) -> None:
    assert to_messages_and_text(bundle)[1] == fused


def test_an_empty_bundle_gives_nothing() -> None:
    assert to_messages_and_text(PromptBundle(), TokenBudget()) == ([], "")


def test_tools_json_schema_is_not_part_of_the_prompt() -> None:
    plain = to_messages_and_text(PromptBundle(instructions="x"))
    with_tools = to_messages_and_text(
        PromptBundle(instructions="x", tools_json_schema='{"type": "object"}')
    )
    assert with_tools == plain


# --- the budget ----------------------------------------------------------------------------


def test_a_64_token_budget_shrinks_4000_characters_under_1000() -> None:
    bundle = PromptBundle(
        system="s" * 1000,
        instructions="i" * 1000,
        context_docs=("c" * 1000,),
        history=("h" * 1000,),
    )
    _, fused = to_messages_and_text(bundle, budget(64))
    assert len(fused) < 1000
    assert len(fused) <= 64 * 4


def test_loom_history_case_keeps_the_newest_turn() -> None:
    bundle = PromptBundle(
        system="sys",
        instructions="do it",
        context_docs=("doc1",),
        history=("a" * 2000, "b" * 2000, "c" * 10),
    )
    messages, fused = to_messages_and_text(bundle, budget(512))
    assert len(fused) <= 2048
    assert "c" * 10 in fused
    assert "a" * 2000 not in fused
    assert "b" * 2000 not in fused
    assert {"role": "user", "content": "do it"} in messages


def test_the_oldest_history_goes_first() -> None:
    bundle = PromptBundle(instructions="go", history=("a" * 50, "b" * 50, "c" * 50))
    messages, fused = to_messages_and_text(bundle, budget(20))  # 80 characters
    assert fused == "History:\n- " + "c" * 50 + "\n\nUser:\ngo\n"
    assert len(fused) == 72
    assert messages == [{"role": "user", "content": "c" * 50}, {"role": "user", "content": "go"}]


def test_then_the_instructions_lose_their_tail() -> None:
    bundle = PromptBundle(system="S" * 10, instructions="I" * 100, context_docs=("doc",))
    _, fused = to_messages_and_text(bundle, budget(20))
    assert fused == "System:\n" + "S" * 10 + "\n\nContext:\n- doc\n\nUser:\n" + "I" * 37 + "\n"
    assert len(fused) == 80


def test_then_the_context_shrinks_to_a_cut_first_document() -> None:
    bundle = PromptBundle(system="S" * 10, instructions="hi", context_docs=("d" * 100, "e" * 50))
    messages, fused = to_messages_and_text(bundle, budget(15))  # 60 characters
    context = "Context:\n- " + "d" * 27 + "\n"
    assert fused == "System:\n" + "S" * 10 + "\n\n" + context + "\n"
    assert len(fused) == 60
    # Loom's order: the instructions were cut (to nothing) before the context
    assert messages == [
        {"role": "system", "content": "S" * 10},
        {"role": "system", "content": context},
    ]


def test_a_context_with_no_room_for_a_character_is_dropped() -> None:
    bundle = PromptBundle(system="S" * 10, context_docs=("document",))
    assert to_messages_and_text(bundle, budget(8))[1] == "System:\n" + "S" * 10 + "\n\n"


def test_the_system_prompt_goes_last() -> None:
    bundle = PromptBundle(system="S" * 100, instructions="hi", context_docs=("doc",))
    messages, fused = to_messages_and_text(bundle, budget(5))
    assert fused == "System:\n" + "S" * 10 + "\n\n"
    assert messages == [{"role": "system", "content": "S" * 10}]


def test_a_bundle_without_history_is_held_to_the_budget_too() -> None:
    # Loom discounted a history label it had never counted, so this overshot by 5
    bundle = PromptBundle(system="S" * 35, instructions="x")  # 45 + 8 = 53 characters
    _, fused = to_messages_and_text(bundle, budget(12))  # 48
    assert len(fused) <= 48
    assert fused == "System:\n" + "S" * 35 + "\n\n"


def test_what_fits_is_left_alone() -> None:
    bundle = PromptBundle(system="s", instructions="i", context_docs=("c",), history=("h",))
    _, fused = to_messages_and_text(bundle, TokenBudget())
    tokens = -(-len(fused) // 4)  # the smallest budget it fits in
    assert to_messages_and_text(bundle, budget(tokens))[1] == fused


def test_cuts_count_characters_not_bytes() -> None:
    bundle = PromptBundle(instructions="é😀" * 100)
    _, fused = to_messages_and_text(bundle, budget(10))  # 40 characters
    assert fused == "User:\n" + ("é😀" * 20)[:33] + "\n"
    fused.encode("utf-8")  # whole characters only


# --- bundle and budget from JSON ----------------------------------------------------------


def test_a_bundle_reads_its_json_form() -> None:
    data = {
        "system": "s",
        "instructions": "i",
        "tools_json_schema": None,
        "context_docs": ["c"],
        "history": ["h1", "h2"],
        "unknown": 1,
    }
    bundle = PromptBundle.from_dict(data)
    assert bundle == PromptBundle("s", "i", None, ("c",), ("h1", "h2"))
    assert bundle.to_dict() == {k: v for k, v in data.items() if k != "unknown"}
    assert PromptBundle.from_dict({}) == PromptBundle()


def test_a_bundle_made_with_lists_keeps_tuples() -> None:
    bundle = PromptBundle(context_docs=["a"], history=["b"])  # type: ignore[arg-type]
    assert bundle.context_docs == ("a",)
    assert bundle.history == ("b",)


@pytest.mark.parametrize(
    "data",
    [
        [],
        "text",
        {"system": 1},
        {"instructions": None},
        {"tools_json_schema": {"type": "object"}},
        {"context_docs": "one"},
        {"history": ["ok", 2]},
    ],
)
def test_a_bundle_with_wrong_types_is_an_invalid_request(data: Any) -> None:
    with pytest.raises(LLMError) as caught:
        PromptBundle.from_dict(data)
    assert caught.value.code == "LLM_INVALID_REQUEST"


def test_a_budget_reads_its_json_form_with_defaults() -> None:
    assert TokenBudget.from_dict({}) == TokenBudget(2048, 512)
    assert TokenBudget.from_dict({"max_output_tokens": 7}) == TokenBudget(2048, 7)
    assert TokenBudget(64, 8).to_dict() == {"max_input_tokens": 64, "max_output_tokens": 8}
    assert TokenBudget(64, 8).char_budget == 256


@pytest.mark.parametrize(
    "data",
    [
        None,
        {"max_input_tokens": 0},
        {"max_input_tokens": -1},
        {"max_input_tokens": True},
        {"max_output_tokens": "512"},
        {"max_output_tokens": 1.5},
        {"max_input_tokens": 2**32},
    ],
)
def test_a_bad_budget_is_an_invalid_request(data: Any) -> None:
    with pytest.raises(LLMError) as caught:
        TokenBudget.from_dict(data)
    assert caught.value.code == "LLM_INVALID_REQUEST"


# --- properties ----------------------------------------------------------------------------

_TEXT = st.text(st.characters(codec=None), max_size=300)  # any code point, surrogates too
_BUNDLES = st.builds(
    PromptBundle,
    system=_TEXT,
    instructions=_TEXT,
    tools_json_schema=st.none() | _TEXT,
    context_docs=st.lists(_TEXT, max_size=4).map(tuple),
    history=st.lists(_TEXT, max_size=6).map(tuple),
)


@given(_BUNDLES, st.integers(min_value=1, max_value=400))
def test_the_fused_text_never_exceeds_the_budget(bundle: PromptBundle, tokens: int) -> None:
    messages, fused = to_messages_and_text(bundle, budget(tokens))
    assert len(fused) <= tokens * 4
    assert all(m["role"] in ("system", "user") for m in messages)
    # the messages hold what the fused text holds, without its labels
    assert sum(len(m["content"]) for m in messages) <= len(fused)


@given(_BUNDLES)
def test_a_bundle_that_fits_is_unchanged(bundle: PromptBundle) -> None:
    messages, fused = to_messages_and_text(bundle, budget(2**20))
    # every history item is a user turn (even an empty one, as in Loom), then the instructions
    expected = [*bundle.history, *([bundle.instructions] if bundle.instructions else [])]
    assert [m["content"] for m in messages if m["role"] == "user"] == expected
    if bundle.instructions:
        assert fused.endswith(f"User:\n{bundle.instructions}\n")


@given(_BUNDLES, st.integers(min_value=1, max_value=100))
def test_trimming_keeps_the_newest_history(bundle: PromptBundle, tokens: int) -> None:
    bundle = dataclasses.replace(bundle, instructions="")
    messages, _ = to_messages_and_text(bundle, budget(tokens))
    kept = [m["content"] for m in messages if m["role"] == "user"]
    assert kept == list(bundle.history[len(bundle.history) - len(kept) :])
