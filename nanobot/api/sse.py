"""Server-sent event framing for chat completion chunks: pure bytes, no I/O.

Chunks are built from a per-stream template in which only the token is JSON-escaped, so a
token costs one small ``orjson.dumps`` rather than a whole chunk object.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"
#: A comment event: ignored by SSE clients, keeps proxies from closing an idle connection.
PING = b": ping\n\n"


#: Characters JSON allows raw but ``str.splitlines``-style readers take for line breaks.
_LINE_BREAKS = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"), (b"\xc2\x85", b"\\u0085"))


def json_text(text: str) -> bytes:
    """``text`` as a JSON string literal (lone surrogates are escaped, never dropped; U+2028,
    U+2029 and U+0085 are escaped, so no client's line splitter can cut an event)."""
    try:
        out = orjson.dumps(text)
    except orjson.JSONEncodeError:
        return json.dumps(text).encode()
    if text.isascii() or ("\u2028" not in text and "\u2029" not in text and "\x85" not in text):
        return out  # isascii() is O(1) in CPython: most tokens stop there
    return _escape_line_breaks(out)


def _escape_line_breaks(out: bytes) -> bytes:
    for raw, escaped in _LINE_BREAKS:
        out = out.replace(raw, escaped)
    return out


def event(payload: dict[str, Any]) -> bytes:
    """One ``data:`` event carrying ``payload`` as compact JSON."""
    return b"data: " + _escape_line_breaks(orjson.dumps(payload)) + b"\n\n"


_CONTENT = b'[{"index":0,"delta":{"content":'
_FIRST_CONTENT = b'[{"index":0,"delta":{"role":"assistant","content":'
_REASONING = b'[{"index":0,"delta":{"reasoning_content":'
_FIRST_REASONING = b'[{"index":0,"delta":{"role":"assistant","reasoning_content":'
_CALL = b'[{"index":0,"delta":{"tool_calls":[{"index":'
_FIRST_CALL = b'[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":'
_TAILS = (b"}\n\n", b',"usage":null}\n\n')  #: by ``include_usage``: shared by every stream
_DELTA_ENDS = tuple(b'},"finish_reason":null}]' + tail for tail in _TAILS)


class ChunkFormat:
    """Encodes the ``chat.completion.chunk`` events of one stream.

    Every chunk shares ``chunk_id``, ``created`` and ``model``; when ``include_usage`` is set,
    every chunk but the usage chunk carries ``"usage": null``, as OpenAI does. An open stream
    keeps one bytes object of its own (the head of a content delta): the rest is shared, or
    rebuilt from it on the rare paths (the first delta, the finish and usage chunks).
    """

    __slots__ = ("_arguments", "_content", "_delta_end", "_reasoning", "_tail")

    def __init__(self, chunk_id: str, created: int, model: str, *, include_usage: bool) -> None:
        head = orjson.dumps(
            {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model}
        )
        self._content = b"data: " + head[:-1] + b',"choices":' + _CONTENT
        self._tail = _TAILS[include_usage]
        self._delta_end = _DELTA_ENDS[include_usage]
        self._reasoning: bytes | None = None  # built on a stream's first reasoning delta
        self._arguments: dict[int, bytes] | None = None  # per call index, on its first fragment

    @property
    def _head(self) -> bytes:
        """``data: {...,"choices":``: what every chunk of this stream begins with."""
        return self._content[: -len(_CONTENT)]

    def delta(self, text: str, *, first: bool = False) -> bytes:
        """A content delta; the first of a stream also names the assistant role."""
        if first:
            return self._head + _FIRST_CONTENT + json_text(text) + self._delta_end
        return self._content + json_text(text) + self._delta_end

    def reasoning(self, text: str, *, first: bool = False) -> bytes:
        """A ``reasoning_content`` delta (what vLLM, llama-server, DeepSeek and Open WebUI read)."""
        if first:
            return self._head + _FIRST_REASONING + json_text(text) + self._delta_end
        head = self._reasoning
        if head is None:
            head = self._reasoning = self._head + _REASONING
        return head + json_text(text) + self._delta_end

    def tool_call(self, index: int, call_id: str, name: str, *, first: bool = False) -> bytes:
        """The first fragment of client tool call ``index``: its id, type, name and empty arguments."""
        call = _escape_line_breaks(
            orjson.dumps({"id": call_id, "type": "function", "function": {"name": name, "arguments": ""}})
        )
        opening = _FIRST_CALL if first else _CALL
        return self._head + opening + str(index).encode() + b"," + call[1:] + b"]" + self._delta_end

    def tool_arguments(self, index: int, fragment: str) -> bytes:
        """A later fragment of call ``index``: its index and a piece of its JSON arguments."""
        heads = self._arguments
        if heads is None:
            heads = self._arguments = {}
        head = heads.get(index)
        if head is None:
            head = heads[index] = self._head + _CALL + str(index).encode() + b',"function":{"arguments":'
        return head + json_text(fragment) + b"}}]" + self._delta_end

    def finish(self, reason: str) -> bytes:
        """The closing chunk: an empty delta and the finish reason."""
        return (
            self._head + b'[{"index":0,"delta":{},"finish_reason":' + json_text(reason) + b"}]" + self._tail
        )

    def usage(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        total_tokens: int | None = None,
        reasoning_tokens: int | None = None,
    ) -> bytes:
        """The usage chunk sent after the finish chunk when the client asked for it."""
        counts: dict[str, object] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens if total_tokens is None else total_tokens,
        }
        if reasoning_tokens is not None:
            counts["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
        usage = orjson.dumps(counts)
        return self._head + b'[],"usage":' + usage + b"}\n\n"
