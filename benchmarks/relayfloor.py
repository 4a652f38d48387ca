"""The relay floor: the least a Python relay can do between a client and an LLM server.

A bare ``asyncio.Protocol`` (uvloop) on each side. A client's request (``Content-Length`` body,
keep-alive) goes upstream as is, over a pooled keep-alive connection; httptools (C) parses the
upstream's response and undoes its chunked coding, and every piece of body one read brings is
written to the client as one HTTP chunk: bytes in, re-framed bytes out. No event is split, no
JSON parsed, so the client sees the upstream's own ids. No validation, sessions, timeouts,
backpressure or error handling beyond closing both sides: it is the yardstick, not a relay to use.
"""

from __future__ import annotations

import asyncio
from typing import cast
from urllib.parse import urlsplit

import httptools

from benchmarks.framing import TooLarge, take_request


class Pool:
    """Idle keep-alive connections to the upstream, opened on demand."""

    def __init__(self, url: str) -> None:
        split = urlsplit(url)
        self.host, self.port = split.hostname or "127.0.0.1", split.port or 80
        self._head = (
            f"POST {split.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Content-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: "
        ).encode("latin-1")
        self._idle: list[UpstreamSide] = []

    def send(self, body: bytes, client: ClientSide) -> UpstreamSide | None:
        """Send ``body`` upstream for ``client`` on an idle connection; ``None``: one is being opened."""
        request = self._head + b"%d\r\n\r\n%b" % (len(body), body)
        while self._idle:
            upstream = self._idle.pop()
            if not upstream.closed:
                upstream.start(request, client)
                return upstream
        task = asyncio.get_running_loop().create_task(self._connect(request, client))
        task.add_done_callback(lambda done: client.abort() if done.cancelled() or done.exception() else None)
        return None

    async def _connect(self, request: bytes, client: ClientSide) -> None:
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_connection(lambda: UpstreamSide(self), self.host, self.port)
        if client.gone:
            self.release(upstream)
            return
        client.upstream = upstream
        upstream.start(request, client)

    def release(self, upstream: UpstreamSide) -> None:
        self._idle.append(upstream)


class UpstreamSide(asyncio.Protocol):
    """One pooled upstream connection: each response's head and body pieces go to its client."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._client: ClientSide | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._client is not None:
            self._client.abort()

    def start(self, request: bytes, client: ClientSide) -> None:
        assert self._transport is not None
        self._client = client
        self._transport.write(request)

    def close(self) -> None:
        self.closed = True
        self._client = None
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._client is not None:
                self._client.abort()
            self.close()

    def on_headers_complete(self) -> None:
        if self._client is not None:
            self._client.head(self._parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        if self._client is not None:
            self._client.piece(body)

    def on_message_complete(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.end()
        if self._parser.should_keep_alive() and not self.closed:
            self._pool.release(self)
        else:
            self.close()


class ClientSide(asyncio.Protocol):
    """One client connection: requests one at a time, each relayed through the pool."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self.upstream: UpstreamSide | None = None
        self.gone = False
        self._busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport, self.gone = None, True
        if self.upstream is not None:  # a client gone mid-answer: that upstream answer is lost
            self.upstream.close()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._next_request()

    def head(self, status: int) -> None:
        if self._transport is not None:
            self._transport.write(
                b"HTTP/1.1 %d OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" % status
            )

    def piece(self, body: bytes) -> None:
        if self._transport is not None:
            self._transport.write(b"%x\r\n%b\r\n" % (len(body), body))

    def end(self) -> None:
        self.upstream, self._busy = None, False
        if self._transport is not None:
            self._transport.write(b"0\r\n\r\n")
            if self._buffer:
                self._next_request()

    def abort(self) -> None:
        self.upstream = None
        if self._transport is not None:
            self._transport.close()

    def _next_request(self) -> None:
        try:
            body = take_request(self._buffer)
        except TooLarge:
            if self._transport is not None:
                self._transport.close()
            return
        if body is None:
            return
        self._busy = True
        self.upstream = self._pool.send(body, self)
