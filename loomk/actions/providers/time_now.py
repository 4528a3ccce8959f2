"""``time.now``: the current date and time in an IANA time zone.

Models are bad at knowing what time it is; this capability tells them. The clock is
injectable so callers (and tests) decide what "now" is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from loomk.actions.provider import ActionFailure, FunctionProvider, capability
from loomk.actions.types import ErrorCode

__all__ = ["time_now_provider"]

_MAX_ZONE_LENGTH = 64  # the longest IANA name is about half of this
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "timezone": {
            "type": "string",
            "description": "IANA time zone name, e.g. 'Europe/Paris' (default 'UTC')",
        }
    },
}


def time_now_provider(*, now: Callable[[], float] = time.time) -> FunctionProvider:
    """The ``time.now`` provider; ``now`` gives the wall-clock time in seconds since the epoch.

    Payload ``{timezone?}`` (default ``"UTC"``); output ``{iso, epoch_ms, timezone, weekday,
    date, time}``. An unknown time zone fails with ``INVALID_PARAMS``.
    """

    @capability(
        "time.now",
        version="0.1.0",
        description="Get the current date and time, optionally in an IANA time zone",
        schema=_SCHEMA,
    )
    async def time_now(args: dict[str, Any]) -> dict[str, Any]:
        name: str = args.get("timezone", "UTC")
        zone = _zone(name)
        epoch_ms = math.floor(now() * 1000)
        moment = (_EPOCH + timedelta(milliseconds=epoch_ms)).astimezone(zone)
        return {
            "iso": moment.isoformat(timespec="milliseconds"),
            "epoch_ms": epoch_ms,
            "timezone": name,
            "weekday": _WEEKDAYS[moment.weekday()],
            "date": moment.date().isoformat(),
            "time": moment.time().isoformat(timespec="seconds"),
        }

    return time_now


def _zone(name: str) -> ZoneInfo:
    """The zone called ``name``, or ``INVALID_PARAMS`` naming it."""
    if 0 < len(name) <= _MAX_ZONE_LENGTH:
        try:
            return ZoneInfo(name)
        except (KeyError, ValueError, OSError):  # not found, not a zone file, or a bad path
            pass
    raise ActionFailure(
        ErrorCode.INVALID_PARAMS,
        f"unknown time zone {name[:_MAX_ZONE_LENGTH]!r}: use an IANA name such as 'Europe/Paris'",
    )
