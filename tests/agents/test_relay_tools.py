"""The openai agent with client tools and reasoning, called as the core calls it, against the test
upstream over loopback: what goes upstream, the events that come back (fragment by fragment, in
order, before the finish), what a session keeps, and what a cancelled turn does upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from nanobot.agents.history import ChatMessage, History, MemoryHistory, RedisHistory, SQLiteHistory, trimmed
from nanobot.agents.openai import OpenAIAgent
from nanobot.agents.upstream import Completion
from nanobot.core.errors import InvalidRequest, UpstreamFailed
from nanobot.core.events import (
    AgentEvent,
    ReasoningDelta,
    ReasoningEnd,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from nanobot.core.reply import Usage, read_reply
from tests.agents.conftest import make_agent
from tests.support.redis import RedisServer, redis_server
from tests.support.upstream import (
    DONE,
    FakeUpstream,
    answer,
    call_arguments,
    call_start,
    calls_events,
    chunk,
    complete,
    raw,
    reasoning,
)

__all__ = ["redis_server"]

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(20)]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": True,
    },
}
USER = {"role": "user", "content": "Weather in Paris?"}
Seen = TextDelta | AgentEvent


class Recorder:
    """``on_stream`` and ``on_event`` in one: every text delta and event, in the order they came;
    ``wait_for(n)`` returns once ``n`` of them came."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self._grew = asyncio.Event()

    async def on_stream(self, text: str) -> None:
        self._add(TextDelta(text))

    async def on_event(self, event: AgentEvent) -> None:
        self._add(event)

    def _add(self, item: Seen) -> None:
        self.seen.append(item)
        self._grew.set()

    async def wait_for(self, count: int) -> None:
        while len(self.seen) < count:
            self._grew.clear()
            await self._grew.wait()

    def kinds(self) -> list[type]:
        return [type(item) for item in self.seen]


@pytest_asyncio.fixture
async def agent(upstream: FakeUpstream) -> AsyncIterator[OpenAIAgent]:
    relay = make_agent(upstream.url)
    yield relay
    await relay.aclose()


async def turn(
    agent: OpenAIAgent,
    *messages: dict[str, Any],
    recorder: Recorder | None = None,
    session: str | None = None,
    stream: bool = True,
    **extra: Any,
) -> Completion:
    """One turn as the core makes it (``session=None``: a stateless client)."""
    recorder = recorder or Recorder()
    return await agent.process_direct(
        content=str(messages[-1].get("content") or ""),
        session_key=session or "default",
        messages=list(messages),
        stateless=session is None,
        on_stream=recorder.on_stream if stream else None,
        on_event=recorder.on_event,
        **extra,
    )


def gated(recorder: Recorder, *, after: int, until: int) -> Callable[[int], Awaitable[None]]:
    """An upstream gate: event ``k`` (``after < k <= until``) goes out only once the agent has
    handed on one item for each event sent from ``after`` on, so nothing is held back until the
    finish (events ``after`` and up to ``until - 1`` must each make exactly one item)."""

    async def gate(k: int) -> None:
        if after < k <= until:
            await recorder.wait_for(k - after)

    return gate


# -- what goes upstream ------------------------------------------------------------------------


async def test_tools_and_tool_options_go_upstream_as_sent(agent: OpenAIAgent, upstream: FakeUpstream) -> None:
    upstream.will(answer("ok"))
    choice = {"type": "function", "function": {"name": "get_weather"}}
    await turn(
        agent,
        USER,
        tools=[WEATHER],
        options={"temperature": 0.5, "tool_choice": choice, "parallel_tool_calls": False},
    )
    body = upstream.last.body
    assert body["tools"] == [WEATHER]
    assert (body["tool_choice"], body["parallel_tool_calls"], body["temperature"]) == (choice, False, 0.5)
    assert body["stream"] is True and body["messages"] == [USER]


async def test_no_tools_sends_no_tools_field(agent: OpenAIAgent, upstream: FakeUpstream) -> None:
    upstream.will(answer("ok"))
    await turn(agent, USER, tools=None)
    assert "tools" not in upstream.last.body


# -- tool calls streamed back ------------------------------------------------------------------


