"""A lean HTTP/1.1 client on ``asyncio.Protocol``: one keep-alive connection, one request at a time.

httpx would be the bottleneck of a streaming benchmark, so the load client frames the response
itself, incrementally: httptools (llhttp, in C; it ships with ``uvicorn[standard]``) parses the
head and undoes the chunked coding, and :class:`EventReader` splits ``text/event-stream`` into
events, each with the time it arrived. It does not judge what it receives (that is
:mod:`benchmarks.checks`); it only frames it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from typing import cast

import httptools

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024


class ProtocolError(Exception):
    """The server's bytes are not a well-formed HTTP/1.1 response."""


@dataclass(slots=True)
class Response:
    """One response: status, headers, and either SSE events (with arrival times) or a body."""

    sent: float
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    head_at: float = 0.0
    body: bytearray = field(default_factory=bytearray)
    #: Each event as ``b"data: " + data`` (its ``data`` lines joined), in arrival order; an event
    #: with an ``event:`` line (Responses, Messages) as ``b"event: " + name + b"\ndata: " + data``.
    events: list[bytes] = field(default_factory=list)
    times: list[float] = field(default_factory=list)


class EventReader:
    """Splits a byte stream into SSE events; keeps each event's ``data`` and arrival time."""

    __slots__ = ("_buffer", "_cr", "_crlf", "_response")

    def __init__(self, response: Response) -> None:
        self._response = response
        self._buffer = b""
        self._cr = b""
        self._crlf: bool | None = None  # whether this stream's lines end in CR, from its first read

    def feed(self, piece: bytes, now: float) -> None:
        """Take the next bytes of the body; every event they complete is recorded at ``now``."""
        if self._crlf is None:  # a stream that turns to CR line ends later fails its checks
            self._crlf = b"\r" in piece
        if self._crlf:
            piece = self._normalise(piece)
        if self._buffer:
            piece = self._buffer + piece
        blocks = piece.split(b"\n\n")
        self._buffer = blocks.pop()
        if len(self._buffer) > MAX_HEAD:
            raise ProtocolError("an SSE event longer than 64 KiB")
        if not blocks:
            return
        events = self._response.events
        before = len(events)
        if _single_data_lines(piece, len(blocks), self._buffer) or _named_pairs(
            piece, len(blocks), self._buffer
        ):  # the common cases: one ``data:`` line each, or ``event:`` then ``data:``
            events += blocks
        else:
            events += [event for block in blocks if (event := _event_of(block)) is not None]
        self._response.times.extend([now] * (len(events) - before))

    def _normalise(self, piece: bytes) -> bytes:
        """CRLF and lone CR line ends become LF (a CR at the end waits for the next piece)."""
        piece = self._cr + piece
        self._cr = b""
        if piece.endswith(b"\r"):
            piece, self._cr = piece[:-1], b"\r"
        return piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def _single_data_lines(piece: bytes, count: int, rest: bytes) -> bool:
    """Whether each of the ``count`` events of ``piece`` is one ``data:`` line, counted in C.

    No event holds a newline when ``piece`` has exactly two per event boundary (plus those of
    ``rest``, the unfinished event); then every boundary followed by ``data: `` starts one.
    """
    if not piece.startswith(b"data: ") or piece.count(b"\n") != 2 * count + rest.count(b"\n"):
        return False
    return piece.count(b"\n\ndata: ") - rest.startswith(b"data: ") == count - 1


def _named_pairs(piece: bytes, count: int, rest: bytes) -> bool:
    """Whether each of the ``count`` events of ``piece`` is ``event: NAME`` then one ``data:``
    line (Responses, Messages), counted in C: three newlines and one ``\\ndata: `` per event, and
    every event (``rest``, the unfinished one, too) starting with ``event: ``."""
    if not piece.startswith(b"event: ") or (rest and not rest.startswith(b"event: ")):
        return False
    if piece.count(b"\n") != 3 * count + rest.count(b"\n"):
        return False
    if piece.count(b"\ndata: ") != count + rest.count(b"\ndata: "):
        return False
    return piece.count(b"\n\nevent: ") - bool(rest) == count - 1


def _event_of(block: bytes) -> bytes | None:
    """An event block as :attr:`Response.events` holds it: its joined ``data`` lines, after its
    ``event`` name if it has one; ``None`` for a block without data (a comment)."""
    lines = []
    kind = b""
    for line in block.split(b"\n"):
        name, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if name == b"data":
            lines.append(value)
        elif name == b"event":
            kind = value
    if not lines:
        return None
    data = b"\n".join(lines)
    return b"event: " + kind + b"\ndata: " + data if kind else b"data: " + data


