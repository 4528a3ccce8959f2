"""``open_nats_server`` runs a real ``nats-server``; the NATS baseline runs against it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import nats.js.api
import pytest
import trio
import trio_asyncio

from loomk.cluster._bench_baseline import run_baseline
from loomk.cluster.nats_server import (
    NatsServer,
    NatsServerError,
    find_nats_server,
    open_nats_server,
)


async def _in_asyncio(steps: object) -> object:
    """Runs an asyncio coroutine function (nats-py) from trio, in a loop of its own."""
    async with trio_asyncio.open_loop():
        return await trio_asyncio.aio_as_trio(steps)()


async def test_a_client_publishes_and_subscribes(nats_server: NatsServer) -> None:
    assert nats_server.url == f"nats://127.0.0.1:{nats_server.port}"
    assert nats_server.pid is not None

    async def steps() -> list[bytes]:
        nc = await nats.connect(nats_server.url)
        sub = await nc.subscribe("greetings")
        await nc.publish("greetings", b"hello")
        await nc.publish("greetings", b"again")
        got = [(await sub.next_msg(timeout=5)).data for _ in range(2)]
        await nc.close()
        return got

    assert await _in_asyncio(steps) == [b"hello", b"again"]


async def test_jetstream_data_survives_a_restart_on_the_same_port(tmp_path: Path) -> None:
    store = tmp_path / "store"
    async with open_nats_server(store_dir=store) as server:

        async def publish() -> None:
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            await js.add_stream(
                name="KEPT", subjects=["kept.>"], storage=nats.js.api.StorageType.FILE
            )
            ack = await js.publish("kept.one", b"payload")
            assert ack.seq == 1
            await nc.close()

        async def stored_messages() -> int:
            nc = await nats.connect(server.url)
            info = await nc.jetstream().stream_info("KEPT")
            await nc.close()
            return int(info.state.messages)

        await _in_asyncio(publish)
        port, first_pid = server.port, server.pid
        await server.stop()
        assert server.pid is None
        with pytest.raises(OSError, match="connect"):
            await trio.open_tcp_stream("127.0.0.1", port)

        await server.start()
        assert (server.port, server.url) == (port, f"nats://127.0.0.1:{port}")
        assert server.pid not in (None, first_pid)
        assert await _in_asyncio(stored_messages) == 1

        await server.kill()
        assert server.pid is None
    assert store.is_dir()  # a store it was given stays


async def test_a_missing_executable_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOMK_NATS_SERVER", "/nonexistent")
    with pytest.raises(NatsServerError, match=r"apt-get install nats-server.*LOOMK_NATS_SERVER"):
        find_nats_server()
    with pytest.raises(NatsServerError, match="not found"):
        async with open_nats_server():
            pass


async def test_a_server_that_exits_reports_its_command_and_log(nats_server: NatsServer) -> None:
    with pytest.raises(NatsServerError) as caught:
        async with open_nats_server(port=nats_server.port):
            pass
    message = str(caught.value)
    assert "exited" in message
    assert f"-p {nats_server.port}" in message
    assert "address already in use" in message


def test_the_executable_is_found() -> None:
    assert Path(find_nats_server()).name == "nats-server"


@pytest.mark.parametrize("mode", ["core", "js"])
async def test_the_baseline_delivers_the_messages(nats_server: NatsServer, mode: str) -> None:
    result = await run_baseline(nats_server.url, 2000, mode)
    assert result["sent"] == 2000
    if mode == "js":
        assert result["received"] == 2000  # unique stream sequences
    else:
        assert 0 < result["received"] <= result["sent"]  # core NATS may drop
    assert result["events_per_s"] > 0
    assert result["publish_per_s"] > 0


def test_asyncio_is_not_running_here() -> None:
    """The helpers above need trio's loop; nothing leaks an asyncio loop into the thread."""
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
