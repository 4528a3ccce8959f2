"""Edges: what plugs into the kernel's edge layer, and how the kernel finds them.

An edge (the gRPC bridge, a dashboard, a cluster link, a voice pipeline...) is an object with
a ``name``, a ``wanted(config)`` test and an ``open(kernel)`` method returning an async
context manager. The kernel enters the context of every wanted edge after its agents layer
is up and before ``main`` runs; the edge works while its context is open, and its context
is left, cancelled, first at shutdown. ``kernel.edge(name)`` is what the context yielded.

Edge packages announce themselves with entry points of group ``loomk.edges`` (the entry
point's name is the edge's name). :func:`discover_edges` lists them *without importing
them*: the kernel decides from its settings whether it wants one (:func:`setting_of`) and
imports only those it wants, so a kernel without ``bridge_address`` never imports the
bridge, and a missing optional extra breaks only the kernels that ask for it
(:class:`~loomk.errors.EdgeUnavailable`, naming the setting and the ``pip install`` fix).

This module sits below the kernel (the kernel imports it), so :class:`Edge` takes the type
of the kernel as a parameter: an edge of loomk's kernel is an ``Edge[loomk.Kernel]``.
See docs/edges.md.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from loomk.config import Config, split_address
from loomk.errors import EdgeError, EdgeUnavailable
from loomk.telemetry.logging import get_logger

if TYPE_CHECKING:  # importlib.metadata is slow to import: only discovery loads it
    from importlib.metadata import EntryPoint

__all__ = [
    "EDGE_GROUP",
    "Edge",
    "EntryPointEdge",
    "discover_edges",
    "install_hint",
    "listening_socket",
    "setting_of",
    "wanted_edges",
]

EDGE_GROUP = "loomk.edges"
"""The entry-point group edge packages announce their edge in."""

KernelT_contra = TypeVar("KernelT_contra", contravariant=True)

_SETTING_OF: dict[str, str] = {
    "bridge": "bridge_address",
    "bridge_link": "bridge_link_address",
    "dashboard": "dashboard_address",
    "cluster": "cluster_nats_url",
    "mcp": "mcp_servers",
}
"""Edge name -> the setting whose non-empty value asks for it (default ``<name>_address``)."""

_SETTINGS = frozenset(f.name for f in dataclasses.fields(Config))
_log = get_logger("loomk.edges")


class Edge(Protocol[KernelT_contra]):
    """Something the kernel runs in its edge layer: a server, a link, a pipeline.

    ``open(kernel)`` is entered after the agents are up and before ``main``; what it
    yields is ``kernel.edge(name)``. It is left when the kernel stops, with the edge layer
    already cancelled: an edge that must say goodbye does it in a shielded, bounded scope.
    """

    @property
    def name(self) -> str:
        """The edge's name, unique in a kernel (``"bridge"``)."""
        ...

    def wanted(self, config: Config) -> bool:
        """Whether a kernel with ``config`` runs this edge (its settings are present)."""
        ...

    def open(self, kernel: KernelT_contra) -> AbstractAsyncContextManager[object]:
        """The edge's context in ``kernel``: entered to start it, left to stop it."""
        ...


def setting_of(name: str) -> str:
    """The setting whose non-empty value asks for the edge ``name``: ``bridge_address``
    for ``bridge``, ``dashboard_address``, ``cluster_nats_url``, else ``<name>_address``."""
    return _SETTING_OF.get(name, f"{name}_address")


