"""A Debian ``nats-server`` child process for tests, examples and benchmarks.

``loomk.cluster`` shares one bus between kernels through NATS; everything that exercises it
needs a real server. ``open_nats_server`` starts one on a loopback port with JetStream storing
into a directory of its own, waits until it accepts connections and stops it at the end.
``stop``/``kill`` and ``start`` restart it on the same port and store, so tests can see what a
server restart does to a link. The server writes into a log file, never into a pipe that
nobody reads (a full pipe would stall it); the log's tail goes into the errors.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

__all__ = [
    "NATS_SERVER_VARIABLE",
    "NatsServer",
    "NatsServerError",
    "find_nats_server",
    "open_nats_server",
]

NATS_SERVER_VARIABLE = "LOOMK_NATS_SERVER"
"""The environment variable naming the ``nats-server`` executable, before ``PATH``."""

_FALLBACK_PATHS = ("/usr/sbin/nats-server", "/usr/bin/nats-server")
_READY_TIMEOUT_S = 10.0
_STOP_GRACE_S = 5.0
_LOG_TAIL_CHARS = 2000
_READY_LINE = "Server is ready"


class NatsServerError(RuntimeError):
    """``nats-server`` is missing, exited or did not accept connections in time."""


def find_nats_server() -> str:
    """The ``nats-server`` executable: ``$LOOMK_NATS_SERVER``, ``PATH``, then Debian's paths.

    Debian installs it into ``/usr/sbin``, which is not on an ordinary user's ``PATH``.
    """
    configured = os.environ.get(NATS_SERVER_VARIABLE)
    if configured:
        found = shutil.which(configured)
        if found is None:
            raise NatsServerError(
                f"nats-server not found at {configured!r} ({NATS_SERVER_VARIABLE}): install it "
                f"(apt-get install nats-server) or set {NATS_SERVER_VARIABLE}"
            )
        return found
    found = shutil.which("nats-server")
    if found is not None:
        return found
    for path in _FALLBACK_PATHS:
        if os.access(path, os.X_OK):
            return path
    raise NatsServerError(
        "nats-server not found: install it (apt-get install nats-server) "
        f"or set {NATS_SERVER_VARIABLE}"
    )


def _free_port() -> int:
    """A loopback port nobody listens on right now (the kernel picks it, we release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class NatsServer:
    """One ``nats-server`` on ``127.0.0.1:port``; ``start`` runs it, ``stop``/``kill`` end it.

    The port and the store stay the same across restarts, so clients reconnect to the same URL
    and JetStream finds its streams again.
    """

    def __init__(
        self, executable: str, *, port: int, store_dir: Path, log_dir: Path, jetstream: bool
    ) -> None:
        self.executable = executable
        self.port = port
        self.store_dir = store_dir
        self.jetstream = jetstream
        self.log_path = log_dir / "nats-server.log"
        self._process: trio.Process | None = None

    @property
    def url(self) -> str:
        """Where clients connect: ``nats://127.0.0.1:PORT``."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running server's process id, ``None`` when it is not running."""
        if self._process is None or self._process.returncode is not None:
            return None
        return self._process.pid

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.pid is not None

    @property
    def command(self) -> list[str]:
        """The command line ``start`` runs."""
        command = [self.executable, "-a", "127.0.0.1", "-p", str(self.port)]
        if self.jetstream:
            command += ["-js", "-sd", str(self.store_dir)]
        return command

    def log_tail(self) -> str:
        """The end of the server's log (its stdout and stderr), for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-_LOG_TAIL_CHARS:]

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    async def start(self) -> None:
        """Run the server and return once it accepts TCP connections (within 10 s).

        Ready means the port accepts a connection and this run's log says it is ready (another
        process may hold the port: nats-server then exits). Raises ``NatsServerError`` with the
        command and the log's tail if it exits first or does not come up in time (the process
        is killed then).
        """
        if self.running:
            raise NatsServerError(f"nats-server is already running (pid {self.pid})")
        with self.log_path.open("ab") as log:
            log_start = log.tell()
            self._process = await trio.lowlevel.open_process(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        process = self._process
        delay = 0.01
        with trio.move_on_after(_READY_TIMEOUT_S):
            while True:
                if process.poll() is not None:
                    raise self._error(f"exited with status {process.returncode}")
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", self.port)
                except OSError:
                    await trio.sleep(delay)
                    delay = min(delay * 2, 0.2)
                    continue
                await stream.aclose()
                if _READY_LINE in self._log_since(log_start):
                    return
                await trio.sleep(delay)
        await self.kill()
        raise self._error(f"did not accept connections within {_READY_TIMEOUT_S:g} s")

    def _error(self, what: str) -> NatsServerError:
        return NatsServerError(
            f"nats-server {what}: {' '.join(self.command)}\n--- its log ---\n{self.log_tail()}"
        )

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited after 5 s; waits until it has."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(_STOP_GRACE_S):
            await process.wait()
            return
        await self.kill()

    async def kill(self) -> None:
        """SIGKILL, as a crash would end it; waits until it has exited."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


@asynccontextmanager
async def open_nats_server(
    *, store_dir: Path | None = None, port: int = 0, jetstream: bool = True
) -> AsyncIterator[NatsServer]:
    """A started ``nats-server``, stopped on exit.

    ``port`` 0 picks a free loopback port; ``store_dir`` ``None`` keeps JetStream's data in a
    temporary directory removed at the end (the log lives in one in any case).
    """
    executable = find_nats_server()
    with tempfile.TemporaryDirectory(prefix="loomk-nats-") as scratch:
        scratch_dir = Path(scratch)
        server = NatsServer(
            executable,
            port=port or _free_port(),
            store_dir=store_dir if store_dir is not None else scratch_dir / "store",
            log_dir=scratch_dir,
            jetstream=jetstream,
        )
        try:
            await server.start()
            yield server
        finally:
            with trio.CancelScope(shield=True):
                await server.stop()
