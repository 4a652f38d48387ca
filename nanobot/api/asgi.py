"""The Starlette/ASGI adapter: routes requests to :class:`ChatService` and writes its replies.

Deliberate difference from the aiohttp adapter: a disconnect is detected by listening for
``http.disconnect`` on ``receive`` for the whole life of a chat request (reading the body first),
and the request's work is cancelled when it arrives. Plain ASGI only: Starlette's
``BaseHTTPMiddleware`` would hide the disconnect.

Other deliberate differences, each making this stack answer as aiohttp does: an HTTP/1.1
request without ``Host`` is refused here (httptools lets it through; aiohttp's parser refuses
it); trailing slashes are not redirected; drain on shutdown is chained in front of the server's
signal handlers in the lifespan (uvicorn would otherwise wait for streams without limit), where
aiohttp drains in ``on_shutdown``; uvicorn's ERROR for an unfinished stream is logged as INFO.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Unpack

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nanobot.api.access import CLIENT_LEFT, error_code
from nanobot.api.dialects.messages import COUNT_TOKENS_PATH
from nanobot.api.replies import JSONReply, StreamReply
from nanobot.api.service import ChatService, ServiceOptions
from nanobot.api.shutdown import drain_on_signals
from nanobot.core.agent import Agent
from nanobot.core.errors import InvalidRequest

logger = logging.getLogger("nanobot.api")


def create_asgi_app(
    agent: Agent,
    model_name: str = "nanobot",
    request_timeout: float = 120.0,
    api_key: str | None = None,
    prepare_agent: Callable[[], object] | None = None,
    **options: Unpack[ServiceOptions],
) -> Starlette:
    """A Starlette application serving ``agent`` as ``model_name``."""
    service = ChatService(
        agent,
        model_name=model_name,
        request_timeout=request_timeout,
        api_key=api_key,
        prepare_agent=prepare_agent,
        **options,
    )

    async def models(request: Request) -> Response:
        return _respond(service.list_models(request.headers))

    async def model(request: Request) -> Response:
        return _respond(service.get_model(request.headers, request.path_params["model_id"]))

    async def count_tokens(request: Request) -> Response:
        server = request.scope.get("server")
        reply = await service.count_tokens(
            request.headers,
            _stream(request),
            _declared(request.headers.get("content-length")),
            local_address=server[0] if server else None,
        )
        return _respond(reply)

    async def metrics(request: Request) -> Response:
        return _respond(service.metrics(request.headers))

    async def health(request: Request) -> Response:
        return _respond(service.health(request.headers))

    async def openapi(request: Request) -> Response:
        return _respond(service.openapi(request.headers))

    async def page(request: Request) -> Response:
        return _respond(service.page(request.headers, _route_path(request.scope)))

    async def stored_response(request: Request) -> Response:
        server = request.scope.get("server")
        local = server[0] if server else None
        response_id = request.path_params["response_id"]
        if request.method == "DELETE":
            return _respond(await service.delete_response(request.headers, response_id, local_address=local))
        return _respond(await service.get_response(request.headers, response_id, local_address=local))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            reply = service.method_not_allowed(request.headers, request.method, request.url.path)
            return _respond(reply, {**(exc.headers or {})})
        return _respond(service.not_found(request.headers, request.method, request.url.path))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        undo = drain_on_signals(service)  # under uvicorn: drain before it waits for streams
        try:
            yield
        finally:
            undo()
            await service.drain()  # nothing left to drain when a signal already did
            await service.aclose()

    turns = {path: ChatEndpoint(service, path) for path in service.dialects}
    app = Starlette(
        routes=[
            *(Route(path, endpoint, methods=["POST"]) for path, endpoint in turns.items()),
            Route(COUNT_TOKENS_PATH, count_tokens, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", model, methods=["GET"]),
            Route("/v1/responses/{response_id}", stored_response, methods=["GET", "DELETE"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            *(
                (Route("/", page, methods=["GET"]), Route("/ui/{name}", page, methods=["GET"]))
                if service.ui is not None
                else ()
            ),
        ],
        exception_handlers={404: http_error, 405: http_error},
        lifespan=lifespan,
    )
    logging.getLogger("uvicorn.error").addFilter(_CLIENT_FAULTS)  # once: filters are a set
    app.router.redirect_slashes = False  # '/health/' is a 404, as on aiohttp, not a redirect
    app.add_middleware(Shortcuts, service=service, turns=turns)
    app.state.service = service
    return app


class _ClientFaults(logging.Filter):
    """uvicorn logs a stream we leave unfinished (a client that stopped reading, dropped after
    ``write_timeout``: an ASGI app cannot abort the connection) as an ERROR; it is the client's
    fault, already logged once as a warning by the core: INFO here."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "ASGI callable returned without completing response.":
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_CLIENT_FAULTS = _ClientFaults()


