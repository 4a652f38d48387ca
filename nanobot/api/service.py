"""The API as plain methods: headers and body in, a reply to write out. No HTTP framework here.

Adapters route a request to one of these methods and write the reply it returns (``replies``).
"""

from __future__ import annotations

import asyncio
import fnmatch
import inspect
import itertools
import logging
import os
import re
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any, TypedDict

import orjson

from nanobot.api.access import CLIENT_LEFT, Access, error_code, route_of
from nanobot.api.collector import ReplyCollector
from nanobot.api.cors import CORSPolicy
from nanobot.api.dialects import Dialect
from nanobot.api.dialects.chat import CHAT, CHAT_PATH
from nanobot.api.dialects.messages import COUNT_TOKENS_PATH, MESSAGES, count_request, estimate_tokens
from nanobot.api.dialects.responses import RESPONSES_PATH, Responses
from nanobot.api.dialects.responses.store import ResponseStore
from nanobot.api.driver import EMPTY_REPLY, Finished, Invoke, StreamTurn, outcome_of, run_turn
from nanobot.api.form import parse_form
from nanobot.api.guard import BrowserGuard, key_matches
from nanobot.api.invocation import AgentCaller
from nanobot.api.media import Attachment, MediaStore
from nanobot.api.metrics import end_turn, exposition
from nanobot.api.openapi import openapi_document
from nanobot.api.replies import JSONReply, StreamReply
from nanobot.api.request import (
    ChatRequest,
    Limits,
    check_body_size,
    check_content_encoding,
    is_form,
    named_session,
    read_body,
)
from nanobot.api.sessions import Counted, SessionLocks, Sessions, Waiting
from nanobot.api.tools import check_tool_results
from nanobot.api.turns import AgentCancelled, Turns
from nanobot.api.ui import ChatPage
from nanobot.core.agent import Agent
from nanobot.core.errors import (
    AgentFailed,
    APIError,
    AuthenticationFailed,
    Forbidden,
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    RequestTimeout,
    ServerOverloaded,
    ShuttingDown,
)

logger = logging.getLogger("nanobot.api")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
STREAM_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
#: Bodies larger than this are parsed in a worker thread, so a huge request never holds the loop.
PARSE_INLINE_LIMIT = 256 * 1024


class ServiceOptions(TypedDict, total=False):
    """Options shared by ``create_app`` and ``create_asgi_app`` beyond the four named ones."""

    ping_interval: float
    max_body_bytes: int
    max_session_queue: int
    clock: Callable[[], float]
    new_id: Callable[[], str]
    media_dir: Path | None
    max_media_bytes: int
    keep_media: bool
    cors_origins: Sequence[str]
    write_timeout: float
    body_timeout: float
    max_messages: int
    max_attachments: int
    max_tools: int
    allowed_hosts: Sequence[str]
    drain_timeout: float
    sessions: Sessions | None
    max_streams: int | None
    max_pending: int | None
    metrics_public: bool
    response_store: ResponseStore | None
    model_aliases: Sequence[tuple[str, str]]
    ui: bool


_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count()


