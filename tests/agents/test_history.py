"""Session stores: bounded conversations, in memory or in a SQLite file that outlives the process."""

from __future__ import annotations

from pathlib import Path

import pytest

from nanobot.agents.history import ChatMessage, MemoryHistory, SQLiteHistory, open_history, trimmed
from nanobot.config import ConfigError


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
