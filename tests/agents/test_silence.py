"""The upstream's silence (``sock_read``) is watched by one timer per request, not per read: a
silent upstream is a 504 wherever it falls silent, a slow but steady one is not, and time the
relay spends writing to its client is not the upstream's silence."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web

from nanobot.agents.upstream import Silence
from tests.agents.conftest import Relay
from tests.agents.test_faults import CHAT, HI, TOKEN, error_of, stream_error
from tests.support.sse import data_events, text_of
from tests.support.upstream import FakeUpstream, Script, answer, raw

pytestmark = pytest.mark.asyncio

QUICK = aiohttp.ClientTimeout(connect=5.0, sock_read=0.1)


def stalled_json() -> Script:
    """A non-streamed answer whose body stops halfway until released."""

    async def play(request: web.Request, upstream: FakeUpstream) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"id": "chatcmpl-up", "choices": [')
        await upstream.release.wait()
        return response

    return play


async def test_an_upstream_silent_mid_answer_times_out(relay: Relay, upstream: FakeUpstream) -> None:
    upstream.will(raw(TOKEN, then="stall"), raw(TOKEN, then="stall"))
    client = await relay(timeout=QUICK)
    error = error_of(await client.post(CHAT, json=HI), 504)
    assert error["code"] == "timeout" and "did not answer in time" in error["message"]
    error = stream_error(await client.post(CHAT, json={**HI, "stream": True}), text="partial")
    assert error["code"] == "timeout" and "did not answer in time" in error["message"]


async def test_an_upstream_silent_in_a_non_streamed_body_times_out(
    relay: Relay, upstream: FakeUpstream
) -> None:
    upstream.will(stalled_json(), stalled_json())
    client = await relay(timeout=QUICK)
    assert error_of(await client.post(CHAT, json=HI), 504)["code"] == "timeout"
    assert stream_error(await client.post(CHAT, json={**HI, "stream": True}))["code"] == "timeout"


async def test_a_slow_steady_upstream_is_not_silent(relay: Relay, upstream: FakeUpstream) -> None:
    """Eight tokens 40 ms apart take three times the 100 ms limit; no gap reaches it."""

    async def pace(_: int) -> None:
        await asyncio.sleep(0.04)

    upstream.will(answer(*"abcdefgh", gate=pace))
    client = await relay(timeout=QUICK)
    response = await client.post(CHAT, json={**HI, "stream": True})
    assert response.status_code == 200
    assert text_of(data_events(response.content)) == "abcdefgh"


async def watched(silence_limit: float, busy: float) -> float:
    """Busy for ``busy`` seconds (not waiting for the upstream), then waiting until the watch
    ends the wait: how long that took in all."""
    started = time.perf_counter()
    silence = Silence(None, silence_limit)
    try:
        silence.since = None  # busy: writing to a slow client, not waiting for the upstream
        await asyncio.sleep(busy)
        silence.since = silence.clock()  # waiting again: silent from now on
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        assert silence.expired()
        return time.perf_counter() - started
    finally:
        silence.stop()
    raise AssertionError("the watch never fired")


async def test_silence_counts_only_open_waits_for_the_upstream() -> None:
    assert 0.2 + 0.04 <= await watched(0.05, busy=0.2) < 2
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_cancel_from_elsewhere_is_not_a_timeout() -> None:
    async def waiting() -> bool:
        silence = Silence(None, 0.05)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return silence.expired()
        finally:
            silence.stop()
        return False

    task = asyncio.create_task(waiting())
    await asyncio.sleep(0.01)
    task.cancel()  # the client went away before the upstream was silent too long
    assert await task is False


async def test_a_stopped_or_unlimited_watch_never_fires() -> None:
    stopped = Silence(None, 0.02)
    stopped.stop()
    unlimited = Silence(None, None)
    await asyncio.sleep(0.1)
    unlimited.stop()
    assert not stopped.expired() and not unlimited.expired()
