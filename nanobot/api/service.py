"""The API as plain methods: headers and body in, a reply to write out. No HTTP framework here.

Adapters route a request to one of these methods and write the reply it returns (``replies``).
"""

from __future__ import annotations

import functools
import hmac
import inspect
import itertools
import logging
import os
import re
import time
from collections.abc import AsyncIterable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

import orjson

from nanobot.agents import Agent
from nanobot.api.completion import completion_body
from nanobot.api.cors import CORSPolicy
from nanobot.api.driver import Invoke, OnStream, OnStreamEnd, run_turn, stream_turn
from nanobot.api.errors import (
    APIError,
    AuthenticationFailed,
    Forbidden,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
)
from nanobot.api.form import parse_form
from nanobot.api.media import Attachment, MediaStore
from nanobot.api.openapi import openapi_document
from nanobot.api.replies import JSONReply, StreamReply
from nanobot.api.request import ChatRequest, parse_chat_request, read_body, resolve_session
from nanobot.api.sessions import SessionLocks
from nanobot.api.sse import ChunkFormat
from nanobot.api.stream import ChatStream

logger = logging.getLogger("nanobot.api")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
STREAM_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
#: Keyword arguments handed to agents whose ``process_direct`` accepts them.
CONTEXT_KWARGS = ("messages", "request_id")


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


_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count()


