"""MCP tools, resources and prompts as capability providers the broker invokes.

A tool ``search`` of server ``docs`` becomes capability ``docs:search`` (version 0.1.0,
provider ``PROVIDER_MCP``) with metadata ``desc`` (its description), ``schema`` (its
``inputSchema`` as JSON, which the tool orchestrator offers models), ``mcp_server`` and
``mcp_tool``. A server that declares resources gets ``docs:resources.list`` and
``docs:resources.read``; one that declares prompts ``docs:prompts.list`` and
``docs:prompts.get``.

Invoking checks the arguments against the tool's input schema with ``jsonschema`` before
anything is sent (``INVALID_PARAMS``: the server never sees a call that cannot fit). The
answer's content is joined into one text as Loom did (text as is, ``[image content]``,
``[audio content]``, an embedded resource's text or ``[resource: uri]``), reading the SDK's
fields rather than Loom's misspelt ``mime_type``. ``isError`` is ``ACTION_ERROR``
``TOOL_ERROR`` with that text; success is ``ACTION_OK`` with ``{"result": text}`` plus
``"structured"`` when the tool returned structured content. Any :class:`McpError` becomes
a failure with its code (``ACTION_TIMEOUT`` for ``TIMEOUT``); an adapter never raises.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import mcp_types as types
from jsonschema import validators  # type: ignore[import-untyped,unused-ignore]
from jsonschema.exceptions import (  # type: ignore[import-untyped,unused-ignore]
    SchemaError,
    best_match,
)
from mcp.client.session import ClientSession
from pydantic import BaseModel

from loomk import (
    ActionCall,
    ActionResult,
    ActionStatus,
    CapabilityDescriptor,
    CapabilityError,
    ProviderKind,
)
from loomk.telemetry import get_logger

from ._connection import McpConnection, all_pages
from .errors import INVALID_PARAMS, TIMEOUT, TOOL_ERROR, McpError

__all__ = [
    "ADAPTER_VERSION",
    "McpRequestProvider",
    "McpToolProvider",
    "content_text",
    "extra_providers",
    "tool_provider",
]

_log = get_logger("loomk.mcp")

ADAPTER_VERSION = "0.1.0"
Recorder = Callable[[ActionResult], None]


def content_text(content: Sequence[Any]) -> str:
    """The blocks of an MCP answer joined with newlines, as Loom joined them."""
    parts: list[str] = []
    for block in content:
        if isinstance(block, types.TextContent):
            parts.append(block.text)
        elif isinstance(block, types.ImageContent):
            parts.append("[image content]")
        elif isinstance(block, types.AudioContent):
            parts.append("[audio content]")
        elif isinstance(block, types.EmbeddedResource):
            resource = block.resource
            if isinstance(resource, types.TextResourceContents):
                parts.append(resource.text)
            else:
                parts.append(f"[resource: {resource.uri}]")
        elif isinstance(block, types.ResourceLink):
            parts.append(f"[resource: {block.uri}]")
        elif isinstance(block, types.TextResourceContents):  # resources/read contents
            parts.append(block.text)
        elif isinstance(block, types.BlobResourceContents):
            parts.append(f"[resource: {block.uri}]")
    return "\n".join(parts)


def _wire(model: BaseModel) -> Any:
    """A model in its wire (camelCase JSON) form."""
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


def _failure(call_id: str, error: McpError) -> ActionResult:
    status = ActionStatus.ACTION_TIMEOUT if error.code == TIMEOUT else ActionStatus.ACTION_ERROR
    return ActionResult.failure(call_id, error.code, error.message, status=status)


def _arguments(call: ActionCall) -> dict[str, Any] | str:
    """The call's JSON object of arguments (empty payload: none), or what is wrong."""
    if not call.payload.strip():
        return {}
    try:
        args = json.loads(call.payload)
    except (ValueError, RecursionError) as error:
        return f"the payload is not valid JSON: {error}"
    if not isinstance(args, dict):
        return f"the payload must be a JSON object, got {type(args).__name__}"
    return args


