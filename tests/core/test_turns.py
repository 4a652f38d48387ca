"""Turns in their own tasks: drained at shutdown, abandoned when they ignore cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from typing import Any

import pytest

from nanobot.api.output import Output
from nanobot.api.replies import JSONReply, StreamReply
from nanobot.api.service import ChatService
from tests.support.agents import GateAgent

JSON = {"content-type": "application/json"}


async def _one(data: bytes) -> object:
    yield data


def _request(content: str, *, stream: bool) -> bytes:
    return json.dumps(
        {"stream": stream, "session_id": content, "messages": [{"role": "user", "content": content}]}
    ).encode()


def test_drain_lets_open_turns_finish_then_stops_the_rest_with_an_error_event() -> None:
    async def main() -> None:
        quick, stuck = GateAgent(before=["a"]), GateAgent(before=["b"])

        class Both:
            async def process_direct(self, *, content: str, on_stream: Any, **kwargs: Any) -> str:
                agent = quick if content == "quick" else stuck
                return await agent.process_direct(
                    content=content, session_key="", channel="", chat_id="", on_stream=on_stream
                )

        service = ChatService(Both())
        replies = [await service.chat(JSON, _one(_request(c, stream=True)), None) for c in ("quick", "stuck")]
        written: dict[int, list[bytes]] = {0: [], 1: []}
        tasks = []
        for i, reply in enumerate(replies):
            assert isinstance(reply, StreamReply)

            async def write(data: bytes, i: int = i) -> None:
                written[i].append(data)

            tasks.append(asyncio.create_task(reply.write_to(write)))
        await quick.entered.wait()
        await stuck.entered.wait()
        drain = asyncio.create_task(service.drain(0.2))
        await asyncio.sleep(0)
        refused = await service.chat(JSON, _one(_request("late", stream=True)), None)
        assert isinstance(refused, JSONReply) and refused.status == 503
        assert refused.headers["Retry-After"] == "1"
        quick.release.set()  # finishes within the drain time
        await drain
        assert await asyncio.gather(*tasks) == [True, True]
        assert b"".join(written[0]).endswith(b"data: [DONE]\n\n")
        last = json.loads(b"".join(written[1]).rsplit(b"data: ", 1)[1])
        assert last["error"]["code"] == "server_shutting_down"
        assert stuck.cancelled.is_set()
        assert len(service.turns) == 0

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_turn_ends_even_if_its_agent_ignores_cancellation() -> None:
    async def main() -> None:
        release = asyncio.Event()

        class Stubborn:
            async def process_direct(self, **kwargs: object) -> str:
                while not release.is_set():
                    with contextlib.suppress(asyncio.CancelledError):
                        await release.wait()
                return "late"

        service = ChatService(Stubborn(), request_timeout=0.1)
        reply = await service.chat(JSON, _one(_request("s", stream=False)), None)
        assert isinstance(reply, JSONReply) and reply.status == 504
        assert len(service.turns) == 0 and len(service.sessions) == 0
        release.set()
        await asyncio.sleep(0)

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_producer_over_the_gather_limit_yields_to_the_loop() -> None:
    async def main() -> None:
        ran = asyncio.Event()

        async def write(data: bytes) -> None:  # a socket that always keeps up: never waits
            pass

        output = Output(write, limit=8)
        asyncio.get_running_loop().call_soon(ran.set)
        await output.send(b"first")  # written at once
        for _ in range(3):
            await output.send(b"x" * 8)  # each reaches the limit
        assert ran.is_set()  # the loop ran other callbacks meanwhile
        await output.aclose()

    asyncio.run(main())


def test_the_error_of_an_agent_cleaning_up_after_cancellation_is_retrieved_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Messy:
        def __init__(self) -> None:
            self.entered = asyncio.Event()

        async def process_direct(self, **kwargs: object) -> str:
            self.entered.set()
            try:
                await asyncio.Event().wait()
            finally:
                raise RuntimeError("cleanup failed")

    async def main() -> None:
        agent = Messy()
        service = ChatService(agent)
        task = asyncio.create_task(service.chat(JSON, _one(_request("s", stream=False)), None))
        await agent.entered.wait()
        task.cancel()  # the client left
        with contextlib.suppress(asyncio.CancelledError):
            await task
        gc.collect()

    asyncio.run(main())
    assert "cleanup failed" in caplog.text
    assert "never retrieved" not in caplog.text


def test_loopback_includes_ipv4_mapped_addresses() -> None:
    from nanobot.api.guard import is_loopback

    assert is_loopback("::ffff:127.0.0.1") and is_loopback("127.0.0.2") and is_loopback("::1")
    assert not is_loopback("::ffff:10.0.0.1") and not is_loopback("example.com")
