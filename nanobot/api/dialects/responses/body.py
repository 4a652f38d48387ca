"""The Responses API's objects: output items and the ``response`` object, as OpenAI sends them.

An :class:`Item` is one output item while it is built (its text arrives in pieces); the same
items make the streamed events' payloads, the final ``response`` object and the assistant
message the conversation keeps. Item ids are derived from the response's id and the item's
place, so a stored response and the one a client received always agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nanobot.api.request import Message
from nanobot.core.errors import APIError
from nanobot.core.events import ToolCall
from nanobot.core.reply import Reply, Usage

#: The prefix of a response id.
RESPONSE_PREFIX = "resp_"
#: Id prefixes of output items, by type.
ITEM_PREFIXES = {"message": "msg_", "reasoning": "rs_", "function_call": "fc_"}


class Item:
    """One output item: a ``message``, a ``reasoning`` item or a ``function_call``."""

    __slots__ = ("call_id", "id", "kind", "name", "namespace", "parts", "qualified", "summary")

    def __init__(
        self,
        kind: str,
        item_id: str,
        *,
        summary: bool = False,
        call_id: str = "",
        qualified: str = "",
        name: str = "",
        namespace: str | None = None,
    ) -> None:
        self.kind = kind
        self.id = item_id
        self.parts: list[str] = []  #: the text (or a call's arguments) as it arrived
        self.summary = summary  #: reasoning shown as a summary part, not reasoning text
        self.call_id = call_id
        self.qualified = qualified  #: a call's name as the agent knows it
        self.name = name  #: a call's name as the client knows it (within ``namespace``)
        self.namespace = namespace

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def to_dict(self, status: str = "completed", *, empty: bool = False) -> dict[str, Any]:
        """The item as OpenAI shows it; ``empty``: as first added, before any content."""
        text = "" if empty else self.text
        if self.kind == "message":
            content = [] if empty else [output_text(text)]
            return {
                "id": self.id,
                "type": "message",
                "status": status,
                "content": content,
                "role": "assistant",
            }
        if self.kind == "reasoning":
            item: dict[str, Any] = {"id": self.id, "type": "reasoning", "summary": []}
            if not empty:
                if self.summary:
                    item["summary"] = [{"type": "summary_text", "text": text}]
                else:
                    item["content"] = [{"type": "reasoning_text", "text": text}]
            item["status"] = status
            return item
        call: dict[str, Any] = {
            "id": self.id,
            "type": "function_call",
            "status": status,
            "arguments": text,
            "call_id": self.call_id,
            "name": self.name,
        }
        if self.namespace is not None:
            call["namespace"] = self.namespace
        return call


def output_text(text: str) -> dict[str, Any]:
    """An ``output_text`` content part."""
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def item_id(turn_id: str, kind: str, index: int) -> str:
    """The id of output item ``index`` of response ``turn_id``."""
    return f"{ITEM_PREFIXES[kind]}{turn_id.removeprefix(RESPONSE_PREFIX)}_{index}"


def new_call(
    turn_id: str, index: int, call_id: str, qualified: str, names: Mapping[str, tuple[str | None, str]]
) -> Item:
    """A ``function_call`` item for a call the agent named ``qualified`` (mapped back to its
    namespace and name when it came from a namespace tool)."""
    namespace, name = names.get(qualified, (None, qualified))
    return Item(
        "function_call",
        item_id(turn_id, "function_call", index),
        call_id=call_id or f"call_{turn_id.removeprefix(RESPONSE_PREFIX)}_{index}",
        qualified=qualified,
        name=name,
        namespace=namespace,
    )


def reply_items(
    reply: Reply, turn_id: str, names: Mapping[str, tuple[str | None, str]], *, summary: bool
) -> list[Item]:
    """The output of a turn that was not streamed: its reasoning, its text, its calls."""
    items: list[Item] = []
    if reply.reasoning:
        items.append(Item("reasoning", item_id(turn_id, "reasoning", 0), summary=summary))
        items[-1].parts.append(reply.reasoning)
    if reply.text or not reply.tool_calls:
        items.append(Item("message", item_id(turn_id, "message", len(items))))
        items[-1].parts.append(reply.text)
    for call in reply.tool_calls:
        items.append(new_call(turn_id, len(items), call.call_id, call.name, names))
        items[-1].parts.append(call.arguments)
    return items


def usage_dict(usage: Usage | None) -> dict[str, Any]:
    """Responses' usage: input and output tokens, reasoning tokens among the output."""
    usage = usage or Usage()
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens or 0},
        "total_tokens": usage.total_tokens,
    }


#: How a finish reason other than stop or tool_calls leaves a response, and why.
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def status_of(reason: str) -> str:
    return "incomplete" if reason in INCOMPLETE else "completed"


def response_object(
    settings: Mapping[str, Any],
    *,
    turn_id: str,
    created: int,
    model: str,
    status: str,
    output: Sequence[dict[str, Any]] = (),
    usage: Usage | None = None,
    reason: str = "stop",
    error: APIError | None = None,
    completed_at: int | None = None,
) -> dict[str, Any]:
    """The ``response`` object: its state, the request's echoed settings, output and usage."""
    done = status in ("completed", "incomplete", "failed")
    return {
        "id": turn_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "completed_at": completed_at if status == "completed" else None,
        "error": None if error is None else {"code": error.code or error.type, "message": error.message},
        "incomplete_details": {"reason": INCOMPLETE[reason]} if status == "incomplete" else None,
        "model": model,
        **settings,
        "output": list(output),
        "usage": usage_dict(usage) if done and error is None else None,
    }


def assistant_message(items: Sequence[Item]) -> Message:
    """What a turn's output adds to the conversation: its text and client tool calls."""
    text = "".join(item.text for item in items if item.kind == "message")
    calls = tuple(
        ToolCall(item.call_id, item.qualified, item.text) for item in items if item.kind == "function_call"
    )
    return Message("assistant", text, tool_calls=calls)
