"""Structured logging for loomk through structlog: console or JSON lines on stderr.

loomk configures structlog only when the host program has not: an embedding application
keeps its own logging set-up (and may put :mod:`loomk.telemetry.processors` into its own
chain; the settings they apply are set either way). When loomk configured structlog, a
later call (a second kernel in the process) configures it again in place: the chain is
one list, refilled, so processors never stack and loggers already in use follow.

Each record passes, in order: the level of its logger, structlog's context variables, the
agent's context, level name and time stamp, the exception's text, the masking of secrets,
and the renderer. Log calls below every configured level cost one method call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from loomk.config import BridgeAcl
from loomk.telemetry.processors import (
    add_agent_context,
    configure_processors,
    filter_by_logger_level,
    mask_secrets,
    reset_processors,
)

if TYPE_CHECKING:
    from loomk.config import Config

__all__ = ["config_secrets", "configure_logging", "get_logger", "reset_logging"]

_CHAIN: list[structlog.typing.Processor] = []
"""The one processor list loomk configures structlog with, refilled in place on each
configuration (cached loggers hold this list, so they follow)."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Installed:
    """What loomk's last configuration set: while structlog still has exactly it, loomk
    owns the configuration and may configure it again."""

    processors: list[structlog.typing.Processor]
    wrapper_class: type[Any]


_installed: _Installed | None = None
_loggers: weakref.WeakSet[Any] = weakref.WeakSet()  # get_logger's proxies, to refresh


def configure_logging(
    level: str = "warning",
    fmt: str = "console",
    *,
    levels: Mapping[str, str] | None = None,
    mask_fields: Iterable[str] = (),
    secrets: Iterable[str] = (),
) -> bool:
    """Set up structlog for loomk unless the program already configured it.

    ``level`` applies to every logger but those ``levels`` names (logger -> level, a
    logger's level covering the loggers below it, as ``loomk.config.parse_log_levels``
    gives them); ``mask_fields`` and ``secrets`` are masked beside the built-in rules (see
    :func:`loomk.telemetry.processors.mask_secrets`). Those settings are applied even when
    the host configured structlog, for the loomk processors in its chain.

    Returns whether this call configured structlog. Raises ``ValueError`` for an unknown
    level name.
    """
    global _installed
    lowest = configure_processors(
        level=level, levels=levels, mask_fields=mask_fields, secrets=secrets
    )
    if structlog.is_configured() and not _owns_structlog():
        return False
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    _CHAIN[:] = [
        filter_by_logger_level,
        structlog.contextvars.merge_contextvars,
        add_agent_context,
        structlog.processors.add_log_level,
        structlog.processors.format_exc_info,
        mask_secrets,
        structlog.processors.TimeStamper(fmt="iso", utc=True),  # after: it is no secret
        renderer,
    ]
    wrapper_class = structlog.make_filtering_bound_logger(lowest)
    structlog.configure(
        processors=_CHAIN,
        wrapper_class=wrapper_class,
        logger_factory=_StderrLogger,
        cache_logger_on_first_use=True,
    )
    _installed = _Installed(list(_CHAIN), wrapper_class)
    _refresh_loggers()
    return True


def reset_logging() -> None:
    """structlog and loomk's processors back to their defaults, as if nothing had
    configured them: the next kernel configures logging afresh (for tests)."""
    global _installed
    structlog.reset_defaults()
    reset_processors()
    _installed = None
    _refresh_loggers()


def config_secrets(config: Config) -> list[str]:
    """The secret values ``config`` holds, to mask in logs: the settings marked secret
    (``llm_api_key``, ``bridge_token``, ``bridge_link_token``) and the bridge ACL's
    tokens, those that are set."""
    found: list[str] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("secret") and isinstance(value, str) and value:
            found.append(value)
        elif isinstance(value, BridgeAcl):
            found.extend(entry.token for entry in value.values() if entry.token)
    return found


def _owns_structlog() -> bool:
    """Whether structlog still runs exactly loomk's last configuration (not the host's,
    nor ``structlog.testing.capture_logs``' for the moment)."""
    installed = _installed
    if installed is None:
        return False
    config = structlog.get_config()
    return (
        config["processors"] is _CHAIN
        and installed.processors == _CHAIN
        and config["wrapper_class"] is installed.wrapper_class
        and config["logger_factory"] is _StderrLogger
    )


def _refresh_loggers() -> None:
    """Make the loggers ``get_logger`` gave out bind afresh on their next use.

    structlog caches a proxy's logger on first use (``cache_logger_on_first_use``) by
    setting its ``bind`` on the instance; dropping it makes the proxy follow the new
    configuration (its level above all). Harmless if structlog stops doing it that way.
    """
    for proxy in list(_loggers):
        vars(proxy).pop("bind", None)


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
    logger = structlog.get_logger(component=name)
    with contextlib.suppress(TypeError):  # a proxy that cannot be weakly referenced
        _loggers.add(logger)
    return logger  # type: ignore[no-any-return]
