"""Which ``Host`` and ``Origin`` the dashboard answers to: its defence against DNS rebinding
and against other sites' pages.

DNS rebinding: a page at ``http://evil.example:8765/`` whose name the attacker then points
at 127.0.0.1 is, for the browser, still of origin ``evil.example:8765``, so its requests
reach a dashboard on 127.0.0.1:8765 with ``Host: evil.example:8765`` and a matching
``Origin``: comparing the two proves nothing. A dashboard bound to a loopback address is
only meant to be reached by a loopback name, so it answers only requests whose ``Host``
names one (``localhost``, ``127.0.0.0/8``, ``::1``) or a name the operator listed in
``dashboard_allowed_hosts`` (the public name a proxy forwards): everything else is 421
Misdirected Request. A dashboard bound to another address was put on the network on
purpose and answers to any ``Host``.

Cross-origin websockets: a browser page of another site sends its own ``Origin``; a
handshake whose ``Origin`` is neither this server (the same ``host:port`` as ``Host``) nor
a listed name is refused (403). Clients that send no ``Origin`` (``loomk top``) pass.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["HostPolicy", "host_name", "parse_allowed_hosts"]

_LOOPBACK_NAMES = frozenset(("localhost",))


def host_name(value: str) -> str:
    """The name part of a ``Host`` header (or a ``host[:port]``), lower-cased, without a
    port, the brackets of an IPv6 literal or a trailing dot: ``[::1]:8765`` -> ``::1``,
    ``Dash.Example.COM.:443`` -> ``dash.example.com``; ``''`` for an empty or malformed one."""
    text = value.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (text[end + 1 :] and not text[end + 1 :].startswith(":")):
            return ""
        return text[1:end]
    if text.count(":") > 1:  # an IPv6 literal must be bracketed in a Host; take it whole
        return text
    name = text.partition(":")[0]
    return name[:-1] if name.endswith(".") else name


def is_loopback_name(name: str) -> bool:
    """Whether ``name`` (as :func:`host_name` gives it) names this machine's loopback:
    ``localhost``, an address of 127.0.0.0/8, ``::1`` (or 127.x mapped into IPv6)."""
    if name in _LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def parse_allowed_hosts(hosts: str | Iterable[str]) -> frozenset[str]:
    """The names of ``dashboard_allowed_hosts`` (comma-separated, or already a list) as
    :func:`host_name` gives them (a port given with one is ignored)."""
    parts = hosts.split(",") if isinstance(hosts, str) else hosts
    return frozenset(name for name in (host_name(part) for part in parts) if name)


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """What the dashboard answers to (see the module)."""

    loopback_only: bool
    """The dashboard is bound to a loopback address: only loopback or allowed names."""
    allowed: frozenset[str] = frozenset()
    """``dashboard_allowed_hosts``: names also answered to, and also same-origin."""

    def misdirected(self, host: str | None) -> str:
        """Why a request with this ``Host`` header (None: none) is not for this dashboard
        ('' when it is)."""
        if not self.loopback_only:
            return ""
        if host is None:
            return "no Host header"
        name = host_name(host)
        if is_loopback_name(name) or name in self.allowed:
            return ""
        return (
            f"Host {host[:100]!r} is not a loopback name nor in dashboard_allowed_hosts "
            "(a page reaching a loopback dashboard by DNS rebinding?)"
        )

    def cross_origin(self, origin: str | None, host: str | None) -> str:
        """Why a websocket handshake comes from another site's page ('' if it does not):
        its ``Origin`` is not this server (``host:port`` of ``Host``) nor a listed name."""
        if origin is None:
            return ""
        netloc = urlsplit(origin).netloc.lower()
        if netloc and netloc == (host or "").strip().lower():
            return ""
        if netloc and host_name(netloc) in self.allowed:
            return ""
        return f"origin {origin[:100]!r} is not this server"
