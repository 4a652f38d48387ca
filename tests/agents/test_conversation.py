"""Each session's conversation: kept across turns, taken whole from clients that send it, bounded,
and kept in a SQLite file across a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from nanobot.agents.openai import OpenAIAgent
from nanobot.config import Settings
from tests.agents.conftest import Relay
from tests.conformance.conftest import Serve
from tests.support.upstream import FakeUpstream, answer

pytestmark = pytest.mark.asyncio

SYSTEM = {"role": "system", "content": "Be brief."}


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


async def say(
    client: httpx.AsyncClient, *messages: dict[str, str], session_id: str = "s", **extra: Any
) -> str:
    """One turn on ``session_id`` (a client that names no session keeps no history)."""
    payload = {"messages": list(messages), "session_id": session_id, **extra}
    response = await client.post("/v1/chat/completions", json=payload)
    assert response.status_code == 200, response.text
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


async def test_a_session_remembers_its_turns_and_sessions_stay_apart(
    relay: Relay, upstream: FakeUpstream
) -> None:
    upstream.will(answer("A1"), answer("A2"), answer("B1"))
    client = await relay(system_prompt="Be brief.")
    assert await say(client, user("one")) == "A1"
    assert await say(client, user("two")) == "A2"
    assert await say(client, user("elsewhere"), session_id="other") == "B1"
    assert [seen.messages for seen in upstream.requests] == [
        [SYSTEM, user("one")],
        [SYSTEM, user("one"), assistant("A1"), user("two")],
        [SYSTEM, user("elsewhere")],
    ]


async def test_a_client_sending_the_whole_conversation_is_sent_as_is(
    relay: Relay, upstream: FakeUpstream
) -> None:
    upstream.will(answer("C"), answer("D"), answer("own"))
    client = await relay(system_prompt="Be brief.")
    await say(client, user("a"), assistant("b"), user("c"))
    await say(client, user("d"))  # the same session, now one message at a time
    await say(client, {"role": "system", "content": "Mine."}, user("x"), session_id="own")
    assert [seen.messages for seen in upstream.requests] == [
        [SYSTEM, user("a"), assistant("b"), user("c")],
        [SYSTEM, user("a"), assistant("b"), user("c"), assistant("C"), user("d")],
        [{"role": "system", "content": "Mine."}, user("x")],
    ]


async def test_history_keeps_the_newest_turns_and_the_system_prompt(
    relay: Relay, upstream: FakeUpstream
) -> None:
    upstream.will(*(answer(f"A{k}") for k in range(1, 5)))
    client = await relay(system_prompt="Be brief.", max_messages=4)
    for k in range(1, 5):
        await say(client, user(f"u{k}"))
    assert upstream.last.messages == [
        SYSTEM,
        *(m for k in (2, 3) for m in (user(f"u{k}"), assistant(f"A{k}"))),
        user("u4"),
    ]


async def test_sqlite_history_survives_a_restart(
    serve: Serve, upstream: FakeUpstream, tmp_path: Path
) -> None:
    settings = Settings(
        agent="openai", upstream_url=upstream.url, upstream_model="m", history=f"sqlite:{tmp_path / 'h.db'}"
    )
    upstream.will(answer("first answer"), answer("second answer"))
    before = OpenAIAgent.from_settings(settings)
    await say(await serve(before), user("remember me"), session_id="s")
    await before.aclose()  # the process ends; a new one opens the same file
    after = OpenAIAgent.from_settings(settings)
    await say(await serve(after), user("again"), session_id="s")
    assert upstream.last.messages == [user("remember me"), assistant("first answer"), user("again")]
