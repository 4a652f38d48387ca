"""``--agent openai`` from flags or ``NANOBOT_*`` variables, and clear errors when it cannot start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nanobot.agents.history import SQLiteHistory
from nanobot.agents.loader import load_agent
from nanobot.agents.openai import OpenAIAgent
from nanobot.cli import main
from nanobot.config import ConfigError, Settings


@pytest.mark.asyncio
async def test_the_environment_configures_the_openai_agent(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "NANOBOT_AGENT": "openai",
            "NANOBOT_UPSTREAM_URL": "http://localhost:11434/v1/",
            "NANOBOT_UPSTREAM_MODEL": "llama3.2",
            "NANOBOT_SYSTEM_PROMPT": "Be brief.",
            "NANOBOT_HISTORY": f"sqlite:{tmp_path / 'h.db'}",
            "NANOBOT_HISTORY_MAX_MESSAGES": "6",
        }
    )
    agent = load_agent(settings.agent, settings)
    assert isinstance(agent, OpenAIAgent)
    assert (agent.upstream.endpoint, agent.upstream.model) == (
        "http://localhost:11434/v1/chat/completions",
        "llama3.2",
    )
    assert (agent.system_prompt, agent.max_messages) == ("Be brief.", 6)
    assert isinstance(agent.history, SQLiteHistory)
    await agent.aclose()
    await agent.aclose()  # the server may close it again: harmless


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        (Settings(agent="openai"), "^--upstream-url and --upstream-model: needed by the openai agent"),
        (
            Settings(agent="openai", upstream_url="http://h/v1"),
            "^--upstream-model: needed by the openai agent",
        ),
        (
            Settings(agent="openai", upstream_url="localhost:11434"),
            "^--upstream-url: must start with http://",
        ),
        (Settings(agent="openai", upstream_url="localhost:11434", upstream_model="m"), "http://"),
        (Settings(agent="openai", upstream_url="http://h/v1", upstream_model="m", history="disk"), "history"),
    ],
)
def test_the_openai_agent_refuses_to_start_without_what_it_needs(settings: Settings, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_agent("openai", settings)


def test_nanobot_serve_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith("NANOBOT_")]:
        monkeypatch.delenv(name)
    assert main(["serve", "--agent", "openai", "--upstream-model", "m", "--port", "0"]) == 2
    assert (
        capsys.readouterr().err
        == "nanobot serve: error: --upstream-url: needed by the openai agent (e.g. http://localhost:11434/v1)\n"
    )
