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
from loomk.telemetry.agent_context import current_log_agent
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


def test_secret_named_values_inside_reprs_and_texts_are_masked() -> None:
    event = Event("login", b'{"password": "hunter2", "u": 1}', metadata={"cookie": "c1"})

    class Settings:
        def __repr__(self) -> str:
            return "Settings(api_key='plain-key-1', name='bot')"

    event_dict: dict[str, Any] = {
        "event": "rejected: token=abc123&user=bob",
        "received": event,
        "settings": Settings(),
        "url": "https://alice:pa55word@example.com/path?api_key=k9&page=2",
        "exception": 'Traceback...\nValueError: bad login {"password": "hunter2"}',
        "body": '{"secret": "", "flag": "on"}',
    }
    masked = mask_secrets(None, "info", event_dict)
    text = repr(masked)

    for secret in ("hunter2", "c1'", "plain-key-1", "abc123", "pa55word", "k9&"):
        assert secret not in text, secret
    assert masked["event"] == f"rejected: token={SECRET_MASK}&user=bob"
    assert f"'cookie': '{SECRET_MASK}'" in masked["received"]
    assert '"u": 1' in masked["received"]  # the rest of the payload is kept
    cut = mask_secrets(None, "info", {"event": "Agent(password='hunter2hunter2..."})
    assert "hunter" not in cut["event"]  # a value cut short is masked to the end
    assert masked["settings"] == f"Settings(api_key='{SECRET_MASK}', name='bot')"
    assert (
        masked["url"]
        == f"https://alice:{SECRET_MASK}@example.com/path?api_key={SECRET_MASK}&page=2"
    )
    assert masked["body"] == '{"secret": "", "flag": "on"}'  # nothing to hide: unchanged


def test_token_counts_are_not_masked() -> None:
    masked = mask_secrets(
        None, "info", {"token_count": 5, "output_token_usage": 7.5, "token": 1234, "pin": 1}
    )
    assert masked == {"token_count": 5, "output_token_usage": 7.5, "token": 1234, "pin": 1}


def test_a_stdlib_logger_has_its_configured_level_and_foreign_records_are_never_dropped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from loomk.telemetry import configure_processors

    configure_processors(level="warning", levels={"app.db": "debug"})
    structlog.configure(
        processors=[filter_by_logger_level, structlog.processors.KeyValueRenderer()],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=structlog.processors.KeyValueRenderer(),
            foreign_pre_chain=[filter_by_logger_level],
        )
    )
    db = logging.getLogger("app.db")
    web = logging.getLogger("app.web")
    for stdlib in (db, web):
        stdlib.setLevel(logging.DEBUG)
        stdlib.addHandler(handler)
        stdlib.propagate = False
    try:
        structlog.get_logger("app.db").debug("db debug")  # app.db is at debug
        structlog.get_logger("app.web").info("web info")  # the default, warning
        web.info("foreign info")  # a plain stdlib call: never raises DropEvent
    finally:
        for stdlib in (db, web):
            stdlib.removeHandler(handler)
            stdlib.propagate = True
    out = capsys.readouterr().out

    assert "db debug" in out
    assert "web info" not in out
    assert "foreign info" in out


async def test_the_state_writer_started_from_a_handler_carries_no_agent_context() -> None:
    """With temporary state, the store's writer starts when a handler first needs it: it
    must not keep that agent as its log context for the rest of the kernel's life."""

    async def remember(ctx: Context, event: Event) -> None:
        ctx.state["seen"] = True
        await ctx.emit("done", Event("done"))

    async with open_test_kernel() as kernel:
        with capture_events(kernel.bus, "done") as done:
            await kernel.spawn(ScriptedAgent("first", {"go": remember}, topics=["go"]))
            await kernel.bus.publish("go", Event("go"))
            await done.wait_for(1)
        writers = [
            task
            for task in _all_tasks(trio.lowlevel.current_root_task())
            if task.name == "loomk:state-writer"
        ]
        assert len(writers) == 1
        assert writers[0].context.run(current_log_agent) is None


def _all_tasks(task: trio.lowlevel.Task) -> list[trio.lowlevel.Task]:
    found = [task]
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            found.extend(_all_tasks(child))
    return found
