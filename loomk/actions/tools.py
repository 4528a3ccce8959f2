"""Capabilities as LLM tools: the wire shapes of three model APIs, as pure data.

Loom's orchestrator understood one Anthropic-shaped tool-call format under a Responses
endpoint and sent a non-standard tool shape to Chat Completions. This module speaks the real
formats of OpenAI Chat Completions (``"chat"``), the OpenAI Responses API (``"responses"``)
and Anthropic Messages (``"anthropic"``), in both directions:

* :func:`tools_for` turns capability descriptors into tool definitions;
* :func:`parse_tool_calls` and :func:`answer_text` read a model's response, whatever its
  shape, and never raise on garbage (a model's output is untrusted input);
* :func:`tool_result_messages` builds what to append to the conversation for the refine turn.

Tool names must match ``^[a-zA-Z0-9_-]{1,64}$`` while capability names have dots
(``weather.get``), so every name goes through a :class:`ToolNames` mapping.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from loomk.actions.types import ActionResult, CapabilityDescriptor, parse_version
from loomk.errors import CapabilityError

__all__ = [
    "DEFAULT_MAX_TOOLS",
    "MAX_TOOL_NAME_LENGTH",
    "STYLES",
    "ToolCall",
    "ToolNames",
    "ToolStyle",
    "answer_text",
    "check_style",
    "exposed_capabilities",
    "is_valid_tool_name",
    "open_schema",
    "parse_tool_calls",
    "result_text",
    "tool_result_messages",
    "tools_for",
]

ToolStyle = Literal["chat", "responses", "anthropic"]
STYLES: tuple[str, ...] = get_args(ToolStyle)
DEFAULT_MAX_TOOLS = 64
MAX_TOOL_NAME_LENGTH = 64

_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_NOT_TOOL_CHAR = re.compile(r"[^a-zA-Z0-9_-]")


def open_schema() -> dict[str, Any]:
    """The parameters of a capability without a schema: any JSON object."""
    return {"type": "object", "properties": {}, "additionalProperties": True}


def check_style(style: object) -> ToolStyle:
    """``style`` if it is one of :data:`STYLES`; raises :class:`CapabilityError` otherwise."""
    if isinstance(style, str) and style in STYLES:
        return cast(ToolStyle, style)
    raise CapabilityError(f"tool style must be one of {', '.join(STYLES)}, got {style!r}")


# ---- tool names ---------------------------------------------------------------------------


def is_valid_tool_name(name: object) -> bool:
    """Whether ``name`` is acceptable as a function name to the OpenAI and Anthropic APIs."""
    return isinstance(name, str) and _TOOL_NAME.fullmatch(name) is not None


def _plain_tool_name(capability: str) -> str:
    """The readable tool name of a capability: separators become ``__`` (``.``) or ``--``
    (``:``), any other character a tool name may not hold becomes ``_``."""
    text = capability.replace(".", "__").replace(":", "--")
    return _NOT_TOOL_CHAR.sub("_", text) or "tool"


class ToolNames:
    """A reversible mapping between capability names and tool names, for one set of names.

    A capability gets its plain tool name (``weather.get`` -> ``weather__get``) when that is
    short enough and no other capability of the set maps to it; otherwise (``a.b`` and
    ``a__b``, or a name over 64 characters) each contender gets the plain name cut short
    plus a hash of its own name, so which one "wins" never depends on registration order.
    The same set of names always gives the same mapping.
    """

    def __init__(self, capabilities: Iterable[str]) -> None:
        names = sorted(set(capabilities))
        plain = {name: _plain_tool_name(name) for name in names}
        claims: dict[str, int] = {}
        for tool in plain.values():
            claims[tool] = claims.get(tool, 0) + 1
        self._tools: dict[str, str] = {}
        self._capabilities: dict[str, str] = {}
        contested = []
        for name in names:
            tool = plain[name]
            if claims[tool] == 1 and len(tool) <= MAX_TOOL_NAME_LENGTH:
                self._bind(name, tool)
            else:
                contested.append(name)
        for name in contested:
            self._bind(name, self._hashed(name, plain[name]))

    def _bind(self, capability: str, tool: str) -> None:
        self._tools[capability] = tool
        self._capabilities[tool] = capability

    def _hashed(self, capability: str, plain: str) -> str:
        digest = hashlib.sha256(capability.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        attempt = 0
        while True:
            suffix = f"_{digest}" if attempt == 0 else f"_{digest}_{attempt}"
            tool = plain[: MAX_TOOL_NAME_LENGTH - len(suffix)] + suffix
            if tool not in self._capabilities:
                return tool
            attempt += 1

    def tool(self, capability: str) -> str:
        """The tool name of ``capability``; raises ``KeyError`` for a name not in the set."""
        return self._tools[capability]

    def capability(self, tool: str) -> str | None:
        """The capability a tool name stands for, or None for a name not in the set (a model
        may answer with any name)."""
        return self._capabilities.get(tool) if isinstance(tool, str) else None

    def items(self) -> list[tuple[str, str]]:
        """``(capability, tool name)`` pairs, by capability name."""
        return sorted(self._tools.items())

    def __contains__(self, capability: object) -> bool:
        return capability in self._tools

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._tools))

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"ToolNames({dict(self.items())!r})"


# ---- tool definitions ---------------------------------------------------------------------


def exposed_capabilities(
    descriptors: Iterable[CapabilityDescriptor], max_tools: int = DEFAULT_MAX_TOOLS
) -> list[CapabilityDescriptor]:
    """The capabilities to offer as tools: one per name (its highest version), in the order
    names first appear, at most ``max_tools`` of them."""
    chosen: dict[str, CapabilityDescriptor] = {}
    for descriptor in descriptors:
        current = chosen.get(descriptor.name)
        if current is None:
            if len(chosen) >= max_tools:
                continue
            chosen[descriptor.name] = descriptor
        elif parse_version(descriptor.version) > parse_version(current.version):
            chosen[descriptor.name] = descriptor
    return list(chosen.values())


def tools_for(
    descriptors: Iterable[CapabilityDescriptor],
    *,
    style: ToolStyle,
    max_tools: int = DEFAULT_MAX_TOOLS,
    names: ToolNames | None = None,
) -> list[dict[str, Any]]:
    """The tool definitions of ``descriptors`` in the wire shape of ``style``.

    Parameters come from the ``schema`` metadata (an open object schema without one), the
    description from ``desc`` (else the name). ``names`` defaults to the mapping of the
    exposed capabilities, which is what :meth:`ToolNames` gives for the same set.
    """
    style = check_style(style)
    exposed = exposed_capabilities(descriptors, max_tools)
    if names is None:
        names = ToolNames(d.name for d in exposed)
    tools = []
    for descriptor in exposed:
        name = names.tool(descriptor.name)
        description = descriptor.description
        schema = descriptor.schema() or open_schema()
        if style == "chat":
            function = {"name": name, "description": description, "parameters": schema}
            tools.append({"type": "function", "function": function})
        elif style == "responses":
            tools.append(
                {"type": "function", "name": name, "description": description, "parameters": schema}
            )
        else:
            tools.append({"name": name, "description": description, "input_schema": schema})
    return tools


# ---- reading a model's response -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call a model asked for.

    ``arguments`` is the decoded JSON object; when the model sent something else (not JSON,
    or JSON but not an object) it is None and ``error`` says what was wrong.
    """

    id: str
    name: str
    arguments: dict[str, Any] | None
    error: str | None = None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _arguments(value: object) -> tuple[dict[str, Any] | None, str | None]:
    """Decoded arguments, or None and why not. Absent or blank arguments mean "none" ({})."""
    if value is None:
        return {}, None
    if isinstance(value, dict):
        return value, None
    if isinstance(value, str):
        if not value.strip():
            return {}, None
        try:
            decoded = json.loads(value)
        except (ValueError, RecursionError) as error:
            return None, f"the arguments are not valid JSON: {error}"
        if isinstance(decoded, dict):
            return decoded, None
        value = decoded
    return None, f"the arguments must be a JSON object, got {_json_type(value)}"


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _chat_message(response: dict[str, Any]) -> dict[str, Any]:
    choices = _list(response.get("choices"))
    return _dict(_dict(choices[0]).get("message")) if choices else {}


