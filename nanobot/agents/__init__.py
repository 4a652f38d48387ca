"""Agents: anything with ``async process_direct(...)`` can sit behind the API (the contract:
:class:`nanobot.core.agent.Agent`, re-exported here for agents' authors)."""

from nanobot.core.agent import Agent

__all__ = ["Agent"]
