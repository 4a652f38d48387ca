"""OpenAI Responses (``POST /v1/responses``, ``GET``/``DELETE /v1/responses/{id}``): the second
dialect (DESIGN.md §9).

Requests are parsed into the neutral request (:mod:`.parse`), events encoded as Responses
events (:mod:`.encode`), replies built as ``response`` objects (:mod:`.body`). State: a
response made with ``store`` (the default) is kept (:mod:`.store`) with the conversation it
ended; ``previous_response_id`` continues that conversation in the same session, so a chain's
turns run in order and an agent's own memory of it applies.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from nanobot.api.dialects.responses.body import (
    RESPONSE_PREFIX,
    assistant_message,
    reply_items,
    response_object,
    status_of,
)
from nanobot.api.dialects.responses.encode import ResponsesStream
from nanobot.api.dialects.responses.parse import ResponsesRequest, parse_responses_request
from nanobot.api.dialects.responses.store import MemoryResponses, ResponseStore
from nanobot.api.driver import unstreamed
from nanobot.api.request import SESSION_HEADERS, ChatRequest, Limits, Message, check_session_id
from nanobot.api.sse import PING
from nanobot.api.tools import check_tool_results
from nanobot.core.errors import APIError, InvalidRequest, NotFound, UnsupportedMediaType
from nanobot.core.events import read_tool_calls
from nanobot.core.reply import Reply

RESPONSES_PATH = "/v1/responses"
#: Headers that may name the session (Codex CLI sends both), before the chat route's own.
RESPONSES_SESSION_HEADERS = ("session-id", "thread-id", *SESSION_HEADERS)


class Responses:
    """The Responses API over the neutral events, keeping stored responses in ``store``."""

    path = RESPONSES_PATH
    ping = PING

    def __init__(self, store: ResponseStore | None = None, *, model: str = "nanobot") -> None:
        self.store: ResponseStore = store if store is not None else MemoryResponses()
        self.model = model

    def parse(self, raw: bytes, limits: Limits, *, relays: bool) -> ResponsesRequest:
        return parse_responses_request(raw, limits, relays=relays)

    def turn_id(self, unique: str) -> str:
        return f"{RESPONSE_PREFIX}{unique}"

    def encoder(self, request: ChatRequest, *, turn_id: str, created: int, model: str) -> ResponsesStream:
        assert isinstance(request, ResponsesRequest)
        stream = ResponsesStream(
            request.settings,
            turn_id=turn_id,
            created=created,
            model=model,
            names=request.names,
            summary=request.summary,
        )
        request.turn.encoder = stream
        return stream

    def body(self, reply: Reply, request: ChatRequest, *, turn_id: str, created: int, model: str) -> Any:
        assert isinstance(request, ResponsesRequest)
        if request.turn.response is not None:
            return request.turn.response
        return self._response(reply, request, turn_id, created, model)

    def error(self, error: APIError) -> tuple[int, Any]:
        return error.status, error.to_body()

    async def prepare(self, request: ChatRequest, headers: Mapping[str, str]) -> ChatRequest:
        """Continue the stored conversation of ``previous_response_id`` (404 when it is unknown
        or expired) in its session; else a session the headers name; else, when the response
        is stored, a new session for the chain it starts."""
        if not isinstance(request, ResponsesRequest):  # the core parsed a multipart form
            raise UnsupportedMediaType(
                "Send a Responses request as 'Content-Type: application/json'.", param="content-type"
            )
        history: tuple[Message, ...] = ()
        session: str | None = None
        if request.previous_response_id is not None:
            record = await self.store.get(request.previous_response_id)
            if record is None:
                raise NotFound(
                    f"Previous response with id '{request.previous_response_id}' not found.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            history = tuple(message_from_dict(m) for m in record.get("conversation", ()))
            session = record.get("session")
        if session is None:
            session = _header_session(headers)
        if session is None and request.store:
            session = f"resp-{secrets.token_hex(12)}"
        head = (Message("system", request.instructions),) if request.instructions else ()
        _check_outputs((*history, *request.input), session=session is not None)
        return replace(
            request, messages=(*head, *history, *request.input), history=history, session_id=session
        )

    async def finished(self, request: ChatRequest, reply: Reply, turn_id: str) -> None:
        """Store the response and the conversation it ends (``store``)."""
        assert isinstance(request, ResponsesRequest)
        if not request.store:
            return
        stream = request.turn.encoder
        if stream is not None:
            response = stream.settle(lambda s: unstreamed(s, reply), reply.usage, reply.finish_reason)
            items = stream.items
        else:
            items = reply_items(reply, turn_id, request.names, summary=request.summary)
            response = self._response(reply, request, turn_id, int(time.time()), self.model)
            request.turn.response = response
        conversation = [*request.history, *request.input, assistant_message(items)]
        record = {
            "response": response,
            "conversation": [m.to_dict() for m in conversation],
            "session": request.session_id,
        }
        await self.store.put(turn_id, record)

    # -- stored responses -----------------------------------------------------------------

    async def retrieve(self, response_id: str) -> dict[str, Any]:
        """``GET /v1/responses/{id}``."""
        record = await self.store.get(response_id)
        if record is None:
            raise _not_found(response_id)
        response: dict[str, Any] = record["response"]
        return response

    async def delete(self, response_id: str) -> dict[str, Any]:
        """``DELETE /v1/responses/{id}``."""
        if not await self.store.delete(response_id):
            raise _not_found(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    async def aclose(self) -> None:
        await self.store.aclose()

    def _response(
        self, reply: Reply, request: ResponsesRequest, turn_id: str, created: int, model: str
    ) -> dict[str, Any]:
        items = reply_items(reply, turn_id, request.names, summary=request.summary)
        return response_object(
            request.settings,
            turn_id=turn_id,
            created=created,
            model=model,
            status=status_of(reply.finish_reason),
            output=[item.to_dict() for item in items],
            usage=reply.usage,
            reason=reply.finish_reason,
            completed_at=int(time.time()),
        )


def _check_outputs(messages: tuple[Message, ...], *, session: bool) -> None:
    """Every ``function_call_output`` answers an earlier ``function_call`` (in a session, a
    request of outputs alone is the agent's to check): the core's rule, in this API's words."""
    try:
        check_tool_results(messages, session=session)
    except InvalidRequest:
        raise InvalidRequest(
            "A 'function_call_output' answers no earlier 'function_call' of this input or of the "
            "previous response.",
            param="input",
            code="unknown_tool_call_id",
        ) from None


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", code="response_not_found")


def _header_session(headers: Mapping[str, str]) -> str | None:
    for name in RESPONSES_SESSION_HEADERS:
        value = headers.get(name)
        if value:
            return check_session_id(value, name)
    return None


def message_from_dict(data: Mapping[str, Any]) -> Message:
    """A stored message (:meth:`Message.to_dict`'s shape) back as a :class:`Message`."""
    content = data.get("content")
    text, images = "", []
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "\n".join(p["text"] for p in content if p.get("type") == "text")
        images = [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]
    call_id = data.get("tool_call_id")
    return Message(
        str(data.get("role")),
        text,
        tuple(images),
        tool_calls=read_tool_calls(data.get("tool_calls")),
        tool_call_id=call_id if isinstance(call_id, str) else None,
    )
