"""Logging never takes the kernel down and follows the stderr of the moment; records carry
the agent's context, each logger has its level, and secrets never reach the output."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing
import trio

from loomk import Context, Event
from loomk.config import SECRET_MASK, Config
from loomk.envelope import Envelope
from loomk.errors import ConfigError
from loomk.telemetry import (
    add_agent_context,
    configure_logging,
    filter_by_logger_level,
    get_logger,
    mask_secrets,
)
from loomk.telemetry.logging import _StderrLogger, config_secrets, reset_logging
from loomk.testing import ScriptedAgent, capture_events, open_test_kernel


def test_lines_go_to_the_current_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = _StderrLogger()
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logger.error("one")
    monkeypatch.setattr(sys, "stderr", second)
    logger.info("two")
    assert first.getvalue() == "one\n"
    assert second.getvalue() == "two\n"


def test_a_closed_stderr_drops_the_line_instead_of_raising(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)
    _StderrLogger().error("lost, but nothing breaks")  # must not raise


# --- structured logging: agent context, level per logger, masked secrets -----------------

SECRET_KEY = "loomk-test-key-4f9a8b7c"  # a configured llm_api_key (not shaped like sk-...)
OPENAI_KEY = "sk-" + "A1b2C3d4" * 4


@pytest.fixture(autouse=True)
def fresh_logging() -> Iterator[None]:
    """Each test starts with structlog and loomk's processors as nothing had configured
    them, and leaves them so: the next kernel (of any test file) configures logging anew."""
    reset_logging()
    yield
    reset_logging()


def _records(err: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``err``."""
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def _by_event(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {record["event"]: record for record in records}


def _event_in_thread(thread_id: str, correlation_id: str) -> Event:
    envelope = Envelope(thread_id=thread_id, correlation_id=correlation_id, sender="tester")
    return envelope.attach_to_event(Event("work"))


async def test_records_written_while_handling_carry_the_agent_and_the_events_ids(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def work(ctx: Context, event: Event) -> None:
        ctx.log.info("from ctx.log")
        structlog.get_logger().info("from a plain logger")
        get_logger("loomk.bus").warning("from a loomk logger")
        ctx.log.info("explicit", thread_id="given by the caller")
        await ctx.emit("out", Event("done"))

    async def start(ctx: Context) -> None:
        ctx.log.info("starting")

    async def stop(ctx: Context) -> None:
        structlog.get_logger().info("stopping")

    async with open_test_kernel(log_level="info", log_format="json") as kernel:
        with capture_events(kernel.bus, "out") as out:
            agent = ScriptedAgent("worker", {"work": work}, on_start=start, on_stop=stop)
            await kernel.spawn(agent)
            await kernel.bus.publish("in.worker", _event_in_thread("t-1", "c-1"))
            await out.wait_for(1)
        structlog.get_logger().info("outside every agent")
        await kernel.agents.stop("worker")
    records = _by_event(_records(capsys.readouterr().err))

    ids = ("agent_id", "thread_id", "correlation_id")
    for name in ("from ctx.log", "from a plain logger", "from a loomk logger"):
        assert {key: records[name].get(key) for key in ids} == {
            "agent_id": "worker",
            "thread_id": "t-1",
            "correlation_id": "c-1",
        }, name
    assert records["explicit"]["thread_id"] == "given by the caller"  # never overridden
    for name in ("starting", "stopping"):  # on_start / on_stop handle no event
        assert records[name]["agent_id"] == "worker"
        assert "thread_id" not in records[name]
        assert "correlation_id" not in records[name]
    assert not set(ids) & records["outside every agent"].keys()


async def test_on_stop_after_a_handler_stopped_its_agent_carries_the_agent_id_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def work(ctx: Context, event: Event) -> None:
        ctx.log.info("handling")
        ctx.stop()  # the loop ends after this handler, without parking

    async def stop(ctx: Context) -> None:
        ctx.log.info("stopping")

    async with open_test_kernel(log_level="info", log_format="json") as kernel:
        handle = await kernel.spawn(
            ScriptedAgent("quitter", {"work": work}, on_stop=stop), restart="temporary"
        )
        await kernel.bus.publish("in.quitter", _event_in_thread("t-1", "c-1"))
        await handle.wait_finished()
    records = _by_event(_records(capsys.readouterr().err))

    assert records["handling"]["thread_id"] == "t-1"
    assert records["stopping"]["agent_id"] == "quitter"
    assert "thread_id" not in records["stopping"]


async def test_two_agents_handling_at_once_keep_their_own_ids(
    capsys: pytest.CaptureFixture[str],
) -> None:
    first_waits, second_done = trio.Event(), trio.Event()

    async def first(ctx: Context, event: Event) -> None:
        ctx.log.info("first, before")
        first_waits.set()
        await second_done.wait()  # the second agent handles its event meanwhile
        structlog.get_logger().info("first, after")
        await ctx.emit("out", Event("done"))

    async def second(ctx: Context, event: Event) -> None:
        await first_waits.wait()
        structlog.get_logger().info("second")
        second_done.set()
        await ctx.emit("out", Event("done"))

    async with open_test_kernel(log_level="info", log_format="json") as kernel:
        with capture_events(kernel.bus, "out") as out:
            await kernel.spawn(ScriptedAgent("one", {"work": first}))
            await kernel.spawn(ScriptedAgent("two", {"work": second}))
            await kernel.bus.publish("in.one", _event_in_thread("t-one", "c-one"))
            await kernel.bus.publish("in.two", _event_in_thread("t-two", "c-two"))
            await out.wait_for(2)
    records = _by_event(_records(capsys.readouterr().err))

    for name, agent, thread in (
        ("first, before", "one", "t-one"),
        ("second", "two", "t-two"),
        ("first, after", "one", "t-one"),
    ):
        assert (records[name]["agent_id"], records[name]["thread_id"]) == (agent, thread)


async def test_each_logger_has_the_level_of_its_closest_configured_ancestor(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with open_test_kernel(
        log_level="info", log_levels="loomk.bridge=debug,loomk.bus=error", log_format="json"
    ):
        get_logger("loomk.bridge.server").debug("bridge server debug")
        get_logger("loomk.bridgework").debug("not below loomk.bridge")
        get_logger("loomk.bus").debug("bus debug")
        get_logger("loomk.bus.tap").warning("bus warning")
        get_logger("loomk.bus").error("bus error")
        get_logger("loomk.kernel").info("kernel info")
        get_logger("loomk.kernel").debug("kernel debug")
    shown = {record["event"] for record in _records(capsys.readouterr().err)}

    assert {"bridge server debug", "bus error", "kernel info"} <= shown
    assert not {"not below loomk.bridge", "bus debug", "bus warning", "kernel debug"} & shown


def test_a_bad_log_levels_setting_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="log_levels"):
        Config.load(env={}, cwd=tmp_path, log_levels="loomk.bridge=loud")
    with pytest.raises(ValueError, match="loud"):
        configure_logging("info", levels={"loomk.bridge": "loud"})


async def test_a_second_kernel_reconfigures_without_stacking_and_cached_loggers_follow(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = get_logger("loomk.test.cached")  # as a module's logger: made once, cached on use
    async with open_test_kernel(log_level="critical", log_format="json"):
        logger.debug("under the first kernel")
    chain = list(structlog.get_config()["processors"])
    async with open_test_kernel(log_level="debug", log_format="json", log_mask_fields="pin"):
        logger.debug("under the second kernel", pin="1234")
    records = _records(capsys.readouterr().err)

    assert len(structlog.get_config()["processors"]) == len(chain)
    assert [r["event"] for r in records if r.get("component") == "loomk.test.cached"] == [
        "under the second kernel"
    ]
    assert _by_event(records)["under the second kernel"]["pin"] == SECRET_MASK


async def test_a_host_configuration_is_kept_and_its_chain_takes_the_kernels_settings() -> None:
    capture = structlog.testing.LogCapture()
    structlog.configure(
        processors=[filter_by_logger_level, add_agent_context, mask_secrets, capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )

    async def work(ctx: Context, event: Event) -> None:
        structlog.get_logger().warning("handled", note=f"key {SECRET_KEY}")
        await ctx.emit("out", Event("done"))

    async with open_test_kernel(
        log_level="warning", log_levels="loomk.bus=error", llm_api_key=SECRET_KEY
    ) as kernel:
        assert structlog.get_config()["processors"][-1] is capture  # the host's set-up
        with capture_events(kernel.bus, "out") as out:
            await kernel.spawn(ScriptedAgent("worker", {"work": work}))
            await kernel.bus.publish("in.worker", _event_in_thread("t-1", "c-1"))
            await out.wait_for(1)
        get_logger("loomk.bus").warning("bus warning")
    records = _by_event(capture.entries)

    assert records["handled"]["agent_id"] == "worker"
    assert records["handled"]["thread_id"] == "t-1"
    assert records["handled"]["note"] == f"key {SECRET_MASK}"
    assert "bus warning" not in records


@pytest.mark.parametrize("fmt", ["console", "json"])
async def test_secrets_are_masked_in_the_rendered_output(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    log = get_logger("app")
    async with open_test_kernel(
        log_level="info", log_format=fmt, llm_api_key=SECRET_KEY, log_mask_fields="ssn, pin"
    ):
        log.warning(
            "request sent",
            authorization="Bearer abc-bearer-token",
            request={"headers": {"Authorization": "Basic dXNlcjpwYXNz", "Accept": "text/plain"}},
            api_key="plain-api-key-value",
            ssn="123-45-6789",
            user="alice",
            prompt_tokens=12,
        )
        log.warning(f"calling the model with {SECRET_KEY}")
        log.warning("header seen", line="Authorization: Bearer inline-bearer-token")
        log.warning("openai key", keys=[f"given {OPENAI_KEY}"])
        try:
            raise RuntimeError(f"the endpoint rejected {SECRET_KEY}")
        except RuntimeError:
            log.exception("call failed")
    err = capsys.readouterr().err

    for secret in (
        "abc-bearer-token",
        "dXNlcjpwYXNz",
        "plain-api-key-value",
        "123-45-6789",
        SECRET_KEY,
        "inline-bearer-token",
        OPENAI_KEY,
    ):
        assert secret not in err, secret
    for kept in ("alice", "text/plain", "request sent", "calling the model with", "12"):
        assert kept in err, kept
    assert "RuntimeError: the endpoint rejected " + SECRET_MASK in err
    assert err.count(SECRET_MASK) >= 8


def test_masking_looks_inside_structures_and_never_raises() -> None:
    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    class Holder:
        def __repr__(self) -> str:
            return f"Holder({OPENAI_KEY})"

    loop: list[object] = []
    loop.append(loop)
    headers = {"Cookie": "session=abc", "Accept": "json"}
    event_dict: dict[str, Any] = {
        "event": "sent",
        "request": {"headers": headers, "tries": (1, {"password": "pw"})},
        "odd": Unprintable(),
        "holder": Holder(),
        "loop": loop,
        "token": None,
        "has_secret": False,
        "count": 3,
    }
    masked = mask_secrets(None, "info", event_dict)

    assert masked["request"] == {
        "headers": {"Cookie": SECRET_MASK, "Accept": "json"},
        "tries": (1, {"password": SECRET_MASK}),
    }
    assert headers["Cookie"] == "session=abc"  # the caller's objects are not changed
    assert masked["odd"] == SECRET_MASK  # masking it failed: masked whole
    assert masked["holder"] == f"Holder({SECRET_MASK})"
    assert masked["token"] is None  # nothing to hide
    assert masked["has_secret"] is False
    assert masked["count"] == 3
    assert masked["loop"] is not None  # a cycle ends at the depth limit, without an error


def test_config_secrets_are_the_set_secret_settings_and_acl_tokens(tmp_path: Path) -> None:
    config = Config.load(
        env={},
        cwd=tmp_path,
        llm_api_key=SECRET_KEY,
        bridge_link_token="link-token-value",
        bridge_acl={"robot": {"publish": ["a.>"], "token": "robot-token-value"}},
    )
    assert sorted(config_secrets(config)) == sorted(
        [SECRET_KEY, "link-token-value", "robot-token-value"]
    )


def test_the_host_chain_example_of_the_logging_guide_runs_as_documented(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs/logging.md").read_text()
    start = text.index("```python\n", text.index("## In your own structlog chain"))
    start += len("```python\n")
    exec(text[start : text.index("```", start)], {"__name__": "logging_example"})
    [line] = capsys.readouterr().out.splitlines()

    assert json.loads(line) == {
        "component": "app",
        "event": "login",
        "user": "alice",
        "password": SECRET_MASK,
        "ssn": SECRET_MASK,
        "level": "info",
    }
