"""The bridge's security over real loopback sockets: ``bridge_acl`` on every path (register,
publish, publish_batch, ForwardAction), agent tokens, the audit log, payload and registration
limits, TLS and mutual TLS."""

from __future__ import annotations

import json
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import trio
import trio.testing
from bridge_support import (
    ack,
    action_pb2,
    as_client,
    bridge_kernel,
    bridge_pb2,
    capture_audit,
    channel,
    descriptor,
    event,
    publish,
    register,
    stub,
    until,
)
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from loomk import (
    ActionCall,
    ActionResult,
    ActionStatus,
    CapabilityDescriptor,
    Event,
    capability,
)
from loomk.config import BridgeAcl
from loomk.testing import capture_events

ACL = BridgeAcl.from_table(
    {
        "sensor-1": {
            "publish": ["sensor.>"],
            "subscribe": ["cmd.sensor.*"],
            "call": ["math.*"],
            "offer": ["sensor.read"],
        },
        "*": {"publish": ["public.>"], "subscribe": ["public.>"]},
    }
)

PING = bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest())


def batch(*publishes: Any) -> Any:
    return bridge_pb2.ClientEvent(publish_batch=bridge_pb2.PublishBatch(publishes=publishes))


def item(topic: str, ev: Any) -> Any:
    return bridge_pb2.Publish(topic=topic, event=ev)


async def until_pong(stream: Any) -> list[Any]:
    """Send a ping and read up to its pong: every frame before it (the server answers
    frames in order, so everything sent before the ping has been handled)."""
    await stream.send_message(PING)
    frames = []
    while not (frame := await stream.recv_message()).HasField("pong"):
        frames.append(frame)
    return frames


def errors(frames: list[Any]) -> list[tuple[str, str]]:
    return [(f.err.code, f.err.message) for f in frames if f.HasField("err")]


# --- RegisterAgent ---------------------------------------------------------------------------


async def test_a_registration_outside_the_acl_is_permission_denied_and_changes_nothing() -> None:
    async with bridge_kernel(acl=ACL) as (kernel, server):

        async def steps() -> tuple[GRPCError, GRPCError, Any, Any]:
            ch = channel(server)
            try:
                bridge = stub(ch)
                with pytest.raises(GRPCError) as topics:
                    await bridge.RegisterAgent(register("sensor-1", ["cmd.sensor.*", "cmd.>"]))
                with pytest.raises(GRPCError) as offers:
                    await bridge.RegisterAgent(
                        register(
                            "sensor-1",
                            [],
                            capabilities=[descriptor("sensor.read"), descriptor("shell.exec")],
                        )
                    )
                allowed = await bridge.RegisterAgent(
                    register(
                        "sensor-1",
                        ["cmd.sensor.*", "agent.sensor-1.replies"],  # its own inbox too
                        capabilities=[descriptor("sensor.read")],
                    )
                )
                visitor = await bridge.RegisterAgent(register("visitor", ["public.news.*"]))
                return topics.value, offers.value, allowed, visitor
            finally:
                ch.close()

        with capture_audit() as audit:
            topics, offers, allowed, visitor = await as_client(steps)
        assert topics.status is offers.status is Status.PERMISSION_DENIED
        assert topics.message == "agent 'sensor-1' may not subscribe to 'cmd.>' (bridge_acl)"
        assert offers.message == "agent 'sensor-1' may not offer 'shell.exec' (bridge_acl)"
        assert kernel.broker.resolve("shell.exec") is None
        assert allowed.success, allowed.error_message
        assert visitor.success, visitor.error_message  # by the '*' entry
        info = kernel.directory.get("sensor-1")
        assert info is not None
        assert info.topics == ("cmd.sensor.*", "agent.sensor-1.replies")
        assert [(r["agent"], r["action"], r["target"], r["decision"]) for r in audit] == [
            ("sensor-1", "subscribe", "cmd.>", "denied"),
            ("sensor-1", "offer", "shell.exec", "denied"),
        ]
        assert audit[0]["peer"].startswith("127.0.0.1:")
        stats = server.stats()
        assert (stats.denied, dict(stats.denials)) == (
            2,
            {"publish": 0, "subscribe": 1, "call": 0, "offer": 1},
        )


