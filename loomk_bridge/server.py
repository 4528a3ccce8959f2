"""The bridge server: Loom's ``loom.v1.Bridge`` served from inside a kernel.

``open_bridge_server(kernel)`` runs grpclib on a trio-asyncio loop in the kernel's edge
layer, for as long as the ``async with`` lasts. Settings default to the kernel's config
(``bridge_address``, ``bridge_token``, ``bridge_tls_*``, ``bridge_heartbeat_timeout_s``,
``bridge_max_message_bytes``, ``bridge_stream_queue``, ``bridge_max_payload_bytes``,
``bridge_max_registration_items``, ``bridge_acl``). The kernel starts it by itself when
``bridge_address`` is set (the ``bridge`` edge); ``loomk bridge serve`` runs one until
Ctrl+C.

Security (docs/bridge.md, "Security"): a bearer token checked on every call, TLS and mutual
TLS, per-agent access control (``bridge_acl``, :mod:`loomk_bridge._acl`) and a rate-limited
audit log of every refusal on the ``loomk.bridge.audit`` logger.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio
import trio_asyncio
from grpclib.events import RecvRequest, listen
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from loomk import Kernel, edges
from loomk.config import BridgeAcl, split_address
from loomk.telemetry.logging import get_logger
from loomk_bridge._acl import AccessControl, AccessDenied
from loomk_bridge._audit import AUDIT_LOGGER
from loomk_bridge._core import BridgeCore
from loomk_bridge._frames import LimitedProtoCodec
from loomk_bridge._service import BridgeService, peer_of
from loomk_bridge._session import SessionCounters
from loomk_bridge.errors import BridgeError
from loomk_bridge.metrics import server_families

__all__ = [
    "AUDIT_LOGGER",
    "DEFAULT_ADDRESS",
    "BridgeServer",
    "BridgeStats",
    "listening_socket",
    "open_bridge_server",
    "parse_address",
]

DEFAULT_ADDRESS = "127.0.0.1:50051"
"""Where a bridge listens when nothing says otherwise (Loom's port, loopback only)."""

_log = get_logger("loomk.bridge")

SHUTDOWN_GRACE_S = 2.0
"""How long, at shutdown, streams get to send their last frames and status to clients."""


@dataclass(frozen=True)
class BridgeStats:
    """A snapshot of the bridge's counters."""

    agents: int  # registered remote agents
    streams: int  # open streams
    events_in: int  # events published by remote agents
    events_out: int  # events delivered to remote agents
    errors: int  # err frames sent
    calls: int  # capability calls pushed to remote agents
    dropped: int  # agents dropped for missing their heartbeats
    refused: int  # calls refused for a missing or wrong token (bridge's or an agent's)
    denied: int = 0  # actions bridge_acl did not allow (the sum of denials)
    denials: Mapping[str, int] = field(default_factory=dict)
    """Denied actions by kind: ``publish``, ``subscribe``, ``call``, ``offer``."""
    too_large: int = 0  # events refused for a payload over bridge_max_payload_bytes


class BridgeServer:
    """A running bridge server (made by :func:`open_bridge_server`)."""

    def __init__(self, core: BridgeCore, address: str) -> None:
        self._core = core
        self.address = address
        """``host:port`` it listens on (the real port when 0 was asked for)."""

    def agents(self) -> list[str]:
        """Ids of the registered remote agents."""
        return sorted(self._core.agents)

    def streaming(self, agent_id: str) -> bool:
        """Whether ``agent_id`` has an open stream."""
        return self._core.session_of(agent_id) is not None

    async def wait_changed(self) -> None:
        """Wait until an agent registers, streams, disconnects or is dropped."""
        await self._core.changed.wait()

    def stats(self) -> BridgeStats:
        sessions = [a.session for a in self._core.agents.values() if a.session is not None]
        totals = SessionCounters()
        for counters in (self._core.totals, *(s.counters for s in sessions)):
            totals.add(counters)
        return BridgeStats(
            agents=len(self._core.agents),
            streams=len(sessions),
            events_in=totals.received,
            events_out=totals.delivered,
            errors=totals.errors,
            calls=totals.calls,
            dropped=self._core.dropped,
            refused=self._core.refused,
            denied=sum(self._core.access.denied.values()),
            denials=self._core.access.counts(),
            too_large=totals.too_large,
        )


def parse_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``host:port`` (``[v6]:port`` for IPv6; an empty host means every
    interface), by the rules of the ``bridge_address`` setting; :class:`BridgeError` if not."""
    parsed = split_address(address)
    if parsed is None:
        raise BridgeError(f"bridge address must be HOST:PORT, got {address!r}")
    return parsed


def listening_socket(address: str) -> socket.socket:
    """A TCP socket bound to ``address`` and listening (``IPPROTO_TCP``, so asyncio turns
    Nagle's algorithm off on the connections it accepts: small gRPC replies must not wait
    for a delayed ACK); :class:`BridgeError` naming the address if it cannot be."""
    try:
        return edges.listening_socket(address, setting="bridge_address")
    except (ValueError, OSError) as error:
        raise BridgeError(str(error)) from error


def _tls_context(cert: str, key: str, client_ca: str) -> ssl.SSLContext | None:
    if not cert:
        return None
    for what, path in (("bridge_tls_cert", cert), ("bridge_tls_key", key)):
        if not Path(path).is_file():
            raise BridgeError(f"{what}: no such file {path!r}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
        if client_ca:
            context.load_verify_locations(client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as error:
        raise BridgeError(f"bridge TLS files cannot be used: {error}") from error
    context.set_alpn_protocols(["h2"])
    return context


def _loopback(address: str) -> bool:
    """Whether ``address`` (as bound) listens on a loopback interface only."""
    host = parse_address(address)[0]
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _bound_address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@asynccontextmanager
async def open_bridge_server(
    kernel: Kernel,
    address: str | None = None,
    *,
    token: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_client_ca: str | None = None,
    heartbeat_timeout_s: float | None = None,
    max_message_bytes: int | None = None,
    stream_queue: int | None = None,
    max_payload_bytes: int | None = None,
    max_registration_items: int | None = None,
    acl: BridgeAcl | None = None,
) -> AsyncIterator[BridgeServer]:
    """Serve ``loom.v1.Bridge`` for ``kernel`` until the block ends (see the module).

    Each keyword left None takes the kernel's setting of the same name (``acl``:
    ``bridge_acl``, checked like it: :meth:`loomk.config.BridgeAcl.from_table` builds one).

    Raises :class:`BridgeError` at once when the address cannot be listened on or the TLS
    files cannot be used; nothing is left running then.
    """
    config = kernel.config
    address = config.bridge_address if address is None else address
    token = config.bridge_token if token is None else token
    sock = listening_socket(address or DEFAULT_ADDRESS)
    try:
        tls = _tls_context(
            config.bridge_tls_cert if tls_cert is None else tls_cert,
            config.bridge_tls_key if tls_key is None else tls_key,
            config.bridge_tls_client_ca if tls_client_ca is None else tls_client_ca,
        )
    except BaseException:
        sock.close()
        raise
    access = AccessControl(config.bridge_acl if acl is None else acl, token)
    core = BridgeCore(
        kernel,
        heartbeat_timeout_s=(
            config.bridge_heartbeat_timeout_s
            if heartbeat_timeout_s is None
            else heartbeat_timeout_s
        ),
        access=access,
        max_payload_bytes=max_payload_bytes,
        max_registration_items=max_registration_items,
    )
    bridge = BridgeServer(core, _bound_address(sock))
    service = BridgeService(
        core, stream_queue=config.bridge_stream_queue if stream_queue is None else stream_queue
    )
    codec = LimitedProtoCodec(
        config.bridge_max_message_bytes if max_message_bytes is None else max_message_bytes
    )
    async with trio_asyncio.open_loop():
        server = Server([service], codec=codec)
        if access.needs_token:
            _require_token(server, access)
        try:
            await trio_asyncio.aio_as_trio(server.start)(sock=sock, ssl=tls)
        except BaseException:
            sock.close()
            raise
        _log.info(
            "bridge listening",
            address=bridge.address,
            tls=tls is not None,
            client_certificates=bool(tls is not None and tls.verify_mode == ssl.CERT_REQUIRED),
            token=access.needs_token,
            acl=len(access.acl),
        )
        if tls is None and not access.needs_token and not _loopback(bridge.address):
            _log.warning(
                "bridge open to the network without a token or TLS: any client that reaches "
                "it may act as any agent (set bridge_token, bridge_tls_cert/key, bridge_acl)",
                address=bridge.address,
            )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drop_silent_agents, core)
                remove = kernel.metrics.register("bridge", lambda: server_families(bridge.stats()))
                try:
                    yield bridge
                finally:
                    remove()
                    nursery.cancel_scope.cancel()
        finally:
            core.close()
            with trio.CancelScope(shield=True):  # each stream tells its client why it ends
                await trio_asyncio.aio_as_trio(service.wait_streams_ended)(SHUTDOWN_GRACE_S)
            server.close()
            with trio.CancelScope(shield=True):
                with trio.move_on_after(5):
                    await trio_asyncio.aio_as_trio(server.wait_closed)()


async def _drop_silent_agents(core: BridgeCore) -> None:
    period = max(core.heartbeat_timeout_s / 4, 0.01)
    while True:
        await trio.sleep(period)
        core.drop_silent()


def _require_token(server: Server, access: AccessControl) -> None:
    """Refuse, before any handler runs, every call without ``bridge_token`` or an agent's
    token (``UNAUTHENTICATED``, audited as ``authenticate``)."""

    async def check(event: RecvRequest) -> None:
        given = event.metadata.get("authorization")
        given = given if isinstance(given, str) else None
        if access.token_accepted(given):
            return
        try:
            access.refuse(
                None,
                peer_of(event),
                event.method_name,
                "no bearer token" if given is None else "wrong bearer token",
                "this bridge needs 'authorization: Bearer <token>' metadata (bridge_token)",
            )
        except AccessDenied as denied:
            raise GRPCError(denied.status, denied.message) from None

    listen(server, RecvRequest, check)