class EntryPointEdge:
    """An edge announced by an entry point, imported only once the kernel wants it.

    If :func:`setting_of` its name is a kernel setting, that setting decides ``wanted``
    without importing anything. A third-party edge has no kernel setting: it is imported
    to ask its own ``wanted`` (and skipped, with a warning, if it cannot be imported).
    """

    def __init__(self, entry_point: EntryPoint) -> None:
        self.entry_point = entry_point
        self.name = entry_point.name
        self.setting = setting_of(entry_point.name)
        self._loaded: Edge[Any] | None = None

    def __repr__(self) -> str:
        return f"EntryPointEdge({self.name!r}, {self.entry_point.value!r})"

    @property
    def decided_by_setting(self) -> bool:
        """True if a kernel setting decides whether this edge is wanted."""
        return self.setting in _SETTINGS

    def wanted(self, config: Config) -> bool:
        """Whether ``config`` asks for this edge (see the class's documentation)."""
        if self.decided_by_setting:
            return bool(getattr(config, self.setting))
        try:
            edge = self.load(config)
        except EdgeUnavailable as error:
            _log.warning("edge skipped: it cannot be imported", edge=self.name, error=str(error))
            return False
        return edge.wanted(config)

    def load(self, config: Config | None = None) -> Edge[Any]:
        """Import the edge (once); :class:`EdgeUnavailable` if it cannot be, saying why,
        which setting asked for it (``config`` says where that was set) and the fix."""
        if self._loaded is None:
            try:
                loaded = self.entry_point.load()
            except Exception as error:  # ImportError, AttributeError, or the module's own
                problem = f"{error} ({type(error).__name__})"
                raise self._unavailable(config, problem, error) from error
            if not all(callable(getattr(loaded, member, None)) for member in ("open", "wanted")):
                raise self._unavailable(config, f"{loaded!r} is not an edge (no open/wanted)")
            self._loaded = loaded
        return self._loaded

    def open(self, kernel: object) -> AbstractAsyncContextManager[object]:
        """The loaded edge's context in ``kernel``."""
        return self.load().open(kernel)

    def _unavailable(
        self, config: Config | None, problem: str, cause: BaseException | None = None
    ) -> EdgeUnavailable:
        asked = "the edge"
        if self.decided_by_setting:
            asked = f"{self.setting} is set"
            if config is not None:
                asked += f" ({config.source(self.setting)})"
            asked += ", but the edge"
        message = (
            f"{asked} cannot be loaded from {self.entry_point.value}: {problem}; "
            f"to install it: {install_hint(self.entry_point)}"
        )
        setting = self.setting if self.decided_by_setting else ""
        return EdgeUnavailable(self.name, setting, message, cause)


def install_hint(entry_point: EntryPoint) -> str:
    """The command that installs what an entry point (an edge, a CLI command) needs:
    loomk's optional extra of the same name for loomk's own (``pip install 'loomk[bridge]'``),
    else the distribution that announced it, with its dependencies."""
    dist = getattr(entry_point, "dist", None)
    dist_name = getattr(dist, "name", None) or "loomk"
    if dist_name.lower() == "loomk":
        return f"pip install 'loomk[{entry_point.name}]'"
    return f"pip install --upgrade '{dist_name}'"


def discover_edges(entry_points: Iterable[EntryPoint] | None = None) -> list[Edge[object]]:
    """The edges announced in group ``loomk.edges``, sorted by name, none imported yet.

    ``entry_points`` replaces the installed ones (a seam for tests and tools): pass
    ``importlib.metadata.EntryPoint`` objects to see how the kernel would treat them.
    """
    if entry_points is None:
        from importlib.metadata import entry_points as installed

        entry_points = installed(group=EDGE_GROUP)
    return [EntryPointEdge(point) for point in sorted(entry_points, key=lambda p: p.name)]


def wanted_edges(
    edges: Iterable[Edge[KernelT_contra]], config: Config
) -> list[Edge[KernelT_contra]]:
    """The edges ``config`` asks for, in order, each importable: the kernel calls this
    before it starts anything, so a missing extra fails fast
    (:class:`~loomk.errors.EdgeUnavailable`), as do two wanted edges of one name."""
    chosen: list[Edge[KernelT_contra]] = []
    names: set[str] = set()
    for edge in edges:
        if not edge.wanted(config):
            continue
        if edge.name in names:
            raise EdgeError(edge.name, "two wanted edges have this name; names must be unique")
        names.add(edge.name)
        if isinstance(edge, EntryPointEdge):
            edge.load(config)
        chosen.append(edge)
    return chosen


def listening_socket(address: str, *, setting: str, backlog: int = 128) -> socket.socket:
    """A TCP socket bound to ``address`` (``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` for every
    interface, port 0 for a free one) and listening, for an edge that serves a port.

    Raises :class:`ValueError` when ``address`` is no address, and :class:`OSError` when it
    cannot be listened on, each saying which ``setting`` to change; the edge wraps them in
    its own error.
    """
    parsed = split_address(address)
    if parsed is None:
        raise ValueError(f"{setting} must be HOST:PORT, got {address!r}")
    host, port = parsed
    try:
        family, kind, proto, _, where = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as error:
        raise OSError(error.errno, f"{setting} {address!r}: {error}") from error
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(where)
        sock.listen(backlog)
    except OSError as error:
        sock.close()
        raise OSError(
            error.errno,
            f"cannot listen on {address!r} ({error.strerror or error}): another program may "
            f"hold the port; choose another {setting} (port 0 picks a free one)",
        ) from error
    return sock