async def test_with_an_acl_an_agent_without_entry_or_default_may_do_nothing() -> None:
    acl = BridgeAcl.from_table({"known": {"publish": [">"], "subscribe": [">"]}})
    async with bridge_kernel(acl=acl) as (kernel, server):
        with capture_events(kernel.bus, ">") as seen:

            async def steps() -> tuple[GRPCError, list[Any], Any]:
                ch = channel(server)
                try:
                    bridge = stub(ch)
                    with pytest.raises(GRPCError) as refused:
                        await bridge.RegisterAgent(register("stranger", ["a.b"]))
                    async with bridge.EventStream.open() as stream:
                        await stream.send_message(ack("stranger"))
                        await stream.send_message(publish("a.b", event()))
                        frames = await until_pong(stream)
                        await stream.end()
                    known = await bridge.RegisterAgent(register("known", ["a.>"]))
                    return refused.value, frames, known
                finally:
                    ch.close()

            refused, frames, known = await as_client(steps)
        assert refused.status is Status.PERMISSION_DENIED
        assert errors(frames) == [
            ("PERMISSION_DENIED", "agent 'stranger' may not publish on 'a.b' (bridge_acl)")
        ]
        assert known.success
        assert seen.items == []


# --- EventStream -----------------------------------------------------------------------------


async def test_a_publish_outside_the_acl_gets_an_err_frame_and_the_stream_goes_on() -> None:
    async with bridge_kernel(acl=ACL) as (kernel, server):
        listening = trio.Event()

        async def visitor() -> list[Any]:
            """Another agent, by the '*' entry: its traffic goes on meanwhile."""
            ch = channel(server)
            try:
                bridge = stub(ch)
                await bridge.RegisterAgent(register("visitor", ["public.>"]))
                async with bridge.EventStream.open() as stream:
                    await stream.send_message(ack("visitor"))
                    await until_pong(stream)
                    listening.set()
                    got = [await stream.recv_message() for _ in range(2)]
                    await stream.end()
                    return got
            finally:
                ch.close()

        async def sensor() -> list[Any]:
            ch = channel(server)
            try:
                bridge = stub(ch)
                async with bridge.EventStream.open() as stream:
                    await stream.send_message(ack("sensor-1"))
                    await stream.send_message(publish("secret.plans", event(id="s1")))
                    await stream.send_message(publish("sensor.kitchen", event(id="k1")))
                    await stream.send_message(
                        batch(
                            item("sensor.hall", event(id="b1")),
                            item("public.x", event(id="b2")),  # '*' allows it, not its entry
                            item("sensor.roof", event(id="b3")),
                        )
                    )
                    frames = await until_pong(stream)
                    await stream.end()
                    return frames
            finally:
                ch.close()

        with capture_events(kernel.bus, ">") as seen, capture_audit() as audit:
            async with trio.open_nursery() as nursery:
                results: dict[str, list[Any]] = {}

                async def run_visitor() -> None:
                    results["visitor"] = await as_client(visitor)

                nursery.start_soon(run_visitor)
                await listening.wait()
                results["sensor"] = await as_client(sensor)
                await kernel.bus.publish("public.a", Event("t", b"x", id="p1"))
                await kernel.bus.publish("public.b", Event("t", b"x", id="p2"))
        assert errors(results["sensor"]) == [
            (
                "PERMISSION_DENIED",
                "agent 'sensor-1' may not publish on 'secret.plans' (bridge_acl)",
            ),
            ("PERMISSION_DENIED", "agent 'sensor-1' may not publish on 'public.x' (bridge_acl)"),
        ]
        assert [e.id for t, e in seen.items if t.startswith("sensor.")] == ["k1", "b1", "b3"]
        assert [t for t, _ in seen.items if not t.startswith("sensor.")] == [
            "public.a",
            "public.b",
        ]
        assert [f.delivery.event.id for f in results["visitor"]] == ["p1", "p2"]
        assert [(r["action"], r["target"]) for r in audit] == [
            ("publish", "secret.plans"),
            ("publish", "public.x"),
        ]
        assert server.stats().denials["publish"] == 2
        assert server.stats().events_in == 3


