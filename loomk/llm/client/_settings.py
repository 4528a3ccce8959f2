"""Where and how to reach a model server: :class:`LLMSettings`, checked when made.

Both halves of the client read the same object, which the transport holds: the client API
for the endpoint, model and sampling defaults, the transport for the API key, the timeout
and the retry limits. A bad value fails here, with LLM_INVALID_REQUEST, rather than on the
first request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from loomk.config import Config
from loomk.errors import LLMError
from loomk.llm.client._wire import LLM_INVALID_REQUEST

__all__ = ["LLMSettings", "check_number"]


def check_number(name: str, value: object, *, low: float, strict: bool = False) -> None:
    """Raise LLM_INVALID_REQUEST unless ``value`` is a finite number >= ``low`` (> when
    ``strict``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value > low if strict else value >= low  # type: ignore[operator]
    if not ok:
        sign = ">" if strict else ">="
        raise LLMError(LLM_INVALID_REQUEST, f"{name} must be a finite number {sign} {low:g}")


@dataclass(frozen=True, slots=True)
class LLMSettings:
    """Where and how to reach the model. ``api_key`` never shows in the ``repr``.

    An empty ``base_url`` is allowed here (a call may bring its own); a request without any
    fails with LLM_NOT_CONFIGURED.
    """

    base_url: str = ""
    model: str = "qwen2.5-0.5b-instruct"
    api_key: str = field(default="", repr=False)
    timeout_s: float = 30.0
    temperature: float = 0.7
    max_retries: int = 3
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0
    retry_after_max_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("base_url", "model", "api_key"):
            if not isinstance(getattr(self, name), str):
                raise LLMError(LLM_INVALID_REQUEST, f"{name} must be a string")
        if self.api_key and not all(" " < ch < "\x7f" for ch in self.api_key):
            raise LLMError(
                LLM_INVALID_REQUEST,
                "the API key must be printable ASCII without spaces (it goes in a header)",
            )
        check_number("timeout_s", self.timeout_s, low=0.0, strict=True)
        check_number("temperature", self.temperature, low=0.0)
        check_number("backoff_s", self.backoff_s, low=0.0)
        check_number("backoff_max_s", self.backoff_max_s, low=0.0)
        check_number("retry_after_max_s", self.retry_after_max_s, low=0.0)
        retries = self.max_retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise LLMError(LLM_INVALID_REQUEST, "max_retries must be an integer >= 0")

    @classmethod
    def from_config(cls, config: Config) -> LLMSettings:
        """The settings of a kernel :class:`~loomk.config.Config` (``llm_*`` keys)."""
        return cls(
            base_url=config.llm_base_url,
            model=config.llm_model,
            api_key=config.llm_api_key,
            timeout_s=config.llm_timeout_s,
            temperature=config.llm_temperature,
            max_retries=config.llm_max_retries,
        )
