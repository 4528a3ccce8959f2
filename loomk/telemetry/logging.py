"""Structured logging for loomk through structlog: console or JSON lines on stderr.

loomk configures structlog only when the host program has not: an embedding application
keeps its own logging set-up. Log calls below the configured level cost one method call.
"""

from __future__ import annotations

import contextlib
import logging
import sys

import structlog

__all__ = ["configure_logging", "get_logger"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def configure_logging(level: str = "warning", fmt: str = "console") -> bool:
    """Set up structlog for loomk unless the program already configured it.

    Returns whether this call configured structlog.
    """
    if structlog.is_configured():
        return False
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=_StderrLogger,
        cache_logger_on_first_use=True,
    )
    return True


class _StderrLogger:
    """Writes each rendered line to the current ``sys.stderr``; never raises.

    The stream is looked up per line (a test runner or host may swap it), and a failed write
    is dropped: logging from an error path must not take the kernel down with it.
    """

    def __init__(self, *args: object) -> None:
        pass

    def msg(self, message: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A structlog logger named ``name`` (shown as the ``component`` field)."""
    return structlog.get_logger(component=name)  # type: ignore[no-any-return]
