"""How the service calls an agent: the keyword arguments it takes, media, ``prepare_agent``.

Extra context (``messages``, ``request_id``, ``stateless``, ``options``) goes only to agents
whose ``process_direct`` accepts it, so an agent written for nanobot keeps working.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from nanobot.api.driver import Invoke, OnStream, OnStreamEnd
from nanobot.api.media import Attachment, MediaStore
from nanobot.api.request import DEFAULT_SESSION, ChatRequest
from nanobot.core.agent import Agent
from nanobot.core.errors import InvalidRequest
from nanobot.core.events import OnEvent, progress_events
from nanobot.core.reply import Reply, read_reply

#: Keyword arguments handed to agents whose ``process_direct`` accepts them.
CONTEXT_KWARGS = ("messages", "request_id", "stateless", "options")
#: Callbacks and the client's tools: only to agents that name them (never through ``**kwargs``).
NAMED_ONLY = ("on_event", "on_progress", "tools")


def _parameters(agent: Agent) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(agent.process_direct).parameters.values())
    except (TypeError, ValueError):
        return []


def named_parameters(agent: Agent) -> frozenset[str]:
    """The parameters ``process_direct`` names itself (``**kwargs`` aside)."""
    return frozenset(p.name for p in _parameters(agent) if p.kind is not inspect.Parameter.VAR_KEYWORD)


def accepted_context(agent: Agent) -> frozenset[str]:
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in _parameters(agent)):
        return frozenset(CONTEXT_KWARGS)
    return named_parameters(agent) & frozenset(CONTEXT_KWARGS)


class AgentCaller:
    """Builds each turn's call to ``agent``."""

    def __init__(self, agent: Agent, media: MediaStore, prepare: Callable[[], object] | None) -> None:
        self.agent = agent
        self._media = media
        self._prepare = prepare
        self._context = accepted_context(agent)
        #: The agent names ``options`` itself (not just ``**kwargs``): it relays sampling fields,
        #: so a non-text ``response_format`` is its upstream's to judge, not refused here.
        named = named_parameters(agent)
        self.relays = "options" in named
        #: Which of :data:`NAMED_ONLY` the agent takes.
        self.takes = frozenset(NAMED_ONLY) & named

    def invoker(
        self, request: ChatRequest, attachments: tuple[Attachment, ...], named: str | None, request_id: str
    ) -> Invoke:
        """The agent call. A client that named no session gets ``api:default`` as the key (what
        nanobot agents expect) and, for agents that take it, ``stateless=True``: the turn is
        built only from what the client sent, and nothing is kept."""
        prompt = request.prompt
        session = named or DEFAULT_SESSION
        context: dict[str, Any] = {}
        if request.tools:
            if "tools" not in self.takes:
                raise InvalidRequest(
                    "This server's agent does not take client tools.",
                    param="tools",
                    code="unsupported_parameter",
                )
            context["tools"] = list(request.tools)
        if "messages" in self._context:
            context["messages"] = [m.to_dict() for m in request.messages]
        if "request_id" in self._context:
            context["request_id"] = request_id
        if "stateless" in self._context:
            context["stateless"] = named is None
        if "options" in self._context:
            context["options"] = request.options
        call = _Call(self.agent, self._prepare, prompt.content, session, context, self.takes)
        if not attachments:
            return call

        async def invoke(
            on_stream: OnStream | None, on_stream_end: OnStreamEnd | None, on_event: OnEvent | None
        ) -> Any:
            async with self._media.saved(attachments) as paths:
                return await call.run(paths, on_stream, on_stream_end, on_event)

        return invoke


class _Call:
    """One turn's call to the agent (an :data:`Invoke`): a slotted object, not a closure, as
    every open stream holds one."""

    __slots__ = ("_agent", "_content", "_context", "_prepare", "_session", "_takes")

    def __init__(
        self,
        agent: Agent,
        prepare: Callable[[], object] | None,
        content: str,
        session: str,
        context: dict[str, Any],
        takes: frozenset[str] = frozenset(),
    ) -> None:
        self._agent = agent
        self._takes = takes
        self._prepare = prepare
        self._content = content
        self._session = session
        self._context = context

    def __call__(
        self, on_stream: OnStream | None, on_end: OnStreamEnd | None, on_event: OnEvent | None
    ) -> Coroutine[Any, Any, Reply]:
        return self.run(None, on_stream, on_end, on_event)

    async def run(
        self,
        media: list[str] | None,
        on_stream: OnStream | None,
        on_end: OnStreamEnd | None,
        on_event: OnEvent | None = None,
    ) -> Reply:
        if self._prepare is not None:  # e.g. nanobot's MCP connector, inside the turn
            prepared = self._prepare()
            if inspect.isawaitable(prepared):
                await prepared
        agent, session = self._agent, self._session
        context = self._context
        if on_event is not None and self._takes:
            context = dict(context)
            if "on_event" in self._takes:
                context["on_event"] = on_event
            if "on_progress" in self._takes:
                context["on_progress"] = Progress(on_event)
        result = await agent.process_direct(
            content=self._content,
            session_key=session,
            channel="api",
            chat_id=session.removeprefix("api:"),
            media=media,
            on_stream=on_stream,
            on_stream_end=on_end,
            **context,
        )
        return read_reply(result, getattr(agent, "_last_usage", None))  # read before any await


class Progress:
    """nanobot's ``on_progress(text, *, tool_hint=, tool_events=, reasoning=, reasoning_end=)``,
    turned into the turn's events (see :func:`nanobot.core.events.progress_events`)."""

    __slots__ = ("_on_event",)

    def __init__(self, on_event: OnEvent) -> None:
        self._on_event = on_event

    async def __call__(
        self,
        text: str = "",
        *,
        tool_hint: bool = False,
        tool_events: object = None,
        reasoning: bool = False,
        reasoning_end: bool = False,
        **_: Any,
    ) -> None:
        events = progress_events(
            text if isinstance(text, str) else str(text),
            tool_hint=tool_hint,
            tool_events=tool_events,
            reasoning=reasoning,
            reasoning_end=reasoning_end,
        )
        for event in events:
            await self._on_event(event)
