"""The API as plain methods: headers and body in, a reply to write out. No HTTP framework here.

Adapters route a request to one of these methods and write the reply: a :class:`JSONReply`
(status, headers, body) or a :class:`StreamReply` (headers and an async iterator of SSE bytes,
status 200, which the adapter must close with ``contextlib.aclosing``).
"""

from __future__ import annotations

import hmac
import inspect
import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import orjson

from nanobot.agents import Agent
from nanobot.api.completion import completion_body
from nanobot.api.driver import Invoke, OnStream, OnStreamEnd, run_turn, stream_turn
from nanobot.api.errors import (
    APIError,
    AuthenticationFailed,
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
)
from nanobot.api.request import ChatRequest, parse_chat_request, read_body, resolve_session
from nanobot.api.sessions import SessionLocks
from nanobot.api.sse import ChunkFormat
from nanobot.api.stream import ChatStream

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


@dataclass(frozen=True, slots=True)
class JSONReply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class StreamReply:
    headers: dict[str, str]
    chunks: AsyncGenerator[bytes, None]


def _new_id() -> str:
    return uuid.uuid4().hex


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

    # -- routes -------------------------------------------------------------------------------

    def health(self, headers: Mapping[str, str]) -> JSONReply:
        return self._json(200, {"status": "ok"}, headers)

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
        request_id = self.request_id(headers)
        try:
            self.authorize(headers)
            raw = await read_body(body, limit=self.max_body_bytes, declared=content_length)
            request = parse_chat_request(raw)
            self._check_model(request.model)
            session = resolve_session(request, headers)
            self.sessions.check(session)
            invoke = self._invoker(request, session, request_id)
            if request.stream:
                return self._stream(request, session, invoke, request_id)
            return await self._complete(request, session, invoke, request_id)
        except APIError as exc:
            return self.error(exc, request_id)

    def not_found(self, headers: Mapping[str, str], method: str, path: str) -> JSONReply:
        return self.error(NotFound(f"Invalid URL ({method} {path})."), self.request_id(headers))

    def method_not_allowed(self, headers: Mapping[str, str], method: str, path: str) -> JSONReply:
        error = MethodNotAllowed(f"Method {method} is not allowed for {path}.")
        return self.error(error, self.request_id(headers))

    async def aclose(self) -> None:
        """Shut the agent down, if it knows how."""
        closer = getattr(self.agent, "aclose", None)
        result = closer() if callable(closer) else None
        if inspect.isawaitable(result):
            await result

    # -- pieces -------------------------------------------------------------------------------

    def request_id(self, headers: Mapping[str, str]) -> str:
        """An incoming ``X-Request-Id`` when it is sane, else a new one."""
        given = headers.get("x-request-id")
        return given if given and REQUEST_ID.fullmatch(given) else f"req_{self._new_id()}"

    def authorize(self, headers: Mapping[str, str]) -> None:
        if self._api_key is None:
            return
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._api_key):
            raise AuthenticationFailed("Incorrect or missing API key: send 'Authorization: Bearer <key>'.")

    def error(self, exc: APIError, request_id: str) -> JSONReply:
        headers = {"x-request-id": request_id, **exc.headers()}
        return JSONReply(exc.status, headers, orjson.dumps(exc.to_body()))

    def _json(self, status: int, payload: dict[str, Any], headers: Mapping[str, str]) -> JSONReply:
        return JSONReply(status, {"x-request-id": self.request_id(headers)}, orjson.dumps(payload))

    def _guarded(self, headers: Mapping[str, str], build: Callable[[], dict[str, Any]]) -> JSONReply:
        try:
            self.authorize(headers)
            return self._json(200, build(), headers)
        except APIError as exc:
            return self.error(exc, self.request_id(headers))

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.model_name, "object": "model", "created": 0, "owned_by": "nanobot"}

    def _check_model(self, model: str | None) -> None:
        if model and model != self.model_name:
            raise ModelNotFound(
                f"The model '{model}' does not exist; this server serves '{self.model_name}'.",
                param="model",
            )

    def _invoker(self, request: ChatRequest, session: str, request_id: str) -> Invoke:
        prompt = request.prompt
        context: dict[str, Any] = {}
        if "messages" in self._context:
            context["messages"] = [m.to_dict() for m in request.messages]
        if "request_id" in self._context:
            context["request_id"] = request_id
        if prompt.images:
            raise InvalidRequest(
                "Images are not supported yet.", param="messages", code="unsupported_content"
            )

        def invoke(on_stream: OnStream | None, on_stream_end: OnStreamEnd | None) -> Any:
            return self.agent.process_direct(
                content=prompt.content,
                session_key=session,
                channel="api",
                chat_id=session.removeprefix("api:"),
                media=None,
                on_stream=on_stream,
                on_stream_end=on_stream_end,
                **context,
            )

        return invoke

    def _stream(self, request: ChatRequest, session: str, invoke: Invoke, request_id: str) -> StreamReply:
        chunk_format = ChunkFormat(
            f"chatcmpl-{self._new_id()}",
            int(self._clock()),
            self.model_name,
            include_usage=request.include_usage,
        )
        chunks = stream_turn(
            invoke,
            ChatStream(chunk_format, include_usage=request.include_usage),
            hold=self.sessions.hold(session),
            timeout=self.request_timeout,
            ping_interval=self.ping_interval,
        )
        return StreamReply({**STREAM_HEADERS, "x-request-id": request_id}, chunks)

    async def _complete(
        self, request: ChatRequest, session: str, invoke: Invoke, request_id: str
    ) -> JSONReply:
        reply = await run_turn(invoke, hold=self.sessions.hold(session), timeout=self.request_timeout)
        body = completion_body(
            reply,
            completion_id=f"chatcmpl-{self._new_id()}",
            created=int(self._clock()),
            model=self.model_name,
        )
        return JSONReply(200, {"x-request-id": request_id}, orjson.dumps(body))
