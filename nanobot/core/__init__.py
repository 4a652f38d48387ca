"""What a turn is, whatever serves it: the agent contract, the neutral events, the reply and
its usage, and the errors every dialect renders. Neither HTTP nor any agent lives here; both
``nanobot.api`` and ``nanobot.agents`` build on it (DESIGN.md §9)."""
