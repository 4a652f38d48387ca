"""Reading an upstream's streamed answer, without I/O: SSE lines to events, chunks to text.

:class:`EventDecoder` turns lines into event data (``data:`` lines joined, comments and other
fields skipped); :class:`ChunkReader` folds OpenAI ``chat.completion.chunk`` payloads into the
answer's text deltas, its usage and whether it finished. Both raise :class:`UpstreamFailed` for
what an OpenAI-compatible server must never send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from nanobot.api.completion import Usage
from nanobot.api.errors import UpstreamFailed

DONE = "[DONE]"


class EventDecoder:
    """Lines of an SSE stream (without line endings) in, each event's data out."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def decode(self, line: str) -> str | None:
        """Feed one line; the event's data when this line ends an event that carried any."""
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value.removeprefix(" "))
        return None

    def flush(self) -> str | None:
        """The data of an event the stream ended in the middle of, if any."""
        if not self._data:
            return None
        data = "\n".join(self._data)
        self._data.clear()
        return data


class ChunkReader:
    """Folds chunk payloads into the answer; ``source`` names the upstream in error messages."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.usage: Usage | None = None
        self.finished = False
        self.done = False
        self._parts: list[str] = []

    @property
    def content(self) -> str:
        return "".join(self._parts)

    @property
    def complete(self) -> bool:
        """The answer is whole: ``[DONE]`` came, or a choice said why it finished."""
        return self.done or self.finished

    def feed(self, data: str) -> str:
        """Read one event's data; the text it adds to the answer (often empty)."""
        if data.strip() == DONE:
            self.done = True
            return ""
        chunk = self._load(data)
        if chunk.get("error") is not None:
            raise UpstreamFailed(f"The upstream at {self.source} failed mid-answer: {error_detail(chunk)}")
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            self.usage = read_usage(usage)
        text = self._text(chunk.get("choices"))
        if text:
            self._parts.append(text)
        return text

    def read_completion(self, body: bytes) -> str:
        """A whole ``chat.completion`` (from an upstream that does not stream); its text."""
        completion = self._load(body)
        choices = completion.get("choices")
        message = choices[0].get("message") if isinstance(choices, list) and choices else None
        if not isinstance(message, Mapping) or not isinstance(message.get("content") or "", str):
            raise self._malformed(body)
        usage = completion.get("usage")
        self.usage = read_usage(usage) if isinstance(usage, Mapping) else None
        self.finished = True
        self._parts.append(message.get("content") or "")
        return self.content

    def _load(self, data: str | bytes) -> Mapping[str, Any]:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise self._malformed(data) from None
        if not isinstance(chunk, dict):
            raise self._malformed(data)
        return chunk

    def _text(self, choices: object) -> str:
        if choices is None:
            return ""
        if not isinstance(choices, list):
            raise self._malformed(repr(choices))
        text = ""
        for choice in choices:
            delta = (choice.get("delta") or {}) if isinstance(choice, dict) else None
            content = delta.get("content") if isinstance(delta, dict) else None
            if not isinstance(delta, dict) or not isinstance(content, str | None):
                raise self._malformed(repr(choice))
            if choice.get("index", 0) != 0:
                continue
            text += content or ""
            if choice.get("finish_reason"):
                self.finished = True
        return text

    def _malformed(self, data: str | bytes) -> UpstreamFailed:
        shown = data if isinstance(data, str) else data.decode(errors="replace")
        return UpstreamFailed(
            f"The upstream at {self.source} sent a malformed chunk: {shown[:200]!r}",
            code="upstream_malformed",
        )


def read_usage(usage: Mapping[str, Any]) -> Usage:
    def count(name: str) -> int:
        value = usage.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    return Usage(count("prompt_tokens"), count("completion_tokens"))


def error_detail(payload: object) -> str:
    """The message in an error body: OpenAI's, vLLM's, FastAPI's or Ollama's shape, else nothing."""
    if not isinstance(payload, Mapping):
        return ""
    error = payload.get("error")
    for candidate in (
        error.get("message") if isinstance(error, Mapping) else error,
        payload.get("message"),
        payload.get("detail"),
    ):
        if isinstance(candidate, str) and candidate:
            return candidate[:300]
    return ""