def _new_id() -> str:
    """A process-unique id: a random per-process prefix and a counter (no syscall per id)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):012x}"


_NO_HOLD: AbstractAsyncContextManager[None] = nullcontext()


class ChatService:
    """One agent behind the OpenAI Chat Completions API."""

    def __init__(
        self,
        agent: Agent,
        *,
        model_name: str = "nanobot",
        request_timeout: float | None = 120.0,
        api_key: str | None = None,
        prepare_agent: Callable[[], object] | None = None,
        ping_interval: float = 15.0,
        max_body_bytes: int = 16 * 1024 * 1024,
        max_session_queue: int = 16,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = _new_id,
        media_dir: Path | None = None,
        max_media_bytes: int = 10 * 1024 * 1024,
        keep_media: bool = False,
        cors_origins: Sequence[str] = (),
        write_timeout: float = 30.0,
        body_timeout: float = 60.0,
        max_messages: int = 2048,
        max_attachments: int = 64,
        max_tools: int = 128,
        allowed_hosts: Sequence[str] = (),
        drain_timeout: float = 30.0,
        sessions: Sessions | None = None,
        max_streams: int | None = None,
        max_pending: int | None = None,
        metrics_public: bool = False,
        response_store: ResponseStore | None = None,
        model_aliases: Sequence[tuple[str, str]] = (),
        ui: bool = True,
    ) -> None:
        self.agent = agent
        self.model_name = model_name
        self.request_timeout = request_timeout if request_timeout and request_timeout > 0 else None
        self._api_key = api_key.encode() if api_key else None
        self.ping_interval = ping_interval
        self.max_body_bytes = max_body_bytes
        #: Per-session turn order: this process's, unless a shared store is given (Redis).
        self.sessions: Sessions = sessions if sessions is not None else SessionLocks(max_session_queue)
        self._clock = clock
        self._new_id = new_id
        self.media = MediaStore(media_dir, max_bytes=max_media_bytes, keep=keep_media)
        self._caller = AgentCaller(agent, self.media, prepare_agent)
        self.cors = CORSPolicy(cors_origins)
        self.guard = BrowserGuard(enabled=self._api_key is None, cors=self.cors, allowed_hosts=allowed_hosts)
        self.write_timeout = write_timeout if write_timeout > 0 else None
        self.body_timeout = body_timeout if body_timeout > 0 else None
        self.limits = Limits(max_messages=max_messages, max_images=max_attachments, max_tools=max_tools)
        self.turns = Turns()
        self.drain_timeout = drain_timeout
        self.max_streams = max_streams or None  # 0: no limit
        self.max_pending = max_pending or None
        self.metrics_public = metrics_public
        self.streams = 0  #: streaming turns admitted and not yet ended
        self.waiting = Waiting()  #: turns waiting for their session
        self._openapi = orjson.dumps(openapi_document(model_name))
        #: The routes of a turn, each with its dialect.
        self.responses = Responses(response_store, model=model_name)
        self.dialects: dict[str, Dialect] = {
            CHAT.path: CHAT,
            RESPONSES_PATH: self.responses,
            MESSAGES.path: MESSAGES,
        }
        #: Other names the model answers to: ``(pattern, target)``, ``*`` allowed in patterns.
        self.model_aliases = tuple(model_aliases)
        #: The chat page at ``/`` (``None``: turned off, ``/`` is a 404).
        self.ui = ChatPage(model_name) if ui else None

    # -- routes -------------------------------------------------------------------------------

    def metrics(self, headers: Mapping[str, str]) -> JSONReply:
        """Prometheus text, or OpenMetrics if asked: behind the API key unless ``metrics_public``."""
        base = self.reply_headers(headers)
        try:
            if not self.metrics_public:
                self.authorize(headers)
        except APIError as exc:
            return self.error(exc, base)
        body, content_type = exposition(headers.get("accept"))
        return JSONReply(200, base, body, content_type)

    def access(self, method: str, path: str, headers: Mapping[str, str], client: str | None) -> Access:
        """The log line and count of a request to a route other than chat (adapters call it, and
        set its ``request_id`` from the response's ``x-request-id``)."""
        return Access(method, path, route_of(path), None, client)

    def health(self, headers: Mapping[str, str]) -> JSONReply:
        """200 ``ok``; 503 ``draining`` once shutdown began, so a load balancer stops sending."""
        if self.turns.draining:
            return self._json(
                503, {"status": "draining"}, {**self.reply_headers(headers), "Retry-After": "1"}
            )
        return self._json(200, {"status": "ok"}, self.reply_headers(headers))

    def openapi(self, headers: Mapping[str, str]) -> JSONReply:
        """The API's OpenAPI document: public, like ``/health`` (it holds no secrets)."""
        return JSONReply(200, self.reply_headers(headers), self._openapi)

    def page(self, headers: Mapping[str, str], path: str) -> JSONReply:
        """``GET /`` and ``GET /ui/NAME``: the chat page and its files (public: they hold no secret)."""
        base = self.reply_headers(headers)
        reply = self.ui.reply(path, headers, base) if self.ui is not None else None
        return reply if reply is not None else self.not_found(headers, "GET", path)

    def list_models(self, headers: Mapping[str, str]) -> JSONReply:
        return self._guarded(headers, lambda: {"object": "list", "data": [self._model_card()]})

    def get_model(self, headers: Mapping[str, str], model_id: str) -> JSONReply:
        def card() -> dict[str, Any]:
            if not self._serves(model_id):
                raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")
            return self._model_card()

        return self._guarded(headers, card)

    async def chat(
        self,
        headers: Mapping[str, str],
        body: AsyncIterable[bytes] | bytes,
        content_length: int | None,
        *,
        local_address: str | None = None,
        client: str | None = None,
    ) -> JSONReply | StreamReply:
        """``POST /v1/chat/completions``: validate, then stream or complete the turn."""
        return await self.turn(
            CHAT_PATH, headers, body, content_length, local_address=local_address, client=client
        )

    async def turn(
        self,
        path: str,
        headers: Mapping[str, str],
        body: AsyncIterable[bytes] | bytes,
        content_length: int | None,
        *,
        local_address: str | None = None,
        client: str | None = None,
    ) -> JSONReply | StreamReply:
        """``POST`` to a turn's route (one of :attr:`dialects`): validate, then stream or
        complete the turn.

        ``body`` is the body's chunks as they come, or the whole body when the adapter already
        has it (then no read, and no body timeout, is needed). ``local_address`` is the address
        the connection came in on (for the rebinding guard), ``client`` the peer's (for the
        request log).
        """
        dialect = self.dialects[path]
        base = self.reply_headers(headers)
        access = Access("POST", path, path, base["x-request-id"], client)
        try:
            reply = await self._turn(dialect, headers, body, content_length, local_address, base, access)
        except asyncio.CancelledError:  # the client left (while sending, queued, or waiting)
            access.done(CLIENT_LEFT)
            raise
        if isinstance(reply, JSONReply):
            access.done(reply.status, error=error_code(reply.body) if reply.status >= 400 else None)
        return reply

    async def _turn(
        self,
        dialect: Dialect,
        headers: Mapping[str, str],
        body: AsyncIterable[bytes] | bytes,
        content_length: int | None,
        local_address: str | None,
        base: dict[str, str],
        access: Access,
    ) -> JSONReply | StreamReply:
        try:
            self.authorize(headers)
            self.guard.check(headers, local_address)
            if self.turns.draining:
                raise ShuttingDown("The server is shutting down; try again shortly.")
            form = is_form(headers.get("content-type", ""))
            raw = await self._read(headers, body, content_length)
            if len(raw) > PARSE_INLINE_LIMIT:
                request, attachments = await asyncio.to_thread(self._parse, dialect, raw, headers, form)
            else:
                request, attachments = self._parse(dialect, raw, headers, form)
            self._check_model(request.model)
            request = await dialect.prepare(request, headers)
            named = access.session = named_session(request, headers)
            check_tool_results(request.messages, session=named is not None)
            if named is not None:
                self._check_pending()
                await self.sessions.check(named)
            invoke = self._caller.invoker(request, attachments, named, base["x-request-id"])
            hold = Counted(self.sessions.hold(named), self.waiting) if named is not None else _NO_HOLD
            if request.stream:
                return self._stream(dialect, request, hold, invoke, base, access)
            return await self._complete(dialect, request, hold, invoke, base, access)
        except APIError as exc:
            return self.error(exc, base, dialect)
        except Exception:  # a bug of ours: still an error body, never a bare traceback page
            logger.exception("%s request failed", dialect.path)
            return self.error(APIError("The server failed to handle the request."), base, dialect)

    async def count_tokens(
        self,
        headers: Mapping[str, str],
        body: AsyncIterable[bytes] | bytes,
        content_length: int | None,
        *,
        local_address: str | None = None,
    ) -> JSONReply:
        """``POST /v1/messages/count_tokens``: an estimate of a Messages request's input tokens."""
        base = self.reply_headers(headers)
        try:
            self.authorize(headers)
            self.guard.check(headers, local_address)
            is_form(headers.get("content-type", ""))
            raw = await self._read(headers, body, content_length)
            request = count_request(raw, self.limits)
            self._check_model(request.model)
            return self._json(200, {"input_tokens": estimate_tokens(request)}, base)
        except APIError as exc:
            return self.error(exc, base, MESSAGES)
        except Exception:
            logger.exception("%s request failed", COUNT_TOKENS_PATH)
            return self.error(APIError("The server failed to handle the request."), base, MESSAGES)

    def preflight(self, headers: Mapping[str, str], path: str) -> JSONReply:
        """``OPTIONS``: a CORS preflight answer when CORS is on, else 405 like any other method."""
        base = self.reply_headers(headers)
        if not self.cors.enabled:
            return self.error(MethodNotAllowed(f"Method OPTIONS is not allowed for {path}."), base)
        allowed = self.cors.preflight(headers)
        if allowed is None:
            return self.error(Forbidden("This origin may not call the API from a browser."), base)
        return JSONReply(204, {**base, **allowed}, b"")

    def not_found(self, headers: Mapping[str, str], method: str, path: str) -> JSONReply:
        error = NotFound(f"Invalid URL ({method} {path}).")
        return self.error(error, self.reply_headers(headers), self._dialect_of(path))

    def bad_request(self, headers: Mapping[str, str], message: str) -> JSONReply:
        return self.error(InvalidRequest(message), self.reply_headers(headers))

    def method_not_allowed(self, headers: Mapping[str, str], method: str, path: str) -> JSONReply:
        error = MethodNotAllowed(f"Method {method} is not allowed for {path}.")
        return self.error(error, self.reply_headers(headers), self._dialect_of(path))

    def _dialect_of(self, path: str) -> Dialect:
        """The dialect whose errors a path gets: the one whose route it is, or is under."""
        for route, dialect in self.dialects.items():
            if path == route or path.startswith(route + "/"):
                return dialect
        return CHAT

    async def get_response(
        self, headers: Mapping[str, str], response_id: str, *, local_address: str | None = None
    ) -> JSONReply:
        """``GET /v1/responses/{id}``: a stored response, or 404."""
        return await self._stored(headers, local_address, self.responses.retrieve, response_id)

    async def delete_response(
        self, headers: Mapping[str, str], response_id: str, *, local_address: str | None = None
    ) -> JSONReply:
        """``DELETE /v1/responses/{id}``: forget a stored response, or 404."""
        return await self._stored(headers, local_address, self.responses.delete, response_id)

    async def _stored(
        self,
        headers: Mapping[str, str],
        local_address: str | None,
        action: Callable[[str], Awaitable[dict[str, Any]]],
        response_id: str,
    ) -> JSONReply:
        base = self.reply_headers(headers)
        try:
            self.authorize(headers)
            self.guard.check(headers, local_address)
            return self._json(200, await action(response_id), base)
        except APIError as exc:
            return self.error(exc, base, self.responses)

    async def drain(self, timeout: float | None = None) -> None:
        """Shut down gently: refuse new turns (503), give open ones ``timeout`` s (default
        ``drain_timeout``), then stop the rest: each ends with a shutdown error, never silently."""
        await self.turns.drain(self.drain_timeout if timeout is None else timeout)

    def stop_now(self) -> None:
        """Stop every open turn now (each ends with a shutdown error) and refuse new ones."""
        self.turns.stop_now()

    async def aclose(self) -> None:
        """Shut the agent down, if it knows how, then the session store."""
        try:
            closer = getattr(self.agent, "aclose", None)
            result = closer() if callable(closer) else None
            if inspect.isawaitable(result):
                await result
        finally:
            try:
                await self.sessions.aclose()
            finally:
                await self.responses.aclose()

    # -- pieces -------------------------------------------------------------------------------

    def reply_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """Headers every reply carries: ``x-request-id`` (a sane incoming one is kept), CORS."""
        given = headers.get("x-request-id")
        request_id = given if given and REQUEST_ID.fullmatch(given) else f"req_{self._new_id()}"
        return {"x-request-id": request_id, **self.cors.headers(headers)}

    def authorize(self, headers: Mapping[str, str]) -> None:
        """The key is ``Authorization: Bearer KEY`` or (as Anthropic clients send it) ``x-api-key``."""
        if self._api_key is None:
            return
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            token = headers.get("x-api-key", "")
        if not key_matches(token.strip(), self._api_key):
            raise AuthenticationFailed("Incorrect or missing API key: send 'Authorization: Bearer <key>'.")

    def error(self, exc: APIError, base: dict[str, str], dialect: Dialect = CHAT) -> JSONReply:
        status, body = dialect.error(exc)
        return JSONReply(status, {**base, **exc.headers()}, orjson.dumps(body))

    def _json(self, status: int, payload: dict[str, Any], base: dict[str, str]) -> JSONReply:
        return JSONReply(status, base, orjson.dumps(payload))

    def _guarded(self, headers: Mapping[str, str], build: Callable[[], dict[str, Any]]) -> JSONReply:
        base = self.reply_headers(headers)
        try:
            self.authorize(headers)
            return self._json(200, build(), base)
        except APIError as exc:
            return self.error(exc, base)

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.model_name, "object": "model", "created": 0, "owned_by": "nanobot"}

    def _serves(self, model: str) -> bool:
        """Whether ``model`` names the served model, or an alias of it."""
        if model == self.model_name:
            return True
        return any(
            target == self.model_name and fnmatch.fnmatchcase(model, pattern)
            for pattern, target in self.model_aliases
        )

    def _check_model(self, model: str | None) -> None:
        if model and not self._serves(model):
            raise ModelNotFound(
                f"The model '{model}' does not exist; this server serves '{self.model_name}'.",
                param="model",
            )

    async def _read(
        self, headers: Mapping[str, str], body: AsyncIterable[bytes] | bytes, content_length: int | None
    ) -> bytes:
        """The body, refused before a byte is read if compressed (415) or declared too large (413),
        within ``max_body_bytes`` and ``body_timeout``."""
        check_content_encoding(headers)
        if isinstance(body, bytes):
            return check_body_size(body, limit=self.max_body_bytes, declared=content_length)
        try:
            async with asyncio.timeout(self.body_timeout):
                return await read_body(body, limit=self.max_body_bytes, declared=content_length)
        except TimeoutError:
            raise RequestTimeout(
                f"The request body did not arrive within {self.body_timeout:g} s.", code="body_timeout"
            ) from None

    def _parse(
        self, dialect: Dialect, raw: bytes, headers: Mapping[str, str], form: bool
    ) -> tuple[ChatRequest, tuple[Attachment, ...]]:
        """A JSON body, or a multipart form; inline images of the new message are checked here."""
        if form:
            return parse_form(raw, headers["content-type"], self.media, self.limits.max_images)
        request = dialect.parse(raw, self.limits, relays=self._caller.relays)
        where = f"messages[{len(request.messages) - 1}].content"
        images = tuple(self.media.from_data_url(url, where) for url in request.prompt.images)
        return request, images

    def _stream(
        self,
        dialect: Dialect,
        request: ChatRequest,
        hold: AbstractAsyncContextManager[None],
        invoke: Invoke,
        base: dict[str, str],
        access: Access,
    ) -> StreamReply:
        turn_id = dialect.turn_id(self._new_id())
        encoder = dialect.encoder(request, turn_id=turn_id, created=int(self._clock()), model=self.model_name)
        finished = None if dialect is CHAT else Finished(dialect, request, turn_id)
        run = StreamTurn(
            invoke,
            encoder,
            hold=hold,
            timeout=self.request_timeout,
            turns=self.turns,
            access=access,
            finished=finished,
        )
        self._admit_stream()
        access.release = self._stream_ended  # ``access.released`` also counts a stream cut before its head
        return StreamReply(
            {**STREAM_HEADERS, **base},
            run,
            self.ping_interval,
            self.write_timeout,
            access.released,
            dialect.ping,
        )

    def _admit_stream(self) -> None:
        if self.max_streams is not None and self.streams >= self.max_streams:
            raise ServerOverloaded(
                f"The server has {self.streams} streams open, its limit; try again shortly."
            )
        self.streams += 1

    def _stream_ended(self) -> None:
        self.streams -= 1

    def _check_pending(self) -> None:
        if self.max_pending is not None and self.waiting.count >= self.max_pending:
            raise ServerOverloaded(
                f"{self.waiting.count} turns wait for their sessions, the server's limit; try again shortly."
            )

    async def _complete(
        self,
        dialect: Dialect,
        request: ChatRequest,
        hold: AbstractAsyncContextManager[None],
        invoke: Invoke,
        base: dict[str, str],
        access: Access,
    ) -> JSONReply:
        outcome = "disconnected"  # unless the turn gets further
        events = ReplyCollector()
        try:
            reply = await run_turn(
                invoke,
                hold=hold,
                timeout=self.request_timeout,
                turns=self.turns,
                on_event=events,
                access=access,
            )
            reply = events.merged(reply)
            if not (reply.text or reply.tool_calls):
                reply = replace(reply, text=EMPTY_REPLY)
            turn_id = dialect.turn_id(self._new_id())
            await dialect.finished(request, reply, turn_id)
            outcome = "completed"
            access.tokens = reply.usage.completion_tokens if reply.usage is not None else None
        except AgentCancelled:
            outcome = "failed"
            raise AgentFailed("The agent's turn was cancelled.") from None
        except APIError as exc:
            outcome = outcome_of(exc)
            raise
        finally:
            access.outcome = outcome
            end_turn(outcome, time.perf_counter() - access.arrived)
        body = dialect.body(
            reply, request, turn_id=turn_id, created=int(self._clock()), model=self.model_name
        )
        return JSONReply(200, base, orjson.dumps(body))
