"""The kernel's state service: where agent state lives on disk and how it is committed.

The store opens, and locks its directory, when the kernel opens (:meth:`StateService.open`),
so a data directory held by another kernel, or a damaged one, stops the kernel before it
runs anything. ``data_dir`` is taken as the configuration gives it (``Config.load`` makes it
absolute); a relative path left in a hand-built ``Config`` is taken from the working
directory. With ``state_temporary`` the kernel makes a temporary directory when it opens and
opens the database in it on first use: nothing else can hold it, and a kernel whose agents
keep no state costs no database.

A fault of the store met while the kernel runs (it cannot be read or written, it is
damaged) is handed to ``on_fault`` as well as raised to the caller, so the kernel can apply
its ``state_fault`` policy.

Key layout, one prefix per agent so that forgetting an agent is one range of keys:
``a/{agent_id}/s/{key}`` holds a state value, ``a/{agent_id}/meta`` its ``last_update_ms``.
"""

from __future__ import annotations

import contextvars
import json
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from loomk.errors import KernelClosed, StoreError
from loomk.events import now_ms
from loomk.state.agent_state import AgentStateView, decode_value, state_as_json
from loomk.state.store import Store
from loomk.telemetry.logging import get_logger

if TYPE_CHECKING:
    from loomk.config import Config

__all__ = ["AgentState", "StateService"]

_log = get_logger("loomk.state")


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
    """Opens the store with the kernel, runs its writer, commits and reads agent state."""

    def __init__(
        self, config: Config, on_fault: Callable[[StoreError], None] | None = None
    ) -> None:
        self._config = config
        self._on_fault = on_fault  # the kernel's state_fault policy
        self._store: Store | None = None
        self._nursery: trio.Nursery | None = None
        self._temporary: tempfile.TemporaryDirectory[str] | None = None
        self._closed = False

    def open(self) -> None:
        """Open the store now, locking ``data_dir`` (with ``state_temporary``: make the
        temporary directory; the database in it opens on first use).

        Raises :class:`~loomk.errors.DataDirInUse` if another kernel holds the directory and
        :class:`~loomk.errors.StoreError` if the store cannot be opened or is damaged, each
        naming the path and what to do.
        """
        if self._closed:
            raise KernelClosed("the kernel's state is closed")
        if self._store is not None or self._temporary is not None:
            return
        if self._config.state_temporary:
            try:
                self._temporary = tempfile.TemporaryDirectory(prefix="loomk-state-")
            except OSError as error:
                raise StoreError(
                    f"cannot make a temporary directory for the state (state_temporary): "
                    f"{error}; set TMPDIR to a writable directory, or give a data_dir"
                ) from error
            return
        path = self.data_dir
        if self._config.source("data_dir").kind == "default":
            _warn_if_state_was_left_beside_the_program(path)
        self._store = Store.open(path, sync=self._config.state_sync)

    def attach(self, nursery: trio.Nursery) -> None:
        """The nursery the store's writer runs in (the kernel's core layer); an open store's
        writer starts now."""
        self._nursery = nursery
        if self._store is not None:
            nursery.start_soon(self._store.run, name="loomk:state-writer")

    @property
    def data_dir(self) -> Path:
        """Where the store is on disk (with ``state_temporary``, the kernel's temporary
        directory, which exists from the kernel's opening to its end)."""
        if self._temporary is not None:
            return Path(self._temporary.name)
        if self._config.state_temporary:
            raise KernelClosed("state_temporary: the directory is made when the kernel opens")
        path = self._config.data_dir.expanduser()
        if path.is_absolute():
            return path
        return Path.cwd() / path

    @property
    def opened(self) -> bool:
        """Whether the database has been opened."""
        return self._store is not None

    @property
    def store(self) -> Store:
        """The store (with ``state_temporary``, opened and its writer started on first use)."""
        if self._store is None:
            if self._closed or self._nursery is None or self._temporary is None:
                raise KernelClosed("the kernel's state is not available (kernel not running)")
            with self._reporting_faults():
                store = Store.open(self.data_dir, sync=self._config.state_sync, watermark=False)
            # in a context of its own: the writer outlives whichever handler first needed
            # the state, and must not carry that agent's log context (or trace) forever
            nursery = self._nursery
            contextvars.Context().run(
                lambda: nursery.start_soon(store.run, name="loomk:state-writer")
            )
            self._store = store
        return self._store

    @contextmanager
    def _reporting_faults(self) -> Iterator[None]:
        """A :class:`StoreError` raised inside is the store failing while the kernel runs:
        tell the kernel (its state_fault policy), then let it propagate to the caller."""
        try:
            yield
        except StoreError as error:
            if self._on_fault is not None:
                self._on_fault(error)
            raise

    # ---- agent state --------------------------------------------------------------------

    @staticmethod
    def state_key(agent_id: str, key: str) -> bytes:
        """The store key of ``ctx.state[key]`` of an agent (for tools that read or write the
        database directly, such as the state bench's raw baseline)."""
        return _state_prefix(agent_id) + key.encode()

    def load(self, agent_id: str) -> dict[str, Any]:
        """An agent's committed state."""
        prefix = _state_prefix(agent_id)
        with self._reporting_faults():
            items = self.store.scan(prefix)
        return {key[len(prefix) :].decode(): decode_value(value) for key, value in items}

    async def commit(self, agent_id: str, view: AgentStateView) -> None:
        """Write what ``view`` holds uncommitted, atomically, stamping ``last_update_ms``;
        once it is durable, the view counts it as committed."""
        puts, deletes = view.pending_operations(_state_prefix(agent_id))
        puts[_meta_key(agent_id)] = b'{"last_update_ms":%d}' % now_ms()
        with self._reporting_faults():
            await self.store.commit(puts, deletes)
        view.applied()

    async def forget(self, agent_id: str) -> int:
        """Delete everything stored for ``agent_id``; returns how many keys went."""
        with self._reporting_faults():
            return await self.store.delete_prefix(_agent_prefix(agent_id))

    def snapshot(
        self, agent_id: str, ephemeral: bytes = b"[]", metadata: dict[str, str] | None = None
    ) -> AgentState:
        """The ``AgentState`` of ``agent_id`` from what is committed."""
        with self._reporting_faults():
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
        """Flush pending commits and close the store (and remove a temporary directory).

        Run it while the writer runs (the kernel does, before its core layer ends).
        """
        self._closed = True
        try:
            if self._store is not None:
                await self._store.aclose()
        finally:
            self.close_now()

    def close_now(self) -> None:
        """Close the store without flushing and remove a temporary directory; for a kernel
        that failed before its writer ran (after :meth:`aclose`, nothing is left to do)."""
        self._closed = True
        try:
            if self._store is not None:
                self._store.close_now()
        finally:
            if self._temporary is not None:
                self._temporary.cleanup()


def _warn_if_state_was_left_beside_the_program(path: Path) -> None:
    """Before loomk took a relative ``data_dir`` from the working directory, the default
    ``.loomk`` sat beside the running program's script: say where such state is, rather than
    let a program silently start afresh."""
    if (path / "CURRENT").exists():
        return
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if not script:
        return
    beside = Path(script).resolve().parent / ".loomk"
    if beside != path and (beside / "CURRENT").is_file():
        _log.warning(
            "new state directory; existing state found beside the program",
            data_dir=str(path),
            found=str(beside),
            hint=f"set data_dir={str(beside)!r} (or LOOMK_DATA_DIR) to keep using it",
        )
