"""The cluster tests' NATS server: Debian's ``nats-server``, started by each test that asks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from loomk.cluster.nats_server import NatsServer, open_nats_server


@pytest.fixture
async def nats_server() -> AsyncIterator[NatsServer]:
    """A running server with JetStream on a free loopback port, stopped after the test."""
    async with open_nats_server() as server:
        yield server
