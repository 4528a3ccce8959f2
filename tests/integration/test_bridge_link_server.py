"""The bridge server's side of linked kernels, over real loopback gRPC.

A chain of links (a kernel linked to a server that is itself linked further up) forwards
calls along; a capability two links offer outlives the first that leaves; a link name is
held by one process at a time; what a link lists in the directory is bounded, never an id
the ACL binds to another's token, and never in the way of an agent registering the id; and
under an ACL a link's calls act as the link.
"""

from __future__ import annotations

from typing import Any

import trio
from bridge_support import (
    SERVER_DEFAULTS,
    ack,
    as_client,
    bridge_kernel,
    bridge_pb2,
    capture_audit,
    channel,
    register,
    stub,
    until,
)
from grpclib.const import Status
from grpclib.exceptions import GRPCError

import loomk
from loomk import ActionCall, ActionStatus, AgentInfo, FunctionProvider, Kernel
from loomk.config import BridgeAcl
from loomk.testing import open_test_kernel
from loomk_bridge import open_bridge_server
from loomk_bridge._core import RemoteCapability
from loomk_bridge._linked import encode_agents
from loomk_bridge._proto import action_pb2
from loomk_bridge.link import connect

LIMIT_S = 60  # a hang fails the test instead of stalling the suite


def runs_in(where: str, name: str) -> FunctionProvider:
    """A capability ``name`` that answers which kernel ran it."""

    @loomk.capability(name)
    async def provider(args: dict[str, Any]) -> dict[str, Any]:
        return {"ran_in": where, **args}

    return provider


def link_metadata(instance: str = "", agents: list[AgentInfo] | None = None) -> dict[str, str]:
    """RegisterAgent metadata of a link, as ``loomk_bridge.connect`` sends it."""
    metadata = {
        "loomk.link": "bridge",
        "loomk.batch": "1",
        "loomk.origin": "lnk",
        "loomk.agents": encode_agents(agents or []),
    }
    if instance:
        metadata["loomk.instance"] = instance
    return metadata


def listed(*ids: str, topics: tuple[str, ...] = ()) -> list[AgentInfo]:
    return [AgentInfo(agent_id, topics) for agent_id in ids]


async def registering(
    server: Any, *requests: tuple[Any, dict[str, str]]
) -> list[Any]:  # the server's answers, in order
    """Send each ``(request, call metadata)`` RegisterAgent in turn (asyncio side)."""

    async def steps() -> list[Any]:
        ch = channel(server)
        try:
            bridge = stub(ch)
            return [await bridge.RegisterAgent(r, metadata=m) for r, m in requests]
        finally:
            ch.close()

    return await as_client(steps)


# --- B12: a call goes on up a chain of links ---------------------------------------------------


async def test_a_call_goes_on_through_a_middle_server_that_is_itself_linked() -> None:
    """K -> S -> R: a capability only R has, invoked in K, runs in R through S."""
    with trio.fail_after(LIMIT_S):
        async with open_test_kernel() as top_kernel:
            top_kernel.broker.register(runs_in("top", "top.op"))
            async with (
                open_bridge_server(top_kernel, "127.0.0.1:0", **SERVER_DEFAULTS) as top,
                open_test_kernel() as middle_kernel,
                open_bridge_server(middle_kernel, "127.0.0.1:0", **SERVER_DEFAULTS) as middle,
                connect(middle_kernel, top.address, name="middle") as up,
                open_test_kernel() as leaf_kernel,
                connect(leaf_kernel, middle.address, name="leaf") as down,
            ):
                await up.wait_connected()
                await down.wait_connected()
                result = await leaf_kernel.broker.invoke(
                    ActionCall.with_args("c1", "top.op", {"x": 3})
                )
                missing = await leaf_kernel.broker.invoke(
                    ActionCall.with_args("c2", "nowhere.at.all", {})
                )
                middle_upstream = middle_kernel.broker.stats().upstream.calls
    assert result.status is ActionStatus.ACTION_OK, result.error
    assert result.json() == {"ran_in": "top", "x": 3}
    assert middle_upstream == 2  # both went on up from the middle
    # what nobody has still fails, with the top's answer, passed down
    assert missing.status is ActionStatus.ACTION_ERROR
    assert missing.error is not None
    assert missing.error.code == "BROKER_ERROR"
    assert "nowhere.at.all" in missing.error.message


