"""A non-streamed turn's events, gathered into the one reply its JSON body is built from."""

from __future__ import annotations

from dataclasses import replace

from nanobot.api.stream import contract_error
from nanobot.core.events import (
    Activity,
    AgentEvent,
    ReasoningDelta,
    ReasoningEnd,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    activity_line,
)
from nanobot.core.reply import Reply


class ReplyCollector:
    """``on_event`` for a non-streamed turn: keeps text, reasoning and client tool calls."""

    __slots__ = ("_calls", "_reasoning", "_text")

    def __init__(self) -> None:
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, tuple[str, str, list[str]]] = {}

    async def __call__(self, ev: AgentEvent) -> None:
        if isinstance(ev, TextDelta):
            self._text.append(ev.text)
        elif isinstance(ev, ReasoningDelta):
            self._reasoning.append(ev.text)
        elif isinstance(ev, Activity):
            self._reasoning.append(activity_line(ev))
        elif isinstance(ev, ToolCallStart):
            if ev.index in self._calls:
                raise contract_error(f"The agent started tool call {ev.index} twice.")
            self._calls[ev.index] = (ev.call_id, ev.name, [])
        elif isinstance(ev, ToolCallDelta):
            call = self._calls.get(ev.index)
            if call is None:
                raise contract_error(f"The agent sent arguments of tool call {ev.index}, which is not open.")
            call[2].append(ev.arguments)
        elif not isinstance(ev, ReasoningEnd | ToolCallEnd):
            raise contract_error(f"The agent sent a {type(ev).__name__}, which is not a turn event.")

    def merged(self, reply: Reply) -> Reply:
        """``reply`` (what the agent returned) completed with what it sent as events."""
        text = reply.text or "".join(self._text)
        reasoning = "".join(self._reasoning) or reply.reasoning
        calls = reply.tool_calls
        if self._calls:
            calls = tuple(
                ToolCall(call_id, name, "".join(parts))
                for _, (call_id, name, parts) in sorted(self._calls.items())
            )
        reason = "tool_calls" if calls and reply.finish_reason == "stop" else reply.finish_reason
        if (text, reasoning, calls, reason) == (
            reply.text,
            reply.reasoning,
            reply.tool_calls,
            reply.finish_reason,
        ):
            return reply
        return replace(reply, text=text, reasoning=reasoning, tool_calls=calls, finish_reason=reason)
