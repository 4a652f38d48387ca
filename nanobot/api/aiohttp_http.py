"""aiohttp's server with the head limits of :mod:`nanobot.api.limits`.

aiohttp bounds heads itself (``max_line_size``, ``max_field_size``, ``max_headers``: its C parser
enforces all three) and its ``keepalive_timeout`` closes a connection whose next request head
has not fully arrived, counted from when it opens or its previous response ends: exactly the
header deadline. What it does differently is the answer: a plain-text 400, logged as an ERROR
with a traceback per request. :class:`LimitedRequestHandler` answers 431 with OpenAI's error
JSON instead, as the uvicorn stack does, and logs it at DEBUG. Request bodies are not
decompressed (``auto_decompress=False``): aiohttp would inflate a ``Content-Encoding: gzip`` body
as it arrives, in the event loop and without bound (200 MB from 199 KB, half a second of loop),
before the app could refuse it; the app refuses compressed bodies (415), as on the ASGI stack.

``LimitedAppRunner(app, limits=...)`` is ``web.AppRunner`` with all of this; with a plain
``web.AppRunner`` or ``web.run_app``, ``handler_options(limits)`` as keyword arguments gives the
same limits with aiohttp's own 400 answer.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_request import BaseRequest

from nanobot.api.limits import HeadersTooLarge, HeadLimits, error_body, field_too_large, too_many_headers

logger = logging.getLogger("nanobot.api")
_TOO_MANY_HEADERS = "Too many headers received"  # aiohttp's message; it has no class of its own


def handler_options(limits: HeadLimits) -> dict[str, Any]:
    """``RequestHandler`` keyword arguments (``AppRunner``, ``run_app``) enforcing ``limits``."""
    return {
        "keepalive_timeout": limits.header_timeout,
        "max_line_size": limits.max_header_size,
        "max_field_size": limits.max_header_size,
        "max_headers": limits.max_headers,
        "auto_decompress": False,
    }


class LimitedRequestHandler(web.RequestHandler):
    """aiohttp's connection handler, answering an oversized head 431 with OpenAI's error JSON."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        error = self._head_error(exc)
        if error is None:
            return super().handle_error(request, status, exc, message)
        logger.debug("refusing a request head: %s", error.message)
        response = web.Response(status=error.status, body=error_body(error), content_type="application/json")
        response.force_close()
        return response

    def _head_error(self, exc: BaseException | None) -> HeadersTooLarge | None:
        limits = HeadLimits(self.max_field_size, self.max_headers, self.keepalive_timeout)
        if isinstance(exc, LineTooLong):
            return field_too_large(limits)
        if isinstance(exc, BadHttpMessage) and exc.message == _TOO_MANY_HEADERS:
            return too_many_headers(limits)
        return None


class _Server(web.Server):
    """``web.Server`` making :class:`LimitedRequestHandler` connections.

    aiohttp builds its ``Server`` itself and has no option for the handler class, so
    :class:`LimitedAppRunner` re-classes the one it builds; ``__call__`` is aiohttp's own
    minus its fallback for handler arguments it does not know.
    """

    def __call__(self) -> web.RequestHandler:
        return LimitedRequestHandler(self, loop=self._loop, **self._kwargs)


class LimitedAppRunner(web.AppRunner):
    """``web.AppRunner`` enforcing ``limits`` on request heads, on every connection."""

    def __init__(self, app: web.Application, *, limits: HeadLimits | None = None, **kwargs: Any) -> None:
        super().__init__(app, **{**handler_options(limits or HeadLimits()), **kwargs})

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server
        return server
