"""What a model is asked: :class:`PromptBundle`, :class:`TokenBudget`, and Loom's adapter.

:func:`to_messages_and_text` turns a bundle into both Chat Completions ``messages`` and the
single fused text the Responses API takes as ``input``, trimmed to the budget exactly as
Loom's ``promptbundle_to_messages_and_text`` does: the character budget is
``max_input_tokens * 4`` (a conservative four characters per token), the fused text's labels
count against it, and what does not fit goes in this order: the oldest history items, then
the tail of the instructions, then all context but a cut first document, then the tail of
the system prompt. Lengths count code points, so a cut never splits a character.

One deliberate difference: Loom subtracted the history label's overhead even from bundles
that had no history, so such a bundle could overshoot the budget by up to 10 characters;
here the fused text never exceeds the character budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loomk.errors import LLMError

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_MAX_INPUT_TOKENS",
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "PromptBundle",
    "TokenBudget",
    "to_messages_and_text",
]

CHARS_PER_TOKEN = 4
DEFAULT_MAX_INPUT_TOKENS = 2048
DEFAULT_MAX_OUTPUT_TOKENS = 512
_MAX_TOKENS = 2**32 - 1  # Loom's budgets are u32

# What the fused text's labels add, as Loom counts them.
_SYSTEM_OVERHEAD = len("System:\n\n\n")  # "System:\n" + "\n\n"
_CONTEXT_OVERHEAD = len("\n")  # the blank line after the context block
_HISTORY_OVERHEAD = len("History:\n\n")  # "History:\n" + the final "\n"
_HISTORY_ITEM_OVERHEAD = len("- \n")
_USER_OVERHEAD = len("User:\n\n")  # "User:\n" + "\n"
_CONTEXT_PREFIX = "Context:\n- "

_INVALID = "LLM_INVALID_REQUEST"


def _invalid(message: str) -> LLMError:
    return LLMError(_INVALID, message)


def _text_field(data: Mapping[str, Any], key: str, what: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise _invalid(f"{what}.{key} must be a string, got {type(value).__name__}")
    return value


def _texts_field(data: Mapping[str, Any], key: str, what: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _invalid(f"{what}.{key} must be a list of strings, got {value!r:.80}")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class PromptBundle:
    """Everything a prompt is made of, with the fields of Loom's prompt bundle; every field
    may be left out.

    ``history`` holds earlier user turns, oldest first. ``tools_json_schema`` is carried
    along but, as in Loom, not put into the prompt.
    """

    system: str = ""
    instructions: str = ""
    tools_json_schema: str | None = None
    context_docs: tuple[str, ...] = ()
    history: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # accept lists (as JSON gives them) but keep the frozen value immutable
        for name in ("context_docs", "history"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))

    @classmethod
    def from_dict(cls, data: object) -> PromptBundle:
        """A bundle from its JSON form; missing keys take their defaults, unknown keys are
        ignored (as Loom's serde does). Wrong types raise ``LLMError`` LLM_INVALID_REQUEST."""
        if not isinstance(data, Mapping):
            raise _invalid(f"a prompt bundle must be an object, got {type(data).__name__}")
        schema = data.get("tools_json_schema")
        if schema is not None and not isinstance(schema, str):
            raise _invalid(
                f"bundle.tools_json_schema must be a string or null, got {type(schema).__name__}"
            )
        return cls(
            system=_text_field(data, "system", "bundle"),
            instructions=_text_field(data, "instructions", "bundle"),
            tools_json_schema=schema,
            context_docs=_texts_field(data, "context_docs", "bundle"),
            history=_texts_field(data, "history", "bundle"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (Loom's field names)."""
        return {
            "system": self.system,
            "instructions": self.instructions,
            "tools_json_schema": self.tools_json_schema,
            "context_docs": list(self.context_docs),
            "history": list(self.history),
        }


def _tokens_field(data: Mapping[str, Any], key: str, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_TOKENS:
        raise _invalid(f"budget.{key} must be an integer from 1 to {_MAX_TOKENS}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class TokenBudget:
    """How many tokens the prompt may use, and how many the answer, as Loom's token budget
    says them."""

    max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS

    @classmethod
    def from_dict(cls, data: object) -> TokenBudget:
        """A budget from its JSON form; missing keys take their defaults. Values must be
        integers from 1 to 2**32 - 1, else ``LLMError`` LLM_INVALID_REQUEST."""
        if not isinstance(data, Mapping):
            raise _invalid(f"a token budget must be an object, got {type(data).__name__}")
        return cls(
            max_input_tokens=_tokens_field(data, "max_input_tokens", DEFAULT_MAX_INPUT_TOKENS),
            max_output_tokens=_tokens_field(data, "max_output_tokens", DEFAULT_MAX_OUTPUT_TOKENS),
        )

    def to_dict(self) -> dict[str, int]:
        """The JSON form."""
        return {
            "max_input_tokens": self.max_input_tokens,
            "max_output_tokens": self.max_output_tokens,
        }

    @property
    def char_budget(self) -> int:
        """The prompt's budget in characters: four per token."""
        return self.max_input_tokens * CHARS_PER_TOKEN


def _assembled(system: str, context: str, instructions: str) -> int:
    """The fused text's length without history."""
    total = len(system) + len(context) + len(instructions)
    if system:
        total += _SYSTEM_OVERHEAD
    if context:
        total += _CONTEXT_OVERHEAD
    if instructions:
        total += _USER_OVERHEAD
    return total


def _context_block(docs: Sequence[str]) -> str:
    return "Context:\n" + "".join(f"- {doc}\n" for doc in docs) if docs else ""


def to_messages_and_text(
    bundle: PromptBundle, budget: TokenBudget | None = None
) -> tuple[list[dict[str, str]], str]:
    """``(messages, fused_text)`` for ``bundle`` within ``budget`` (default 2048/512).

    Messages: the system prompt and the context block as ``system`` messages, each history
    item then the instructions as ``user`` messages, each only when non-empty. The fused
    text has the sections ``System:``, the context block, ``History:`` and ``User:``, each
    only when non-empty. An empty bundle gives ``([], "")``.
    """
    budget = budget or TokenBudget()
    limit = budget.char_budget
    system = bundle.system
    context = _context_block(bundle.context_docs)
    history = list(bundle.history)
    instructions = bundle.instructions

    size = _assembled(system, context, instructions)
    if history:
        size += _HISTORY_OVERHEAD + sum(len(h) + _HISTORY_ITEM_OVERHEAD for h in history)
        while size > limit and history:  # the oldest turns go first
            size -= len(history.pop(0)) + _HISTORY_ITEM_OVERHEAD
        if not history:
            size -= _HISTORY_OVERHEAD

    if size > limit and instructions:
        fixed = _assembled(system, context, "") + _USER_OVERHEAD
        instructions = instructions[: max(0, limit - fixed)]
        size = _assembled(system, context, instructions)

    if size > limit and context:
        fixed = _assembled(system, "", instructions) + _CONTEXT_OVERHEAD
        allowed = max(0, limit - fixed)
        if allowed > len(_CONTEXT_PREFIX):
            first = bundle.context_docs[0] if bundle.context_docs else ""
            context = f"{_CONTEXT_PREFIX}{first[: allowed - len(_CONTEXT_PREFIX) - 1]}\n"
        else:
            context = ""
        size = _assembled(system, context, instructions)

    if size > limit and system:
        fixed = _assembled("", context, instructions) + _SYSTEM_OVERHEAD
        system = system[: max(0, limit - fixed)]

    return _messages(system, context, history, instructions), _fused(
        system, context, history, instructions
    )


def _messages(
    system: str, context: str, history: list[str], instructions: str
) -> list[dict[str, str]]:
    messages = []
    if system:
        messages.append({"role": "system", "content": system})
    if context:
        messages.append({"role": "system", "content": context})
    messages.extend({"role": "user", "content": item} for item in history)
    if instructions:
        messages.append({"role": "user", "content": instructions})
    return messages


def _fused(system: str, context: str, history: list[str], instructions: str) -> str:
    parts = []
    if system:
        parts.append(f"System:\n{system}\n\n")
    if context:
        parts.append(f"{context}\n")
    if history:
        parts.append("History:\n" + "".join(f"- {item}\n" for item in history) + "\n")
    if instructions:
        parts.append(f"User:\n{instructions}\n")
    return "".join(parts)
