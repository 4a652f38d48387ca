"""The ``openai`` agent: each turn streamed from an OpenAI-compatible server, each session remembered.

A client may send only its new message (the session's stored conversation is sent before it),
or the whole conversation, as Open WebUI does (sent as is, never doubled). Our system prompt goes
first unless the conversation brings its own. A turn is saved only once the upstream finished
it: a failed, timed-out or cancelled turn leaves the session as it was.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from nanobot.agents.history import SYSTEM_ROLES, ChatMessage, History, MemoryHistory, open_history, trimmed
from nanobot.agents.upstream import Completion, Upstream, UpstreamMessage
from nanobot.config import ConfigError, Settings, check_upstream


class OpenAIAgent:
    """Relays turns to ``upstream``, keeping at most ``max_messages`` turn messages per session."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        history: History | None = None,
        system_prompt: str | None = None,
        max_messages: int = 100,
    ) -> None:
        self.upstream = upstream
        self.history: History = history if history is not None else MemoryHistory()
        self.system_prompt = system_prompt or None
        self.max_messages = max_messages
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIAgent:
        """The agent ``nanobot serve --agent openai`` runs; a :class:`ConfigError` names the
        setting at fault (a bad URL first, then only what is missing)."""
        check_upstream(settings)
        url, model = settings.upstream_url, settings.upstream_model
        assert url and model  # check_upstream made sure
        try:
            history = open_history(settings.history, ttl=settings.session_ttl or None)
        except ConfigError as exc:
            raise ConfigError(exc.problem.removeprefix("history "), "history") from exc.__cause__
        return cls(
            Upstream(url, model, api_key=settings.upstream_api_key),
            history=history,
            system_prompt=settings.system_prompt,
            max_messages=settings.history_max_messages,
        )

    async def process_direct(
        self,
        *,
        content: str,
        session_key: str,
        channel: str = "",
        chat_id: str = "",
        media: list[str] | None = None,
        on_stream: Callable[[str], Awaitable[None]] | None = None,
        on_stream_end: Callable[..., Awaitable[None]] | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        request_id: str | None = None,
        stateless: bool = False,
        options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Completion:
        """One turn: the conversation upstream, its answer streamed to ``on_stream``, then saved.

        ``stateless`` (the client named no session): only what the client sent goes upstream,
        and nothing is saved, so clients that share no session id never share a conversation.
        ``options`` (the client's sampling fields) go upstream as sent. Images go upstream with
        their turn; history keeps each message's text.
        """
        sent = list(messages) if messages else [{"role": "user", "content": content}]
        if stateless:
            outgoing, kept = sent, []  # nothing is saved
        elif len(sent) > 1:
            outgoing = sent
            kept = [_text_only(m) for m in sent]
        else:
            stored = await self.history.load(session_key)
            outgoing = [*stored, sent[-1]]
            kept = [*stored, _text_only(sent[-1])]
        completion = await self.upstream.complete(
            self._with_system_prompt(outgoing), on_stream or _discard, request_id=request_id, options=options
        )
        if on_stream_end is not None:
            await on_stream_end()
        if not stateless:
            answer = ChatMessage(role="assistant", content=completion.content)
            await self.history.save(session_key, trimmed([*kept, answer], self.max_messages))
        return completion

    async def aclose(self) -> None:
        """Close the upstream client and the store; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.upstream.aclose()
        finally:
            await self.history.aclose()

    def _with_system_prompt(self, conversation: Sequence[UpstreamMessage]) -> list[UpstreamMessage]:
        if self.system_prompt is None or any(m["role"] in SYSTEM_ROLES for m in conversation):
            return conversation if isinstance(conversation, list) else list(conversation)
        return [ChatMessage(role="system", content=self.system_prompt), *conversation]


def _text_only(message: Mapping[str, Any]) -> ChatMessage:
    """A message as history keeps it: its text (image parts are not stored)."""
    content = message.get("content")
    if isinstance(content, list):
        content = "\n".join(p["text"] for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return ChatMessage(role=str(message["role"]), content=content if isinstance(content, str) else "")


async def _discard(_: str) -> None:
    """``on_delta`` for a non-streaming turn: the text is returned whole instead."""