class _SchemaCheck:
    """A ``jsonschema`` validator of one input schema (the dialect the schema names,
    2020-12 by default as MCP says); a schema that is itself invalid checks nothing, and the
    server judges the arguments."""

    def __init__(self, schema: dict[str, Any], where: str) -> None:
        self._validator: Any = None
        try:
            cls = validators.validator_for(schema, default=validators.Draft202012Validator)
            cls.check_schema(schema)
            self._validator = cls(schema)
        except (SchemaError, TypeError, ValueError) as error:
            _log.warning("MCP input schema is invalid; not checked", tool=where, error=str(error))

    def arguments(self, call: ActionCall) -> dict[str, Any] | ActionResult:
        """The call's arguments when they are a JSON object that fits the schema, else the
        ``INVALID_PARAMS`` failure to answer (nothing is sent to the server then)."""
        args = _arguments(call)
        if isinstance(args, str):
            return ActionResult.failure(call.id, INVALID_PARAMS, args)
        problem = self.problem(args)
        if problem is not None:
            return ActionResult.failure(call.id, INVALID_PARAMS, problem)
        return args

    def problem(self, args: dict[str, Any]) -> str | None:
        """Why ``args`` do not fit the schema (the most relevant error), or None."""
        if self._validator is None:
            return None
        first = best_match(self._validator.iter_errors(args))
        if first is None:
            return None
        path = "/".join(str(part) for part in first.path)
        return f"invalid arguments{' at ' + path if path else ''}: {first.message}"


class _McpProvider:
    """What both kinds of MCP capability share: the descriptor, the argument check against
    the schema before anything is sent, and the recording of every result."""

    def __init__(
        self,
        connection: McpConnection,
        descriptor: CapabilityDescriptor,
        schema: dict[str, Any],
        record: Recorder,
    ) -> None:
        self._connection = connection
        self._descriptor = descriptor
        self._record = record
        self._check = _SchemaCheck(schema, descriptor.name)

    @property
    def descriptor(self) -> CapabilityDescriptor:
        """What this provider offers."""
        return self._descriptor

    async def invoke(self, call: ActionCall) -> ActionResult:
        """Check the arguments, make the request, read its answer (never raises)."""
        args = self._check.arguments(call)
        result = args if isinstance(args, ActionResult) else await self._run(call, args)
        self._record(result)
        return result

    async def _run(self, call: ActionCall, args: dict[str, Any]) -> ActionResult:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._descriptor.key})"


class McpToolProvider(_McpProvider):
    """The capability ``server:tool`` (see the module notes)."""

    def __init__(
        self,
        connection: McpConnection,
        tool: types.Tool,
        descriptor: CapabilityDescriptor,
        record: Recorder,
    ) -> None:
        super().__init__(connection, descriptor, tool.input_schema, record)
        self._tool = tool

    @property
    def tool(self) -> types.Tool:
        """The MCP tool as the server listed it."""
        return self._tool

    async def _run(self, call: ActionCall, args: dict[str, Any]) -> ActionResult:
        name = self._tool.name

        async def call_tool(session: ClientSession) -> types.CallToolResult:
            return await session.call_tool(name, args or None)

        try:
            answer = await self._connection.request("tools/call", call_tool)
        except McpError as error:
            return _failure(call.id, error)
        text = content_text(answer.content)
        if answer.is_error:
            return ActionResult.failure(call.id, TOOL_ERROR, text or f"{name} failed")
        output: dict[str, Any] = {"result": text}
        if answer.structured_content is not None:
            output["structured"] = answer.structured_content
        return ActionResult.success(call.id, output)


def tool_provider(
    connection: McpConnection, tool: types.Tool, record: Recorder
) -> McpToolProvider | None:
    """The provider of ``tool``, or None (with a warning) when its name cannot be a
    capability name (capability names are dot-separated words)."""
    metadata = {
        "schema": json.dumps(tool.input_schema),
        "mcp_server": connection.name,
        "mcp_tool": tool.name,
    }
    if tool.description:
        metadata["desc"] = tool.description
    try:
        descriptor = CapabilityDescriptor(
            f"{connection.name}:{tool.name}", ADAPTER_VERSION, ProviderKind.PROVIDER_MCP, metadata
        )
    except CapabilityError as error:
        _log.warning("MCP tool skipped", server=connection.name, tool=tool.name, error=str(error))
        return None
    return McpToolProvider(connection, tool, descriptor, record)


