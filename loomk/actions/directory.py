"""The capability directory: a live, read-only view of what the broker can invoke.

Unlike Loom's snapshot (refreshed by hand), every query reads the broker's registry as it
is now, so a provider registered a moment ago is found at once.
"""

from __future__ import annotations

import builtins

from loomk.actions.broker import ActionBroker
from loomk.actions.types import CapabilityDescriptor, ProviderKind

__all__ = ["CapabilityDirectory"]


class CapabilityDirectory:
    """Queries over the broker's capabilities by name, version and provider kind."""

    def __init__(self, broker: ActionBroker) -> None:
        self._broker = broker

    def list(self) -> builtins.list[CapabilityDescriptor]:
        """Every capability, by name then highest version first."""
        return self._broker.list_capabilities()

    def find_by_name(self, name: str) -> builtins.list[CapabilityDescriptor]:
        """Every version of ``name``, highest first."""
        return [d for d in self.list() if d.name == name]

    def get(self, name: str, version: str = "") -> CapabilityDescriptor | None:
        """``name:version``, or the highest version of ``name`` when ``version`` is empty."""
        provider = self._broker.resolve(name, version)
        return provider.descriptor if provider is not None else None

    def by_kind(self, kind: ProviderKind) -> builtins.list[CapabilityDescriptor]:
        """The capabilities one kind of provider implements (native, MCP, bridge...)."""
        return self.query(kind=kind)

    def query(
        self,
        *,
        name: str | None = None,
        version: str | None = None,
        kind: ProviderKind | None = None,
        prefix: str | None = None,
    ) -> builtins.list[CapabilityDescriptor]:
        """The capabilities matching every criterion given (``prefix`` matches names)."""
        return [
            d
            for d in self.list()
            if (name is None or d.name == name)
            and (version is None or d.version == version)
            and (kind is None or d.provider == kind)
            and (prefix is None or d.name.startswith(prefix))
        ]

    def __len__(self) -> int:
        return len(self._broker)

    def __contains__(self, name: object) -> bool:
        return name in self._broker