def _new_id() -> str:
    """A process-unique id: a random per-process prefix and a counter (no syscall per id)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):012x}"


def _accepted_context(agent: Agent) -> frozenset[str]:
    try:
        params = inspect.signature(agent.process_direct).parameters.values()
    except (TypeError, ValueError):
        return frozenset()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return frozenset(CONTEXT_KWARGS)
    return frozenset(p.name for p in params if p.name in CONTEXT_KWARGS)


class ChatService:
    """One agent behind the OpenAI Chat Completions API."""

    def __init__(
        self,
        agent: Agent,
        *,
        model_name: str = "nanobot",
        request_timeout: float | None = 120.0,
        api_key: str | None = None,
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
    ) -> None:
        self.agent = agent
        self.model_name = model_name
        self.request_timeout = request_timeout if request_timeout and request_timeout > 0 else None
        self._api_key = api_key.encode() if api_key else None
        self.ping_interval = ping_interval
        self.max_body_bytes = max_body_bytes
        self.sessions = SessionLocks(max_session_queue)
        self._clock = clock
        self._new_id = new_id
        self._context = _accepted_context(agent)
        self.media = MediaStore(media_dir, max_bytes=max_media_bytes, keep=keep_media)
        self.cors = CORSPolicy(cors_origins)
        self.write_timeout = write_timeout if write_timeout > 0 else None
        self._openapi = orjson.dumps(openapi_document(model_name))

    # -- routes -------------------------------------------------------------------------------

    def health(self, headers: Mapping[str, str]) -> JSONReply:
        return self._json(200, {"status": "ok"}, self.reply_headers(headers))

    def openapi(self, headers: Mapping[str, str]) -> JSONReply:
        """The API's OpenAPI document: public, like ``/health`` (it holds no secrets)."""
        return JSONReply(200, self.reply_headers(headers), self._openapi)

    def list_models(self, headers: Mapping[str, str]) -> JSONReply:
        return self._guarded(headers, lambda: {"object": "list", "data": [self._model_card()]})

    def get_model(self, headers: Mapping[str, str], model_id: str) -> JSONReply:
        def card() -> dict[str, Any]:
            if model_id != self.model_name:
                raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")
            return self._model_card()

        return self._guarded(headers, card)

    async def chat(
        self, headers: Mapping[str, str], body: AsyncIterable[bytes], content_length: int | None
    ) -> JSONReply | StreamReply:
        """``POST /v1/chat/completions``: validate, then stream or complete the turn."""
        base = self.reply_headers(headers)
        try:
            self.authorize(headers)
            raw = await read_body(body, limit=self.max_body_bytes, declared=content_length)
            request, attachments = self._parse(raw, headers.get("content-type", ""))
            self._check_model(request.model)
            session = resolve_session(request, headers)
            self.sessions.check(session)
            invoke = self._invoker(request, attachments, session, base["x-request-id"])
            if request.stream:
                return self._stream(request, session, invoke, base)
            return await self._complete(session, invoke, base)
        except APIError as exc:
            return self.error(exc, base)
        except Exception:  # a bug of ours: still an OpenAI error, never a bare traceback page
            logger.exception("chat request failed")
            return self.error(APIError("The server failed to handle the request."), base)

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
        return self.error(NotFound(f"Invalid URL ({method} {path})."), self.reply_headers(headers))

    def method_not_allowed(self, headers: Mapping[str, str], method: str, path: str) -> JSONReply:
        error = MethodNotAllowed(f"Method {method} is not allowed for {path}.")
        return self.error(error, self.reply_headers(headers))

    async def aclose(self) -> None:
        """Shut the agent down, if it knows how."""
        closer = getattr(self.agent, "aclose", None)
        result = closer() if callable(closer) else None
        if inspect.isawaitable(result):
            await result

    # -- pieces -------------------------------------------------------------------------------

    def reply_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """Headers every reply carries: ``x-request-id`` (a sane incoming one is kept), CORS."""
        given = headers.get("x-request-id")
        request_id = given if given and REQUEST_ID.fullmatch(given) else f"req_{self._new_id()}"
        return {"x-request-id": request_id, **self.cors.headers(headers)}

    def authorize(self, headers: Mapping[str, str]) -> None:
        if self._api_key is None:
            return
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._api_key):
            raise AuthenticationFailed("Incorrect or missing API key: send 'Authorization: Bearer <key>'.")

    def error(self, exc: APIError, base: dict[str, str]) -> JSONReply:
        return JSONReply(exc.status, {**base, **exc.headers()}, orjson.dumps(exc.to_body()))

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

    def _check_model(self, model: str | None) -> None:
        if model and model != self.model_name:
            raise ModelNotFound(
                f"The model '{model}' does not exist; this server serves '{self.model_name}'.",
                param="model",
            )

    def _parse(self, raw: bytes, content_type: str) -> tuple[ChatRequest, tuple[Attachment, ...]]:
        """A JSON body, or a multipart form; inline images of the new message are checked here."""
        if content_type.lower().startswith("multipart/form-data"):
            return parse_form(raw, content_type, self.media)
        request = parse_chat_request(raw)
        where = f"messages[{len(request.messages) - 1}].content"
        images = tuple(self.media.from_data_url(url, where) for url in request.prompt.images)
        return request, images

    def _invoker(
        self, request: ChatRequest, attachments: tuple[Attachment, ...], session: str, request_id: str
    ) -> Invoke:
        prompt = request.prompt
        context: dict[str, Any] = {}
        if "messages" in self._context:
            context["messages"] = [m.to_dict() for m in request.messages]
        if "request_id" in self._context:
            context["request_id"] = request_id

        async def invoke(on_stream: OnStream | None, on_stream_end: OnStreamEnd | None) -> Any:
            with self.media.saved(attachments) as paths:
                return await self.agent.process_direct(
                    content=prompt.content,
                    session_key=session,
                    channel="api",
                    chat_id=session.removeprefix("api:"),
                    media=paths or None,
                    on_stream=on_stream,
                    on_stream_end=on_stream_end,
                    **context,
                )

        return invoke

    def _stream(
        self, request: ChatRequest, session: str, invoke: Invoke, base: dict[str, str]
    ) -> StreamReply:
        chunk_format = ChunkFormat(
            f"chatcmpl-{self._new_id()}",
            int(self._clock()),
            self.model_name,
            include_usage=request.include_usage,
        )
        run = functools.partial(
            stream_turn,
            invoke,
            ChatStream(chunk_format, include_usage=request.include_usage),
            hold=self.sessions.hold(session),
            timeout=self.request_timeout,
        )
        return StreamReply({**STREAM_HEADERS, **base}, run, self.ping_interval, self.write_timeout)

    async def _complete(self, session: str, invoke: Invoke, base: dict[str, str]) -> JSONReply:
        reply = await run_turn(invoke, hold=self.sessions.hold(session), timeout=self.request_timeout)
        body = completion_body(
            reply,
            completion_id=f"chatcmpl-{self._new_id()}",
            created=int(self._clock()),
            model=self.model_name,
        )
        return JSONReply(200, base, orjson.dumps(body))
