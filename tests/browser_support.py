"""Helpers for the dashboard's browser tests: Debian's chromium, and a kernel in a thread.

The browser tests drive the page with Playwright's *sync* API, so they are plain ``def``
tests (pytest runs in trio mode). The kernel runs meanwhile in a thread of its own, in its
own ``trio.run``; :class:`KernelThread` starts it, runs coroutines in it from the test's
thread and stops it.

Playwright cannot download its own browser here (no network): the tests drive the
``chromium`` Debian package, which ``make test`` installs (the Makefile's ``APT_PACKAGES``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
import trio.from_thread
import trio.lowlevel
from playwright.sync_api import Browser, Playwright, sync_playwright

import loomk

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "KernelThread", "chromium", "launch_chromium"]

T = TypeVar("T")

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's chromium (the ``chromium`` package)."""

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 30.0


def launch_chromium(playwright: Playwright) -> Browser:
    """Launch Debian's headless chromium; fail (never skip) when it is not installed."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the dashboard's browser tests drive Debian's chromium. "
            "`make test` installs it (the Makefile's APT_PACKAGES), or run "
            "`apt-get install chromium`.",
            pytrace=False,
        )
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


@contextmanager
def plain_asyncio() -> Iterator[None]:
    """The default asyncio policy while the block runs.

    Playwright's sync API runs an asyncio loop of its own. trio-asyncio (imported with the
    bridge, whose tests share this process) installs a policy whose new loops run trio
    inside a greenlet: Playwright's loop would be one of those, refuse to start inside the
    test ("You can't nest calls to run_until_complete()") and leave trio believing it is
    still running, failing every later test.
    """
    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(previous)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Playwright (sync) and a launched chromium, both closed on the way out."""
    with plain_asyncio(), sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            yield browser
        finally:
            browser.close()


class KernelThread:
    """A kernel running in a background thread (its own ``trio.run``).

    ``setup`` runs in the kernel's trio thread once it is open (spawn agents there).
    :meth:`run` calls an async function in the kernel's thread and returns its result;
    :meth:`stop` leaves the kernel's ``async with`` and joins the thread, re-raising what
    the kernel raised.
    """

    def __init__(
        self,
        setup: Callable[[loomk.Kernel], Awaitable[None]] | None = None,
        **settings: Any,
    ) -> None:
        self._setup = setup
        self._settings = settings
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._kernel: loomk.Kernel | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="loomk-kernel", daemon=True)

    @property
    def kernel(self) -> loomk.Kernel:
        """The running kernel (read its attributes from the test thread; call into it with
        :meth:`run`)."""
        assert self._kernel is not None, "the kernel is not running"
        return self._kernel

    @property
    def token(self) -> trio.lowlevel.TrioToken:
        """The kernel thread's trio token, for ``trio.from_thread``."""
        assert self._token is not None, "the kernel is not running"
        return self._token

    def start(self) -> KernelThread:
        """Start the thread and wait until the kernel is open and ``setup`` ran."""
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_S):
            raise TimeoutError(f"the kernel did not start within {_START_TIMEOUT_S} s")
        if self._error is not None:
            self._thread.join(_STOP_TIMEOUT_S)
            raise RuntimeError("the kernel failed to start") from self._error
        return self

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` in the kernel's thread; its result."""
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    def publish(self, topic: str, event: loomk.Event) -> int:
        """Publish ``event`` on the kernel's bus from this thread."""
        return self.run(self.kernel.bus.publish, topic, event)

    def stop(self) -> None:
        """Close the kernel and join its thread (idempotent); re-raise its error."""
        if self._thread.is_alive() and self._stop is not None and self._token is not None:
            with suppress(trio.RunFinishedError):  # it ended on its own meanwhile
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(_STOP_TIMEOUT_S)
        if self._thread.is_alive():
            raise TimeoutError(f"the kernel did not stop within {_STOP_TIMEOUT_S} s")
        error, self._error = self._error, None
        if error is not None:
            raise RuntimeError("the kernel failed") from error

    def __enter__(self) -> KernelThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as error:  # reported to the test thread by start/stop
            self._error = error
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = trio.Event()
        async with loomk.open_kernel(**self._settings) as kernel:
            self._kernel = kernel
            if self._setup is not None:
                await self._setup(kernel)
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()
