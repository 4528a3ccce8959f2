"""A capability provider that records the calls it receives."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from loomk.actions.types import ActionCall, ActionResult, CapabilityDescriptor

__all__ = ["ProviderBehaviour", "RecordingProvider"]

ProviderBehaviour = Callable[[ActionCall], Awaitable[ActionResult]]
"""How a :class:`RecordingProvider` answers a call: ``async def behaviour(call)``."""


class RecordingProvider:
    """A capability provider that records every call and answers as the test says.

    It implements the :class:`~loomk.CapabilityProvider` protocol itself (no
    ``@capability`` decoding), so ``calls`` holds the :class:`~loomk.ActionCall` exactly as
    the broker passed it, envelope headers and all. Without a ``behaviour`` it answers with
    an OK result whose output is ``{"version": version}``; with one, it returns whatever
    ``behaviour(call)`` returns, as is, or raises what it raises::

        provider = RecordingProvider("lights.set")
        kernel.broker.register(provider)
        ...  # run an agent that should switch the lights on
        [call] = provider.calls
        assert json.loads(call.payload) == {"room": "kitchen", "on": True}
    """

    def __init__(
        self,
        name: str = "test.cap",
        version: str = "1.0.0",
        *,
        behaviour: ProviderBehaviour | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self._descriptor = CapabilityDescriptor(name, version, metadata=dict(metadata or {}))
        self.behaviour = behaviour
        self.calls: list[ActionCall] = []

    @property
    def descriptor(self) -> CapabilityDescriptor:
        """What this provider offers: ``name:version`` and its metadata."""
        return self._descriptor

    async def invoke(self, call: ActionCall) -> ActionResult:
        """Record ``call``, then answer it."""
        self.calls.append(call)
        if self.behaviour is None:
            return ActionResult.success(call.id, {"version": self._descriptor.version})
        return await self.behaviour(call)

    @property
    def count(self) -> int:
        """How many calls it has received."""
        return len(self.calls)
