"""What an agent returned, and the non-streaming ``chat.completion`` body built from it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nanobot.api.errors import AgentFailed


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class Reply:
    """An agent's result, normalised: its text and, when it knows them, its token counts."""

    text: str
    usage: Usage | None = None
    finish_reason: str = "stop"


def _count(source: Any, name: str) -> int:
    value = source.get(name) if isinstance(source, Mapping) else getattr(source, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def read_reply(result: object) -> Reply:
    """Normalise what ``process_direct`` returned: text, or an object with ``.content``/``.usage``."""
    if result is None:
        return Reply("")
    if isinstance(result, str):
        return Reply(result)
    content = getattr(result, "content", _MISSING)
    if not isinstance(content, str | None):
        raise AgentFailed(
            f"The agent returned {_kind(result)}; it must return text or an object whose .content is text.",
            code="agent_contract",
        )
    text = content or ""
    reason = getattr(result, "finish_reason", None)
    reason = reason if isinstance(reason, str) and reason else "stop"
    raw_usage = getattr(result, "usage", None)
    if raw_usage is None:
        return Reply(text, None, reason)
    usage = Usage(_count(raw_usage, "prompt_tokens"), _count(raw_usage, "completion_tokens"))
    return Reply(text, usage, reason)


_MISSING = object()


def _kind(result: object) -> str:
    content = getattr(result, "content", result)
    return f"a {type(result).__name__}" if content is result else f".content of type {type(content).__name__}"


def completion_body(reply: Reply, *, completion_id: str, created: int, model: str) -> dict[str, Any]:
    """OpenAI's non-streaming ``chat.completion`` object."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "finish_reason": reply.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": (reply.usage or Usage()).to_dict(),
    }