def request_bytes(host: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """A whole ``POST`` request with a JSON body, ready to write."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        "Accept: text/event-stream, application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection(asyncio.Protocol):
    """One client connection; :meth:`request` sends a request and waits for its whole response.

    httptools (llhttp, in C) parses the response and undoes the chunked coding; its callbacks
    only collect. The body pieces of one read go to the SSE reader as one piece.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._done: asyncio.Future[Response] | None = None
        self._headed: asyncio.Future[Response] | None = None
        self._response: Response | None = None
        self._reader: EventReader | None = None
        self._pieces: list[bytes] = []
        self._complete = False
        self._now = 0.0

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self._response
        if response is not None and response.status and _delimited_by_close(response.headers):
            self.on_message_complete()
        elif self._done is not None and not self._done.done():
            self._done.set_exception(ConnectionError("the server closed the connection mid-response"))

    def data_received(self, data: bytes) -> None:
        self._now = time.perf_counter()
        try:
            if self._response is None:
                raise ProtocolError("bytes arrived with no request outstanding")
            self._parser.feed_data(data)
            self._flush()
        except (ProtocolError, ValueError, httptools.HttpParserError) as exc:
            if self._done is not None and not self._done.done():
                self._done.set_exception(ProtocolError(f"{type(exc).__name__}: {exc}"))
            self.close()
            return
        if self._complete:
            self._finish()

    # -- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._response is not None
        headers = self._response.headers
        key, text = name.decode("latin-1").lower(), value.decode("latin-1").strip()
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        response = self._response
        assert response is not None
        response.status, response.head_at = self._parser.get_status_code(), self._now
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            self._reader = EventReader(response)
        if self._headed is not None and not self._headed.done():
            self._headed.set_result(response)

    def on_body(self, body: bytes) -> None:
        self._pieces.append(body)

    def on_message_complete(self) -> None:
        self._flush()
        self._complete = True
        if self.closed:
            self._finish()

    # -- API -----------------------------------------------------------------------------------

    async def request(self, payload: bytes) -> Response:
        """Write ``payload`` (from :func:`request_bytes`) and wait for the whole response."""
        self.send(payload)
        assert self._done is not None
        try:
            return await self._done
        finally:
            self._done = self._headed = None

    def send(self, payload: bytes, *, watch_head: bool = False) -> None:
        """Write ``payload`` without waiting; with ``watch_head``, :meth:`head` waits for the head."""
        if self.closed or self.transport is None or self._done is not None:
            raise ConnectionError("the connection is closed or busy")
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        if watch_head:
            self._headed = loop.create_future()
            self._done.add_done_callback(self._settle_head)
        self._response = Response(sent=time.perf_counter())
        self._reader, self._complete = None, False
        self.transport.write(payload)

    async def head(self) -> Response:
        """The outstanding response once its status and headers are in (body still coming)."""
        if self._headed is None:
            raise ConnectionError("no request outstanding")
        return await self._headed

    def close(self) -> None:
        """Close the connection, abandoning (cancelling) any outstanding response."""
        self.closed = True
        if self._done is not None and not self._done.done():
            self._done.cancel()
        if self.transport is not None:
            self.transport.close()

    # -- internals -----------------------------------------------------------------------------

    def _flush(self) -> None:
        """Hand the body bytes read so far to the SSE reader, or to the body."""
        if not self._pieces:
            return
        piece = b"".join(self._pieces) if len(self._pieces) > 1 else self._pieces[0]
        self._pieces.clear()
        assert self._response is not None
        if self._reader is not None:
            self._reader.feed(piece, self._now)
            return
        self._response.body += piece
        if len(self._response.body) > MAX_BODY:
            raise ProtocolError("response body larger than 64 MiB")

    def _settle_head(self, done: asyncio.Future[Response]) -> None:
        """A response that failed before its head fails :meth:`head` too."""
        headed = self._headed
        if headed is not None and not headed.done():
            if done.cancelled() or done.exception() is None:
                headed.cancel()
            else:
                headed.set_exception(done.exception())  # type: ignore[arg-type]

    def _finish(self) -> None:
        response, done = self._response, self._done
        self._response, self._reader, self._complete = None, None, False
        if done is not None and not done.done() and response is not None:
            done.set_result(response)
        if response is not None and "close" in response.headers.get("connection", "").lower():
            self.close()


def _delimited_by_close(headers: dict[str, str]) -> bool:
    return "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "")


async def connect(host: str, port: int, *, tls: bool = False) -> Connection:
    """Open a :class:`Connection` (TCP_NODELAY is asyncio's default)."""
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context() if tls else None
    _, connection = await loop.create_connection(
        Connection, host, port, ssl=context, server_hostname=host if tls else None
    )
    return connection
