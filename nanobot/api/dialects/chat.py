"""OpenAI Chat Completions (``POST /v1/chat/completions``): the first dialect."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nanobot.api.request import ChatRequest, Limits, parse_chat_request
from nanobot.api.sse import PING, ChunkFormat
from nanobot.api.stream import ChatStream
from nanobot.core.errors import APIError
from nanobot.core.reply import Reply, Usage

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


def completion_body(reply: Reply, *, completion_id: str, created: int, model: str) -> dict[str, Any]:
    """OpenAI's non-streaming ``chat.completion`` object."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": reply_message(reply),
                "finish_reason": reply.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": (reply.usage or Usage()).to_dict(),
    }


def reply_message(reply: Reply) -> dict[str, Any]:
    """The assistant message: ``content`` is ``null`` when a tool call came with no text."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.reasoning:
        message["reasoning_content"] = reply.reasoning
    if reply.tool_calls:
        message["tool_calls"] = [call.to_dict() for call in reply.tool_calls]
    elif message["content"] is None:
        message["content"] = ""
    return message
