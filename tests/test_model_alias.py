"""``--model-alias NAME=TARGET`` and ``NANOBOT_MODEL_ALIAS``: read, checked, handed to the service."""

from __future__ import annotations

import pytest

from nanobot.config import ConfigError, Settings, parse_args


def test_flags_and_the_env_var() -> None:
    settings = parse_args(
        ["serve", "--model", "m", "--model-alias", "claude-*=m", "--model-alias", "haiku = m"]
    )
    assert settings.service_options()["model_aliases"] == (("claude-*", "m"), ("haiku", "m"))
    from_env = Settings.from_env({"NANOBOT_MODEL": "m", "NANOBOT_MODEL_ALIAS": "claude-*=m, *=m"})
    assert from_env.model_aliases() == (("claude-*", "m"), ("*", "m"))


@pytest.mark.parametrize("alias", ["claude", "=nanobot", "claude-*=other"])
def test_an_alias_must_name_the_served_model(alias: str) -> None:
    with pytest.raises(ConfigError, match="model-alias"):
        Settings(model_alias=(alias,)).checked()