async def test_fifty_fragments_arrive_one_by_one_in_order_before_the_finish(
    agent: OpenAIAgent, upstream: FakeUpstream
) -> None:
    fragments = ['{"city": "', *"Paris, Île-de-France, France, Europe, Earth, Sol"[:48], '"}']
    assert len(fragments) == 50
    recorder = Recorder()
    events = calls_events(("call_1", "get_weather", fragments))  # role, start, 50 fragments, finish, ...
    upstream.will(raw(*events, gate=gated(recorder, after=1, until=52)))
    completion = await turn(agent, USER, recorder=recorder, tools=[WEATHER])
    assert recorder.seen == [
        ToolCallStart(0, "call_1", "get_weather"),
        *(ToolCallDelta(0, f) for f in fragments),
        ToolCallEnd(0),
    ]
    arguments = "".join(fragments)
    assert json.loads(arguments) == {"city": "Paris, Île-de-France, France, Europe, Earth, Sol"[:48]}
    assert completion.tool_calls == (ToolCall("call_1", "get_weather", arguments),)
    assert (completion.finish_reason, completion.content) == ("tool_calls", "")
    assert completion.usage == Usage(5, 7, 12)
    reply = read_reply(completion)
    assert (reply.finish_reason, reply.tool_calls) == ("tool_calls", completion.tool_calls)


async def test_parallel_calls_are_told_apart_by_index(agent: OpenAIAgent, upstream: FakeUpstream) -> None:
    upstream.will(
        raw(
            chunk({"role": "assistant", "content": None}),
            call_start(0, "call_a", "get_weather", '{"ci'),
            call_start(1, "call_b", "get_time"),
            call_arguments(1, '{"zone": "CET"}'),
            call_arguments(0, 'ty": "Oslo"}'),
            chunk({}, "tool_calls"),
            DONE,
        )
    )
    recorder = Recorder()
    completion = await turn(agent, USER, recorder=recorder, tools=[WEATHER])
    assert recorder.seen == [
        ToolCallStart(0, "call_a", "get_weather"),
        ToolCallDelta(0, '{"ci'),
        ToolCallStart(1, "call_b", "get_time"),
        ToolCallDelta(1, '{"zone": "CET"}'),
        ToolCallDelta(0, 'ty": "Oslo"}'),
        ToolCallEnd(0),
        ToolCallEnd(1),
    ]
    assert completion.tool_calls == (
        ToolCall("call_a", "get_weather", '{"city": "Oslo"}'),
        ToolCall("call_b", "get_time", '{"zone": "CET"}'),
    )


SEPARATED = '{"text": "naïve 日本語 😀 a\u2028b\u2029c\x85d"}'


@pytest.mark.parametrize("ensure_ascii", [True, False], ids=["escaped", "raw"])
async def test_non_ascii_and_u2028_in_arguments_arrive_intact(
    agent: OpenAIAgent, upstream: FakeUpstream, ensure_ascii: bool
) -> None:
    fragments = [SEPARATED[k : k + 3] for k in range(0, len(SEPARATED), 3)]
    events = calls_events(("c1", "note", fragments), ensure_ascii=ensure_ascii)
    assert ("\u2028".encode() in b"".join(events)) is not ensure_ascii
    # The body is also cut one byte per write: characters split across reads come out whole.
    body = b"".join(events)
    upstream.will(raw(*(body[k : k + 1] for k in range(len(body)))))
    recorder = Recorder()
    completion = await turn(agent, USER, recorder=recorder)
    sent = "".join(e.arguments for e in recorder.seen if isinstance(e, ToolCallDelta))
    assert sent == SEPARATED == completion.tool_calls[0].arguments


async def test_tolerated_shapes_missing_index_whole_calls_and_odd_indices(
    agent: OpenAIAgent, upstream: FakeUpstream
) -> None:
    """Servers that omit ``index``, send a whole call in one fragment, or number calls from 1."""
    upstream.will(
        raw(
            call_start(None, "c1", "first", '{"a": '),
            call_arguments(None, "1}"),
            call_start(None, "c2", "second", "{}"),  # a new id without an index: the next call
            call_start(5, "c3", "third", '{"x": 3}'),
            chunk({}, "tool_calls"),
            DONE,
        )
    )
    recorder = Recorder()
    completion = await turn(agent, USER, recorder=recorder)
    assert [e for e in recorder.seen if isinstance(e, ToolCallStart)] == [
        ToolCallStart(0, "c1", "first"),
        ToolCallStart(1, "c2", "second"),
        ToolCallStart(2, "c3", "third"),
    ]
    assert [c.arguments for c in completion.tool_calls] == ['{"a": 1}', "{}", '{"x": 3}']
    assert recorder.seen[-3:] == [ToolCallEnd(0), ToolCallEnd(1), ToolCallEnd(2)]