def _raw_calls(response: dict[str, Any]) -> Iterator[tuple[object, object, object]]:
    """``(id, name, arguments)`` of every tool call in any of the shapes, in order."""
    for item in _list(_chat_message(response).get("tool_calls")):
        function = _dict(_dict(item).get("function"))
        if function:
            yield item.get("id"), function.get("name"), function.get("arguments")
    for item in _list(response.get("output")):
        item = _dict(item)
        if item.get("type") == "function_call":
            yield item.get("call_id") or item.get("id"), item.get("name"), item.get("arguments")
        for block in _list(item.get("content")):  # Loom's Anthropic-shaped variant
            block = _dict(block)
            if block.get("type") == "tool_use":
                yield block.get("id"), block.get("name"), block.get("input")
    for block in _list(response.get("content")):
        block = _dict(block)
        if block.get("type") == "tool_use":
            yield block.get("id"), block.get("name"), block.get("input")


def parse_tool_calls(response: object) -> list[ToolCall]:
    """The tool calls in a Chat Completions, Responses or Anthropic Messages response.

    Calls without a name are skipped; a call without an id gets ``call_{n}`` (its position);
    malformed arguments give a call with ``error`` set. Never raises.
    """
    if not isinstance(response, dict):
        return []
    calls: list[ToolCall] = []
    for call_id, name, raw_arguments in _raw_calls(response):
        if not isinstance(name, str) or not name:
            continue
        arguments, error = _arguments(raw_arguments)
        if not isinstance(call_id, str) or not call_id:
            call_id = f"call_{len(calls)}"
        calls.append(ToolCall(call_id, name, arguments, error))
    return calls


