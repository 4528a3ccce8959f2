"""The kernel's model service: route a question, then ask the local model, the cloud, or both.

Both models are ``generate`` functions: they take an ``llm.generate`` request as the
capability's provider hands it over (``{bundle, budget, stream, overrides}``) and return
the output of Loom's ``llm.generate``, ``{text, model, provider, usage}``. The local model
is always there; the cloud one only when an endpoint is configured.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from loomk.errors import LLMError
from loomk.events import Event
from loomk.llm.local import event_text
from loomk.llm.routing.decision import Route, RoutingDecision
from loomk.llm.routing.router import ModelRouter
from loomk.telemetry.logging import get_logger

__all__ = ["ModelAnswer", "ModelService"]

_log = get_logger("loomk.llm")

Generate = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class ModelAnswer:
    """What the models said about one event, and why they were the ones asked."""

    text: str
    decision: RoutingDecision
    output: dict[str, Any]  # the answering model's full output
    quick: dict[str, Any] | None = None  # a hybrid's local quick pass
    cloud_error: LLMError | None = None  # the cloud failed: the local model answered

    @property
    def route(self) -> Route:
        """Where the event was handled."""
        return self.decision.route


def request_for(
    text: str, context: list[str] | None = None, *, offline: bool = False
) -> dict[str, Any]:
    """An ``llm.generate`` request asking ``text`` (with optional context documents);
    ``offline`` tells the local model not to reach the network for it."""
    return {
        "offline": offline,
        "bundle": {
            "system": "",
            "instructions": text,
            "tools_json_schema": None,
            "context_docs": list(context or []),
            "history": [],
        },
        "budget": {"max_input_tokens": 2048, "max_output_tokens": 512},
        "stream": False,
        "overrides": {},
    }


class ModelService:
    """Routes each question and asks the chosen model(s)."""

    def __init__(self, router: ModelRouter, local: Generate, cloud: Generate | None) -> None:
        self.router = router
        self.local = local
        self.cloud = cloud

    async def answer(
        self,
        event: Event,
        *,
        parameters: Mapping[str, str] | None = None,
        decision: RoutingDecision | None = None,
    ) -> ModelAnswer:
        """Answer the text in ``event``'s payload where the router says.

        Hybrid asks the local model first, then the cloud with the quick answer as context.
        An event that already carries ``routing_target`` (a pass of a routed agent) is
        answered by that target alone. What goes to the cloud is masked as the policy
        requires. When the cloud fails (an :class:`LLMError`), the local model's answer
        stands and ``cloud_error`` says why.
        """
        policy = self.router.policy_for(event, parameters)
        if decision is None:
            decision = await self.router.route(event, policy)
        text = event_text(event) or ""  # what the router estimated its confidence on
        offline = not policy.privacy_level.cloud_allowed
        route = decision.route
        target = event.metadata.get("routing_target")
        if target == "local":
            route = Route.LOCAL
        elif target == "cloud" and route in (Route.HYBRID, Route.CLOUD):
            route = Route.CLOUD
        if route in (Route.LOCAL, Route.LOCAL_FALLBACK) or self.cloud is None:
            output = await self.local(request_for(text, offline=offline))
            return ModelAnswer(_text(output), decision, output)
        masked = self.router.mask_for_cloud(event, policy)
        # a masked value repeated in the free text is masked there too
        outgoing = self.router.scrub(event_text(masked) or "", event, policy)
        if route is Route.HYBRID:
            quick = await self.local(request_for(text))
            # the quick answer was made from the unmasked text: scrub what was masked
            context = [self.router.scrub(f"A quick local answer: {_text(quick)}", event, policy)]
            try:
                refined = await self.cloud(request_for(outgoing, context))
            except LLMError as error:  # the quick answer stands
                _log.warning("cloud refine failed", code=error.code, error=str(error))
                return ModelAnswer(_text(quick), decision, quick, quick, error)
            return ModelAnswer(_text(refined), decision, refined, quick)
        if route is Route.CLOUD:
            try:
                output = await self.cloud(request_for(outgoing))
            except LLMError as error:  # better a local answer than none
                _log.warning("cloud answer failed", code=error.code, error=str(error))
                output = await self.local(request_for(text))
                return ModelAnswer(_text(output), decision, output, None, error)
            return ModelAnswer(_text(output), decision, output)
        return ModelAnswer("", decision, {})  # Defer / Drop: nobody is asked


def _text(output: Mapping[str, Any]) -> str:
    text = output.get("text", "")
    return text if isinstance(text, str) else str(text)
