"""The cheap upstream of W4: an OpenAI-compatible LLM server that costs next to nothing.

``python -m benchmarks.upstream CPU`` serves ``127.0.0.1:0`` on uvloop, pinned to ``CPU`` (the
load client's core), and prints ``READY <port>``. Like the agents of the other workloads, it reads
its workload from the last user message, ``"<tokens> <delay>"``, and streams what vLLM would:
``text/event-stream``, chunked, keep-alive, one ``transport.write`` per chunk: the first delta
with the role and the first token, one token per event (the same tokens as every other server),
a ``stop`` chunk, a usage chunk when ``stream_options.include_usage``, then ``[DONE]``. Token
``k`` leaves ``k * delay`` seconds after the request came in (an absolute schedule, so timer
lateness never adds up). The chunks are pre-encoded: per request only the head (id, created,
model) is built, per token one cached byte string is framed. The answer names the model the
request asked for. A request with ``"stream": false`` gets a whole ``chat.completion``.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from typing import Any, cast

import httptools
import orjson

from benchmarks.agents import Workload, expected_text, parse_prompt, token

STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)
TOKEN_TAIL = b'},"finish_reason":null}]}\n\n'
_TAILS: list[bytes] = []  # the JSON of token i and the rest of its event, built once
_IDS = itertools.count(1)


def tail(index: int) -> bytes:
    """Everything of token ``index``'s event after ``"content":``."""
    while len(_TAILS) <= index:
        _TAILS.append(orjson.dumps(token(len(_TAILS))) + TOKEN_TAIL)
    return _TAILS[index]


def frame(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def request_text(body: dict[str, Any]) -> str:
    """The text of the last user message (parts joined), which names the workload."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content if isinstance(content, str) else ""
    return ""


class Stream:
    """One streamed answer, written on its schedule to one connection."""

    __slots__ = (
        "_content",
        "_count",
        "_handle",
        "_loop",
        "_next",
        "_start",
        "_usage",
        "_work",
        "done",
        "head",
    )

    def __init__(self, protocol: UpstreamProtocol, body: dict[str, Any], work: Workload) -> None:
        self._loop = asyncio.get_running_loop()
        model = orjson.dumps(body.get("model") or "upstream")
        created = int(time.time())
        self.head = (
            b'data: {"id":"chatcmpl-up%d","object":"chat.completion.chunk","created":%d,"model":%b'
            % (
                next(_IDS),
                created,
                model,
            )
        )
        self._content = self.head + b',"choices":[{"index":0,"delta":{"content":'
        options = body.get("stream_options")
        self._usage = isinstance(options, dict) and bool(options.get("include_usage"))
        self._work, self._count = work, len(body.get("messages") or ())
        self._next, self._handle = 0, cast(asyncio.Handle | None, None)
        self._start = self._loop.time()
        self.done = protocol.stream_done

    def begin(self, transport: asyncio.Transport) -> None:
        transport.write(STREAM_HEAD)
        work = self._work
        if work.tokens == 0:
            self._finish(transport)
        elif work.delay > 0 or work.yields:
            self._tick(transport)
        else:  # the firehose: every chunk at once, still one write each
            for _ in range(work.tokens):
                self._write(transport)
            self._finish(transport)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def _write(self, transport: asyncio.Transport) -> None:
        index = self._next
        self._next += 1
        if index:
            data = self._content + tail(index)
        else:
            data = self.head + b',"choices":[{"index":0,"delta":{"role":"assistant","content":' + tail(0)
        transport.write(b"%x\r\n%b\r\n" % (len(data), data))

    def _tick(self, transport: asyncio.Transport) -> None:
        self._write(transport)
        if self._next == self._work.tokens:
            self._handle = None
            self._finish(transport)
        elif self._work.delay > 0:
            when = self._start + self._next * self._work.delay
            self._handle = self._loop.call_at(when, self._tick, transport)
        else:
            self._handle = self._loop.call_soon(self._tick, transport)

    def _finish(self, transport: asyncio.Transport) -> None:
        transport.write(frame(self.head + b',"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'))
        if self._usage:
            tokens, prompt = self._work.tokens, self._count
            usage = (
                b',"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}\n\n'
            )
            transport.write(frame(self.head + usage % (prompt, tokens, prompt + tokens)))
        transport.write(frame(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        self.done()


def completion(body: dict[str, Any], work: Workload) -> bytes:
    """A whole non-streamed answer, with its head."""
    count = len(body.get("messages") or ())
    answer = orjson.dumps(
        {
            "id": f"chatcmpl-up{next(_IDS)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or "upstream",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": expected_text(work.tokens)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": count,
                "completion_tokens": work.tokens,
                "total_tokens": count + work.tokens,
            },
        }
    )
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    return head % len(answer) + answer


class UpstreamProtocol(asyncio.Protocol):
    """One connection: requests parsed by httptools, answered one at a time, keep-alive."""

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._body: list[bytes] = []
        self._queue: list[tuple[bytes, bool]] = []  # complete requests: body, keep-alive
        self._stream: Stream | None = None
        self._close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if self._stream is not None:
            self._stream.cancel()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                self._transport.close()
            return
        if self._stream is None:
            self._serve_next()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._queue.append((b"".join(self._body), self._parser.should_keep_alive()))
        self._body = []

    def stream_done(self) -> None:
        self._stream = None
        if self._close_after and self._transport is not None:
            self._transport.close()
        elif self._queue:
            asyncio.get_running_loop().call_soon(self._serve_next)

    def _serve_next(self) -> None:
        transport = self._transport
        while transport is not None and self._stream is None and self._queue:
            raw, keep_alive = self._queue.pop(0)
            self._close_after = not keep_alive
            try:
                body = orjson.loads(raw)
                work = parse_prompt(request_text(body))
            except (orjson.JSONDecodeError, AttributeError, TypeError):
                transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                transport.close()
                return
            if body.get("stream"):
                self._stream = Stream(self, body, work)
                self._stream.begin(transport)
            else:
                transport.write(completion(body, work))
                if self._close_after:
                    transport.close()


def main(cpu: int | None) -> None:
    """Serve until terminated."""
    import uvloop

    from benchmarks.processes import prepare_process
    from benchmarks.servers import announce, listening_socket, until_terminated

    prepare_process(cpu)

    async def serve() -> None:
        sock = listening_socket()
        server = await asyncio.get_running_loop().create_server(UpstreamProtocol, sock=sock)
        announce("READY", sock.getsockname()[1])
        try:
            await until_terminated()
        finally:
            server.close()

    uvloop.run(serve())


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != "-" else None)