# --- B11: a capability two links offer ---------------------------------------------------------


async def test_a_capability_two_links_offer_stays_when_the_first_leaves() -> None:
    with trio.fail_after(LIMIT_S):
        async with (
            open_test_kernel() as server_kernel,
            open_bridge_server(server_kernel, "127.0.0.1:0", **SERVER_DEFAULTS) as server,
            open_test_kernel() as first_kernel,
            open_test_kernel() as second_kernel,
            trio.open_nursery() as nursery,
        ):
            first_kernel.broker.register(runs_in("first", "shared.op"))
            second_kernel.broker.register(runs_in("second", "shared.op"))
            first_leaves, second_leaves = trio.Event(), trio.Event()
            await nursery.start(linked_until, first_kernel, server.address, "first", first_leaves)
            await nursery.start(
                linked_until, second_kernel, server.address, "second", second_leaves
            )
            provider = server_kernel.broker.resolve("shared.op")
            assert isinstance(provider, RemoteCapability)
            assert provider.agent_id == "first"  # the second's offer was left out
            first_leaves.set()  # the first link leaves (its async with connect ends)
            await until(server, lambda: "first" not in server.agents())
            result = await server_kernel.broker.invoke(ActionCall.with_args("c1", "shared.op", {}))
            info = server_kernel.directory.get("second")
            second_leaves.set()
    assert result.status is ActionStatus.ACTION_OK, result.error
    assert result.json() == {"ran_in": "second"}
    assert info is not None
    assert "shared.op" in info.capabilities


