"""Session stores: bounded conversations, in memory or in a SQLite file that outlives the process;
a save the store cannot do (a locked or deleted database) is 503 ``answer_not_saved``, as with
Redis; one process owns a SQLite file."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from nanobot.agents.history import (
    ChatMessage,
    HistoryNotSaved,
    MemoryHistory,
    SQLiteHistory,
    open_history,
    trimmed,
)
from nanobot.config import ConfigError
from tests.agents.conftest import Relay
from tests.support.upstream import FakeUpstream, answer


def msg(role: str, content: str) -> ChatMessage:
    return ChatMessage(role=role, content=content)


def turns(*names: str) -> list[ChatMessage]:
    return [m for name in names for m in (msg("user", name), msg("assistant", name.upper()))]


def test_trimmed_drops_whole_turns_oldest_first_and_keeps_system_messages() -> None:
    conversation = [msg("system", "s"), *turns("a", "b", "c")]
    assert trimmed(conversation, 6) == conversation
    assert trimmed(conversation, 5) == [msg("system", "s"), *turns("b", "c")]
    assert trimmed(conversation, 2) == [msg("system", "s"), *turns("c")]


def test_trimmed_never_starts_with_an_answer() -> None:
    conversation = [msg("user", "a"), msg("assistant", "A1"), msg("assistant", "A2"), *turns("b")]
    assert trimmed(conversation, 3) == turns("b")


@pytest.mark.asyncio
async def test_memory_history_keeps_sessions_apart_and_forgets_the_least_recent() -> None:
    history = MemoryHistory(max_sessions=2)
    await history.save("a", turns("a"))
    await history.save("b", turns("b"))
    assert await history.load("a") == turns("a")  # "a" is now the most recent
    await history.save("c", turns("c"))
    assert (await history.load("a"), await history.load("b")) == (turns("a"), [])
    loaded = await history.load("c")
    loaded.append(msg("user", "not saved"))
    assert await history.load("c") == turns("c")


@pytest.mark.asyncio
async def test_sqlite_history_survives_a_new_store_on_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    first = SQLiteHistory(path)
    await first.save("api:x", [msg("system", "é"), *turns("a")])
    await first.save("api:x", turns("b"))
    await first.save("api:y", turns("y"))
    await first.aclose()
    second = SQLiteHistory(path)
    assert await second.load("api:x") == turns("b")
    assert await second.load("api:y") == turns("y")
    assert await second.load("api:z") == []
    await second.aclose()


@pytest.mark.asyncio
async def test_open_history_reads_the_setting(tmp_path: Path) -> None:
    assert isinstance(open_history("memory"), MemoryHistory)
    store = open_history(f"sqlite:{tmp_path / 'h.db'}")
    assert isinstance(store, SQLiteHistory)
    await store.aclose()
    for bad in ("mysql://x", "sqlite:", "sqlite"):  # redis:// is a store now
        with pytest.raises(ConfigError, match="'memory' or 'sqlite:PATH'"):
            open_history(bad)
    with pytest.raises(ConfigError, match="Cannot open the history database"):
        open_history(f"sqlite:{tmp_path / 'missing' / 'h.db'}")


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Path]:
    """A history database another connection holds locked for writing (``BEGIN EXCLUSIVE``)."""
    path = tmp_path / "locked.db"
    SQLiteHistory(path)._close()  # the table exists
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    yield path
    other.execute("ROLLBACK")
    other.close()


@pytest.mark.asyncio
async def test_a_save_sqlite_refuses_is_an_answer_not_saved(locked: Path) -> None:
    history = SQLiteHistory(locked, busy_timeout=0.05)
    try:
        with pytest.raises(HistoryNotSaved) as unsaved:
            await history.save("api:x", turns("a"))
        assert unsaved.value.status == 503 and unsaved.value.code == "answer_not_saved"
        assert unsaved.value.headers() == {"Retry-After": "1", "x-should-retry": "false"}
    finally:
        await history.aclose()


def ask(text: str, stream: bool) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": text}], "session_id": "s", "stream": stream}


@pytest.mark.asyncio
async def test_an_answer_sqlite_cannot_store_is_a_503_with_one_log_line_and_no_traceback(
    relay: Relay, upstream: FakeUpstream, locked: Path, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.will(answer("A1"), answer("A", "2"))
    client = await relay(history=SQLiteHistory(locked, busy_timeout=0.05))
    caplog.set_level(logging.WARNING)
    response = await client.post("/v1/chat/completions", json=ask("u1", False))
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "answer_not_saved"
    assert response.headers["x-should-retry"] == "false"
    async with client.stream("POST", "/v1/chat/completions", json=ask("u2", True)) as streamed:
        body = (await streamed.aread()).decode()
    assert streamed.status_code == 200  # the stream had begun: the answer, then the error event
    assert '"content":"2"' in body.replace(" ", "")
    events = [line.removeprefix("data: ") for line in body.splitlines() if line.startswith("data: ")]
    assert json.loads(events[-1])["error"]["code"] == "answer_not_saved"
    assert "[DONE]" not in body
    assert not [record for record in caplog.records if record.exc_info]  # no traceback


@pytest.mark.asyncio
async def test_a_second_process_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    owner = SQLiteHistory(path)
    try:
        for shared in (False, True):  # nor may a process ordering turns through Redis join it
            with pytest.raises(ConfigError, match=r"sqlite:.*another nanobot process.*--redis-url"):
                SQLiteHistory(path, shared=shared)
    finally:
        await owner.aclose()
    fleet = [SQLiteHistory(path, shared=True) for _ in range(2)]  # workers sharing one Redis
    with pytest.raises(ConfigError, match="another nanobot process"):
        SQLiteHistory(path)
    for history in fleet:
        await history.aclose()
    alone = SQLiteHistory(path)  # every lock was released
    await alone.aclose()


@pytest.mark.asyncio
async def test_a_database_deleted_while_serving_fails_every_save_until_restarted(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    history = SQLiteHistory(path)
    await history.save("api:x", turns("a"))
    for leftover in tmp_path.glob("h.db*"):
        leftover.unlink()
    with pytest.raises(HistoryNotSaved, match="DatabaseGone"):
        await history.save("api:x", turns("b"))
    await history.aclose()
    again = SQLiteHistory(path)  # a restart makes a new, empty database
    assert await again.load("api:x") == []
    await again.save("api:x", turns("c"))
    assert await again.load("api:x") == turns("c")
    await again.aclose()
