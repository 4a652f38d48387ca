"""Turn an agent spec (``echo``, ``module:attribute``) into an agent object."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from nanobot.agents import Agent
from nanobot.agents.echo import EchoAgent
from nanobot.config import Settings


class AgentLoadError(Exception):
    """The agent spec names nothing usable; the message says why."""


def load_agent(spec: str, settings: Settings | None = None) -> Agent:
    """``echo``, ``openai``, or ``module:attribute`` (an agent, a class, a zero-argument factory).

    Raises :class:`AgentLoadError` for a spec naming nothing usable, and ``ConfigError`` when the
    settings the agent needs are missing or wrong (``openai`` without an upstream URL or model).
    """
    settings = settings or Settings()
    if spec == "echo":
        return EchoAgent(delay=settings.echo_delay)
    if spec == "openai":
        from nanobot.agents.openai import OpenAIAgent

        return OpenAIAgent.from_settings(settings)
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise AgentLoadError(f"Agent spec {spec!r} is not 'echo', 'openai' or 'module:attribute'.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AgentLoadError(f"Cannot import {module_name!r}: {exc}") from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AgentLoadError(f"{module_name!r} has no attribute {attribute!r}.") from None
    agent = target() if inspect.isclass(target) or (not _is_agent(target) and callable(target)) else target
    if not _is_agent(agent):
        raise AgentLoadError(f"{spec!r} did not give an object with an async process_direct().")
    return agent  # type: ignore[no-any-return]


def _is_agent(obj: object) -> bool:
    method = getattr(obj, "process_direct", None)
    return callable(method) and not inspect.isclass(obj)
