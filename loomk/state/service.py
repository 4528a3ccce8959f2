"""The kernel's state service: where agent state lives on disk and how it is committed.

The store opens on first use (a kernel whose agents keep no state never touches the disk):
in ``data_dir`` (a relative path is taken from the running program's directory, so a
program's state sits beside it), or in a temporary directory when ``state_temporary`` is set.

Key layout, one prefix per agent so that forgetting an agent is one range of keys:
``a/{agent_id}/s/{key}`` holds a state value, ``a/{agent_id}/meta`` its ``last_update_ms``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from loomk.errors import KernelClosed
from loomk.events import now_ms
from loomk.state.agent_state import AgentStateView, decode_value, state_as_json
from loomk.state.store import Store

if TYPE_CHECKING:
    from loomk.config import Config

__all__ = ["AgentState", "StateService"]


@dataclass(frozen=True, slots=True)
class AgentState:
    """One agent's state as ``loom.v1.AgentState`` carries it."""

    agent_id: str
    persistent_state: bytes  # the committed ctx.state, as a JSON object
    ephemeral_context: bytes  # ctx.memory, as a JSON list
    last_update_ms: int
    metadata: dict[str, str] = field(default_factory=dict)


def _agent_prefix(agent_id: str) -> bytes:
    """Every key of one agent starts with this."""
    return f"a/{agent_id}/".encode()


def _state_prefix(agent_id: str) -> bytes:
    """The key prefix of an agent's ``ctx.state`` values."""
    return f"a/{agent_id}/s/".encode()


def _meta_key(agent_id: str) -> bytes:
    return f"a/{agent_id}/meta".encode()


class StateService:
    """Opens the store when needed, runs its writer, commits and reads agent state."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._store: Store | None = None
        self._nursery: trio.Nursery | None = None
        self._temporary: tempfile.TemporaryDirectory[str] | None = None
        self._closed = False

    def attach(self, nursery: trio.Nursery) -> None:
        """The nursery the store's writer runs in (the kernel's core layer)."""
        self._nursery = nursery

    @property
    def data_dir(self) -> Path:
        """Where the store is (or will be) on disk."""
        if self._temporary is not None:
            return Path(self._temporary.name)
        path = self._config.data_dir.expanduser()
        if path.is_absolute():
            return path
        return _program_dir() / path

    @property
    def opened(self) -> bool:
        """Whether the store has been opened."""
        return self._store is not None

    @property
    def store(self) -> Store:
        """The store, opened (and its writer started) on first use."""
        if self._store is None:
            if self._closed or self._nursery is None:
                raise KernelClosed("the kernel's state is not available (kernel not running)")
            if self._config.state_temporary and self._temporary is None:
                self._temporary = tempfile.TemporaryDirectory(prefix="loomk-state-")
            store = Store.open(self.data_dir, sync=self._config.state_sync)
            self._nursery.start_soon(store.run, name="loomk:state-writer")
            self._store = store
        return self._store

    # ---- agent state --------------------------------------------------------------------

    @staticmethod
    def state_key(agent_id: str, key: str) -> bytes:
        """The store key of ``ctx.state[key]`` of an agent (for tools that read or write the
        database directly, such as the state bench's raw baseline)."""
        return _state_prefix(agent_id) + key.encode()

    def load(self, agent_id: str) -> dict[str, Any]:
        """An agent's committed state."""
        prefix = _state_prefix(agent_id)
        return {
            key[len(prefix) :].decode(): decode_value(value)
            for key, value in self.store.scan(prefix)
        }

    async def commit(self, agent_id: str, view: AgentStateView) -> None:
        """Write what ``view`` holds uncommitted, atomically, stamping ``last_update_ms``;
        once it is durable, the view counts it as committed."""
        puts, deletes = view.pending_operations(_state_prefix(agent_id))
        puts[_meta_key(agent_id)] = b'{"last_update_ms":%d}' % now_ms()
        await self.store.commit(puts, deletes)
        view.applied()

    async def forget(self, agent_id: str) -> int:
        """Delete everything stored for ``agent_id``; returns how many keys went."""
        return await self.store.delete_prefix(_agent_prefix(agent_id))

    def snapshot(
        self, agent_id: str, ephemeral: bytes = b"[]", metadata: dict[str, str] | None = None
    ) -> AgentState:
        """The ``AgentState`` of ``agent_id`` from what is committed."""
        meta_raw = self.store.get(_meta_key(agent_id))
        last_update = json.loads(meta_raw)["last_update_ms"] if meta_raw else 0
        return AgentState(
            agent_id=agent_id,
            persistent_state=state_as_json(self.load(agent_id)),
            ephemeral_context=ephemeral,
            last_update_ms=last_update,
            metadata=dict(metadata or {}),
        )

    async def aclose(self) -> None:
        """Flush pending commits and close the store (and remove a temporary directory)."""
        self._closed = True
        if self._store is not None:
            await self._store.aclose()
        if self._temporary is not None:
            self._temporary.cleanup()


def _program_dir() -> Path:
    """The directory of the running program's main script, or the working directory."""
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if script:
        return Path(script).resolve().parent
    return Path.cwd()
