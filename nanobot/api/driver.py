"""The one place that awaits the agent: runs a turn and turns it into bytes or a reply.

A streamed turn runs in the task that writes the response: the agent's ``on_stream`` encodes
each token and hands it to the stream's :class:`~nanobot.api.output.Output`, which writes it at
once or gathers it with its neighbours (see ``output.py``). No task switch per token, one task
per stream. When the client goes away the adapter cancels that task, and with it the agent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from nanobot.api.completion import Reply, read_reply
from nanobot.api.errors import AgentFailed, AgentTimeout, APIError, from_agent_exception
from nanobot.api.output import Output
from nanobot.api.stream import ChatStream, Failure, Finish, TextDelta

logger = logging.getLogger("nanobot.api")

OnStream = Callable[[str], Awaitable[None]]
OnStreamEnd = Callable[..., Awaitable[None]]
#: Calls the agent once, with the given callbacks (``None`` for a non-streaming turn).
Invoke = Callable[[OnStream | None, OnStreamEnd | None], Awaitable[object]]


async def run_turn(
    invoke: Invoke,
    *,
    hold: AbstractAsyncContextManager[None],
    timeout: float | None,
    on_stream: OnStream | None = None,
    on_stream_end: OnStreamEnd | None = None,
) -> Reply:
    """Wait for the session, call the agent under ``timeout``, translate what it raises."""
    async with hold:
        try:
            async with asyncio.timeout(timeout) as deadline:
                result = await invoke(on_stream, on_stream_end)
        except APIError:
            raise
        except TimeoutError as exc:
            if deadline.expired():
                raise AgentTimeout(f"The agent did not answer within {timeout:g} s.") from exc
            raise from_agent_exception(exc) from exc
        except Exception as exc:
            logger.exception("agent raised")
            raise from_agent_exception(exc) from exc
    return read_reply(result)


async def _segment_end(**_: Any) -> None:
    """A generation segment ended (the agent may call tools and stream again): keep streaming."""


async def stream_turn(
    invoke: Invoke,
    stream: ChatStream,
    output: Output,
    *,
    hold: AbstractAsyncContextManager[None],
    timeout: float | None,
) -> None:
    """Run a turn in this task, writing its SSE bytes to ``output`` as the agent speaks."""
    text = stream.text
    send = output.send

    async def on_stream(delta: str) -> None:
        if delta:
            await send(text(delta))

    try:
        reply = await run_turn(
            invoke, hold=hold, timeout=timeout, on_stream=on_stream, on_stream_end=_segment_end
        )
    except APIError as exc:
        tail = stream.send(Failure(exc))
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if output.broken or (task is not None and task.cancelling()):
            raise  # the client left, stalled, or the server is stopping
        logger.warning("the agent's turn raised CancelledError of its own")
        tail = stream.send(Failure(AgentFailed("The agent's turn was cancelled.")))
    else:
        head = b"" if stream.sent_text or not reply.text else stream.send(TextDelta(reply.text))
        tail = head + stream.send(Finish(reply.usage))
    await output.close(tail)