Operation = Callable[[ClientSession, dict[str, Any]], Awaitable[dict[str, Any]]]


class McpRequestProvider(_McpProvider):
    """A capability that is one MCP request other than a tool call (a resource or prompt
    listing or read), answering the request's result in wire form."""

    def __init__(
        self,
        connection: McpConnection,
        descriptor: CapabilityDescriptor,
        method: str,
        operation: Operation,
        record: Recorder,
    ) -> None:
        super().__init__(connection, descriptor, descriptor.schema() or {}, record)
        self._method = method
        self._operation = operation

    async def _run(self, call: ActionCall, args: dict[str, Any]) -> ActionResult:
        operation = self._operation

        async def run(session: ClientSession) -> dict[str, Any]:
            return await operation(session, args)

        try:
            output = await self._connection.request(self._method, run)
        except McpError as error:
            return _failure(call.id, error)
        return ActionResult.success(call.id, output)


async def _list_resources(session: ClientSession, args: dict[str, Any]) -> dict[str, Any]:
    pages = await all_pages(lambda params: session.list_resources(params=params), "resources")
    return {"resources": [_wire(resource) for resource in pages]}


async def _read_resource(session: ClientSession, args: dict[str, Any]) -> dict[str, Any]:
    answer = await session.read_resource(args["uri"])
    return {
        "result": content_text(answer.contents),
        "contents": [_wire(c) for c in answer.contents],
    }


async def _list_prompts(session: ClientSession, args: dict[str, Any]) -> dict[str, Any]:
    pages = await all_pages(lambda params: session.list_prompts(params=params), "prompts")
    return {"prompts": [_wire(prompt) for prompt in pages]}


async def _get_prompt(session: ClientSession, args: dict[str, Any]) -> dict[str, Any]:
    answer = await session.get_prompt(args["name"], args.get("arguments") or None)
    output: dict[str, Any] = {
        "result": content_text([m.content for m in answer.messages]),
        "messages": [_wire(m) for m in answer.messages],
    }
    if answer.description:
        output["description"] = answer.description
    return output


_NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}}
_EXTRAS: dict[str, tuple[str, str, str, dict[str, Any], Operation]] = {
    # capability suffix -> (server capability, method, description, schema, operation)
    "resources.list": (
        "resources",
        "resources/list",
        "List the resources of MCP server {server}.",
        _NO_ARGS,
        _list_resources,
    ),
    "resources.read": (
        "resources",
        "resources/read",
        "Read a resource of MCP server {server} by its URI.",
        {
            "type": "object",
            "properties": {"uri": {"type": "string", "description": "the resource's URI"}},
            "required": ["uri"],
        },
        _read_resource,
    ),
    "prompts.list": (
        "prompts",
        "prompts/list",
        "List the prompts of MCP server {server}.",
        _NO_ARGS,
        _list_prompts,
    ),
    "prompts.get": (
        "prompts",
        "prompts/get",
        "Get a prompt of MCP server {server}, filled in with its arguments.",
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "the prompt's name"},
                "arguments": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "required": ["name"],
        },
        _get_prompt,
    ),
}


def extra_providers(
    connection: McpConnection, capabilities: types.ServerCapabilities, record: Recorder
) -> list[McpRequestProvider]:
    """The resource and prompt capabilities of a server that declares those features; one
    whose name cannot be a capability name is skipped with a warning (like a tool's)."""
    declared = {
        "resources": capabilities.resources is not None,
        "prompts": capabilities.prompts is not None,
    }
    providers = []
    for suffix, (feature, method, desc, schema, operation) in _EXTRAS.items():
        if not declared[feature]:
            continue
        try:
            descriptor = CapabilityDescriptor(
                f"{connection.name}:{suffix}",
                ADAPTER_VERSION,
                ProviderKind.PROVIDER_MCP,
                {
                    "desc": desc.format(server=connection.name),
                    "schema": json.dumps(schema),
                    "mcp_server": connection.name,
                    "mcp_method": method,
                },
            )
        except CapabilityError as error:  # the owner calls this from a callback: never raise
            _log.warning(
                "MCP capability skipped", server=connection.name, method=method, error=str(error)
            )
            continue
        providers.append(McpRequestProvider(connection, descriptor, method, operation, record))
    return providers