async def test_an_unregistered_stream_is_held_to_the_default_entry() -> None:
    async with bridge_kernel(acl=ACL) as (kernel, server):
        with capture_events(kernel.bus, ">") as seen:

            async def steps() -> list[Any]:
                ch = channel(server)
                try:
                    async with stub(ch).EventStream.open() as stream:
                        await stream.send_message(ack("drifter"))
                        await stream.send_message(publish("public.hello", event(id="ok")))
                        await stream.send_message(publish("sensor.kitchen", event(id="no")))
                        frames = await until_pong(stream)
                        await stream.end()
                        return frames
                finally:
                    ch.close()

            frames = await as_client(steps)
        assert errors(frames) == [
            (
                "PERMISSION_DENIED",
                "agent 'drifter' may not publish on 'sensor.kitchen' (bridge_acl)",
            )
        ]
        assert [e.id for _, e in seen.items] == ["ok"]


async def test_a_denial_flood_writes_a_few_audit_records_and_counts_them_all(
    mock_clock: trio.testing.MockClock,
) -> None:
    """The clock stands still: the audit log's buckets never refill during the flood."""
    async with bridge_kernel(acl=ACL) as (_, server):

        async def steps() -> list[Any]:
            ch = channel(server)
            try:
                async with stub(ch).EventStream.open() as stream:
                    await stream.send_message(ack("sensor-1"))
                    await stream.send_message(
                        batch(*[item("forbidden.x", event(id=f"f{i}")) for i in range(40)])
                    )
                    frames = await until_pong(stream)
                    await stream.end()
                    return frames
            finally:
                ch.close()

        with capture_audit() as audit:
            frames = await as_client(steps)
    assert len(errors(frames)) == 40  # the client hears of every one
    assert len(audit) == 5  # the log of the first few (a burst of 5 per agent and action)
    assert server.stats().denied == 40


# --- ForwardAction ---------------------------------------------------------------------------


async def test_a_forwarded_call_outside_the_acl_is_an_action_error_permission_denied() -> None:
    async with bridge_kernel(acl=ACL) as (kernel, server):

        @capability("math.add", version="1.0.0")
        async def add(args: dict[str, Any]) -> int:
            return int(args["a"]) + int(args["b"])

        @capability("shell.exec", version="1.0.0")
        async def shell(args: dict[str, Any]) -> str:
            raise AssertionError("never called")

        kernel.broker.register(add)
        kernel.broker.register(shell)

        def call(call_id: str, name: str, caller: str | None) -> Any:
            headers = {"x-agent-id": caller} if caller else {}
            return action_pb2.ActionCall(
                id=call_id, capability=name, payload=b'{"a": 2, "b": 3}', headers=headers
            )

        async def steps() -> list[Any]:
            ch = channel(server)
            try:
                bridge = stub(ch)
                return [
                    await bridge.ForwardAction(call("ok", "math.add", "sensor-1")),
                    await bridge.ForwardAction(call("shell", "shell.exec", "sensor-1")),
                    await bridge.ForwardAction(call("missing", "no.such", "sensor-1")),
                    await bridge.ForwardAction(call("anon", "math.add", None)),  # '*': no calls
                ]
            finally:
                ch.close()

        with capture_audit() as audit:
            ok, shell_call, missing, anonymous = await as_client(steps)
    assert (ok.status, json.loads(ok.output)) == (action_pb2.ACTION_OK, 5)
    for refused, name in ((shell_call, "shell.exec"), (missing, "no.such")):
        assert refused.status == action_pb2.ACTION_ERROR
        assert refused.error.code == "PERMISSION_DENIED"  # not BROKER_ERROR: nothing leaks
        assert refused.error.message == f"agent 'sensor-1' may not call {name!r} (bridge_acl)"
        assert dict(refused.error.details) == {"capability": name, "agent": "sensor-1"}
    assert anonymous.error.code == "PERMISSION_DENIED"
    assert "an agent that names none" in anonymous.error.message
    assert [(r["agent"], r["action"], r["target"]) for r in audit] == [
        ("sensor-1", "call", "shell.exec"),
        ("sensor-1", "call", "no.such"),
        (None, "call", "math.add"),
    ]
    assert server.stats().denials["call"] == 3