@pytest.mark.parametrize(
    ("events", "message"),
    [
        (
            [chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"arguments": "{}"}}]})],
            "without a function name",
        ),
        ([chunk({"tool_calls": {"index": 0}})], "malformed chunk"),
        ([chunk({"tool_calls": ["x"]})], "malformed chunk"),
        ([chunk({"tool_calls": [{"index": -1, "id": "c", "function": {"name": "f"}}]})], "malformed chunk"),
        ([chunk({"tool_calls": [{"index": True, "id": "c", "function": {"name": "f"}}]})], "malformed chunk"),
        ([chunk({"tool_calls": [{"index": 0, "id": 7, "function": {"name": "f"}}]})], "malformed chunk"),
        (
            [chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": 3}}]})],
            "malformed",
        ),
        ([chunk({"tool_calls": [{"index": 0, "id": "c", "function": "f"}]})], "malformed chunk"),
        ([chunk({"reasoning_content": {"text": "x"}})], "malformed chunk"),
        (
            [call_start(0, "c", "f"), chunk({}, "tool_calls"), call_arguments(0, "{}")],
            "after the answer finished",
        ),
    ],
)
async def test_malformed_tool_calls_and_reasoning_are_a_502(
    agent: OpenAIAgent, upstream: FakeUpstream, events: list[bytes], message: str
) -> None:
    upstream.will(raw(*events, DONE))
    with pytest.raises(UpstreamFailed, match=message) as caught:
        await turn(agent, USER)
    assert caught.value.status == 502 and caught.value.code == "upstream_malformed"


@pytest.mark.parametrize("reason", ["tool_calls", "stop", "length", "content_filter"])
async def test_the_upstreams_finish_reason_is_passed_through(
    agent: OpenAIAgent, upstream: FakeUpstream, reason: str
) -> None:
    upstream.will(raw(*calls_events(("c1", "f", ["{}"]), finish=reason)))
    completion = await turn(agent, USER)
    assert completion.finish_reason == reason


async def test_without_on_event_the_calls_still_come_back_in_the_completion(
    agent: OpenAIAgent, upstream: FakeUpstream
) -> None:
    upstream.will(raw(*calls_events(("c1", "f", ['{"k":', " 1}"]), thoughts=["hm"])))
    texts: list[str] = []

    async def on_stream(text: str) -> None:
        texts.append(text)

    completion = await agent.process_direct(content="x", session_key="s", on_stream=on_stream, stateless=True)
    assert (completion.tool_calls, completion.reasoning, texts) == (
        (ToolCall("c1", "f", '{"k": 1}'),),
        "hm",
        [],
    )


# -- reasoning ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_streams_as_events_and_ends_when_the_text_starts(
    agent: OpenAIAgent, upstream: FakeUpstream, field: str
) -> None:
    usage = {
        "prompt_tokens": 3,
        "completion_tokens": 9,
        "total_tokens": 12,
        "completion_tokens_details": {"reasoning_tokens": 6},
    }
    recorder = Recorder()
    upstream.will(
        raw(
            chunk({"role": "assistant", "content": ""}),
            reasoning("Let me ", field),
            reasoning("think.", field),
            chunk({"content": "It is ", field: None}),
            chunk({"content": "sunny."}),
            chunk({}, "stop"),
            chunk(None, usage=usage),
            DONE,
            gate=gated(recorder, after=1, until=5),
        )
    )
    completion = await turn(agent, USER, recorder=recorder)
    assert recorder.seen == [
        ReasoningDelta("Let me "),
        ReasoningDelta("think."),
        ReasoningEnd(),
        TextDelta("It is "),
        TextDelta("sunny."),
    ]
    assert (completion.content, completion.reasoning) == ("It is sunny.", "Let me think.")
    assert completion.usage == Usage(3, 9, 12, 6)
    assert completion.usage.to_dict()["completion_tokens_details"] == {"reasoning_tokens": 6}


