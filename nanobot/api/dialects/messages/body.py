"""The non-streaming Anthropic message object, built from a turn's reply."""

from __future__ import annotations

import math
from typing import Any

import orjson

from nanobot.api.dialects.messages.encode import stop_reason, usage_of
from nanobot.core.reply import Reply


def tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's JSON arguments as the object ``tool_use.input`` must be (``{}`` when they
    are not a JSON object)."""
    try:
        value = orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def message_body(reply: Reply, *, message_id: str, model: str, input_tokens: int) -> dict[str, Any]:
    """``{"id", "type": "message", "role", "content", "model", "stop_reason", ...}``: thinking,
    then text, then the client tool calls. Without the agent's own counts, the input count is
    the request's estimate and the output count a token per 4 characters."""
    content: list[dict[str, Any]] = []
    if reply.reasoning:
        content.append({"type": "thinking", "thinking": reply.reasoning, "signature": ""})
    if reply.text or not reply.tool_calls:
        content.append({"type": "text", "text": reply.text})
    for index, call in enumerate(reply.tool_calls):
        call_id = call.call_id or f"toolu_{message_id.removeprefix('msg_')}_{index}"
        content.append(
            {"type": "tool_use", "id": call_id, "name": call.name, "input": tool_input(call.arguments)}
        )
    usage = reply.usage
    if usage is not None:
        counts = usage_of(usage.prompt_tokens or input_tokens, usage.completion_tokens)
    else:
        counts = usage_of(input_tokens, math.ceil((len(reply.text) + len(reply.reasoning)) / 4))
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(reply.finish_reason, bool(reply.tool_calls)),
        "stop_sequence": None,
        "usage": counts,
    }
