"""Envelope keys translated between loom-py's spelling and the kernel's (loomk_bridge)."""

from __future__ import annotations

from loomk_bridge._loom_keys import from_loom_sdk, to_loom_sdk
from loomk_bridge._proto import event_pb2


def _event(**metadata: str) -> event_pb2.Event:
    return event_pb2.Event(id="e1", type="t", metadata=metadata)


def test_an_sdk_request_gets_the_reply_topic_and_correlation_the_sdk_implies() -> None:
    message = _event(**{"loom.sender": "asker"})
    from_loom_sdk(message)
    assert dict(message.metadata) == {
        "loom.sender": "asker",
        "sender": "agent.asker",
        "reply_to": "agent.asker.replies",
        "correlation_id": "e1",
    }


def test_an_sdk_reply_keeps_its_own_correlation_and_thread() -> None:
    message = _event(**{"loom.sender": "bob", "loom.correlation_id": "c9", "loom.thread_id": "t1"})
    from_loom_sdk(message)
    assert message.metadata["correlation_id"] == "c9"
    assert message.metadata["thread_id"] == "t1"


def test_kernel_keys_already_there_are_never_overwritten() -> None:
    message = _event(**{"loom.sender": "bob", "sender": "agent.carol", "reply_to": "x.y"})
    from_loom_sdk(message)
    assert (message.metadata["sender"], message.metadata["reply_to"]) == ("agent.carol", "x.y")
    assert "correlation_id" not in message.metadata


def test_events_not_written_by_the_sdk_are_left_alone() -> None:
    message = _event(sensor="kitchen")
    from_loom_sdk(message)
    assert dict(message.metadata) == {"sensor": "kitchen"}


def test_what_a_client_is_sent_gains_the_sdk_keys() -> None:
    message = _event(
        sender="agent.planner", correlation_id="c1", thread_id="t1", reply_to="thread.t1.reply"
    )
    to_loom_sdk(message)
    assert message.metadata["loom.sender"] == "planner"
    assert message.metadata["loom.correlation_id"] == "c1"
    assert message.metadata["loom.thread_id"] == "t1"
    assert message.metadata["loom.reply_to"] == "thread.t1.reply"