class Shortcuts:
    """Before Starlette's routing: answers ``OPTIONS`` (CORS preflight) as the aiohttp adapter
    does, and hands a ``POST`` to a turn's route straight to its endpoint.

    Turn routes are the hot ones and a stream holds its whole call stack open while it lasts;
    skipping the exception middleware and the router saves their frames on every open stream.
    The router still has the route, for the 405 answer to other methods.
    """

    def __init__(self, app: ASGIApp, service: ChatService, turns: dict[str, ChatEndpoint]) -> None:
        self._app = app
        self._service = service
        self._turns = turns

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope.get("http_version") == "1.1" and not any(k == b"host" for k, _ in scope["headers"]):
                reply = self._service.bad_request(Headers(scope=scope), "An HTTP/1.1 request needs a Host.")
                await _respond(reply)(scope, receive, send)
                return  # RFC 9112 §3.2, as aiohttp and h11 answer; httptools lets it through
            endpoint = self._turns.get(_route_path(scope)) if scope["method"] == "POST" else None
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
            await self._other(scope, receive, send)
            return
        await self._app(scope, receive, send)

    async def _other(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Any route but a turn's, logged and counted here (the core logs a turn at its end)."""
        client = scope.get("client")
        headers = Headers(scope=scope)
        access = self._service.access(
            scope["method"], _route_path(scope), headers, client[0] if client else None
        )
        status: int | None = None  # until the answer starts
        error: str | None = None

        async def sending(message: Message) -> None:
            nonlocal status, error
            if message["type"] == "http.response.start":
                status = message["status"]
                access.request_id = _header(message["headers"], b"x-request-id")
            elif status and status >= 400 and message["type"] == "http.response.body" and error is None:
                error = error_code(message.get("body", b""))
            await send(message)

        try:
            if scope["method"] == "OPTIONS":
                await _respond(self._service.preflight(headers, scope["path"]))(scope, receive, sending)
            else:
                await self._app(scope, receive, sending)
        except asyncio.CancelledError:
            status = status or CLIENT_LEFT  # the client left before its answer
            raise
        finally:
            access.done(status or 500, error=error)


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """A response header's value, from the raw ASGI list."""
    return next((v.decode("latin-1") for k, v in headers if k.lower() == name), None)


def _route_path(scope: Scope) -> str:
    """The path the router matches: without the ``root_path`` of an app mounted under a prefix."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root + "/") else path


def _respond(reply: JSONReply, extra: dict[str, str] | None = None) -> Response:
    headers = {**reply.headers, **extra} if extra else reply.headers
    if reply.status == 204:
        return Response(status_code=204, headers=headers)
    return Response(reply.body, reply.status, headers, media_type=reply.content_type)


async def _stream(request: Request) -> AsyncIterator[bytes]:
    """A request's body; a client that leaves before sending it all is the client's fault."""
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise InvalidRequest("The client left while sending its request.", code="client_gone") from None


def _declared(length: str | None) -> int | None:
    """The ``Content-Length`` a request declared, if it is a number."""
    return int(length) if length and length.isascii() and length.isdigit() else None


def _raw_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class _Inbox:
    """Reads ``receive``: the body in the request's task, then a listener task for the rest.

    Once the body is read, a small task waits for ``http.disconnect`` and then cancels the
    request's task, so a client that leaves cancels its turn even while the agent is silent.
    """

    __slots__ = ("_closed", "_listener", "_receive", "_task", "gone")

    def __init__(self, receive: Receive, task: asyncio.Task[object]) -> None:
        self.gone = False  #: the client disconnected
        self._receive = receive
        self._task = task
        self._listener: asyncio.Task[None] | None = None
        self._closed = False

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            message: Message = await self._receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                raise asyncio.CancelledError("the client left while sending its request")
            if message["type"] != "http.request":
                continue
            yield message.get("body", b"")
            if not message.get("more_body", False):
                self._listener = asyncio.create_task(self._listen())
                self._listener.add_done_callback(self._heard)
                return

    async def _listen(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass

    def _heard(self, listener: asyncio.Task[None]) -> None:
        if listener.cancelled():
            return  # we stopped listening: the response is complete
        if listener.exception() is not None:
            logger.error("receive() failed", exc_info=listener.exception())
        if self._closed:
            return  # the request's task has moved on: never cancel it there
        self.gone = True
        self._task.cancel()

    def close(self) -> None:
        self._closed = True
        if self._listener is not None:
            self._listener.cancel()


class ChatEndpoint:
    """``POST`` to a turn's route as a raw ASGI app, cancelled when the client leaves."""

    def __init__(self, service: ChatService, path: str = "/v1/chat/completions") -> None:
        self._service = service
        self._path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        inbox = _Inbox(receive, task)
        try:
            await self._serve(scope, inbox, send)
        except asyncio.CancelledError:
            if not inbox.gone or task.uncancel() > 0:
                raise  # not (only) the client leaving: e.g. the server shutting down
        finally:
            inbox.close()

    async def _serve(self, scope: Scope, inbox: _Inbox, send: Send) -> None:
        headers = Headers(scope=scope)
        declared = _declared(headers.get("content-length"))
        server, client = scope.get("server"), scope.get("client")
        reply = await self._service.turn(
            self._path,
            headers,
            inbox.body(),
            declared,
            local_address=server[0] if server else None,
            client=client[0] if client else None,
        )
        if isinstance(reply, StreamReply):
            await _send_stream(reply, send)
        else:
            await _send_json(reply, send)


async def _send_json(reply: JSONReply, send: Send) -> None:
    headers = _raw_headers({**reply.headers, "content-type": reply.content_type})
    headers.append((b"content-length", str(len(reply.body)).encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


async def _send_stream(reply: StreamReply, send: Send) -> None:
    start = {"type": "http.response.start", "status": 200, "headers": _raw_headers(reply.headers)}

    async def write(data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

    try:
        if await reply.write_to(write, start=lambda: send(start)):
            await send({"type": "http.response.body", "body": b""})
        # else: the client is gone or stopped reading; returning unfinished makes the server drop it
    except OSError:
        return  # the client went away just as the stream ended


__all__: Sequence[str] = ("ChatEndpoint", "Shortcuts", "create_asgi_app")