async def test_calls_the_kernel_pushes_to_an_agent_are_not_held_to_its_call_list() -> None:
    async with bridge_kernel(acl=ACL) as (kernel, server):
        results = []

        async def remote() -> None:
            ch = channel(server)
            try:
                bridge = stub(ch)
                reply = await bridge.RegisterAgent(
                    register("sensor-1", [], capabilities=[descriptor("sensor.read")])
                )
                assert reply.success, reply.error_message
                async with bridge.EventStream.open() as stream:
                    await stream.send_message(ack("sensor-1"))
                    frame = await stream.recv_message()
                    assert frame is not None
                    pushed = frame.action_call
                    await stream.send_message(
                        bridge_pb2.ClientEvent(
                            action_result=action_pb2.ActionResult(
                                id=pushed.id, status=action_pb2.ACTION_OK, output=b'"21.5"'
                            )
                        )
                    )
                    await until_pong(stream)
                    await stream.end()
            finally:
                ch.close()

        async def caller() -> None:
            await until(server, lambda: server.streaming("sensor-1"))
            results.append(
                await kernel.broker.invoke(ActionCall.with_args("r1", "sensor.read", {}))
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller)
            await as_client(remote)
    (result,) = results
    assert (result.status, result.json()) == (ActionStatus.ACTION_OK, "21.5")
    assert server.stats().denied == 0


# --- agent tokens ----------------------------------------------------------------------------

BOUND = BridgeAcl.from_table(
    {
        "sensor-1": {"publish": ["sensor.>"], "call": ["math.*"], "token": "tok-sensor"},
        "*": {"publish": ["public.>"]},
    }
)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def open_stream(bridge: Any, agent_id: str, metadata: dict[str, str]) -> None:
    """Open a stream as ``agent_id`` and read until it ends (it raises its status)."""
    async with bridge.EventStream.open(metadata=metadata) as stream:
        await stream.send_message(ack(agent_id))
        while await stream.recv_message() is not None:
            pass


async def test_an_agent_id_bound_to_a_token_is_claimed_only_with_it() -> None:
    async with bridge_kernel(acl=BOUND, token="bridge-wide") as (kernel, server):

        @capability("math.add", version="1.0.0")
        async def add(args: dict[str, Any]) -> int:
            return int(args["a"]) + int(args["b"])

        kernel.broker.register(add)
        sensor_call = action_pb2.ActionCall(
            id="c1", capability="math.add", payload=b'{"a":1,"b":2}'
        )

        async def steps() -> dict[str, Any]:
            ch = channel(server)
            out: dict[str, Any] = {}
            try:
                bridge = stub(ch)
                beat = bridge_pb2.HeartbeatRequest(timestamp_ms=7)
                out["heartbeat"] = await bridge.Heartbeat(beat, metadata=bearer("tok-sensor"))
                for name, who, token in (
                    ("bridge token for sensor-1", "sensor-1", "bridge-wide"),
                    ("sensor's token for visitor", "visitor", "tok-sensor"),
                ):
                    with pytest.raises(GRPCError) as refused:
                        await bridge.RegisterAgent(register(who, []), metadata=bearer(token))
                    out[name] = refused.value
                out["own"] = await bridge.RegisterAgent(
                    register("sensor-1", []), metadata=bearer("tok-sensor")
                )
                out["visitor"] = await bridge.RegisterAgent(
                    register("visitor", []), metadata=bearer("bridge-wide")
                )
                with pytest.raises(GRPCError) as stream_refused:
                    await open_stream(bridge, "sensor-1", bearer("bridge-wide"))
                out["stream"] = stream_refused.value
                # a call naming no agent acts as the token's agent: sensor-1 may call math.*
                out["call"] = await bridge.ForwardAction(sensor_call, metadata=bearer("tok-sensor"))
                out["anonymous call"] = await bridge.ForwardAction(
                    sensor_call, metadata=bearer("bridge-wide")
                )
                return out
            finally:
                ch.close()

        with capture_audit() as audit:
            out = await as_client(steps)
    assert out["heartbeat"].timestamp_ms == 7  # an agent's token opens the door too
    for name in ("bridge token for sensor-1", "sensor's token for visitor", "stream"):
        assert out[name].status is Status.UNAUTHENTICATED, name
    assert "must present its own token" in out["bridge token for sensor-1"].message
    assert "bound to another agent id" in out["sensor's token for visitor"].message
    assert out["own"].success
    assert out["visitor"].success
    assert out["call"].status == action_pb2.ACTION_OK
    assert out["anonymous call"].error.code == "PERMISSION_DENIED"
    assert [(r["agent"], r["action"], r["target"]) for r in audit] == [
        ("sensor-1", "authenticate", "/loom.v1.Bridge/RegisterAgent"),
        ("visitor", "authenticate", "/loom.v1.Bridge/RegisterAgent"),
        ("sensor-1", "authenticate", "/loom.v1.Bridge/EventStream"),
        (None, "call", "math.add"),
    ]
    assert all("tok-sensor" not in repr(r) and "bridge-wide" not in repr(r) for r in audit)
    assert server.stats().refused == 3