async def linked_until(
    kernel: Kernel,
    address: str,
    name: str,
    leave: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Link ``kernel`` as ``name`` (started once connected) until ``leave`` is set; a task
    of its own, so links can leave in any order."""
    async with connect(kernel, address, name=name) as link:
        await link.wait_connected()
        task_status.started()
        await leave.wait()


async def test_a_capability_held_by_this_kernel_is_not_handed_to_a_link() -> None:
    # a link offering what this kernel has is left out for good: only a remote offer that
    # goes away is handed over (built-in capabilities every kernel has are served locally)
    with trio.fail_after(LIMIT_S):
        async with (
            open_test_kernel() as server_kernel,
            open_bridge_server(server_kernel, "127.0.0.1:0", **SERVER_DEFAULTS) as server,
            open_test_kernel() as client_kernel,
            connect(client_kernel, server.address, name="client") as link,
        ):
            await link.wait_connected()
            assert server.agents() == ["client"]
            assert not isinstance(server_kernel.broker.resolve("time.now"), RemoteCapability)


# --- B10: one link name, two processes --------------------------------------------------------


async def test_a_link_name_held_by_another_process_is_refused_while_its_stream_is_open() -> None:
    async with bridge_kernel() as (_, server):
        answers: dict[str, Any] = {}

        async def steps() -> None:
            ch = channel(server)
            try:
                bridge = stub(ch)

                async def as_instance(instance: str) -> Any:
                    request = register("twin", ["twin.>"], metadata=link_metadata(instance))
                    return await bridge.RegisterAgent(request)

                answers["first"] = await as_instance("aaa")
                async with bridge.EventStream.open() as stream:
                    await stream.send_message(ack("twin"))
                    await stream.send_message(
                        bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest())
                    )
                    pong = await stream.recv_message()  # the server has opened the stream
                    assert pong is not None
                    assert pong.HasField("pong")
                    answers["other"] = await as_instance("bbb")
                    answers["same"] = await as_instance("aaa")  # the first, reconnecting
                    await stream.end()
                    while await stream.recv_message() is not None:
                        pass  # the link has left: the server ends the stream
                answers["after"] = await as_instance("bbb")
            finally:
                ch.close()

        with trio.fail_after(LIMIT_S):
            await as_client(steps)
    assert answers["first"].success
    assert not answers["other"].success
    assert answers["other"].error_message == (
        "agent 'twin' is already linked from another process (instance aaa); "
        "give each process its own link name"
    )
    assert answers["same"].success
    assert answers["after"].success  # the name is free once its stream has closed


# --- the directory: what a link may list ------------------------------------------------------


async def test_listed_agents_count_against_the_registration_bounds() -> None:
    # a link's registration has 4 metadata entries: 4 items each at most, here
    async with bridge_kernel(max_registration_items=4) as (kernel, server):
        ids = ("a1", "a2", "a3", "a4", "a5")
        many = register("lnk", [], metadata=link_metadata(agents=listed(*ids)))
        busy = register("lnk", [], metadata=link_metadata(agents=listed("a1", topics=ids)))
        fine = register("lnk", [], metadata=link_metadata(agents=listed(*ids[:4])))
        too_many, too_busy = await registering(server, (many, {}), (busy, {}))
        assert server.agents() == []  # the refusals changed nothing
        (ok,) = await registering(server, (fine, {}))
        assert not too_many.success
        assert too_many.error_message == (
            "agent 'lnk': 5 agents listed in loomk.agents, more than this bridge takes in one "
            "registration (4, bridge_max_registration_items)"
        )
        assert not too_busy.success
        assert "5 topics of 'a1'" in too_busy.error_message
        assert ok.success
        assert sorted(a.agent_id for a in kernel.directory.all() if a.agent_id[0] == "a") == [
            "a1",
            "a2",
            "a3",
            "a4",
        ]


async def test_a_link_cannot_list_an_id_bound_to_another_token() -> None:
    acl = BridgeAcl.from_table(
        {
            "boss": {"subscribe": [">"], "token": "tok-boss"},
            "*": {"subscribe": [">"], "offer": [">"]},
        }
    )
    async with bridge_kernel(acl=acl) as (kernel, server):
        request = register("lnk", [], metadata=link_metadata(agents=listed("boss", "scout")))
        with capture_audit() as audit:
            (answer,) = await registering(server, (request, {}))
        assert answer.success  # the link is registered; the protected id is not listed
        scout = kernel.directory.get("scout")
        assert scout is not None
        assert scout.metadata == {"loomk.remote": "bridge", "loomk.via": "lnk"}
        assert "boss" not in kernel.directory
        assert server.stats().refused == 0  # a listing is no claim of the id: not refused
    assert audit == []  # (logged once per registration instead, not audited per id)


async def test_an_agent_registering_an_id_a_link_lists_takes_it_over() -> None:
    async with bridge_kernel() as (kernel, server):
        lists = register("lnk", [], metadata=link_metadata(agents=listed("scout", "mole")))
        scout = register("scout", ["scout.task"])
        # an agent may not pass for a listing by claiming the link's mark
        mole = register("mole", ["mole.task"], metadata={"loomk.via": "lnk"})
        (first,) = await registering(server, (lists, {}))
        assert first.success
        held = kernel.directory.get("scout")
        assert held is not None
        assert held.metadata["loomk.via"] == "lnk"
        scout_answer, mole_answer, again = await registering(
            server, (scout, {}), (mole, {}), (lists, {})
        )
        assert scout_answer.success, scout_answer.error_message
        assert mole_answer.success, mole_answer.error_message
        assert again.success  # the link registers again, listing both once more
        for agent_id, topic in (("scout", "scout.task"), ("mole", "mole.task")):
            info = kernel.directory.get(agent_id)
            assert info is not None
            assert info.topics == (topic,), agent_id  # the agent's entry, not the listing
            assert "loomk.via" not in info.metadata


async def test_a_link_leaving_leaves_the_agent_that_took_its_listing() -> None:
    with trio.fail_after(LIMIT_S):

        @loomk.agent("scout", topics=["scout.task"])
        async def scout(ctx: loomk.Context, event: loomk.Event) -> None:
            pass

        async with (
            open_test_kernel() as server_kernel,
            open_bridge_server(server_kernel, "127.0.0.1:0", **SERVER_DEFAULTS) as server,
            open_test_kernel() as client_kernel,
        ):
            await client_kernel.spawn(scout)
            async with connect(client_kernel, server.address, name="remote") as link:
                await link.wait_connected()
                assert _via(server_kernel, "scout") == "remote"
                (answer,) = await registering(server, (register("scout", ["real.task"]), {}))
                assert answer.success, answer.error_message
                assert _via(server_kernel, "scout") is None
            await until(server, lambda: "remote" not in server.agents())
            info = server_kernel.directory.get("scout")
            assert info is not None
            assert info.topics == ("real.task",)


def _via(kernel: Kernel, agent_id: str) -> str | None:
    info = kernel.directory.get(agent_id)
    return info.metadata.get("loomk.via") if info is not None else None


# --- ACL: a link's calls act as the link -------------------------------------------------------


async def test_under_an_acl_a_link_calls_the_server_s_capabilities_as_itself() -> None:
    """The link names itself (``x-agent-id``) on ForwardAction, so the server applies the
    link's own ``bridge_acl`` entry; with no ``"*"`` entry, an anonymous call may do
    nothing."""
    acl = BridgeAcl.from_table(
        {
            "remote": {
                "subscribe": ["thread.*.reply", "thread.*.barrier", "agent.*.replies"],
                "call": [">"],
            }
        }
    )
    with trio.fail_after(LIMIT_S):
        async with (
            open_test_kernel() as server_kernel,
            open_bridge_server(
                server_kernel, "127.0.0.1:0", **{**SERVER_DEFAULTS, "acl": acl}
            ) as server,
            open_test_kernel() as client_kernel,
            connect(client_kernel, server.address, name="remote") as link,
        ):
            server_kernel.broker.register(runs_in("server", "server.op"))
            await link.wait_connected()
            result = await client_kernel.broker.invoke(
                ActionCall.with_args("c1", "server.op", {"x": 1})
            )
            denied = server.stats().denials
    assert result.status is ActionStatus.ACTION_OK, result.error
    assert result.json() == {"ran_in": "server", "x": 1}
    assert denied.get("call", 0) == 0


# --- review: bad listings refused whole, kernel agents keep their ids, caller headers --------


async def test_a_listing_that_cannot_be_listed_is_refused_before_anything_changes() -> None:
    async with bridge_kernel() as (kernel, server):
        good = listed("good", topics=("ok.topic",))
        bad_topic = [*good, AgentInfo("bad", (">.a",))]
        deep = {**link_metadata(), "loomk.agents": "[" * 100_000}
        first, second = await registering(
            server,
            (register("lnk", [], metadata=link_metadata(agents=bad_topic)), {}),
            (register("lnk", [], metadata=deep), {}),
        )
        assert not first.success
        assert "a topic of 'bad'" in first.error_message
        assert not second.success
        assert "not JSON a bridge takes" in second.error_message
        assert server.agents() == []
        assert "good" not in kernel.directory


async def test_a_remote_id_taken_by_a_kernel_agent_is_not_taken_back() -> None:
    async with bridge_kernel() as (kernel, server):
        (first,) = await registering(server, (register("dup", ["dup.x"]), {}))
        assert first.success

        @loomk.agent("dup", topics=["dup.local"])
        async def local(ctx: loomk.Context, event: loomk.Event) -> None:
            pass

        await kernel.spawn(local)
        (again,) = await registering(server, (register("dup", ["dup.x"]), {}))
        assert not again.success
        assert "taken by an agent of this kernel" in again.error_message
        info = kernel.directory.get("dup")
        assert info is not None
        assert "dup.local" in info.topics
        assert "dup.x" not in info.topics
        await kernel.stop_agent("dup")  # its own entry: no KeyError on the way out


async def test_a_caller_header_that_is_no_agent_id_is_refused() -> None:
    async with bridge_kernel() as (_, server):

        async def steps() -> Any:
            ch = channel(server)
            try:
                call = action_pb2.ActionCall(
                    id="c1", capability="time.now", headers={"x-agent-id": "x" * 10_000}
                )
                try:
                    await stub(ch).ForwardAction(call)
                except GRPCError as error:
                    return error
                return None
            finally:
                ch.close()

        error = await as_client(steps)
        assert error is not None
        assert error.status is Status.INVALID_ARGUMENT
        assert len(error.message or "") < 300
