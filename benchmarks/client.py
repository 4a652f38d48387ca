"""A lean HTTP/1.1 client on ``asyncio.Protocol``: one keep-alive connection, one request at a time.

httpx would be the bottleneck of a streaming benchmark, so the load client parses the response
itself, incrementally: the status line and headers, then a chunked, sized or close-delimited body,
and, for ``text/event-stream``, the SSE events with the time each arrived. It does not judge what
it receives (that is :mod:`benchmarks.checks`); it only frames it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from typing import cast

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
    events: list[bytes] = field(default_factory=list)
    times: list[float] = field(default_factory=list)


class EventReader:
    """Splits a byte stream into SSE events; keeps each event's ``data`` and arrival time."""

    __slots__ = ("_buffer", "_cr", "_response")

    def __init__(self, response: Response) -> None:
        self._response = response
        self._buffer = bytearray()
        self._cr = b""

    def feed(self, piece: bytes, now: float) -> None:
        if self._cr or b"\r" in piece:
            piece = self._normalise(piece)
        buffer = self._buffer
        buffer += piece
        start = 0
        while (end := buffer.find(b"\n\n", start)) >= 0:
            self._event(bytes(buffer[start:end]), now)
            start = end + 2
        if start:
            del buffer[:start]
        if len(buffer) > MAX_HEAD:
            raise ProtocolError("an SSE event longer than 64 KiB")

    def _normalise(self, piece: bytes) -> bytes:
        """CRLF and lone CR line ends become LF (a CR at the end waits for the next piece)."""
        piece = self._cr + piece
        self._cr = b""
        if piece.endswith(b"\r"):
            piece, self._cr = piece[:-1], b"\r"
        return piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

    def _event(self, block: bytes, now: float) -> None:
        if block.startswith(b"data: ") and b"\n" not in block:
            data: bytes | None = block[6:]
        else:
            data = _data_field(block)
        if data is not None:
            self._response.events.append(data)
            self._response.times.append(now)


