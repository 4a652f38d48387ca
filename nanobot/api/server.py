"""The aiohttp adapter: routes requests to :class:`ChatService` and writes its replies.

Deliberate difference from the ASGI adapter: a client disconnect is detected by aiohttp's
handler cancellation, which ``create_app`` turns on for the app itself (``handler_args``), so
``web.run_app`` and ``AppRunner`` cancel the agent without extra flags. The ASGI adapter listens
for ``http.disconnect`` instead. Also: the body is read through a wrapper that turns aiohttp's
body errors into a 400 and sends ``100 Continue`` only once the body is read, as uvicorn does
(aiohttp's would precede a 413 or 401 the service gives from the head alone); aiohttp's ERROR
tracebacks for a client's malformed request are logged as one INFO line; the drain runs in
``on_shutdown``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Unpack

from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from nanobot.api.access import CLIENT_LEFT, error_code
from nanobot.api.dialects.messages import COUNT_TOKENS_PATH
from nanobot.api.replies import JSONReply, StreamReply
from nanobot.api.service import ChatService, ServiceOptions
from nanobot.api.sse import DONE, ChunkFormat
from nanobot.core.agent import Agent
from nanobot.core.errors import InvalidRequest

SERVICE = web.AppKey("nanobot_service", ChatService)
_SSE_DONE = DONE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _sse_chunk(delta: str, model: str, chunk_id: str, finish_reason: str | None = None) -> bytes:
    """One chunk event (kept for callers of the original nanobot server)."""
    chunk_format = ChunkFormat(chunk_id, int(time.time()), model, include_usage=False)
    return chunk_format.finish(finish_reason) if finish_reason else chunk_format.delta(delta)


def create_app(
    agent: Agent,
    model_name: str = "nanobot",
    request_timeout: float = 120.0,
    api_key: str | None = None,
    prepare_agent: Callable[[], object] | None = None,
    **options: Unpack[ServiceOptions],
) -> web.Application:
    """An aiohttp application serving ``agent`` as ``model_name``."""
    service = ChatService(
        agent,
        model_name=model_name,
        request_timeout=request_timeout,
        api_key=api_key,
        prepare_agent=prepare_agent,
        **options,
    )
    app = web.Application(
        middlewares=[_route],
        handler_args={"handler_cancellation": True},
        client_max_size=service.max_body_bytes,
    )
    app[SERVICE] = service
    logging.getLogger("aiohttp.server").addFilter(_CLIENT_FAULTS)  # once: filters are a set
    for path in service.dialects:
        app.router.add_post(path, _turn, expect_handler=_expect)
    app.router.add_post(COUNT_TOKENS_PATH, _count_tokens, expect_handler=_expect)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model_id:.+}", _model)
    app.router.add_get("/v1/responses/{response_id}", _get_response)
    app.router.add_delete("/v1/responses/{response_id}", _delete_response)
    app.router.add_get("/health", _health)
    app.router.add_get("/openapi.json", _openapi)
    app.router.add_get("/metrics", _metrics)
    if service.ui is not None:
        app.router.add_get("/", _page)
        app.router.add_get("/ui/{name}", _page)

    async def drain(app: web.Application) -> None:
        await app[SERVICE].drain()  # the sites are closed; open turns get the drain time

    async def close_agent(app: web.Application) -> None:
        await app[SERVICE].aclose()

    app.on_shutdown.append(drain)
    app.on_cleanup.append(close_agent)
    return app


def _respond(reply: JSONReply) -> web.Response:
    if reply.status == 204:
        return web.Response(status=204, headers=reply.headers)
    return web.Response(
        status=reply.status, body=reply.body, headers={**reply.headers, "Content-Type": reply.content_type}
    )


async def _expect(request: web.Request) -> None:
    """``Expect: 100-continue`` is answered when the body is read (:func:`_body`), not here;
    other expectations are ignored, as uvicorn does (RFC 9110 allows either that or 417)."""


def _awaits_continue(request: web.Request) -> bool:
    """The client waits for ``100 Continue`` before it sends the body."""
    return (
        request.version == HttpVersion11
        and request.headers.get("Expect", "").lower() == "100-continue"
        and not request.content.is_eof()
    )


async def _body(request: web.Request, continue_first: bool) -> AsyncIterator[bytes]:
    """The body's chunks, after ``100 Continue`` if the client waits for it; a body aiohttp
    cannot read (bad chunked framing) is the client's fault."""
    if continue_first:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's own handler: the response has not begun
    try:
        async for chunk in request.content.iter_any():
            yield chunk
    except (RequestPayloadError, HttpProcessingError) as exc:
        raise InvalidRequest(f"The request body could not be read: {exc}.", code="invalid_body") from None


