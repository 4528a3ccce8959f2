"""The tool wire formats as pure data: tool definitions, tool names, parsing model responses
in the three shapes (Chat Completions, Responses, Anthropic Messages) and building the
refine-turn messages. Model output is untrusted: nothing here may raise on garbage.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loomk.actions.tools import (
    STYLES,
    ToolCall,
    ToolNames,
    answer_text,
    exposed_capabilities,
    is_valid_tool_name,
    parse_tool_calls,
    result_text,
    tool_result_messages,
    tools_for,
)
from loomk.actions.types import (
    ActionResult,
    ActionStatus,
    CapabilityDescriptor,
    ErrorCode,
)
from loomk.errors import CapabilityError

PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
OPEN = {"type": "object", "properties": {}, "additionalProperties": True}


def weather(version: str = "1.0.0", **metadata: str) -> CapabilityDescriptor:
    meta = {"desc": "Current weather for a city", "schema": json.dumps(WEATHER_SCHEMA)}
    meta.update(metadata)
    return CapabilityDescriptor("weather.get", version, metadata=meta)


# --- tool definitions -----------------------------------------------------------------------


def test_chat_tools_use_the_nested_function_shape() -> None:
    tools = tools_for([weather(), CapabilityDescriptor("echo")], style="chat")
    assert tools == [
        {
            "type": "function",
            "function": {
                "name": "weather__get",
                "description": "Current weather for a city",
                "parameters": WEATHER_SCHEMA,
            },
        },
        {
            "type": "function",
            "function": {"name": "echo", "description": "echo", "parameters": OPEN},
        },
    ]


def test_responses_tools_use_the_flat_function_shape() -> None:
    tools = tools_for([weather()], style="responses")
    assert tools == [
        {
            "type": "function",
            "name": "weather__get",
            "description": "Current weather for a city",
            "parameters": WEATHER_SCHEMA,
        }
    ]


def test_anthropic_tools_use_input_schema() -> None:
    tools = tools_for([weather(), CapabilityDescriptor("echo")], style="anthropic")
    assert tools == [
        {
            "name": "weather__get",
            "description": "Current weather for a city",
            "input_schema": WEATHER_SCHEMA,
        },
        {"name": "echo", "description": "echo", "input_schema": OPEN},
    ]


def test_a_schema_that_is_not_a_json_object_gives_the_open_schema() -> None:
    broken = CapabilityDescriptor("a.b", metadata={"schema": "[1, 2]"})
    not_json = CapabilityDescriptor("a.c", metadata={"schema": "{nope"})
    tools = tools_for([broken, not_json], style="anthropic")
    assert [tool["input_schema"] for tool in tools] == [OPEN, OPEN]


def test_each_tool_has_its_own_parameters_object() -> None:
    tools = tools_for([CapabilityDescriptor("a"), CapabilityDescriptor("b")], style="chat")
    tools[0]["function"]["parameters"]["properties"]["x"] = {}
    assert tools[1]["function"]["parameters"] == OPEN
    assert tools_for([CapabilityDescriptor("a")], style="chat")[0]["function"]["parameters"] == OPEN


def test_one_tool_per_capability_name_with_its_highest_version() -> None:
    old = weather("1.0.0", desc="old")
    new = weather("2.0.0", desc="new")
    pre = weather("2.0.0-rc.1", desc="pre")
    assert [d.version for d in exposed_capabilities([old, new, pre])] == ["2.0.0"]
    tools = tools_for([old, pre, new], style="responses")
    assert [(t["name"], t["description"]) for t in tools] == [("weather__get", "new")]


def test_at_most_max_tools_are_exposed() -> None:
    descriptors = [CapabilityDescriptor(f"cap.n{i:03d}") for i in range(100)]
    assert len(tools_for(descriptors, style="chat")) == 64
    few = tools_for(descriptors, style="responses", max_tools=3)
    assert [t["name"] for t in few] == ["cap__n000", "cap__n001", "cap__n002"]
    assert tools_for(descriptors, style="chat", max_tools=0) == []


def test_an_unknown_style_is_refused() -> None:
    with pytest.raises(CapabilityError, match="style"):
        tools_for([weather()], style="gemini")  # type: ignore[arg-type]
    with pytest.raises(CapabilityError, match="style"):
        tool_result_messages([], [], style="xml")  # type: ignore[arg-type]
    assert STYLES == ("chat", "responses", "anthropic")


# --- tool names -----------------------------------------------------------------------------


def test_dots_become_double_underscores_and_map_back() -> None:
    names = ToolNames(["weather.get", "web.search", "echo", "ns:tool"])
    assert names.tool("weather.get") == "weather__get"
    assert names.tool("echo") == "echo"
    assert names.tool("ns:tool") == "ns--tool"
    assert names.capability("weather__get") == "weather.get"
    assert names.capability("web__search") == "web.search"
    assert names.capability("weather.get") is None  # only tool names map back
    assert names.capability("nope") is None
    assert len(names) == 4
    assert "echo" in names
    assert list(names) == ["echo", "ns:tool", "weather.get", "web.search"]
    with pytest.raises(KeyError):
        names.tool("unknown.cap")


def test_colliding_names_both_get_distinct_hashed_names() -> None:
    names = ToolNames(["a.b", "a__b", "other"])
    dotted, underscored = names.tool("a.b"), names.tool("a__b")
    assert dotted != underscored
    assert dotted.startswith("a__b_")
    assert underscored.startswith("a__b_")
    assert {dotted, underscored}.isdisjoint({"a__b"})  # neither silently wins the plain name
    assert names.capability(dotted) == "a.b"
    assert names.capability(underscored) == "a__b"
    assert names.tool("other") == "other"


def test_long_names_are_shortened_to_valid_distinct_names() -> None:
    long_a = "x" * 60 + ".alpha"
    long_b = "x" * 60 + ".beta"
    names = ToolNames([long_a, long_b])
    tools = {names.tool(long_a), names.tool(long_b)}
    assert len(tools) == 2
    assert all(len(tool) <= 64 and is_valid_tool_name(tool) for tool in tools)
    assert names.capability(names.tool(long_b)) == long_b


def test_the_mapping_does_not_depend_on_order() -> None:
    names = ["a.b", "a__b", "z" * 70, "weather.get", "a.b:c"]
    assert ToolNames(names).items() == ToolNames(reversed(names)).items()


def test_tool_name_validity() -> None:
    assert is_valid_tool_name("weather__get")
    assert is_valid_tool_name("a-b_C9")
    assert not is_valid_tool_name("weather.get")
    assert not is_valid_tool_name("")
    assert not is_valid_tool_name("x" * 65)
    assert not is_valid_tool_name(None)


segments = st.text(alphabet="abcXYZ019_-", min_size=1, max_size=12).filter(
    lambda segment: segment[0] != "-"
)
capability_names = st.builds(
    lambda first, rest: first + "".join(sep + seg for sep, seg in rest),
    segments,
    st.lists(st.tuples(st.sampled_from(".:"), segments), max_size=8),
)
collision_prone = st.text(alphabet="a_.:-", min_size=1, max_size=80)


@PROPERTY_SETTINGS
@given(
    names=st.lists(st.one_of(capability_names, collision_prone, st.text(max_size=90)), max_size=25)
)
def test_tool_names_are_valid_unique_and_map_back(names: list[str]) -> None:
    mapping = ToolNames(names)
    tools = [mapping.tool(name) for name in set(names)]
    assert all(is_valid_tool_name(tool) for tool in tools)
    assert len(set(tools)) == len(set(names))
    for name in set(names):
        assert mapping.capability(mapping.tool(name)) == name
    assert mapping.items() == ToolNames(reversed(names)).items()


# --- parsing Chat Completions ---------------------------------------------------------------


def chat(*tool_calls: Any, content: Any = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = list(tool_calls)
    return {"object": "chat.completion", "choices": [{"index": 0, "message": message}]}


def chat_call(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_chat_tool_calls_are_parsed_in_order() -> None:
    response = chat(
        chat_call("call_a", "weather__get", '{"city": "Oslo"}'),
        chat_call("call_b", "echo", {"already": "decoded"}),
    )
    assert parse_tool_calls(response) == [
        ToolCall("call_a", "weather__get", {"city": "Oslo"}),
        ToolCall("call_b", "echo", {"already": "decoded"}),
    ]
    assert answer_text(response) is None


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ("{city: Oslo}", "not valid JSON"),
        ('{"city": "Oslo"', "not valid JSON"),
        ("[1, 2]", "got array"),
        ('"Oslo"', "got string"),
        ("42", "got number"),
        ("null", "got null"),
        (["not", "a", "dict"], "got array"),
        (7, "got number"),
        (True, "got boolean"),
    ],
)
def test_malformed_chat_arguments_give_a_call_with_an_error(arguments: Any, error: str) -> None:
    [call] = parse_tool_calls(chat(chat_call("c1", "weather__get", arguments)))
    assert call.id == "c1"
    assert call.name == "weather__get"
    assert call.arguments is None
    assert call.error is not None
    assert error in call.error


@pytest.mark.parametrize("arguments", [None, "", "  \n"])
def test_absent_arguments_mean_no_arguments(arguments: Any) -> None:
    [call] = parse_tool_calls(chat(chat_call("c1", "echo", arguments)))
    assert call == ToolCall("c1", "echo", {})


def test_chat_calls_without_a_name_are_skipped_and_missing_ids_filled() -> None:
    response = chat(
        chat_call("c0", "", "{}"),
        chat_call("c1", None, "{}"),
        {"id": "c2", "type": "function"},
        "not a call",
        chat_call(None, "first", "{}"),
        chat_call(17, "second", "{}"),
    )
    assert parse_tool_calls(response) == [
        ToolCall("call_0", "first", {}),
        ToolCall("call_1", "second", {}),
    ]


def test_chat_answer_text() -> None:
    assert answer_text(chat(content="It is sunny.")) == "It is sunny."
    parts = [{"type": "text", "text": "It is "}, {"type": "text", "text": "sunny."}, {"x": 1}]
    assert answer_text(chat(content=parts)) == "It is sunny."
    assert answer_text(chat(content="")) is None
    assert parse_tool_calls(chat(content="It is sunny.")) == []


# --- parsing the Responses API --------------------------------------------------------------


def test_responses_function_calls_are_parsed() -> None:
    response = {
        "object": "response",
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": "weather__get",
                "arguments": '{"city": "Oslo"}',
                "status": "completed",
            },
            {"type": "function_call", "id": "fc_2", "name": "echo", "arguments": "{}"},
            {"type": "function_call", "call_id": "call_3", "name": "bad", "arguments": "{]"},
            {"type": "function_call", "call_id": "call_4", "name": "", "arguments": "{}"},
        ],
    }
    calls = parse_tool_calls(response)
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("call_1", "weather__get", {"city": "Oslo"}),
        ("fc_2", "echo", {}),  # no call_id: the item id
        ("call_3", "bad", None),
    ]
    assert calls[2].error is not None
    assert answer_text(response) is None


def test_responses_answer_text() -> None:
    message = {
        "type": "message",
        "role": "assistant",
        "content": [
            {"type": "output_text", "text": "Sunny ", "annotations": []},
            {"type": "refusal", "refusal": "no"},
            {"type": "output_text", "text": "in Oslo."},
        ],
    }
    assert answer_text({"output": [{"type": "reasoning"}, message]}) == "Sunny in Oslo."
    assert answer_text({"output_text": "Shortcut.", "output": [message]}) == "Shortcut."
    assert answer_text({"output_text": "", "output": [message]}) == "Sunny in Oslo."


def test_loom_variant_tool_use_blocks_under_output() -> None:
    response = {
        "output": [
            {
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "tu_1", "name": "web__search", "input": {"q": "x"}},
                    {"type": "tool_use", "id": "tu_2", "name": "echo"},
                ]
            }
        ]
    }
    assert parse_tool_calls(response) == [
        ToolCall("tu_1", "web__search", {"q": "x"}),
        ToolCall("tu_2", "echo", {}),
    ]
    assert answer_text(response) == "Checking."


# --- parsing Anthropic Messages -------------------------------------------------------------


def test_anthropic_tool_use_blocks_are_parsed() -> None:
    response = {
        "type": "message",
        "role": "assistant",
        "stop_reason": "tool_use",
        "content": [
            {"type": "text", "text": "Let me check."},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "weather__get",
                "input": {"city": "Rome"},
            },
            {"type": "tool_use", "id": "toolu_2", "name": "echo", "input": ["not", "object"]},
            {"type": "tool_use", "id": "toolu_3", "name": "", "input": {}},
        ],
    }
    calls = parse_tool_calls(response)
    assert calls[0] == ToolCall("toolu_1", "weather__get", {"city": "Rome"})
    assert (calls[1].id, calls[1].arguments) == ("toolu_2", None)
    assert calls[1].error is not None
    assert "got array" in calls[1].error
    assert len(calls) == 2
    assert answer_text(response) == "Let me check."


def test_anthropic_answer_text_joins_text_blocks() -> None:
    response = {
        "content": [
            {"type": "text", "text": "Rome: "},
            {"type": "thinking", "thinking": "hidden"},
            {"type": "text", "text": "22 C."},
        ]
    }
    assert answer_text(response) == "Rome: 22 C."
    assert parse_tool_calls(response) == []
    assert answer_text({"content": []}) is None


# --- garbage --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        42,
        "text",
        [],
        [{"choices": []}],
        {},
        {"choices": None},
        {"choices": []},
        {"choices": "abc"},
        {"choices": [None]},
        {"choices": [{"message": "hi"}]},
        {"choices": [{"message": {"tool_calls": "x"}}]},
        {"choices": [{"message": {"tool_calls": [None, 1, "x", []]}}]},
        {"choices": [{"message": {"tool_calls": [{"function": "f"}]}}]},
        {"choices": [{"message": {"tool_calls": [{"function": {"name": ["f"]}}]}}]},
        {"output": "x"},
        {"output": [None, 1, {"type": "function_call"}, {"content": "abc"}]},
        {"output": [{"type": "function_call", "name": 3, "arguments": "{}"}]},
        {"content": {"type": "tool_use"}},
        {"content": [None, {"type": "tool_use", "name": None}]},
        {"output_text": 5, "content": 7},
    ],
)
def test_garbage_gives_no_calls_and_no_text(garbage: Any) -> None:
    assert parse_tool_calls(garbage) == []
    assert answer_text(garbage) is None


def test_deeply_nested_argument_json_is_an_error_not_a_crash() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    [call] = parse_tool_calls(chat(chat_call("c", "f", deep)))
    assert call.arguments is None
    assert call.error is not None


VOCABULARY = [
    "choices",
    "message",
    "tool_calls",
    "function",
    "name",
    "arguments",
    "id",
    "call_id",
    "output",
    "output_text",
    "type",
    "function_call",
    "content",
    "tool_use",
    "input",
    "text",
]
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(VOCABULARY),
    st.sampled_from(['{"a": 1}', "[1]", "{", "", "null", '"s"']),
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(VOCABULARY), st.text(max_size=8)), children, max_size=5
        ),
    ),
    max_leaves=40,
)


@PROPERTY_SETTINGS
@given(value=json_values)
def test_arbitrary_json_never_makes_the_parsers_raise(value: Any) -> None:
    calls = parse_tool_calls(value)
    text = answer_text(value)
    assert text is None or (isinstance(text, str) and text)
    for call in calls:
        assert isinstance(call.id, str)
        assert call.id
        assert isinstance(call.name, str)
        assert call.name
        assert (call.arguments is None) == (call.error is not None)
        assert call.arguments is None or isinstance(call.arguments, dict)


# --- feeding results back -------------------------------------------------------------------

CALLS = [
    ToolCall("c1", "weather__get", {"city": "Oslo"}),
    ToolCall("c2", "echo", None, "the arguments are not valid JSON"),
]
RESULTS = [
    ActionResult.success("tool-1", {"temp_c": 4}),
    ActionResult.failure("tool-2", ErrorCode.INVALID_PARAMS, "bad arguments"),
]


def test_result_text() -> None:
    assert result_text(RESULTS[0]) == '{"temp_c": 4}'
    assert json.loads(result_text(RESULTS[1])) == {
        "error": "INVALID_PARAMS",
        "message": "bad arguments",
    }
    timeout = ActionResult.failure(
        "t", ErrorCode.ACTION_TIMEOUT, "too slow", status=ActionStatus.ACTION_TIMEOUT
    )
    assert json.loads(result_text(timeout)) == {"error": "ACTION_TIMEOUT", "message": "too slow"}
    bare = ActionResult("t", ActionStatus.ACTION_ERROR)
    assert json.loads(result_text(bare)) == {"error": "ACTION_ERROR", "message": ""}


def test_chat_result_messages() -> None:
    messages = tool_result_messages(CALLS, RESULTS, style="chat")
    assert messages[0] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "weather__get", "arguments": '{"city": "Oslo"}'},
            },
            {"id": "c2", "type": "function", "function": {"name": "echo", "arguments": "{}"}},
        ],
    }
    assert messages[1] == {"role": "tool", "tool_call_id": "c1", "content": '{"temp_c": 4}'}
    assert messages[2]["role"] == "tool"
    assert messages[2]["tool_call_id"] == "c2"
    assert json.loads(messages[2]["content"])["error"] == "INVALID_PARAMS"
    assert len(messages) == 3


def test_responses_result_items() -> None:
    items = tool_result_messages(CALLS, RESULTS, style="responses")
    assert items[:2] == [
        {
            "type": "function_call",
            "call_id": "c1",
            "name": "weather__get",
            "arguments": '{"city": "Oslo"}',
        },
        {"type": "function_call", "call_id": "c2", "name": "echo", "arguments": "{}"},
    ]
    assert items[2] == {"type": "function_call_output", "call_id": "c1", "output": '{"temp_c": 4}'}
    assert items[3]["call_id"] == "c2"
    assert json.loads(items[3]["output"]) == {"error": "INVALID_PARAMS", "message": "bad arguments"}
    assert len(items) == 4


def test_anthropic_result_messages() -> None:
    assistant, user = tool_result_messages(CALLS, RESULTS, style="anthropic")
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "c1", "name": "weather__get", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "c2", "name": "echo", "input": {}},
        ],
    }
    assert user["role"] == "user"
    ok, failed = user["content"]
    assert ok == {
        "type": "tool_result",
        "tool_use_id": "c1",
        "content": '{"temp_c": 4}',
        "is_error": False,
    }
    assert (failed["tool_use_id"], failed["is_error"]) == ("c2", True)
    assert json.loads(failed["content"])["error"] == "INVALID_PARAMS"


def test_calls_and_results_must_pair_up() -> None:
    with pytest.raises(ValueError, match="2 tool calls but 1 results"):
        tool_result_messages(CALLS, RESULTS[:1], style="chat")
