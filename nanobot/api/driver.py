"""The one place that awaits the agent: runs a turn and turns it into bytes or a reply.

The agent runs in a task of its own (see ``turns.py``), so the request can always leave it
behind. Its ``on_stream`` encodes each token and hands it to the stream's
:class:`~nanobot.api.output.Output`, which writes it at once from the agent's task or gathers it
with its neighbours (see ``output.py``): no task switch per token. When the client goes away
the adapter cancels the request's task, which cancels the agent's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from nanobot.api.access import Access
from nanobot.api.metrics import StreamMeter
from nanobot.api.output import ClientGone, Output
from nanobot.api.stream import Failure, Finish, contract_error
from nanobot.api.turns import AgentCancelled, Turns
from nanobot.core.errors import AgentFailed, AgentTimeout, APIError, TurnStopped, from_agent_exception
from nanobot.core.events import (
    Activity,
    AgentEvent,
    OnEvent,
    ReasoningDelta,
    ReasoningEnd,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from nanobot.core.reply import Reply, read_reply

if TYPE_CHECKING:
    from nanobot.api.dialects import Dialect, Encoder
    from nanobot.api.request import ChatRequest

logger = logging.getLogger("nanobot.api")

OnStream = Callable[[str], Awaitable[None]]
OnStreamEnd = Callable[..., Awaitable[None]]
#: Calls the agent once, with the given callbacks (``on_stream`` is ``None`` for a
#: non-streaming turn; ``on_event`` takes reasoning, tool calls and activity).
Invoke = Callable[[OnStream | None, OnStreamEnd | None, OnEvent | None], Coroutine[Any, Any, object]]
#: The events an agent may send through ``on_event``.
AGENT_EVENTS = frozenset(
    {TextDelta, ReasoningDelta, ReasoningEnd, ToolCallStart, ToolCallDelta, ToolCallEnd, Activity}
)


async def run_turn(
    invoke: Invoke,
    *,
    hold: AbstractAsyncContextManager[None],
    timeout: float | None,
    turns: Turns,
    on_stream: OnStream | None = None,
    on_stream_end: OnStreamEnd | None = None,
    on_event: OnEvent | None = None,
    access: Access | None = None,
) -> Reply:
    """Wait for the session, then call the agent; both within ``timeout``. Failures become
    :class:`APIError`; :class:`AgentCancelled` means the agent's task ended cancelled.
    ``access`` names the request in the log, should its agent have to be abandoned."""
    with turns.turn(access) as turn:
        try:
            async with asyncio.timeout(timeout) as deadline:
                turn.deadline = deadline
                async with hold:
                    waiter = turn.start(invoke(on_stream, on_stream_end, on_event))
                    try:
                        await waiter
                    except asyncio.CancelledError:
                        await turn.leave()
                        raise
                    result = turn.result()
        except (APIError, AgentCancelled):
            raise
        except TimeoutError as exc:
            if turn.stopped:
                raise TurnStopped("The server is shutting down; the turn was stopped.") from None
            if deadline.expired():
                raise AgentTimeout(
                    f"The turn did not finish within {timeout:g} s (time queued behind earlier "
                    "turns of its session included)."
                ) from exc
            raise from_agent_exception(exc) from exc
        except Exception as exc:
            logger.exception("agent raised")
            raise from_agent_exception(exc) from exc
    return read_reply(result)


#: What the client reads when the agent neither streamed nor returned any text (as nanobot does).
EMPTY_REPLY = "The agent finished its turn without a reply."


async def _segment_end(*_: Any, **__: Any) -> None:
    """A generation segment ended (the agent may call tools and stream again): keep streaming."""


class StreamTurn:
    """A streamed turn, ready to run (``await turn(output)``): the request's task runs it,
    writing its SSE bytes to ``output`` as the agent speaks. One slotted object, not a closure
    and a partial, since every open stream holds one."""

    __slots__ = (
        "_access",
        "_finished",
        "_hold",
        "_invoke",
        "_meter",
        "_output",
        "_stream",
        "_timeout",
        "_turns",
    )
    _meter: StreamMeter  #: set when the turn starts, before the agent can stream
    _output: Output

    def __init__(
        self,
        invoke: Invoke,
        stream: Encoder,
        *,
        hold: AbstractAsyncContextManager[None],
        timeout: float | None,
        turns: Turns,
        access: Access,
        finished: Finished | None = None,
    ) -> None:
        self._invoke = invoke
        self._finished = finished
        self._stream = stream
        self._hold = hold
        self._timeout = timeout
        self._turns = turns
        self._access = access

    async def _on_stream(self, delta: str) -> None:
        if delta.__class__ is not str:
            raise AgentFailed(
                f"The agent streamed a {type(delta).__name__}; tokens must be str.", code="agent_contract"
            )
        if delta:
            self._meter.token()
            await self._output.send(self._stream.text(delta))

    async def _on_event(self, ev: AgentEvent) -> None:
        # The per-token events go straight to their encoder, as text does in _on_stream.
        if type(ev) is ToolCallDelta:
            data = self._stream.tool_arguments(ev)
        elif type(ev) is ReasoningDelta:
            data = self._stream.reasoning(ev.text)
        elif ev.__class__ in AGENT_EVENTS:
            data = self._stream.send(ev)
        else:
            raise contract_error(f"The agent sent a {type(ev).__name__}, which is not a turn event.")
        if data:
            self._meter.token()
            await self._output.send(data)

    async def __call__(self, output: Output) -> None:
        stream = self._stream
        self._output = output
        meter = self._meter = StreamMeter(self._access.arrived)
        outcome = "disconnected"  # unless the turn gets further
        error: str | None = None  # the code of the error event, if the stream ends with one
        try:
            try:
                reply = await run_turn(
                    self._invoke,
                    hold=self._hold,
                    timeout=self._timeout,
                    turns=self._turns,
                    on_stream=self._on_stream,
                    on_stream_end=_segment_end,
                    on_event=self._on_event,
                    access=self._access,
                )
                if self._finished is not None:
                    await self._finished(reply)
            except APIError as exc:
                outcome, error = outcome_of(exc), exc.code or exc.type
                tail = stream.send(Failure(exc))
            except AgentCancelled:
                if output.broken:
                    raise ClientGone("the client is gone") from None
                logger.warning("the agent's turn raised CancelledError of its own")
                outcome, failure = "failed", AgentFailed("The agent's turn was cancelled.")
                error = failure.code
                tail = stream.send(Failure(failure))
            else:
                outcome = "completed"
                tail = unstreamed(stream, reply) + stream.send(Finish(reply.usage, reply.finish_reason))
            await output.close(tail)
        finally:
            if output.broken:
                outcome = "stalled" if output.stalled else "disconnected"
            meter.close(outcome)
            self._access.done(200, ttft=meter.first_token, tokens=meter.tokens, outcome=outcome, error=error)


class Finished:
    """Tells a dialect its streamed turn completed, before the stream's last bytes go out."""

    __slots__ = ("_dialect", "_request", "_turn_id")

    def __init__(self, dialect: Dialect, request: ChatRequest, turn_id: str) -> None:
        self._dialect = dialect
        self._request = request
        self._turn_id = turn_id

    async def __call__(self, reply: Reply) -> None:
        await self._dialect.finished(self._request, reply, self._turn_id)


def unstreamed(stream: Encoder, reply: Reply) -> bytes:
    """What the agent returned but did not stream: its reasoning, its text (or
    :data:`EMPTY_REPLY` when it gave neither text nor tool calls), its tool calls."""
    parts = []
    if reply.reasoning and not stream.sent_reasoning:
        parts.append(stream.reasoning(reply.reasoning))
    calls = () if stream.sent_calls else reply.tool_calls
    if not stream.sent_text and (reply.text or not (calls or stream.sent_calls)):
        parts.append(stream.text(reply.text or EMPTY_REPLY))
    for index, call in enumerate(calls):
        parts.append(stream.send(ToolCallStart(index, call.call_id, call.name)))
        parts.append(stream.send(ToolCallDelta(index, call.arguments)))
        parts.append(stream.send(ToolCallEnd(index)))
    return b"".join(parts)


def outcome_of(error: APIError) -> str:
    """How a failed turn is counted in ``nanobot_turns``."""
    if isinstance(error, TurnStopped):
        return "stopped"
    if isinstance(error, AgentTimeout):
        return "timeout"
    return "failed"
