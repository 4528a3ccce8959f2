"""The loom.v1 wire contract: committed code matches schemas/, and schemas/ match Loom."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor, EnumDescriptor

from loomk_bridge._proto import action_pb2, agent_pb2, bridge_pb2, event_pb2, plugin_pb2

ROOT = Path(__file__).resolve().parents[2]


def test_committed_code_is_what_make_proto_generates(tmp_path: Path) -> None:
    out = tmp_path / "_proto"
    subprocess.run(
        [sys.executable, str(ROOT / "schemas" / "generate.py"), str(out)],
        check=True,
        capture_output=True,
    )
    committed = ROOT / "loomk_bridge" / "_proto"
    generated = sorted(p.name for p in out.iterdir())
    assert generated == sorted(p.name for p in committed.iterdir() if p.suffix in {".py", ".pyi"})
    _match, mismatch, errors = filecmp.cmpfiles(out, committed, generated, shallow=False)
    assert (mismatch, errors) == ([], []), "run `make proto` and commit the result"


def _fields(message: Descriptor) -> dict[str, int]:
    return {f.name: f.number for f in message.fields}


def _values(enum: EnumDescriptor) -> dict[str, int]:
    return {v.name: v.number for v in enum.values}


# Loom's loom.v1 at c0083c7, field by field: what its clients put on the wire.
LOOM_MESSAGES = {
    event_pb2.Event: {
        "id": 1,
        "type": 2,
        "timestamp_ms": 3,
        "source": 4,
        "metadata": 5,
        "payload": 6,
        "confidence": 7,
        "tags": 8,
        "priority": 9,
    },
    event_pb2.EventStream: {"events": 1, "session_id": 2},
    event_pb2.SubscribeRequest: {"topic": 1, "event_types": 2, "qos": 3, "filters": 4},
    event_pb2.PublishResponse: {"success": 1, "error_message": 2, "sequence_number": 3},
    event_pb2.StatsResponse: {
        "total_events": 1,
        "active_subscriptions": 2,
        "throughput_per_sec": 3,
        "backlog_size": 4,
    },
    agent_pb2.AgentState: {
        "agent_id": 1,
        "persistent_state": 2,
        "ephemeral_context": 3,
        "last_update_ms": 4,
        "metadata": 5,
    },
    agent_pb2.AgentConfig: {
        "agent_id": 1,
        "agent_type": 2,
        "subscribed_topics": 3,
        "capabilities": 4,
        "parameters": 5,
    },
    agent_pb2.AgentResponse: {
        "agent_id": 1,
        "actions": 2,
        "updated_state": 3,
        "generated_events": 4,
    },
    agent_pb2.Action: {"action_type": 1, "parameters": 2, "payload": 3, "priority": 4},
    plugin_pb2.PluginMeta: {
        "plugin_id": 1,
        "name": 2,
        "version": 3,
        "type": 4,
        "capabilities": 5,
        "config": 6,
    },
    plugin_pb2.PluginResponse: {
        "success": 1,
        "error_message": 2,
        "result": 3,
        "output_events": 4,
    },
    plugin_pb2.ShutdownRequest: {"plugin_id": 1, "force": 2},
    action_pb2.CapabilityDescriptor: {"name": 1, "version": 2, "provider": 3, "metadata": 4},
    action_pb2.ActionCall: {
        "id": 1,
        "capability": 2,
        "version": 3,
        "payload": 4,
        "headers": 5,
        "timeout_ms": 6,
        "correlation_id": 7,
        "qos": 8,
    },
    action_pb2.ActionError: {"code": 1, "message": 2, "details": 3},
    action_pb2.ActionResult: {"id": 1, "status": 2, "output": 3, "error": 4},
    bridge_pb2.AgentRegisterRequest: {
        "agent_id": 1,
        "subscribed_topics": 2,
        "capabilities": 3,
        "metadata": 4,
    },
    bridge_pb2.AgentRegisterResponse: {"success": 1, "error_message": 2},
    bridge_pb2.Publish: {"topic": 1, "event": 2},
    bridge_pb2.Ack: {"message_id": 1},
    bridge_pb2.Delivery: {"topic": 1, "event": 2},
    bridge_pb2.Error: {"code": 1, "message": 2},
    bridge_pb2.HeartbeatRequest: {"timestamp_ms": 1},
    bridge_pb2.HeartbeatResponse: {"timestamp_ms": 1, "status": 2},
}


@pytest.mark.parametrize("message", LOOM_MESSAGES, ids=lambda m: m.DESCRIPTOR.full_name)
def test_messages_have_looms_field_numbers(message: type) -> None:
    assert _fields(message.DESCRIPTOR) == LOOM_MESSAGES[message]  # type: ignore[attr-defined]


def test_enums_have_looms_values() -> None:
    assert _values(event_pb2.QoSLevel.DESCRIPTOR) == {
        "QOS_REALTIME": 0,
        "QOS_BATCHED": 1,
        "QOS_BACKGROUND": 2,
    }
    assert _values(action_pb2.ProviderKind.DESCRIPTOR) == {
        "PROVIDER_NATIVE": 0,
        "PROVIDER_WASM": 1,
        "PROVIDER_GRPC": 2,
        "PROVIDER_MCP": 3,
    }
    assert _values(action_pb2.ActionStatus.DESCRIPTOR) == {
        "ACTION_OK": 0,
        "ACTION_ERROR": 1,
        "ACTION_TIMEOUT": 2,
        "ACTION_RETRYABLE": 3,
    }
    assert _values(plugin_pb2.PluginType.DESCRIPTOR) == {
        "PLUGIN_FEATURE_EXTRACTOR": 0,
        "PLUGIN_MODEL_BACKEND": 1,
        "PLUGIN_TOOL": 2,
        "PLUGIN_ACTUATOR": 3,
    }


def test_stream_frames_keep_looms_cases_and_add_only_new_numbers() -> None:
    client = {
        f.name: f.number for f in bridge_pb2.ClientEvent.DESCRIPTOR.oneofs_by_name["msg"].fields
    }
    server = {
        f.name: f.number for f in bridge_pb2.ServerEvent.DESCRIPTOR.oneofs_by_name["msg"].fields
    }
    assert client == {
        "publish": 1,
        "ack": 2,
        "ping": 3,
        "action_result": 4,
        "publish_batch": 16,
    }
    assert server == {
        "delivery": 1,
        "pong": 2,
        "err": 3,
        "action_call": 4,
        "delivery_batch": 16,
    }


def test_services_and_methods_are_looms() -> None:
    services = {
        name: {m.name: (m.input_type.full_name, m.output_type.full_name) for m in s.methods}
        for module in (bridge_pb2, event_pb2, action_pb2, agent_pb2, plugin_pb2)
        for name, s in module.DESCRIPTOR.services_by_name.items()
    }
    assert services["Bridge"] == {
        "RegisterAgent": ("loom.v1.AgentRegisterRequest", "loom.v1.AgentRegisterResponse"),
        "EventStream": ("loom.v1.ClientEvent", "loom.v1.ServerEvent"),
        "ForwardAction": ("loom.v1.ActionCall", "loom.v1.ActionResult"),
        "Heartbeat": ("loom.v1.HeartbeatRequest", "loom.v1.HeartbeatResponse"),
    }
    stream = bridge_pb2.DESCRIPTOR.services_by_name["Bridge"].methods_by_name["EventStream"]
    assert stream.client_streaming
    assert stream.server_streaming
    assert set(services) == {"Bridge", "EventBus", "ActionBroker", "AgentRuntime", "Plugin"}
    assert all(m.DESCRIPTOR.package == "loom.v1" for m in (bridge_pb2, event_pb2, action_pb2))