def _data_field(block: bytes) -> bytes | None:
    """The joined ``data`` lines of an event block; ``None`` for a comment-only block."""
    lines = []
    for line in block.split(b"\n"):
        name, _, value = line.partition(b":")
        if name == b"data":
            lines.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(lines) if lines else None


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
    """One client connection; :meth:`request` sends a request and waits for its whole response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._done: asyncio.Future[Response] | None = None
        self._headed: asyncio.Future[Response] | None = None
        self._response: Response | None = None
        self._reader: EventReader | None = None
        self._head = bytearray()
        self._raw = bytearray()
        self._mode = ""  # "" while reading the head; then "chunked", "length" or "close"
        self._remaining = 0
        self._crlf = False

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._mode == "close":
            self._finish()
        elif self._done is not None and not self._done.done():
            self._done.set_exception(ConnectionError("the server closed the connection mid-response"))

    def data_received(self, data: bytes) -> None:
        try:
            self._receive(data, time.perf_counter())
        except (ProtocolError, ValueError) as exc:
            if self._done is not None and not self._done.done():
                self._done.set_exception(ProtocolError(str(exc)))
            self.close()

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
        self._mode, self._reader = "", None
        self.transport.write(payload)

    async def head(self) -> Response:
        """The outstanding response once its status and headers are in (body still coming)."""
        if self._headed is None:
            raise ConnectionError("no request outstanding")
        return await self._headed

    def _settle_head(self, done: asyncio.Future[Response]) -> None:
        """A response that failed before its head fails :meth:`head` too."""
        headed = self._headed
        if headed is not None and not headed.done():
            if done.cancelled() or done.exception() is None:
                headed.cancel()
            else:
                headed.set_exception(done.exception())  # type: ignore[arg-type]

    def close(self) -> None:
        """Close the connection, abandoning (cancelling) any outstanding response."""
        self.closed = True
        if self._done is not None and not self._done.done():
            self._done.cancel()
        if self.transport is not None:
            self.transport.close()

    # -- parsing -------------------------------------------------------------------------------

    def _receive(self, data: bytes, now: float) -> None:
        if self._response is None:
            raise ProtocolError("bytes arrived with no request outstanding")
        if not self._mode:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > MAX_HEAD:
                    raise ProtocolError("response head longer than 64 KiB")
                return
            data = bytes(self._head[end + 4 :])
            self._start(bytes(self._head[:end]), now)
            self._head.clear()
        if self._mode == "chunked":
            self._dechunk(data, now)
        elif data or (self._mode == "length" and self._remaining == 0):
            self._sized(data, now)

    def _start(self, head: bytes, now: float) -> None:
        """Read the status line and headers; choose how the body is delimited."""
        assert self._response is not None
        status_line, *lines = head.decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise ProtocolError(f"bad status line {status_line!r}")
        response = self._response
        response.status, response.head_at = int(rest[:3]), now
        for line in lines:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"bad header line {line!r}")
            key = name.strip().lower()
            old = response.headers.get(key)
            response.headers[key] = f"{old}, {value.strip()}" if old else value.strip()
        if "chunked" in response.headers.get("transfer-encoding", "").lower():
            self._mode, self._remaining, self._crlf = "chunked", 0, False
        elif "content-length" in response.headers:
            self._mode, self._remaining = "length", int(response.headers["content-length"])
        else:
            self._mode = "close"
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            self._reader = EventReader(response)
        if self._headed is not None and not self._headed.done():
            self._headed.set_result(response)

    def _sized(self, data: bytes, now: float) -> None:
        """A body delimited by Content-Length or by the end of the connection."""
        if self._mode == "length":
            if len(data) > self._remaining:
                raise ProtocolError("more body bytes than Content-Length")
            self._remaining -= len(data)
        self._content(data, now)
        if self._mode == "length" and self._remaining == 0:
            self._finish()

    def _dechunk(self, data: bytes, now: float) -> None:
        """Chunked transfer coding, incrementally: each chunk's bytes go to :meth:`_content`."""
        raw = self._raw
        raw += data
        pos, size = 0, len(raw)
        while pos < size:
            if self._remaining:
                take = min(size - pos, self._remaining)
                self._content(bytes(raw[pos : pos + take]), now)
                pos += take
                self._remaining -= take
                self._crlf = self._remaining == 0
            elif self._crlf:
                if size - pos < 2:
                    break
                if raw[pos : pos + 2] != b"\r\n":
                    raise ProtocolError("a chunk not followed by CRLF")
                pos, self._crlf = pos + 2, False
            else:
                end = raw.find(b"\r\n", pos)
                if end < 0:
                    break
                length = int(bytes(raw[pos:end]).split(b";", 1)[0], 16)
                if length == 0:
                    if raw.find(b"\r\n", end + 2) < 0:  # the (empty) trailer section
                        break
                    raw.clear()
                    self._finish()
                    return
                pos, self._remaining = end + 2, length
        del raw[:pos]
        if len(raw) > MAX_HEAD:
            raise ProtocolError("a chunk-size line longer than 64 KiB")

    def _content(self, piece: bytes, now: float) -> None:
        if self._reader is not None:
            self._reader.feed(piece, now)
            return
        assert self._response is not None
        self._response.body += piece
        if len(self._response.body) > MAX_BODY:
            raise ProtocolError("response body larger than 64 MiB")

    def _finish(self) -> None:
        response, done = self._response, self._done
        self._mode, self._response, self._reader = "", None, None
        if done is not None and not done.done() and response is not None:
            done.set_result(response)
        if response is not None and response.headers.get("connection", "").lower() == "close":
            self.close()


async def connect(host: str, port: int, *, tls: bool = False) -> Connection:
    """Open a :class:`Connection` (TCP_NODELAY is asyncio's default)."""
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context() if tls else None
    _, connection = await loop.create_connection(
        Connection, host, port, ssl=context, server_hostname=host if tls else None
    )
    return connection
