"""Kernels for tests: cut off from the environment, with throw-away state and quiet logs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

import trio
import trio.testing

from loomk.config import Config
from loomk.edges import Edge
from loomk.kernel import Kernel, open_kernel

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = ["open_test_kernel", "run_test_kernel"]

T = TypeVar("T")

_TEST_SETTINGS: Mapping[str, object] = MappingProxyType(
    {
        "state_temporary": True,
        # A synced commit waits for fsync in a worker thread; an autojump MockClock sees every
        # task blocked meanwhile and may jump, so timeouts would fire that never should.
        "state_sync": False,
        "log_level": "critical",
        "handle_signals": False,
    }
)


@asynccontextmanager
async def open_test_kernel(
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    edges: Iterable[Edge[Kernel]] | None = None,
    tracer_provider: TracerProvider | None = None,
    **settings: Any,
) -> AsyncIterator[Kernel]:
    """Run a kernel for one test, whatever the machine's environment, like ``open_kernel``.

    The test's outcome must not depend on where it runs, so by default the kernel:

    - reads no ``LOOMK_*``/``VLLM_*`` variables (``env={}``; pass ``env`` to give some);
    - reads no ``loomk.toml``: ``cwd`` is a fresh empty temporary directory, removed
      afterwards, unless the caller passes ``cwd``;
    - keeps its state in a temporary directory removed at shutdown (``state_temporary``),
      and, if told ``state_temporary=False`` without a ``data_dir``, in ``cwd/state``;
    - does not fsync state commits (``state_sync=False``): fsync runs in a worker thread,
      during which an autojump ``MockClock`` could jump time forward;
    - logs only critical records (``log_level="critical"``) and handles no signals.

    ``edges`` replaces the installed edges, as for ``open_kernel`` (an edge under test);
    ``tracer_provider`` records the spans of ``tracing=True`` in a provider of the test's
    own (an in-memory exporter, say) rather than the process's global one.

    These are defaults: a ``loomk.toml`` in a ``cwd`` you pass, ``LOOMK_*`` variables in an
    ``env`` you pass, and keyword settings of :class:`loomk.Config` all override them, e.g.
    for a test about persistence::

        async with open_test_kernel(data_dir=tmp_path / "data", state_temporary=False) as k:
            ...
    """
    with _scratch_directory(cwd) as base:
        config = Config.load(
            env={} if env is None else env,
            cwd=base,
            defaults={**_TEST_SETTINGS, "data_dir": base / "state"},
            **settings,
        )
        async with open_kernel(config, edges=edges, tracer_provider=tracer_provider) as kernel:
            yield kernel


def run_test_kernel(
    main: Callable[[Kernel], Awaitable[T]],
    *,
    autojump: bool = False,
    clock: trio.abc.Clock | None = None,
    **settings: Any,
) -> T:
    """Start trio, run ``main(kernel)`` in an :func:`open_test_kernel` and return its result.

    For synchronous tests (no pytest-trio needed). With ``autojump=True`` the run uses
    ``trio.testing.MockClock(autojump_threshold=0)``: time jumps ahead whenever every task
    is blocked, so sleeps and timeouts take no real time. ``clock`` runs under a clock of
    your own instead. Unlike :func:`loomk.run`, a kernel stopped before ``main`` returned is
    a ``RuntimeError``, not None: in a test it would otherwise skip what ``main`` checks.
    ``settings`` go to :func:`open_test_kernel`::

        def test_a_reminder_fires_after_an_hour() -> None:
            async def main(kernel: Kernel) -> float:
                with capture_events(kernel.bus, "reminders") as fired:
                    await kernel.spawn(Reminder("reminder", after_s=3600))
                    await fired.wait_for(1)  # an hour of virtual time: no real time
                return trio.current_time()

            assert run_test_kernel(main, autojump=True) == 3600
    """
    if autojump:
        if clock is not None:
            raise ValueError("run_test_kernel takes autojump=True or a clock, not both")
        clock = trio.testing.MockClock(autojump_threshold=0)

    async def entry() -> T:
        outcome: list[T] = []
        async with open_test_kernel(**settings) as kernel:
            outcome.append(await main(kernel))
        if not outcome:
            raise RuntimeError(
                "the test kernel stopped before main returned (kernel.stop() was called, "
                "or a critical agent gave up)"
            )
        return outcome[0]

    return trio.run(entry, clock=clock)


@contextmanager
def _scratch_directory(given: str | os.PathLike[str] | None) -> Iterator[Path]:
    """``given`` as a path, else a new empty temporary directory, removed on exit."""
    if given is not None:
        yield Path(given)
        return
    with tempfile.TemporaryDirectory(prefix="loomk-test-") as name:
        yield Path(name)