def _whole_body(request: web.Request) -> bytes | None:
    """The body, when all of it has arrived already (the usual case): no read to wait for."""
    content = request.content
    if not content.is_eof() or content.exception() is not None:
        return None
    return content.read_nowait()


async def _turn(request: web.Request) -> web.StreamResponse:
    """``POST`` to a turn's route (chat completions, or another dialect's)."""
    waits = _awaits_continue(request)
    reply = await request.app[SERVICE].turn(
        request.path,
        request.headers,
        _whole_body(request) or _body(request, waits),
        request.content_length,
        local_address=_local_address(request),
        client=request.remote,
    )
    if not isinstance(reply, StreamReply):
        answer = _respond(reply)
        if waits and not request.content.is_eof():
            answer.force_close()  # refused from the head: the client never sends the body
        return answer
    # The stream, in this frame (one coroutine less per open stream).
    response = web.StreamResponse(status=200, headers=reply.headers)
    if not await reply.write_to(response.write, start=lambda: response.prepare(request)):
        if request.transport is not None:
            request.transport.abort()  # a client that stopped reading would stall write_eof too
        raise ConnectionResetError("client stopped reading")
    await response.write_eof()
    return response


def _local_address(request: web.Request) -> str | None:
    """The address the connection came in on (for the rebinding guard)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return sockname[0] if sockname else None


async def _count_tokens(request: web.Request) -> web.StreamResponse:
    reply = await request.app[SERVICE].count_tokens(
        request.headers,
        _whole_body(request) or _body(request, _awaits_continue(request)),
        request.content_length,
        local_address=_local_address(request),
    )
    return _respond(reply)


async def _models(request: web.Request) -> web.StreamResponse:
    return _respond(request.app[SERVICE].list_models(request.headers))


async def _model(request: web.Request) -> web.StreamResponse:
    return _respond(request.app[SERVICE].get_model(request.headers, request.match_info["model_id"]))


async def _get_response(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    response_id = request.match_info["response_id"]
    return _respond(
        await service.get_response(request.headers, response_id, local_address=_local_address(request))
    )


async def _delete_response(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    response_id = request.match_info["response_id"]
    reply = await service.delete_response(request.headers, response_id, local_address=_local_address(request))
    return _respond(reply)


async def _health(request: web.Request) -> web.StreamResponse:
    return _respond(request.app[SERVICE].health(request.headers))


async def _metrics(request: web.Request) -> web.StreamResponse:
    return _respond(request.app[SERVICE].metrics(request.headers))


async def _page(request: web.Request) -> web.StreamResponse:
    # The raw path: aiohttp reads a target such as '//health' as a URL with a host, whose path is '/'.
    path = request.raw_path.partition("?")[0]
    return _respond(request.app[SERVICE].page(request.headers, path))


async def _openapi(request: web.Request) -> web.StreamResponse:
    return _respond(request.app[SERVICE].openapi(request.headers))


class _ClientFaults(logging.Filter):
    """aiohttp logs a client's malformed request (or its early hang-up) as an ERROR traceback:
    turn each into one INFO line, so a fuzzer or a port scanner cannot flood the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError | RequestPayloadError | ConnectionError):
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {exc}"
            record.args = ()
            record.exc_info = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_CLIENT_FAULTS = _ClientFaults()


@web.middleware
async def _route(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS preflights, OpenAI error JSON for unknown routes and methods, and the request log
    of every route but a turn's (the core logs a turn when it ends)."""
    service = request.app[SERVICE]
    if request.method == "POST" and request.path in service.dialects:
        return await handler(request)
    access = service.access(request.method, request.path, request.headers, request.remote)
    try:
        response = await _other(request, handler, service)
    except BaseException as exc:  # cancelled: the client left before its answer; else a bug of ours
        access.done(CLIENT_LEFT if isinstance(exc, asyncio.CancelledError) else 500)
        raise
    access.request_id = response.headers.get("x-request-id")
    body = response.body if isinstance(response, web.Response) else None
    error = error_code(body) if response.status >= 400 and isinstance(body, bytes) else None
    access.done(response.status, error=error)
    return response


async def _other(request: web.Request, handler: Handler, service: ChatService) -> web.StreamResponse:
    if request.method == "OPTIONS":
        return _respond(service.preflight(request.headers, request.path))
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return _respond(service.not_found(request.headers, request.method, request.path))
    except web.HTTPMethodNotAllowed as exc:
        response = _respond(service.method_not_allowed(request.headers, request.method, request.path))
        response.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
        return response
