"""What an agent returned, normalised: its text, tool calls, reasoning, finish reason and usage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nanobot.core.errors import AgentFailed
from nanobot.core.events import FINISH_REASONS, ToolCall, read_tool_calls


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reported_total: int | None = None  #: the provider's own total, kept when it gave one
    reasoning_tokens: int | None = None  #: of ``completion_tokens``, those spent reasoning

    @property
    def total_tokens(self) -> int:
        total = self.reported_total
        return total if total is not None else self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.reasoning_tokens is not None:
            usage["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return usage


@dataclass(frozen=True, slots=True)
class Reply:
    """An agent's result, normalised: its text and, when it knows them, its token counts."""

    text: str
    usage: Usage | None = None
    finish_reason: str = "stop"
    #: Client tool calls the turn ended with (``finish_reason`` is then ``tool_calls``).
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: str = ""


def _count(source: Any, name: str) -> int | None:
    value = source.get(name) if isinstance(source, Mapping) else getattr(source, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def read_usage(source: object) -> Usage | None:
    """Token counts from a mapping or an object with ``prompt_tokens``, ``completion_tokens``
    and ``total_tokens`` (any of them; a total is kept as the provider said, also alone);
    ``None`` when it holds none."""
    if source is None:
        return None
    prompt, completion = _count(source, "prompt_tokens"), _count(source, "completion_tokens")
    total = _count(source, "total_tokens")
    if prompt is None and completion is None and total is None:
        return None
    details = source.get("completion_tokens_details") if isinstance(source, Mapping) else None
    details = details if details is not None else getattr(source, "completion_tokens_details", None)
    reasoning = _count(details, "reasoning_tokens") if details is not None else None
    if reasoning is None:
        reasoning = _count(source, "reasoning_tokens")
    return Usage(prompt or 0, completion or 0, total, reasoning)


def read_reply(result: object, last_usage: object = None) -> Reply:
    """Normalise what ``process_direct`` returned: text, or an object with ``.content``/``.usage``.

    ``last_usage``: what the agent recorded on itself as ``_last_usage`` (nanobot's agent loop
    does), reported when the result carries no usage."""
    if isinstance(result, Reply):
        return result
    fallback = read_usage(last_usage)
    if result is None:
        return Reply("", fallback)
    if isinstance(result, str):
        return Reply(result, fallback)
    content = getattr(result, "content", _MISSING)
    if not isinstance(content, str | None):
        raise AgentFailed(
            f"The agent returned {_kind(result)}; it must return text or an object whose .content is text.",
            code="agent_contract",
        )
    text = content or ""
    calls = read_tool_calls(getattr(result, "tool_calls", None))
    reason = getattr(result, "finish_reason", None)
    reason = reason if isinstance(reason, str) and reason in FINISH_REASONS else None
    reason = reason or ("tool_calls" if calls else "stop")
    reasoning = getattr(result, "reasoning", None) or getattr(result, "reasoning_content", None)
    return Reply(
        text,
        read_usage(getattr(result, "usage", None)) or fallback,
        reason,
        calls,
        reasoning if isinstance(reasoning, str) else "",
    )


_MISSING = object()


def _kind(result: object) -> str:
    content = getattr(result, "content", result)
    return f"a {type(result).__name__}" if content is result else f".content of type {type(content).__name__}"
