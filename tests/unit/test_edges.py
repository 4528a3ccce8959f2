"""The kernel's edge layer: which edges run, when they open and close, how they fail, and how
edges announced by entry points are found without importing them (loomk.edges)."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
import trio

import loomk
from loomk import (
    Config,
    Context,
    Edge,
    EdgeError,
    EdgeNotFound,
    EdgeUnavailable,
    Kernel,
    open_kernel,
)
from loomk.edges import EDGE_GROUP, EntryPointEdge, discover_edges, setting_of, wanted_edges
from loomk.testing import ScriptedAgent

_modules = itertools.count()


def quiet_config(tmp_path: Path, **settings: Any) -> Config:
    """A config cut off from the environment, with throw-away state and no logs."""
    defaults = {"state_temporary": True, "state_sync": False, "log_level": "critical"}
    return Config.load(env={}, cwd=tmp_path, defaults=defaults, **settings)


class RecordingEdge:
    """An edge that records when it is entered and left, and yields ``value``."""

    def __init__(
        self,
        name: str,
        log: list[str],
        *,
        wanted: bool = True,
        fail_on_entry: BaseException | None = None,
        value: object = None,
    ) -> None:
        self.name = name
        self.log = log
        self.is_wanted = wanted
        self.fail_on_entry = fail_on_entry
        self.value = value
        self.left_cancelled: bool | None = None

    def wanted(self, config: Config) -> bool:
        return self.is_wanted

    def open(self, kernel: Kernel) -> AbstractAsyncContextManager[object]:
        assert self.is_wanted, "an unwanted edge must never be opened"
        return self._context(kernel)

    @asynccontextmanager
    async def _context(self, kernel: Kernel) -> AsyncIterator[object]:
        if self.fail_on_entry is not None:
            raise self.fail_on_entry
        self.log.append(f"{self.name} entered")
        try:
            yield self.value
        finally:
            self.left_cancelled = trio.current_effective_deadline() == -math.inf
            self.log.append(f"{self.name} left (stopping={kernel.stopping})")


def recording_agent(log: list[str]) -> ScriptedAgent:
    async def stopped(ctx: Context) -> None:
        log.append("agent stopped")

    return ScriptedAgent("watcher", on_stop=stopped)


def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    """Write ``source`` as a fresh importable module; its name."""
    name = f"loomk_test_plugin_{next(_modules)}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def missing_bridge() -> EntryPoint:
    return EntryPoint(name="bridge", value="no_such_module_xyz:EDGE", group=EDGE_GROUP)


# --- when edges open and close ---------------------------------------------------------------


async def test_a_wanted_edge_opens_before_main_and_closes_after_it_before_agents_stop(
    tmp_path: Path,
) -> None:
    log: list[str] = []
    first, second = RecordingEdge("first", log), RecordingEdge("second", log)
    async with open_kernel(quiet_config(tmp_path), edges=[first, second]) as kernel:
        log.append("main")
        await kernel.spawn(recording_agent(log))
    assert log == [
        "first entered",
        "second entered",
        "main",
        "second left (stopping=True)",  # in reverse order, once the kernel is stopping
        "first left (stopping=True)",
        "agent stopped",  # the agents stop after the edges
    ]
    assert first.left_cancelled  # the edge layer was cancelled before they were left
    assert second.left_cancelled


async def test_an_unwanted_edge_is_never_opened(tmp_path: Path) -> None:
    log: list[str] = []
    idle = RecordingEdge("idle", log, wanted=False)
    async with open_kernel(quiet_config(tmp_path), edges=[idle]) as kernel:
        assert dict(kernel.edges) == {}
    assert log == []


async def test_kernel_edge_gives_what_the_edge_yielded(tmp_path: Path) -> None:
    server = object()
    edge = RecordingEdge("server", [], value=server)
    async with open_kernel(quiet_config(tmp_path), edges=[edge]) as kernel:
        assert kernel.edge("server") is server
        assert dict(kernel.edges) == {"server": server}
        with pytest.raises(TypeError):
            kernel.edges["other"] = 1  # type: ignore[index]  # a read-only view
        with pytest.raises(EdgeNotFound, match=r"'dashboard'.*open: server") as caught:
            kernel.edge("dashboard")
        assert isinstance(caught.value, LookupError)
        assert caught.value.code == "EDGE_NOT_FOUND"
    assert dict(kernel.edges) == {}  # nothing is open once the kernel stopped


def test_run_takes_edges_too() -> None:
    edge = RecordingEdge("server", [], value="served")

    async def main(kernel: Kernel) -> object:
        return kernel.edge("server")

    assert loomk.run(main, edges=[edge], state_temporary=True, handle_signals=False) == "served"


# --- how edges fail ---------------------------------------------------------------------------


async def test_an_edge_failing_to_open_fails_open_kernel_and_releases_the_data_dir(
    tmp_path: Path,
) -> None:
    log: list[str] = []
    cause = OSError("address already in use")
    edges = [RecordingEdge("good", log), RecordingEdge("bad", log, fail_on_entry=cause)]
    config = quiet_config(tmp_path, state_temporary=False, data_dir=tmp_path / "data")
    with pytest.raises(EdgeError, match=r"edge 'bad': failed to open.*address already in use") as c:
        async with open_kernel(config, edges=[*edges, RecordingEdge("never", log)]):
            raise AssertionError("the body must not run")
    assert c.value.edge == "bad"
    assert c.value.cause is cause
    assert c.value.__cause__ is cause
    assert c.value.code == "EDGE_FAILED"
    assert log == ["good entered", "good left (stopping=True)"]  # opened ones are left
    async with open_kernel(config, edges=[]) as again:  # the lock was released
        assert again.config.data_dir == tmp_path / "data"


async def test_an_edge_failing_while_running_stops_the_kernel_with_its_error(
    tmp_path: Path,
) -> None:
    log: list[str] = []
    go = trio.Event()

    class Fragile:
        name = "fragile"

        def wanted(self, config: Config) -> bool:
            return True

        @asynccontextmanager
        async def open(self, kernel: Kernel) -> AsyncIterator[object]:
            async def watch() -> None:
                await go.wait()
                raise ValueError("the link broke")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                yield None

    kernels: list[Kernel] = []

    async def serve() -> None:
        async with open_kernel(quiet_config(tmp_path), edges=[Fragile()]) as kernel:
            kernels.append(kernel)
            await kernel.spawn(recording_agent(log))
            go.set()
            await trio.sleep_forever()

    with pytest.raises(ValueError, match="the link broke"):
        await serve()
    assert kernels[0].closed
    assert log == ["agent stopped"]  # the agents were still stopped in order


async def test_two_wanted_edges_of_one_name_are_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    log: list[str] = []
    twins = [RecordingEdge("twin", log), RecordingEdge("twin", log)]
    with pytest.raises(EdgeError, match="unique"):
        async with open_kernel(quiet_config(tmp_path), edges=twins):
            raise AssertionError("the body must not run")
    assert log == []


# --- edges announced by entry points ------------------------------------------------------------


def test_the_setting_that_asks_for_an_edge() -> None:
    assert setting_of("bridge") == "bridge_address"
    assert setting_of("dashboard") == "dashboard_address"
    assert setting_of("cluster") == "cluster_nats_url"
    assert setting_of("mcp") == "mcp_servers"
    assert setting_of("radio") == "radio_address"


def test_discovered_edges_are_sorted_and_not_imported() -> None:
    points = [
        EntryPoint(name="zeta", value="no_such_module_xyz:EDGE", group=EDGE_GROUP),
        missing_bridge(),
    ]
    found = discover_edges(points)
    assert [edge.name for edge in found] == ["bridge", "zeta"]
    assert all(isinstance(edge, EntryPointEdge) for edge in found)  # nothing failed yet


async def test_an_unwanted_entry_point_edge_is_never_imported(tmp_path: Path) -> None:
    edges = discover_edges([missing_bridge()])
    async with open_kernel(quiet_config(tmp_path), edges=edges) as kernel:
        assert dict(kernel.edges) == {}


async def test_a_wanted_entry_point_edge_that_cannot_be_imported_fails_fast(
    tmp_path: Path,
) -> None:
    config = quiet_config(
        tmp_path, state_temporary=False, data_dir=tmp_path / "data", bridge_address=":0"
    )
    with pytest.raises(EdgeUnavailable) as caught:
        async with open_kernel(config, edges=discover_edges([missing_bridge()])):
            raise AssertionError("the body must not run")
    error = caught.value
    message = str(error)
    assert "bridge_address is set (keyword argument)" in message
    assert "No module named 'no_such_module_xyz'" in message
    assert "pip install 'loomk[bridge]'" in message
    assert (error.edge, error.setting, error.code) == (
        "bridge",
        "bridge_address",
        "EDGE_UNAVAILABLE",
    )
    assert isinstance(error.__cause__, ImportError)
    assert isinstance(error, EdgeError)
    async with open_kernel(config, edges=[]):  # it failed before the store was opened
        pass


async def test_a_wanted_entry_point_edge_loads_and_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = plugin_module(
        tmp_path,
        monkeypatch,
        "from contextlib import asynccontextmanager\n"
        "class Bridge:\n"
        "    name = 'bridge'\n"
        "    def wanted(self, config):\n"
        "        raise AssertionError('the kernel setting decides, not the edge')\n"
        "    @asynccontextmanager\n"
        "    async def open(self, kernel):\n"
        "        yield ('bridge of', kernel.name)\n"
        "EDGE = Bridge()\n",
    )
    points = [EntryPoint(name="bridge", value=f"{module}:EDGE", group=EDGE_GROUP)]
    config = quiet_config(tmp_path, name="k1", bridge_address="127.0.0.1:0")
    async with open_kernel(config, edges=discover_edges(points)) as kernel:
        assert kernel.edge("bridge") == ("bridge of", "k1")


async def test_a_third_party_edge_without_a_kernel_setting_is_asked_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = plugin_module(
        tmp_path,
        monkeypatch,
        "from contextlib import asynccontextmanager\n"
        "class Radio:\n"
        "    name = 'radio'\n"
        "    def wanted(self, config):\n"
        "        return config.name == 'with-radio'\n"
        "    @asynccontextmanager\n"
        "    async def open(self, kernel):\n"
        "        yield 'on air'\n"
        "EDGE = Radio()\n",
    )
    radio = EntryPoint(name="radio", value=f"{module}:EDGE", group=EDGE_GROUP)
    broken = EntryPoint(name="static", value="no_such_module_xyz:EDGE", group=EDGE_GROUP)
    edges = discover_edges([radio, broken])
    async with open_kernel(quiet_config(tmp_path, name="with-radio"), edges=edges) as kernel:
        assert dict(kernel.edges) == {"radio": "on air"}  # the broken one is skipped
    assert wanted_edges(edges, quiet_config(tmp_path)) == []


def test_an_entry_point_that_is_not_an_edge_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = plugin_module(tmp_path, monkeypatch, "EDGE = 42\n")
    point = EntryPoint(name="bridge", value=f"{module}:EDGE", group=EDGE_GROUP)
    with pytest.raises(EdgeUnavailable, match="is not an edge"):
        wanted_edges(discover_edges([point]), quiet_config(tmp_path, bridge_address=":1"))


def test_an_explicit_edge_satisfies_the_protocol() -> None:
    edge: Edge[Kernel] = RecordingEdge("typed", [])  # checked by mypy
    chooses: Callable[[Config], bool] = edge.wanted
    assert chooses(Config()) is True


def test_a_kernel_without_bridge_address_never_imports_the_bridge() -> None:
    """Discovery lists the installed bridge edge, yet ``import loomk``, discovery and a kernel
    that does not want it import neither the bridge nor importlib.metadata up front; nor,
    without ``mcp_servers``, the MCP edge or the ``mcp`` SDK; nor, without
    ``cluster_nats_url``, the cluster edge or nats-py."""
    code = (
        "import sys, loomk\n"
        "print('importlib.metadata' in sys.modules)\n"
        "from loomk.edges import discover_edges\n"
        "print([edge.name for edge in discover_edges()])\n"
        "async def main(kernel):\n"
        "    return sorted(kernel.edges)\n"
        "print(loomk.run(main, state_temporary=True))\n"
        "print(sorted(m for m in sys.modules if m.startswith(('loomk_bridge', 'grpclib'))))\n"
        "print(sorted(m for m in sys.modules if m.startswith(('hypercorn', 'loomk.dashboard'))))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mcp' or 'loomk.mcp' in m))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'nats' or 'cluster' in m))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LOOM_BRIDGE_ADDR"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:7] == [
        "False",
        "['bridge', 'bridge_link', 'cluster', 'dashboard', 'mcp']",
        "[]",
        "[]",
        "[]",
        "[]",
        "[]",
    ]


async def test_the_test_kernel_takes_edges_like_open_kernel() -> None:
    from loomk.testing import open_test_kernel

    log: list[str] = []
    async with open_test_kernel(edges=[RecordingEdge("probe", log, value=42)]) as kernel:
        assert kernel.edge("probe") == 42
    assert log == ["probe entered", "probe left (stopping=True)"]
