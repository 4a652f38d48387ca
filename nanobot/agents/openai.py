"""The ``openai`` agent: each turn streamed from an OpenAI-compatible server, each session remembered.

A client may send only its new message (the session's stored conversation is sent before it),
or the whole conversation, as Open WebUI does (sent as is, never doubled). A client's ``tools``
go upstream with its tool options; the upstream's reasoning and tool calls stream back as
events, fragment by fragment. A session keeps the assistant's tool calls and the client's tool
results, so its client may send only its tool results (one or more ``tool`` messages). Our system prompt goes
first unless the conversation brings its own. A turn is saved only once the upstream finished
it: a failed, timed-out or cancelled turn leaves the session as it was.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from nanobot.agents.history import SYSTEM_ROLES, ChatMessage, History, MemoryHistory, open_history, trimmed
from nanobot.agents.upstream import Completion, Upstream, UpstreamMessage
from nanobot.config import ConfigError, Settings, check_upstream
from nanobot.core.errors import InvalidRequest
from nanobot.core.events import OnEvent


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
            # Processes ordering turns through one Redis may share a SQLite file; others may not.
            history = open_history(
                settings.history, ttl=settings.session_ttl or None, shared=bool(settings.redis_url)
            )
        except ConfigError as exc:
            raise ConfigError(exc.problem.removeprefix("history "), "history") from exc.__cause__
        return cls(
            Upstream(
                url,
                model,
                api_key=settings.upstream_api_key,
                follow_redirects=settings.upstream_follow_redirects,
                max_tokens=settings.upstream_max_tokens,
                reasoning_effort=settings.upstream_reasoning_effort,
            ),
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
        tools: Sequence[Mapping[str, Any]] | None = None,
        on_event: OnEvent | None = None,
        **kwargs: Any,
    ) -> Completion:
        """One turn: the conversation upstream, its answer streamed to ``on_stream``, then saved.

        ``stateless`` (the client named no session): only what the client sent goes upstream,
        and nothing is saved, so clients that share no session id never share a conversation.
        ``options`` (the client's sampling fields and tool options) and ``tools`` go upstream as
        sent. Images go upstream with their turn; history keeps each message's text, tool calls
        and tool results. A tool result answering no call of the conversation is a 400.
        """
        sent = list(messages) if messages else [{"role": "user", "content": content}]
        if stateless:
            outgoing, kept = sent, []  # nothing is saved
        elif len(sent) > 1 and sent[0].get("role") != "tool":  # a conversation never opens with a tool result
            outgoing = sent
            kept = [_kept(m) for m in sent]
        else:  # the new message, or the new tool results, after the stored conversation
            stored = await self.history.load(session_key)
            outgoing = [*stored, *sent]
            kept = [*stored, *(_kept(m) for m in sent)]
        check_tool_results(outgoing, len(outgoing) - len(sent))
        completion = await self.upstream.complete(
            self._with_system_prompt(outgoing),
            on_stream or _discard,
            request_id=request_id,
            options=options,
            tools=tools,
            on_event=on_event,
        )
        if on_stream_end is not None:
            await on_stream_end()
        if not stateless:
            await self.history.save(session_key, trimmed([*kept, _answer(completion)], self.max_messages))
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


def check_tool_results(conversation: Sequence[Mapping[str, Any]], start: int) -> None:
    """Every ``tool`` message from ``start`` on (the client's, numbered from there) answers a call
    an earlier assistant message issued, else :class:`InvalidRequest` names its ``tool_call_id``."""
    issued: set[str] = set()
    for i, message in enumerate(conversation):
        calls = message.get("tool_calls")
        if calls and message.get("role") == "assistant":
            issued.update(c["id"] for c in calls if isinstance(c, Mapping) and isinstance(c.get("id"), str))
        elif message.get("role") == "tool" and i >= start and message.get("tool_call_id") not in issued:
            where = f"messages[{i - start}].tool_call_id"
            raise InvalidRequest(
                f"'{where}' ({message.get('tool_call_id')!r}) answers no tool call of the session's "
                "conversation or of an earlier assistant message.",
                param=where,
                code="unknown_tool_call_id",
            )


def _kept(message: Mapping[str, Any]) -> ChatMessage:
    """A message as history keeps it: its text (image parts are not stored), an assistant's
    tool calls, the call a tool result answers."""
    content = message.get("content")
    if isinstance(content, list):
        content = "\n".join(p["text"] for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    kept = ChatMessage(role=str(message["role"]), content=content if isinstance(content, str) else "")
    calls = message.get("tool_calls")
    if calls and isinstance(calls, list):
        kept["tool_calls"] = [dict(call) for call in calls]
        kept["content"] = content if isinstance(content, str) and content else None
    call_id = message.get("tool_call_id")
    if isinstance(call_id, str):
        kept["tool_call_id"] = call_id
    return kept


def _answer(completion: Completion) -> ChatMessage:
    """The upstream's answer as history keeps it: its text and its tool calls (not its reasoning,
    which upstreams such as DeepSeek refuse to be sent back)."""
    if not completion.tool_calls:
        return ChatMessage(role="assistant", content=completion.content)
    calls = [call.to_dict() for call in completion.tool_calls]
    return ChatMessage(role="assistant", content=completion.content or None, tool_calls=calls)


async def _discard(_: str) -> None:
    """``on_delta`` for a non-streaming turn: the text is returned whole instead."""