async def test_the_same_reasoning_in_both_fields_is_taken_once_and_ends_before_a_call(
    agent: OpenAIAgent, upstream: FakeUpstream
) -> None:
    """Some vLLM versions send ``reasoning`` and ``reasoning_content`` with the same text."""
    upstream.will(
        raw(
            chunk({"reasoning_content": "hmm", "reasoning": "hmm"}),
            chunk(
                {"content": "Calling.", "tool_calls": [{"index": 0, "id": "c", "function": {"name": "f"}}]}
            ),
            chunk({}, "tool_calls"),
            DONE,
        )
    )
    recorder = Recorder()
    completion = await turn(agent, USER, recorder=recorder)
    assert recorder.seen == [
        ReasoningDelta("hmm"),
        ReasoningEnd(),
        TextDelta("Calling."),
        ToolCallStart(0, "c", "f"),
        ToolCallEnd(0),
    ]
    assert (completion.content, completion.reasoning) == ("Calling.", "hmm")
    assert completion.tool_calls == (ToolCall("c", "f", ""),)


async def test_reasoning_open_at_the_finish_is_ended(agent: OpenAIAgent, upstream: FakeUpstream) -> None:
    upstream.will(raw(reasoning("only thinking"), chunk({}, "length"), DONE))
    recorder = Recorder()
    completion = await turn(agent, USER, recorder=recorder)
    assert recorder.seen == [ReasoningDelta("only thinking"), ReasoningEnd()]
    assert completion.finish_reason == "length"