def _texts(parts: object, kinds: tuple[str, ...]) -> str:
    """The text of content parts of the given types (a plain string is its own text)."""
    if isinstance(parts, str):
        return parts
    texts = []
    for part in _list(parts):
        part = _dict(part)
        text = part.get("text")
        if part.get("type") in kinds and isinstance(text, str):
            texts.append(text)
    return "".join(texts)


def answer_text(response: object) -> str | None:
    """The assistant's text in a response of any of the three shapes; None when it has none.

    Never raises.
    """
    if not isinstance(response, dict):
        return None
    text = _texts(_chat_message(response).get("content"), ("text", "output_text"))
    if text:
        return text
    output_text = response.get("output_text")
    if isinstance(output_text, str) and output_text:
        return output_text
    pieces = [
        _texts(_list(_dict(item).get("content")), ("output_text", "text"))
        for item in _list(response.get("output"))
    ]
    text = "".join(pieces)
    if text:
        return text
    return _texts(_list(response.get("content")), ("text",)) or None


# ---- feeding results back -----------------------------------------------------------------


def result_text(result: ActionResult) -> str:
    """What a model reads as a tool's result: the output (JSON) when OK, otherwise
    ``{"error": code, "message": ...}``."""
    if result.ok:
        return result.output.decode("utf-8", errors="replace")
    message = result.error.message if result.error is not None else ""
    return json.dumps({"error": result.code or result.status.name, "message": message})


def _arguments_json(call: ToolCall) -> str:
    """The arguments as the model sent them back; ``{}`` for malformed ones (the result says
    what was wrong with them)."""
    try:
        return json.dumps(call.arguments if call.arguments is not None else {})
    except (TypeError, ValueError, RecursionError):
        return "{}"


def tool_result_messages(
    calls: Sequence[ToolCall], results: Sequence[ActionResult], *, style: ToolStyle
) -> list[dict[str, Any]]:
    """The messages (or Responses input items) to append to the conversation for the refine
    turn: the model's tool calls, then one result per call, in the order of ``calls``."""
    style = check_style(style)
    if len(calls) != len(results):
        raise ValueError(f"{len(calls)} tool calls but {len(results)} results")
    pairs = list(zip(calls, results, strict=True))
    if style == "chat":
        tool_calls = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": _arguments_json(call)},
            }
            for call in calls
        ]
        assistant: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": tool_calls}
        return [
            assistant,
            *(
                {"role": "tool", "tool_call_id": call.id, "content": result_text(result)}
                for call, result in pairs
            ),
        ]
    if style == "responses":
        return [
            *(
                {
                    "type": "function_call",
                    "call_id": call.id,
                    "name": call.name,
                    "arguments": _arguments_json(call),
                }
                for call in calls
            ),
            *(
                {"type": "function_call_output", "call_id": call.id, "output": result_text(result)}
                for call, result in pairs
            ),
        ]
    uses = [
        {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments or {}}
        for call in calls
    ]
    outcomes = [
        {
            "type": "tool_result",
            "tool_use_id": call.id,
            "content": result_text(result),
            "is_error": not result.ok,
        }
        for call, result in pairs
    ]
    return [{"role": "assistant", "content": uses}, {"role": "user", "content": outcomes}]
