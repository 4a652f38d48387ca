"""The driver and service without any HTTP server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

from nanobot.api.replies import JSONReply, StreamReply
from nanobot.api.service import ChatService
from tests.support.agents import GateAgent, ScriptedAgent


async def _one(*parts: bytes) -> Any:
    for part in parts:
        yield part


JSON = {"content-type": "application/json"}


def _request(content: str = "hi", stream: bool = True, session: str = "s") -> bytes:
    return b'{"stream":%s,"session_id":"%s","messages":[{"role":"user","content":"%s"}]}' % (
        b"true" if stream else b"false",
        session.encode(),
        content.encode(),
    )


def test_core_imports_no_http_framework() -> None:
    code = (
        "import sys, nanobot.api.service, nanobot.agents.loader, nanobot.config;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'starlette', 'uvicorn')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_service_streams_without_a_server() -> None:
    async def main() -> bytes:
        service = ChatService(ScriptedAgent(["a", "b"]))
        reply = await service.chat(JSON, _one(_request()), None)
        assert isinstance(reply, StreamReply)
        written: list[bytes] = []

        async def write(data: bytes) -> None:
            written.append(data)

        assert await reply.write_to(write)
        return b"".join(written)

    body = asyncio.run(main())
    assert body.count(b"data: ") == 4
    assert body.endswith(b"data: [DONE]\n\n")


def test_cancelling_a_queued_stream_never_runs_its_turn() -> None:
    async def main() -> list[str]:
        agent = GateAgent(before=["x"])
        service = ChatService(agent)
        first = await service.chat(JSON, _one(_request("one")), None)
        second = await service.chat(JSON, _one(_request("two")), None)
        assert isinstance(first, StreamReply) and isinstance(second, StreamReply)
        written: list[bytes] = []

        async def write(data: bytes) -> None:
            written.append(data)

        running = asyncio.create_task(first.write_to(write))
        await agent.entered.wait()
        queued = asyncio.create_task(second.write_to(write))
        for _ in range(10):
            await asyncio.sleep(0)  # let the second turn reach the session queue
        assert len(service.sessions) == 1
        queued.cancel()  # what a disconnect does to the handler awaiting the stream
        await asyncio.gather(queued, return_exceptions=True)
        agent.release.set()
        assert await running
        assert b"".join(written).endswith(b"[DONE]\n\n")
        assert len(service.sessions) == 0
        return agent.log

    assert asyncio.run(main()) == ["start one", "end one"]


def test_non_streaming_reply() -> None:
    async def main() -> JSONReply | StreamReply:
        return await ChatService(ScriptedAgent(["a"], result="done")).chat(
            JSON, _one(_request(stream=False)), None
        )

    reply = asyncio.run(main())
    assert isinstance(reply, JSONReply)
    assert reply.status == 200
    assert b'"content":"done"' in reply.body


def test_an_agent_raising_cancelled_error_of_its_own_ends_the_stream_with_an_error() -> None:
    async def main() -> tuple[bool, bytes]:
        service = ChatService(ScriptedAgent(["a"], error=asyncio.CancelledError()))
        reply = await service.chat(JSON, _one(_request()), None)
        assert isinstance(reply, StreamReply)
        written: list[bytes] = []

        async def write(data: bytes) -> None:
            written.append(data)

        return await reply.write_to(write), b"".join(written)

    completed, body = asyncio.run(main())
    assert completed
    last = json.loads(body.rsplit(b"data: ", 1)[1])
    assert "cancelled" in last["error"]["message"]
    assert b"[DONE]" not in body and b'"finish_reason":"stop"' not in body
