"""The tool orchestrator: lets a model use the broker's capabilities as tools.

A run asks the model with the capabilities as tools; when it answers with tool calls, they
run through the broker in parallel (bounded), their results go back into the conversation
and the model is asked again (the refine turn), until it answers with text or the rounds run
out. Loom's orchestrator read a single Anthropic-shaped tool-call format under a Responses
endpoint; this one speaks the real wire formats of Chat Completions, Responses and Anthropic
Messages, runs tools concurrently, and turns bad tool calls (malformed arguments, unknown
names) into error results the model can read.

The model is any async callable taking the request body in the style's wire format (the
model name, sampling settings and transport are its business) and returning the parsed
response body.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import trio

from loomk._metakeys import CORRELATION_ID
from loomk._wire import short_repr, text_problem
from loomk.actions.broker import ActionBroker
from loomk.actions.tools import (
    DEFAULT_MAX_TOOLS,
    ToolCall,
    ToolNames,
    ToolStyle,
    answer_text,
    check_style,
    exposed_capabilities,
    parse_tool_calls,
    tool_result_messages,
    tools_for,
)
from loomk.actions.types import ActionCall, ActionResult, ErrorCode, timeout_ms_of
from loomk.errors import ActionCallError, CapabilityError
from loomk.telemetry.logging import get_logger

__all__ = ["FinalAnswer", "ModelCall", "OrchestratorStats", "ToolOrchestrator"]

_log = get_logger("loomk.tools")

ModelCall = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""Sends one request body (in the orchestrator's style) to a model; returns the response."""

_TOOL_CHOICES = ("auto", "required", "none")
_ANTHROPIC_CHOICE = {"auto": "auto", "required": "any", "none": "none"}


@dataclass(frozen=True, slots=True)
class FinalAnswer:
    """The outcome of a run.

    ``tool_calls`` and ``tool_results`` are every call that ran and its result, pairwise, in
    the order the model asked for them; ``rounds`` counts the model requests; ``raw`` is the
    last response. ``exhausted`` is True when the model still asked for tools in the last
    round allowed (those calls did not run).
    """

    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_results: list[ActionResult] = field(default_factory=list)
    rounds: int = 0
    raw: Any = None
    exhausted: bool = False


@dataclass(frozen=True, slots=True)
class OrchestratorStats:
    """Counts across runs, as :meth:`ToolOrchestrator.stats` saw them: runs, model requests,
    tool calls and errors, tool latency.

    ``tool_errors`` counts non-OK results (refused calls included); latency covers the calls
    that reached the broker (``invoked``), from getting a slot to the result.
    """

    runs: int = 0
    model_calls: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    invoked: int = 0
    latency_total_s: float = 0.0
    latency_max_s: float = 0.0

    @property
    def latency_mean_s(self) -> float:
        """Mean latency of the tool calls that reached the broker."""
        return self.latency_total_s / self.invoked if self.invoked else 0.0


@dataclass(slots=True)
class _OrchestratorCounters:
    """The orchestrator's live counts (the fields of :class:`OrchestratorStats`)."""

    runs: int = 0
    model_calls: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    invoked: int = 0
    latency_total_s: float = 0.0
    latency_max_s: float = 0.0

    def invoked_for(self, elapsed: float) -> None:
        """Count a call that reached the broker and took ``elapsed`` seconds."""
        self.invoked += 1
        self.latency_total_s += elapsed
        self.latency_max_s = max(self.latency_max_s, elapsed)

    def snapshot(self) -> OrchestratorStats:
        """Every counter, by name, frozen (a counter without its field there fails here)."""
        return OrchestratorStats(**{f.name: getattr(self, f.name) for f in fields(self)})


