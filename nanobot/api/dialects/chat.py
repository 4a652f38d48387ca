"""OpenAI Chat Completions (``POST /v1/chat/completions``): the first dialect."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nanobot.api.completion import Reply, completion_body
from nanobot.api.errors import APIError
from nanobot.api.request import ChatRequest, Limits, parse_chat_request
from nanobot.api.sse import PING, ChunkFormat
from nanobot.api.stream import ChatStream

CHAT_PATH = "/v1/chat/completions"


class ChatCompletions:
    """Chat Completions over the neutral events (see :mod:`nanobot.api.stream`)."""

    path = CHAT_PATH
    ping = PING

    def parse(self, raw: bytes, limits: Limits, *, relays: bool) -> ChatRequest:
        return parse_chat_request(raw, limits, relays=relays)

    def turn_id(self, unique: str) -> str:
        return f"chatcmpl-{unique}"

    def encoder(self, request: ChatRequest, *, turn_id: str, created: int, model: str) -> ChatStream:
        chunks = ChunkFormat(turn_id, created, model, include_usage=request.include_usage)
        return ChatStream(chunks, include_usage=request.include_usage)

    def body(self, reply: Reply, request: ChatRequest, *, turn_id: str, created: int, model: str) -> Any:
        return completion_body(reply, completion_id=turn_id, created=created, model=model)

    def error(self, error: APIError) -> tuple[int, Any]:
        return error.status, error.to_body()

    async def prepare(self, request: ChatRequest, headers: Mapping[str, str]) -> ChatRequest:
        return request

    async def finished(self, request: ChatRequest, reply: Reply, turn_id: str) -> None:
        return None


CHAT = ChatCompletions()
