"""What an agent returned, and the non-streaming ``chat.completion`` body built from it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


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


def _count(source: Any, name: str) -> int:
    value = source.get(name) if isinstance(source, Mapping) else getattr(source, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def read_reply(result: object) -> Reply:
    """Normalise what ``process_direct`` returned: text, or an object with ``.content``/``.usage``."""
    if result is None:
        return Reply("")
    if isinstance(result, str):
        return Reply(result)
    content = getattr(result, "content", None)
    text = content if isinstance(content, str) else ""
    raw_usage = getattr(result, "usage", None)
    if raw_usage is None:
        return Reply(text)
    return Reply(text, Usage(_count(raw_usage, "prompt_tokens"), _count(raw_usage, "completion_tokens")))


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
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": (reply.usage or Usage()).to_dict(),
    }