class ToolOrchestrator:
    """Runs the ask / call tools / refine loop of one model over one broker.

    ``max_parallel`` bounds the tool calls of this orchestrator running at once (across
    concurrent runs); ``max_rounds`` bounds the model requests of one run. ``tool_choice``
    (``"auto"``, ``"required"``, ``"none"`` or a style-specific object) applies to the first
    request; refine turns use ``"auto"`` so a model forced to call a tool can then answer,
    and the last round allowed uses ``"none"`` so it answers with what it has. Capabilities
    whose names start with an ``exclude`` prefix (by default ``llm.``) are not offered.
    """

    def __init__(
        self,
        broker: ActionBroker,
        model: ModelCall,
        *,
        style: ToolStyle = "chat",
        max_parallel: int = 4,
        per_tool_timeout_s: float = 30.0,
        max_rounds: int = 4,
        max_tools: int = DEFAULT_MAX_TOOLS,
        exclude: Sequence[str] = ("llm.",),
        tool_choice: str | dict[str, Any] = "auto",
    ) -> None:
        if not callable(model):
            raise CapabilityError(f"model must be an async callable, got {model!r}")
        _check_count("max_parallel", max_parallel, 1)
        _check_count("max_rounds", max_rounds, 1)
        _check_count("max_tools", max_tools, 0)
        if (
            isinstance(per_tool_timeout_s, bool)
            or not isinstance(per_tool_timeout_s, int | float)
            or not 0 < per_tool_timeout_s < math.inf
        ):
            raise CapabilityError(f"per_tool_timeout_s must be > 0, got {per_tool_timeout_s!r}")
        try:
            self._timeout_ms = timeout_ms_of(per_tool_timeout_s)
        except ActionCallError as error:
            raise CapabilityError(f"per_tool_timeout_s: {error}") from error
        if not isinstance(tool_choice, dict) and tool_choice not in _TOOL_CHOICES:
            raise CapabilityError(
                f"tool_choice must be auto, required, none or an object, got {tool_choice!r}"
            )
        self.broker = broker
        self.model = model
        self.style: ToolStyle = check_style(style)
        self.max_parallel = max_parallel
        self.per_tool_timeout_s = float(per_tool_timeout_s)
        self.max_rounds = max_rounds
        self.max_tools = max_tools
        # Name prefixes never offered as tools: by default the model capabilities, so a
        # model is not handed a tool that calls a model.
        self.exclude = tuple(exclude)
        self.tool_choice = tool_choice
        self._counters = _OrchestratorCounters()
        self._limiter = trio.CapacityLimiter(max_parallel)

    async def run(
        self, conversation: str | Sequence[Mapping[str, Any]], *, correlation_id: str = ""
    ) -> FinalAnswer:
        """Answer ``conversation`` (a user prompt, or the messages / Responses input items so
        far), using tools as the model asks. An exception of the model call propagates;
        a ``correlation_id`` no call can carry raises :class:`ActionCallError` first."""
        problem = (
            text_problem(correlation_id) if correlation_id.__class__ is str else "is not a str"
        )
        if problem:
            raise ActionCallError(f"correlation_id {short_repr(correlation_id)} {problem}")
        self._counters.runs += 1
        offered = [
            d for d in self.broker.list_capabilities() if not d.name.startswith(self.exclude)
        ]
        exposed = exposed_capabilities(offered, self.max_tools)
        names = ToolNames(d.name for d in exposed)
        tools = tools_for(exposed, style=self.style, max_tools=self.max_tools, names=names)
        transcript = _transcript(conversation)
        calls_made: list[ToolCall] = []
        results: list[ActionResult] = []
        for round_no in range(1, self.max_rounds + 1):
            self._counters.model_calls += 1
            response = await self.model(self._request(transcript, tools, round_no))
            calls = parse_tool_calls(response)
            last = round_no == self.max_rounds
            if not calls or last:
                text = answer_text(response) or ""
                return FinalAnswer(
                    text, calls_made, results, round_no, response, exhausted=bool(calls)
                )
            outcome = await self._run_calls(calls, names, correlation_id)
            calls_made += calls
            results += outcome
            transcript += tool_result_messages(calls, outcome, style=self.style)
        raise AssertionError("unreachable: the last round returns")  # pragma: no cover

    def stats(self) -> OrchestratorStats:
        """The counts of every run so far (a snapshot that later runs leave as it is)."""
        return self._counters.snapshot()

    # ---- the model request --------------------------------------------------------------

    def _request(
        self, transcript: list[dict[str, Any]], tools: list[dict[str, Any]], round_no: int
    ) -> dict[str, Any]:
        key = "input" if self.style == "responses" else "messages"
        body: dict[str, Any] = {key: list(transcript)}
        if tools:
            body["tools"] = tools
            body["tool_choice"] = self._wire_choice(self._choice(round_no))
        return body

    def _choice(self, round_no: int) -> str | dict[str, Any]:
        if round_no == 1 or self.tool_choice == "none":
            return self.tool_choice
        return "none" if round_no == self.max_rounds else "auto"

    def _wire_choice(self, choice: str | dict[str, Any]) -> str | dict[str, Any]:
        if self.style == "anthropic" and isinstance(choice, str):
            return {"type": _ANTHROPIC_CHOICE[choice]}
        return choice

    # ---- the tool calls -----------------------------------------------------------------

    async def _run_calls(
        self, calls: list[ToolCall], names: ToolNames, correlation_id: str
    ) -> list[ActionResult]:
        """Run ``calls`` concurrently; their results in the order of ``calls``."""
        slots: list[ActionResult | None] = [None] * len(calls)

        async def run_one(index: int, call: ToolCall) -> None:
            slots[index] = await self._run_call(call, names, correlation_id)

        async with trio.open_nursery() as nursery:
            for index, call in enumerate(calls):
                nursery.start_soon(run_one, index, call)
        outcome = [result for result in slots if result is not None]
        assert len(outcome) == len(calls)
        return outcome

    async def _run_call(
        self, call: ToolCall, names: ToolNames, correlation_id: str
    ) -> ActionResult:
        action_id = f"tool-{uuid.uuid4().hex}"
        capability = names.capability(call.name)  # only what was offered may run
        payload = _payload(call)
        self._counters.tool_calls += 1
        if capability is None:
            result = ActionResult.failure(
                action_id, ErrorCode.PROVIDER_UNAVAILABLE, f"no tool named {call.name!r} here"
            )
        elif isinstance(payload, str):
            result = ActionResult.failure(action_id, ErrorCode.INVALID_PARAMS, payload)
        else:
            action = ActionCall(
                action_id,
                capability,
                payload,
                headers={CORRELATION_ID: correlation_id} if correlation_id else {},
                timeout_ms=self._timeout_ms,
                correlation_id=correlation_id,
            )
            async with self._limiter:
                started = trio.current_time()
                result = await self.broker.invoke(action)
                elapsed = trio.current_time() - started
            self._counters.invoked_for(elapsed)
        if not result.ok:
            self._counters.tool_errors += 1
        _log.debug(
            "tool call",
            tool=call.name,
            capability=capability or "",
            status=result.status.label,
            code=result.code,
            correlation_id=correlation_id,
        )
        return result


def _check_count(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise CapabilityError(f"{name} must be an int >= {minimum}, got {value!r}")


def _transcript(conversation: str | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as a fresh list of messages (a prompt becomes one user message)."""
    if isinstance(conversation, str):
        return [{"role": "user", "content": conversation}]
    return [dict(message) for message in conversation]


def _payload(call: ToolCall) -> bytes | str:
    """The JSON payload of a call, or why it cannot have one."""
    if call.arguments is None:
        return call.error or "the arguments are not a JSON object"
    try:
        return json.dumps(call.arguments).encode()
    except (TypeError, ValueError, RecursionError) as error:
        return f"the arguments are not JSON-serialisable: {error}"