async def test_a_refused_bridge_token_is_audited() -> None:
    async with bridge_kernel(token="s3cret") as (_, server):

        async def steps() -> GRPCError:
            ch = channel(server)
            try:
                with pytest.raises(GRPCError) as refused:
                    await stub(ch).Heartbeat(bridge_pb2.HeartbeatRequest(), metadata=bearer("no"))
                return refused.value
            finally:
                ch.close()

        with capture_audit() as audit:
            refused = await as_client(steps)
    assert refused.status is Status.UNAUTHENTICATED
    (record,) = audit
    assert record["event"] == "bridge access denied"
    assert record["log_level"] == "warning"
    assert (record["agent"], record["action"], record["target"], record["reason"]) == (
        None,
        "authenticate",
        "/loom.v1.Bridge/Heartbeat",
        "wrong bearer token",
    )
    assert server.stats().refused == 1


# --- limits ----------------------------------------------------------------------------------


async def test_a_payload_over_the_limit_gets_payload_too_large_and_the_stream_goes_on() -> None:
    async with bridge_kernel(max_payload_bytes=1000) as (kernel, server):
        with capture_events(kernel.bus, "big.>") as seen:

            async def steps() -> list[Any]:
                ch = channel(server)
                try:
                    async with stub(ch).EventStream.open() as stream:
                        await stream.send_message(ack("uploader"))
                        await stream.send_message(publish("big.a", event(payload=b"x" * 1001)))
                        await stream.send_message(publish("big.b", event(payload=b"x" * 1000)))
                        await stream.send_message(batch(item("big.c", event(payload=b"y" * 5000))))
                        frames = await until_pong(stream)
                        await stream.end()
                        return frames
                finally:
                    ch.close()

            frames = await as_client(steps)
        assert [code for code, _ in errors(frames)] == ["PAYLOAD_TOO_LARGE"] * 2
        assert "1001 bytes is over this bridge's limit of 1000 bytes" in errors(frames)[0][1]
        assert seen.topics == ["big.b"]
        assert server.stats().too_large == 2


@pytest.mark.parametrize("what", ["topics", "capabilities", "metadata entries"])
async def test_a_registration_over_the_size_limit_is_refused(what: str) -> None:
    async with bridge_kernel(max_registration_items=3) as (_, server):

        def request(size: int) -> Any:
            if what == "topics":
                return register("big", [f"t.{i}" for i in range(size)])
            if what == "capabilities":
                return register(
                    "big", [], capabilities=[descriptor(f"c.n{i}") for i in range(size)]
                )
            return register("big", [], metadata={f"k{i}": "v" for i in range(size)})

        async def steps() -> tuple[Any, Any]:
            ch = channel(server)
            try:
                bridge = stub(ch)
                return await bridge.RegisterAgent(request(4)), await bridge.RegisterAgent(
                    request(3)
                )
            finally:
                ch.close()

        too_big, fits = await as_client(steps)
    assert not too_big.success
    assert too_big.error_message == (
        f"agent 'big': 4 {what}, more than this bridge takes in one registration "
        "(3, bridge_max_registration_items)"
    )
    assert fits.success


