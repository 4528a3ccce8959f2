"""When a failed model request is tried again, and how long to wait first.

Only failures that another try may cure are retried: no connection, 429 and 5xx. The wait
grows exponentially with full jitter, so clients that failed together do not come back
together, and is at least what the server asked for in ``Retry-After``. A server that asks
for more than the caller is willing to wait gets no retry: the failure goes back at once,
with ``retry_after_s`` set, so the caller decides.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from datetime import UTC
from typing import Protocol

from loomk.errors import LLMError
from loomk.llm.client._wire import LLM_CONNECT_ERROR

__all__ = ["RetrySettings", "retry_after", "retry_delay"]


class RetrySettings(Protocol):
    """The limits of the policy (as :class:`~loomk.llm.client.LLMSettings` holds them)."""

    @property
    def max_retries(self) -> int: ...

    @property
    def backoff_s(self) -> float: ...

    @property
    def backoff_max_s(self) -> float: ...

    @property
    def retry_after_max_s(self) -> float: ...


def retry_delay(failure: LLMError, attempt: int, settings: RetrySettings) -> float | None:
    """Seconds to wait before trying again after ``failure`` on try ``attempt`` (counted
    from 0); None when the failure is final."""
    if attempt >= settings.max_retries or not _retryable(failure):
        return None
    delay = _backoff(attempt, settings)
    if failure.retry_after_s is not None:
        if failure.retry_after_s > settings.retry_after_max_s:
            return None
        delay = max(delay, failure.retry_after_s)
    return delay


def retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds from now (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _retryable(failure: LLMError) -> bool:
    """No connection, 429 or 5xx; a timeout is not retried (a slow server is not asked
    twice), nor is an answer that could not be used."""
    if failure.code == LLM_CONNECT_ERROR:
        return True
    status = failure.status
    return status is not None and (status == 429 or status >= 500)


def _backoff(attempt: int, settings: RetrySettings) -> float:
    """Exponential backoff with full jitter."""
    ceiling = min(settings.backoff_max_s, settings.backoff_s * 2 ** min(attempt, 62))
    return random.uniform(0.0, ceiling)
