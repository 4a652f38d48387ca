"""The neutral events of a turn: what an agent says, before any API's wire format.

An agent streams text through ``on_stream(text)`` (nanobot's contract) and everything else
through ``on_event(event)``: reasoning, the client tool calls it asks for, and the activity of
the tools it runs itself. Each API dialect (Chat Completions, Responses, Messages) encodes the
same events in its own bytes (DESIGN.md §9). Nothing here does I/O.

Client tool calls are numbered by ``index`` in the order they start; their arguments arrive as
JSON text in fragments. *Activity* is a tool the agent runs itself: it is shown as progress and
never as a client tool call (the client would try to run it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

#: Why a turn ended, as Chat Completions names it (other dialects map these).
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]
FINISH_REASONS: frozenset[str] = frozenset({"stop", "length", "tool_calls", "content_filter"})


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer's text."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of the agent's reasoning (shown apart from the answer)."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningEnd:
    """The current run of reasoning is over (the answer or a tool call follows)."""


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    """The agent asks the client to run tool ``name``; its arguments follow as fragments."""

    index: int
    call_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of the JSON arguments of call ``index``."""

    index: int
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolCallEnd:
    """Call ``index`` is complete."""

    index: int


ActivityPhase = Literal["start", "end", "error"]


@dataclass(frozen=True, slots=True)
class Activity:
    """A tool the agent runs itself: it started, ended with ``result``, or failed with ``result``."""

    phase: ActivityPhase
    call_id: str
    name: str
    arguments: str = ""
    result: str = ""


AgentEvent = (
    TextDelta | ReasoningDelta | ReasoningEnd | ToolCallStart | ToolCallDelta | ToolCallEnd | Activity
)
OnEvent = Callable[[AgentEvent], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A whole client tool call: as an assistant message carries it, or an agent returns it."""

    call_id: str
    name: str
    arguments: str

    def to_dict(self) -> dict[str, Any]:
        """Chat Completions' shape."""
        return {
            "id": self.call_id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def read_tool_calls(source: object) -> tuple[ToolCall, ...]:
    """Tool calls an agent returned (``result.tool_calls``): :class:`ToolCall` objects, or
    Chat Completions dicts; anything else is ignored."""
    if not isinstance(source, list | tuple):
        return ()
    calls: list[ToolCall] = []
    for item in source:
        if isinstance(item, ToolCall):
            calls.append(item)
        elif isinstance(item, Mapping):
            function = item.get("function")
            if isinstance(function, Mapping) and isinstance(function.get("name"), str):
                arguments = function.get("arguments")
                calls.append(
                    ToolCall(
                        str(item.get("id") or ""),
                        function["name"],
                        arguments if isinstance(arguments, str) else "{}",
                    )
                )
    return tuple(calls)


def activity_events(tool_events: object) -> list[Activity]:
    """nanobot's tool-event dicts (``{version, phase, call_id, name, arguments, result, error}``)
    as :class:`Activity` events; malformed entries are skipped."""
    if not isinstance(tool_events, list | tuple):
        return []
    events: list[Activity] = []
    for item in tool_events:
        if not isinstance(item, Mapping):
            continue
        error = item.get("error")
        phase: ActivityPhase
        if item.get("phase") == "start":
            phase = "start"
        elif item.get("phase") in ("end", "error"):
            phase = "error" if error or item.get("phase") == "error" else "end"
        else:
            continue
        events.append(
            Activity(
                phase,
                str(item.get("call_id") or ""),
                str(item.get("name") or "tool"),
                _text(item.get("arguments")),
                _text(error if phase == "error" else item.get("result")),
            )
        )
    return events


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return str(value)


def progress_events(
    text: str,
    *,
    tool_hint: bool = False,
    tool_events: object = None,
    reasoning: bool = False,
    reasoning_end: bool = False,
) -> list[AgentEvent]:
    """nanobot's ``on_progress(text, *, tool_hint=, tool_events=, reasoning=, reasoning_end=)``
    as events. Reasoning text is reasoning; tool events are activity; a tool hint (nanobot's
    ``web_search("…")`` line) is shown as a line of reasoning unless tool events describe the
    same call; other progress text (what the model said before calling its tools) is reasoning."""
    events: list[AgentEvent] = list(activity_events(tool_events))
    if text and not (tool_hint and events):
        events.insert(0, ReasoningDelta(text + "\n" if tool_hint and not text.endswith("\n") else text))
    if reasoning_end:
        events.append(ReasoningEnd())
    return events


#: The most of a tool's arguments or result an activity line shows.
ACTIVITY_PREVIEW = 200


def activity_line(event: Activity) -> str:
    """One line of text for an activity, for dialects that show it as reasoning text."""
    if event.phase == "start":
        return f"\n▸ {event.name}({_preview(event.arguments)})\n"
    if event.phase == "end":
        return f"✓ {event.name}: {_preview(event.result)}\n" if event.result else f"✓ {event.name}\n"
    return f"✗ {event.name} failed: {_preview(event.result) or 'error'}\n"


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= ACTIVITY_PREVIEW else flat[: ACTIVITY_PREVIEW - 1] + "…"
