"""uvicorn's httptools protocol with bounded request heads and a deadline for them to arrive.

httptools has no header limits and buffers a header value whole before handing it over, so a
32 MB header costs 32 MB (more while it grows); uvicorn only times out a keep-alive connection
until its first byte. :class:`LimitedHttpToolsProtocol` adds what aiohttp does out of the box:

- a request target, header name or header value over ``max_header_size`` bytes, or more than
  ``max_headers`` headers, is answered 431 with OpenAI's error JSON and the connection closed;
  a :class:`HeadMeter` counts the head's lines as they arrive, so an endless one is refused
  after about twice ``max_header_size`` bytes instead of being buffered;
- a connection must deliver a complete head within ``header_timeout`` of opening or of the end
  of its previous response, else it is closed: silent, idle and byte-by-byte clients alike.

Use it with ``uvicorn.Config(app, **uvicorn_options(limits))``, or on the command line as
``uvicorn asgi.app:app --http asgi.app:HttpProtocol`` (limits from ``NANOBOT_*``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, ClassVar

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from nanobot.api.limits import (
    HeadersTooLarge,
    HeadLimits,
    error_body,
    field_too_large,
    too_many_headers,
)

logger = logging.getLogger("nanobot.api")

#: Bytes a head line may have beyond a name and a value of ``max_header_size`` each: the
#: method, the HTTP version, ": ", spaces, CR. Lines are metered only to bound memory; the
#: exact limits are checked per field, once httptools hands it over.
LINE_SLACK = 64


class HeadMeter:
    """Counts a request head's lines and their length as its bytes arrive, chunk by chunk.

    It stops at the blank line that ends the head; bytes after it (a body) are not its business.
    """

    __slots__ = ("_line", "_line_limit", "_lines", "_max_lines", "limits")

    def __init__(self, limits: HeadLimits) -> None:
        self.limits = limits
        self._line_limit = 2 * limits.max_header_size + LINE_SLACK
        self._max_lines = limits.max_headers + 1  # the request line, then the headers
        self._line = 0
        self._lines = 0

    def reset(self) -> None:
        """A new head starts."""
        self._line = 0
        self._lines = 0

    def check(self, data: bytes) -> HeadersTooLarge | None:
        """The error if ``data`` takes the head over a limit, else None."""
        if self._lines == 0 and self._line == 0:
            end = data.find(b"\r\n\r\n")  # a whole small head in one chunk: the common case
            if 0 <= end <= self._line_limit and data.count(b"\n", 0, end) < self._max_lines:
                return None
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            length = self._line + end - start
            self._line = 0
            start = end + 1
            if length <= 1:  # an empty line ("\r"): the end of the head, or before its start
                if self._lines:
                    return None
                continue
            if length > self._line_limit:
                return field_too_large(self.limits)
            self._lines += 1
            if self._lines > self._max_lines:
                return too_many_headers(self.limits)
        self._line += len(data) - start
        return field_too_large(self.limits) if self._line > self._line_limit else None


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` refusing oversized heads (431) and closing slow or idle ones."""

    limits: ClassVar[HeadLimits] = HeadLimits()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._meter = HeadMeter(self.limits)
        self._awaiting_head = True
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None

    # Deadline: armed while a head is awaited and no response is being written.

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_head = True
        self._meter.reset()
        self._arm_head_timer()  # the response may have ended before the body did

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        responding = self.cycle is not None and not self.cycle.response_complete
        if not self._awaiting_head or responding or self.transport.is_closing():
            return
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._awaiting_head and not self.transport.is_closing():
            logger.debug("closing a connection that sent no complete request head in time")
            self.transport.close()

    # Size: metered as bytes arrive, then checked exactly per field.

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._awaiting_head and (error := self._meter.check(data)) is not None:
            self._refuse(error)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeadersTooLarge):
                self._refuse(exc.__context__)
            else:
                self._invalid_request()
        except httptools.HttpParserError:
            self._invalid_request()
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > self.limits.max_header_size:
            raise field_too_large(self.limits)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            raise too_many_headers(self.limits)
        if max(len(name), len(value)) > self.limits.max_header_size:
            raise field_too_large(self.limits)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def _invalid_request(self) -> None:
        message = "Invalid HTTP request received."  # what uvicorn answers and logs
        self.logger.warning(message)
        self.send_400_response(message)

    def _refuse(self, error: HeadersTooLarge) -> None:
        """Answer 431 with OpenAI's error JSON and close, reading nothing more."""
        logger.debug("refusing a request head: %s", error.message)
        self._awaiting_head = False
        self._cancel_head_timer()
        body = error_body(error)
        head = [STATUS_LINE[error.status]]
        head.extend(b"%s: %s\r\n" % pair for pair in self.server_state.default_headers)
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def protocol_class(head_limits: HeadLimits) -> type[LimitedHttpToolsProtocol]:
    """A :class:`LimitedHttpToolsProtocol` enforcing ``head_limits``, for ``uvicorn.Config(http=...)``."""

    class Protocol(LimitedHttpToolsProtocol):
        limits = head_limits

    return Protocol


def uvicorn_options(limits: HeadLimits) -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments enforcing ``limits``.

    uvicorn's own keep-alive timeout (idle after a response, until the next byte) is set no
    shorter than the header deadline, so the deadline alone decides, as on aiohttp.
    """
    return {"http": protocol_class(limits), "timeout_keep_alive": math.ceil(limits.header_timeout)}
