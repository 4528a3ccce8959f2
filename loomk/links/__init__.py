"""Bus links: this kernel's bus mirrored onto another bus through a transport.

The bridge client (a process's kernel joined to a bridge server) and a cluster link (many
kernels sharing NATS, planned) are the same idea; :class:`BusLink` is the part they share,
the local half. See docs/links.md.
"""

from loomk.links.buslink import ORIGIN_KEY, BusLink, LinkStats

__all__ = ["ORIGIN_KEY", "BusLink", "LinkStats"]