# -- an upstream that ignores stream=true ------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "non-streaming"])
async def test_a_whole_answer_carries_its_tool_calls_and_reasoning(
    agent: OpenAIAgent, upstream: FakeUpstream, stream: bool
) -> None:
    calls = [
        {
            "id": "c1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        },
        {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": {"zone": "CET"}}},
    ]
    upstream.will(complete(None, finish="tool_calls", tool_calls=calls, reasoning_content="Two calls."))
    recorder = Recorder()
    completion = await turn(agent, USER, recorder=recorder, stream=stream)
    assert recorder.seen == [
        ReasoningDelta("Two calls."),
        ReasoningEnd(),
        ToolCallStart(0, "c1", "get_weather"),
        ToolCallDelta(0, '{"city": "Oslo"}'),
        ToolCallStart(1, "c2", "get_time"),
        ToolCallDelta(1, '{"zone":"CET"}'),
        ToolCallEnd(0),
        ToolCallEnd(1),
    ]
    assert (completion.finish_reason, completion.reasoning, completion.content) == (
        "tool_calls",
        "Two calls.",
        "",
    )
    assert [c.call_id for c in completion.tool_calls] == ["c1", "c2"]


async def test_a_whole_answer_with_text_and_reasoning(agent: OpenAIAgent, upstream: FakeUpstream) -> None:
    upstream.will(complete("Sunny.", reasoning="Looked it up."))
    recorder = Recorder()
    completion = await turn(agent, USER, recorder=recorder)
    assert recorder.seen == [ReasoningDelta("Looked it up."), ReasoningEnd(), TextDelta("Sunny.")]
    assert (completion.content, completion.reasoning) == ("Sunny.", "Looked it up.")


# -- sessions ----------------------------------------------------------------------------------


def assistant_calls(*calls: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [ToolCall(*call).to_dict() for call in calls],
    }


def tool_result(call_id: str, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


@pytest_asyncio.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[History]:
    if request.param == "memory":
        history: History = MemoryHistory()
    elif request.param == "sqlite":
        history = SQLiteHistory(tmp_path / "h.db")
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        history = RedisHistory(server.url, ttl=60, prefix="relay-tools")
    yield history
    await history.aclose()


async def test_a_session_client_may_send_only_its_tool_result(upstream: FakeUpstream, store: History) -> None:
    agent = make_agent(upstream.url, history=store)
    big = "x" * (1024 * 1024)  # a 1 MB tool result
    upstream.will(
        raw(*calls_events(("call_1", "get_weather", ['{"city": "Paris"}']))),
        answer("It is sunny."),
        answer("You are welcome."),
    )
    first = await turn(agent, USER, session="s", tools=[WEATHER])
    assert first.finish_reason == "tool_calls"
    second = await turn(agent, tool_result("call_1", big), session="s", tools=[WEATHER])
    assert second.content == "It is sunny."
    issued = assistant_calls(("call_1", "get_weather", '{"city": "Paris"}'))
    assert upstream.last.messages == [USER, issued, tool_result("call_1", big)]
    await turn(agent, {"role": "user", "content": "Thanks"}, session="s")
    assert upstream.last.messages == [
        USER,
        issued,
        tool_result("call_1", big),
        {"role": "assistant", "content": "It is sunny."},
        {"role": "user", "content": "Thanks"},
    ]
    await agent.aclose()


async def test_parallel_results_may_come_together_and_a_whole_conversation_is_kept(
    agent: OpenAIAgent, upstream: FakeUpstream
) -> None:
    upstream.will(
        raw(*calls_events(("a", "f", ["{}"]), ("b", "g", ["{}"]))),
        answer("both done"),
        answer("again"),
    )
    await turn(agent, USER, session="p")
    await turn(agent, tool_result("a", "1"), tool_result("b", "2"), session="p")
    issued = assistant_calls(("a", "f", "{}"), ("b", "g", "{}"))
    assert upstream.last.messages == [USER, issued, tool_result("a", "1"), tool_result("b", "2")]
    # A client that sends the whole conversation (Open WebUI) has its tool messages kept too.
    whole = [
        USER,
        issued,
        tool_result("a", "1"),
        tool_result("b", "2"),
        {"role": "assistant", "content": "x"},
    ]
    await turn(agent, *whole, {"role": "user", "content": "more"}, session="w")
    upstream.will(answer("z"))
    await turn(agent, {"role": "user", "content": "next"}, session="w")
    assert upstream.last.messages[:5] == whole


async def test_a_tool_result_no_call_issued_is_a_400_naming_it(
    agent: OpenAIAgent, upstream: FakeUpstream
) -> None:
    upstream.will(raw(*calls_events(("call_1", "f", ["{}"]))))
    await turn(agent, USER, session="s")
    count = len(upstream.requests)
    for messages, param in [
        ([tool_result("nope", "1")], "messages[0].tool_call_id"),
        ([tool_result("call_1", "1"), tool_result("nope", "2")], "messages[1].tool_call_id"),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            await turn(agent, *messages, session="s")
        assert (caught.value.status, caught.value.param) == (400, param)
        assert caught.value.code == "unknown_tool_call_id"
    with pytest.raises(InvalidRequest) as caught:  # a fresh session has issued nothing
        await turn(agent, tool_result("call_1", "1"), session="fresh")
    assert caught.value.param == "messages[0].tool_call_id"
    assert len(upstream.requests) == count  # nothing went upstream
    assert (await agent.history.load("s"))[-1]["tool_calls"][0]["id"] == "call_1"  # nor was it changed


async def test_trimming_never_parts_tool_calls_from_their_results() -> None:
    def user(text: str) -> ChatMessage:
        return ChatMessage(role="user", content=text)

    calls = ChatMessage(role="assistant", content=None, tool_calls=[ToolCall("c", "f", "{}").to_dict()])
    result = ChatMessage(role="tool", content="r", tool_call_id="c")
    answer_ = ChatMessage(role="assistant", content="a")
    conversation = [user("1"), calls, result, answer_, user("2"), calls, result, answer_]
    for limit in range(1, len(conversation) + 1):
        kept = trimmed(conversation, limit)
        assert not kept or kept[0]["role"] == "user"
        for k, message in enumerate(kept):
            if message["role"] == "tool":
                assert kept[k - 1]["role"] in ("assistant", "tool") and k > 0


# -- cancellation ------------------------------------------------------------------------------


async def test_cancelling_the_turn_mid_tool_call_closes_the_upstream_request(
    agent: OpenAIAgent, upstream: FakeUpstream
) -> None:
    recorder = Recorder()
    upstream.will(raw(call_start(0, "c1", "f", '{"par'), call_arguments(0, "tial"), then="stall"))
    task = asyncio.create_task(turn(agent, USER, recorder=recorder, session="s"))
    await recorder.wait_for(3)
    assert recorder.seen == [ToolCallStart(0, "c1", "f"), ToolCallDelta(0, '{"par'), ToolCallDelta(0, "tial")]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await upstream.closed.wait()  # the upstream saw its client go away
    assert await agent.history.load("s") == []  # the unfinished turn was not saved
