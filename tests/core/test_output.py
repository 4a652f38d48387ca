"""Output: when bytes are written, gathered, pinged, and what a dead or stalled client does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from nanobot.api.output import ClientGone, Output
from nanobot.api.replies import StreamReply
from nanobot.api.sse import PING


class Socket:
    """A fake ``write``: records each write; can hang or fail on demand."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.wrote = asyncio.Event()
        self.hang = False
        self.fail_after: int | None = None

    async def write(self, data: bytes) -> None:
        if self.fail_after is not None and len(self.writes) >= self.fail_after:
            raise ConnectionResetError("peer closed")
        self.writes.append(data)
        self.wrote.set()
        if self.hang:
            await asyncio.Event().wait()

    async def next_write(self) -> bytes:
        count = len(self.writes)
        while len(self.writes) == count:
            self.wrote.clear()
            await self.wrote.wait()
        return self.writes[count]


def run(main: Callable[[], Awaitable[object]]) -> object:
    async def bounded() -> object:
        async with asyncio.timeout(10):
            return await main()

    return asyncio.run(bounded())


def test_a_token_is_written_before_send_returns() -> None:
    async def main() -> None:
        socket = Socket()
        output = Output(socket.write)
        await output.send(b"a")
        assert socket.writes == [b"a"]
        await output.aclose()

    run(main)


def test_tokens_of_one_loop_tick_go_out_in_one_write_when_the_producer_yields() -> None:
    async def main() -> None:
        socket = Socket()
        output = Output(socket.write)
        for token in (b"a", b"b", b"c", b"d"):
            await output.send(token)  # never yields: a firehose
        assert socket.writes == [b"a"]
        assert await socket.next_write() == b"bcd"
        await output.send(b"e")  # a new tick: written at once again
        assert socket.writes == [b"a", b"bcd", b"e"]
        await output.aclose()

    run(main)


def test_the_producer_writes_itself_once_the_gathered_bytes_reach_the_limit() -> None:
    async def main() -> None:
        socket = Socket()
        output = Output(socket.write, limit=3)
        for token in (b"a", b"b", b"c", b"d", b"e"):
            await output.send(token)
        assert socket.writes == [b"a", b"bcd", b"e"]  # the producer yielded after the limit: a new tick
        await output.close(b"!")
        assert socket.writes == [b"a", b"bcd", b"e", b"!"]
        await output.aclose()

    run(main)


def test_close_writes_the_gathered_tail_and_the_end_in_order() -> None:
    async def main() -> None:
        socket = Socket()
        output = Output(socket.write)
        for token in (b"a", b"b", b"c"):
            await output.send(token)
        await output.close(b"[DONE]")
        await asyncio.sleep(0)  # the end-of-tick callback finds nothing left to write
        assert socket.writes == [b"a", b"bc[DONE]"]
        await output.aclose()

    run(main)


def test_a_silent_stream_is_pinged_and_an_active_one_is_not() -> None:
    async def main() -> None:
        socket = Socket()
        output = Output(socket.write, ping_interval=0.01)
        assert await socket.next_write() == PING
        assert await socket.next_write() == PING
        await output.close(b"end")
        count = len(socket.writes)
        await asyncio.sleep(0.05)
        assert len(socket.writes) == count  # nothing after the end
        await output.aclose()

    run(main)


def _reply(socket: Socket, produce: Callable[[Output], Awaitable[None]], **options: float) -> StreamReply:
    return StreamReply({}, produce, ping_interval=options.get("ping", 0.0), write_timeout=options.get("wt"))


def test_a_stalled_client_is_dropped_and_the_turn_cancelled() -> None:
    cancelled = asyncio.Event()

    async def produce(output: Output) -> None:
        try:
            await output.send(b"a")
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def main() -> bool:
        socket = Socket()
        socket.hang = True
        return await _reply(socket, produce, wt=0.02).write_to(socket.write)

    assert run(main) is False
    assert cancelled.is_set()


def test_a_failed_write_in_the_producer_reaches_it_as_cancellation() -> None:
    seen: list[BaseException] = []

    async def produce(output: Output) -> None:
        try:
            await output.send(b"a")
        except BaseException as exc:
            seen.append(exc)
            raise

    async def main() -> bool:
        socket = Socket()
        socket.fail_after = 0
        return await _reply(socket, produce).write_to(socket.write)

    assert run(main) is False
    assert len(seen) == 1 and isinstance(seen[0], ClientGone)
    assert isinstance(seen[0], asyncio.CancelledError)  # agents treat it as a disconnect


def test_a_failed_background_write_cancels_the_silent_producer() -> None:
    async def produce(output: Output) -> None:
        await output.send(b"a")
        await output.send(b"b")  # gathered; the flusher's write fails
        await asyncio.Event().wait()  # the agent goes quiet (a tool call)

    async def main() -> bool:
        socket = Socket()
        socket.fail_after = 1
        return await _reply(socket, produce).write_to(socket.write)

    assert run(main) is False


def test_a_cancelled_turn_stays_cancelled() -> None:
    async def produce(output: Output) -> None:
        await output.send(b"a")
        await asyncio.Event().wait()

    async def main() -> None:
        socket = Socket()
        task = asyncio.create_task(_reply(socket, produce).write_to(socket.write))
        await socket.next_write()
        task.cancel()  # what a disconnect does
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main)


def test_bytes_taken_by_the_flusher_survive_a_turn_timeout() -> None:
    """A timeout while the producer waits for a slow flusher must not cancel that write."""

    async def main() -> bytes:
        written: list[bytes] = []
        drained = asyncio.Event()
        drained.set()

        async def write(data: bytes) -> None:  # like uvicorn: wait for the socket, then write
            await drained.wait()
            written.append(data)

        output = Output(write, limit=8)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.05):
                await output.send(b"A|")
                await output.send(b"B|")  # gathered
                drained.clear()  # the client reads slowly now
                await asyncio.sleep(0)  # the tick ends: a flusher starts, and will wait in its write
                for token in (b"C|", b"D|", b"E|", b"F|"):
                    await output.send(token)  # at E| the limit: waits for the flusher
                    # ... and the timeout strikes there: F| is never produced
        drained.set()
        await output.close(b"ERR|")
        await output.aclose()
        return b"".join(written)

    assert run(main) == b"A|B|C|D|E|ERR|"


def test_a_gone_client_is_neither_pinged_nor_cancelled_again() -> None:
    cleanup: list[str] = []

    async def produce(output: Output) -> None:
        try:
            await output.send(b"a")  # fails: the client is gone
        finally:
            for _ in range(3):  # the agent cleans up (closes its upstream), over several pings
                try:
                    await asyncio.sleep(0.02)
                    cleanup.append("ok")
                except asyncio.CancelledError:
                    cleanup.append("cancelled")

    async def main() -> tuple[bool, list[bytes]]:
        socket = Socket()
        socket.fail_after = 0
        result = await _reply(socket, produce, ping=0.01).write_to(socket.write)
        return result, socket.writes

    assert run(main) == (False, [])
    assert cleanup == ["ok", "ok", "ok"]


def test_an_agent_that_absorbs_the_cancellation_leaves_no_cancel_behind() -> None:
    async def produce(output: Output) -> None:
        await output.send(b"a")
        await output.send(b"b")  # gathered; the flusher's write fails and cancels this task
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()  # a badly behaved agent swallows it and returns

    async def main() -> tuple[bool, int]:
        socket = Socket()
        socket.fail_after = 1
        result = await _reply(socket, produce).write_to(socket.write)
        task = asyncio.current_task()
        assert task is not None
        return result, task.cancelling()

    assert run(main) == (False, 0)
