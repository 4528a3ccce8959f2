"""Helpers shared by the bus tests: numbered events, draining, a publisher parked on a full lane.

The general ones (scripted agents, recording providers, conservation checks) are in
:mod:`loomk.testing`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import structlog
import trio
import trio.testing

from loomk import Event, EventBus
from loomk.bus import Subscription


def ev(i: int, etype: str = "msg", **metadata: str) -> Event:
    """An event whose payload is the decimal index ``i``."""
    return Event(etype, str(i).encode(), metadata=metadata)


def drain(sub: Subscription) -> list[tuple[str, Event]]:
    """Everything a subscription holds right now, without waiting."""
    items: list[tuple[str, Event]] = []
    while True:
        try:
            items.append(sub.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return items


def indices(items: list[tuple[str, Event]]) -> list[int]:
    """The indices of events made by :func:`ev`."""
    return [int(event.payload) for _, event in items]


def payloads(items: list[tuple[str, Event]]) -> list[bytes]:
    """The payloads of received items."""
    return [event.payload for _, event in items]


@asynccontextmanager
async def parked_publish(bus: EventBus, topic: str, event: Event) -> AsyncIterator[list[int]]:
    """Publish ``event`` in a task that must park on a full ``block`` lane.

    The body runs while the publisher waits; after the block, the list holds what
    ``publish`` returned.
    """
    results: list[int] = []

    async def publisher() -> None:
        results.append(await bus.publish(topic, event))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher)
        await trio.testing.wait_all_tasks_blocked()
        assert results == [], "the publisher was expected to park"
        yield results


@contextmanager
def capture_component_logs(component: str) -> Iterator[list[dict[str, Any]]]:
    """The log records of ``component`` (the ``component`` field ``get_logger`` binds)
    written meanwhile, as dicts with their ``log_level``.

    Whatever level the logs were set to (a test kernel logs only critical records, and
    ``structlog.testing.capture_logs`` keeps that filter): structlog is configured to keep
    everything for the block, and put back as it was after it; nothing is printed meanwhile.
    """
    records: list[dict[str, Any]] = []

    def keep(_logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        if event_dict.get("component") == component:
            records.append({**event_dict, "log_level": method})
        raise structlog.DropEvent

    was_configured = structlog.is_configured()
    before = structlog.get_config()
    structlog.configure(
        processors=[keep],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )
    try:
        yield records
    finally:
        if was_configured:
            structlog.configure(**before)
        else:
            structlog.reset_defaults()


def run_python(*args: str, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` as a user runs it in ``cwd``, without this machine's loomk settings
    (``LOOMK_*``, and the bridge and model addresses kernels also read); output as text."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LOOMK_") and k not in {"LOOM_BRIDGE_ADDR", "VLLM_BASE_URL"}
    }
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
