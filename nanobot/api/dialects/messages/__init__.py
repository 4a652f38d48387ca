"""Anthropic Messages (``POST /v1/messages``): the dialect Claude Code and the Anthropic SDKs
speak (DESIGN.md §9). ``POST /v1/messages/count_tokens`` answers with an estimate
(:func:`~nanobot.api.dialects.messages.parse.estimate_tokens`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nanobot.api.dialects.messages.body import message_body
from nanobot.api.dialects.messages.encode import PING, MessagesStream
from nanobot.api.dialects.messages.errors import error_body
from nanobot.api.dialects.messages.parse import estimate_tokens, parse_messages_request
from nanobot.api.request import ChatRequest, Limits
from nanobot.core.errors import APIError
from nanobot.core.reply import Reply

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"


class Messages:
    """Anthropic Messages over the neutral events."""

    path = MESSAGES_PATH
    ping = PING

    def parse(self, raw: bytes, limits: Limits, *, relays: bool) -> ChatRequest:
        return parse_messages_request(raw, limits)

    def turn_id(self, unique: str) -> str:
        return f"msg_{unique}"

    def encoder(self, request: ChatRequest, *, turn_id: str, created: int, model: str) -> MessagesStream:
        return MessagesStream(turn_id, model, estimate_tokens(request))

    def body(self, reply: Reply, request: ChatRequest, *, turn_id: str, created: int, model: str) -> Any:
        return message_body(reply, message_id=turn_id, model=model, input_tokens=estimate_tokens(request))

    def error(self, error: APIError) -> tuple[int, Any]:
        return error_body(error)

    async def prepare(self, request: ChatRequest, headers: Mapping[str, str]) -> ChatRequest:
        return request

    async def finished(self, request: ChatRequest, reply: Reply, turn_id: str) -> None:
        return None


def count_request(raw: bytes, limits: Limits) -> ChatRequest:
    """A ``count_tokens`` body: a Messages body that needs no ``max_tokens``."""
    return parse_messages_request(raw, limits, max_tokens_required=False)


MESSAGES = Messages()

__all__ = ["COUNT_TOKENS_PATH", "MESSAGES", "MESSAGES_PATH", "Messages", "count_request", "estimate_tokens"]
