"""Clients that name no session share nothing: each turn upstream carries only what it sent."""

from __future__ import annotations

import asyncio

import pytest

from tests.agents.conftest import Relay
from tests.support.upstream import FakeUpstream, answer

pytestmark = pytest.mark.asyncio


def turn(text: str) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": text}]}


async def test_no_session_id_means_no_shared_history(relay: Relay, upstream: FakeUpstream) -> None:
    upstream.will(answer("A"), answer("B"))
    client = await relay()
    await client.post("/v1/chat/completions", json=turn("my password is hunter2"))
    await client.post("/v1/chat/completions", json=turn("what did I say?"))
    assert [seen.messages for seen in upstream.requests] == [
        [{"role": "user", "content": "my password is hunter2"}],
        [{"role": "user", "content": "what did I say?"}],
    ]


async def test_fifty_clients_without_a_session_are_all_served(relay: Relay, upstream: FakeUpstream) -> None:
    upstream.will(*(answer(f"A{i}") for i in range(50)))
    client = await relay()
    replies = await asyncio.gather(
        *(client.post("/v1/chat/completions", json=turn(f"q{i}")) for i in range(50))
    )
    assert [r.status_code for r in replies] == [200] * 50
    assert all(len(seen.messages) == 1 for seen in upstream.requests)