# --- TLS -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _issue(directory: Path, name: str, usage: str, serial: int) -> None:
    """A P-256 key and a certificate for ``name`` signed by the CA in ``directory``."""
    (directory / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        f"extendedKeyUsage={usage}\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=loomk test {name}",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-set_serial", str(serial), "-days", "2",
        "-extfile", f"{name}.ext", "-out", f"{name}.pem",
        cwd=directory,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost and a client one."""
    directory = tmp_path_factory.mktemp("pki")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=loomk test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    _issue(directory, "server", "serverAuth", serial=2)
    _issue(directory, "client", "clientAuth", serial=3)
    return Pki(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "client.pem",
        directory / "client.key",
    )


def client_context(pki: Pki, *, certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.set_alpn_protocols(["h2"])
    if certificate:
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


def tls_options(pki: Pki, *, mutual: bool) -> dict[str, str]:
    return {
        "tls_cert": str(pki.server_cert),
        "tls_key": str(pki.server_key),
        "tls_client_ca": str(pki.ca) if mutual else "",
    }


async def register_and_echo(
    server: Any, context: ssl.SSLContext | None, agent_id: str = "secure"
) -> Any:
    """RegisterAgent then a stream that publishes and gets its own event back."""
    ch = channel(server, ssl=context) if context is not None else channel(server)
    try:
        bridge = stub(ch)
        with trio.fail_after(20):  # a failing handshake must fail, never hang the suite
            reply = await bridge.RegisterAgent(register(agent_id, ["tls.echo"]))
        assert reply.success, reply.error_message
        async with bridge.EventStream.open() as stream:
            await stream.send_message(ack(agent_id))
            await stream.send_message(publish("tls.echo", event(id="over-tls")))
            delivery = await stream.recv_message()
            await stream.end()
        return delivery
    finally:
        ch.close()


REFUSED_CONNECTION = (StreamTerminatedError, ConnectionError, ssl.SSLError)
"""What a grpclib client whose connection the server's TLS refused raises (grpclib says
``StreamTerminatedError('Connection lost')``; the others are the transport's own words)."""


async def refusal(server: Any, context: ssl.SSLContext | None) -> Exception:
    """What a client that the server must refuse gets from :func:`register_and_echo`."""
    try:
        await register_and_echo(server, context, agent_id="intruder")
    except REFUSED_CONNECTION as error:
        return error
    raise AssertionError("the server served a client it should have refused")


async def test_tls_serves_a_tls_client_and_refuses_a_plaintext_one(pki: Pki) -> None:
    async with bridge_kernel(**tls_options(pki, mutual=False)) as (_, server):
        delivery = await as_client(
            lambda: register_and_echo(server, client_context(pki, certificate=False))
        )
        assert delivery.delivery.event.id == "over-tls"

        refused = await as_client(lambda: refusal(server, None))
        assert isinstance(refused, REFUSED_CONNECTION)
        assert "intruder" not in server.agents()


async def test_grpcio_speaks_to_the_bridge_over_tls(pki: Pki) -> None:
    async with bridge_kernel(**tls_options(pki, mutual=True)) as (kernel, server):
        _, port = server.address.rsplit(":", 1)

        def grpcio_register(credentials: grpc.ChannelCredentials | None) -> Any:
            target = f"localhost:{port}"
            ch = (
                grpc.secure_channel(target, credentials)
                if credentials
                else grpc.insecure_channel(target)
            )
            with ch:
                call = ch.unary_unary(
                    "/loom.v1.Bridge/RegisterAgent",
                    request_serializer=lambda m: m.SerializeToString(),
                    response_deserializer=bridge_pb2.AgentRegisterResponse.FromString,
                )
                return call(register("grpcio-agent", ["tls.>"]), timeout=20)

        credentials = grpc.ssl_channel_credentials(
            root_certificates=pki.ca.read_bytes(),
            private_key=pki.client_key.read_bytes(),
            certificate_chain=pki.client_cert.read_bytes(),
        )
        reply = await trio.to_thread.run_sync(grpcio_register, credentials)
        assert reply.success, reply.error_message
        assert "grpcio-agent" in kernel.directory
        with pytest.raises(grpc.RpcError) as plaintext:
            await trio.to_thread.run_sync(grpcio_register, None)
        assert plaintext.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_refuses_a_client_without_a_certificate(pki: Pki) -> None:
    async with bridge_kernel(**tls_options(pki, mutual=True)) as (_, server):
        delivery = await as_client(
            lambda: register_and_echo(server, client_context(pki, certificate=True))
        )
        assert delivery.delivery.event.id == "over-tls"

        refused = await as_client(lambda: refusal(server, client_context(pki, certificate=False)))
        assert isinstance(refused, REFUSED_CONNECTION)
        assert "intruder" not in server.agents()


async def test_under_an_acl_an_event_cannot_claim_another_agent_as_its_sender() -> None:
    async with bridge_kernel(acl=ACL) as (kernel, server):
        with capture_events(kernel.bus, "sensor.>") as seen:

            async def sensor() -> None:
                ch = channel(server)
                try:
                    bridge = stub(ch)
                    async with bridge.EventStream.open() as stream:
                        await stream.send_message(ack("sensor-1"))
                        for ident, claimed in (
                            ("own", {"sender": "agent.sensor-1"}),
                            ("forged", {"sender": "agent.boss"}),
                            ("sdk", {"loom.sender": "boss"}),
                            ("none", {}),
                        ):
                            ev = event(id=ident, metadata=claimed)
                            await stream.send_message(publish("sensor.t", ev))
                        await until_pong(stream)
                        await stream.end()
                finally:
                    ch.close()

            await as_client(sensor)
        senders = {
            e.id: (e.metadata.get("sender"), e.metadata.get("loom.sender")) for e in seen.events
        }
        assert senders == {
            "own": ("agent.sensor-1", None),
            "forged": ("agent.sensor-1", None),
            "sdk": ("agent.sensor-1", "sensor-1"),
            "none": (None, None),
        }


async def test_under_an_acl_a_link_speaks_for_the_agents_it_lists() -> None:
    listing = json.dumps([{"id": "scout", "topics": [], "capabilities": []}])
    metadata = {"loomk.link": "bridge", "loomk.batch": "1", "loomk.agents": listing}
    async with bridge_kernel(acl=ACL) as (kernel, server):
        with capture_events(kernel.bus, "public.>") as seen:

            async def link() -> None:
                ch = channel(server)
                try:
                    bridge = stub(ch)
                    answer = await bridge.RegisterAgent(register("lnk", [], metadata=metadata))
                    assert answer.success, answer.error_message
                    async with bridge.EventStream.open() as stream:
                        await stream.send_message(ack("lnk"))
                        for ident, sender in (("listed", "agent.scout"), ("other", "agent.boss")):
                            ev = event(id=ident, metadata={"sender": sender})
                            await stream.send_message(publish("public.t", ev))
                        await until_pong(stream)
                        await stream.end()
                finally:
                    ch.close()

            await as_client(link)
        assert {e.id: e.metadata["sender"] for e in seen.events} == {
            "listed": "agent.scout",
            "other": "agent.lnk",
        }


async def test_a_call_known_by_its_token_tells_the_provider_who_calls() -> None:
    class Who:
        descriptor = CapabilityDescriptor("math.who", "1.0.0")

        async def invoke(self, call: ActionCall) -> ActionResult:
            return ActionResult.success(call.id, call.headers.get("x-agent-id", "").encode())

    async with bridge_kernel(acl=BOUND) as (kernel, server):
        kernel.broker.register(Who())

        async def steps() -> Any:
            ch = channel(server)
            try:
                call = action_pb2.ActionCall(id="w1", capability="math.who")
                return await stub(ch).ForwardAction(call, metadata=bearer("tok-sensor"))
            finally:
                ch.close()

        result = await as_client(steps)
    assert result.status == action_pb2.ACTION_OK
    assert result.output == b"sensor-1"


async def test_a_batch_of_an_agent_allowed_everything_still_cannot_forge_its_sender() -> None:
    acl = BridgeAcl.from_table(
        {"root": {"publish": [">"], "subscribe": [">"], "call": [">"], "offer": [">"]}}
    )
    async with bridge_kernel(acl=acl) as (kernel, server):
        with capture_events(kernel.bus, "any.>") as seen:

            async def root() -> None:
                ch = channel(server)
                try:
                    bridge = stub(ch)
                    async with bridge.EventStream.open() as stream:
                        await stream.send_message(ack("root"))
                        forged = event(id="f1", metadata={"sender": "agent.boss"})
                        await stream.send_message(batch(item("any.t", forged)))
                        await until_pong(stream)
                        await stream.end()
                finally:
                    ch.close()

            await as_client(root)
        assert [e.metadata["sender"] for e in seen.events] == ["agent.root"]
