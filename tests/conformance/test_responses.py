"""``/v1/responses`` through real HTTP on both stacks: the openai SDK unchanged, raw events,
stored responses and ``previous_response_id``, Codex CLI's requests, and every error path."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from nanobot.agents.echo import EchoAgent
from nanobot.api.dialects.responses.store import RedisResponses, ResponseStore, SQLiteResponses
from nanobot.core.events import OnEvent
from tests.conformance.conftest import Serve
from tests.conformance.test_http import assert_error
from tests.support.agents import ScriptedAgent
from tests.support.redis import running_redis
from tests.support.servers import run_server

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

PATH = "/v1/responses"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def sdk(client: httpx.AsyncClient, key: str = "unused") -> AsyncOpenAI:
    """An openai client on ``client``'s connections (closed with it). The SDK's annotation names
    ``httpx2`` (its fork of httpx), whose client an ``httpx`` client stands in for at run time."""
    return AsyncOpenAI(
        base_url=f"{client.base_url}/v1",
        api_key=key,
        max_retries=0,
        http_client=client,  # type: ignore[arg-type]
    )


def sse(body: str) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` pairs; every block is an ``event:`` and a ``data:`` line."""
    events = []
    for block in body.split("\n\n")[:-1]:
        if block.startswith(":"):
            continue
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: "), block
        payload = json.loads(data[len("data: ") :])
        assert payload["type"] == name[len("event: ") :]
        events.append((payload["type"], payload))
    assert [p["sequence_number"] for _, p in events] == list(range(len(events)))
    return events


class Counter:
    """Answers with how many messages it got and their text: a turn that depends on the history."""

    def __init__(self) -> None:
        self.sessions: list[str] = []

    async def process_direct(
        self,
        *,
        content: str,
        session_key: str,
        channel: str = "",
        chat_id: str = "",
        on_stream: Callable[[str], Awaitable[None]] | None = None,
        on_stream_end: Any = None,
        messages: Sequence[Mapping[str, Any]] = (),
        **kwargs: Any,
    ) -> str:
        self.sessions.append(session_key)
        answer = f"{len(messages)}: " + " | ".join(f"{m['role']}={m['content']}" for m in messages)
        if on_stream is not None:
            await on_stream(answer)
        return answer


class Truncated:
    """Says a word and stops at the token limit (finish ``length``)."""

    async def process_direct(
        self, *, content: str, session_key: str, on_stream: Any = None, **kw: Any
    ) -> Any:
        if on_stream is not None:
            await on_stream("cut")

        class Result:
            content = "cut"
            finish_reason = "length"

        return Result()


# -- the openai SDK, unchanged ---------------------------------------------------------------


async def test_sdk_create_stream(serve: Serve) -> None:
    client = sdk(await serve(EchoAgent()))
    stream = await client.responses.create(model="nanobot", input="/think hello there", stream=True)
    events = [event async for event in stream]
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.reasoning_text.delta" in kinds
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "hello there"
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == "hello there" and final.status == "completed"
    assert (
        final.usage is not None
        and final.usage.total_tokens == final.usage.input_tokens + final.usage.output_tokens
    )
    assert final.id.startswith("resp_")
    assert [item.type for item in final.output] == ["reasoning", "message"]


async def test_sdk_stream_helper_final_response(serve: Serve) -> None:
    client = sdk(await serve(EchoAgent()))
    async with client.responses.stream(model="nanobot", input="one two three") as stream:
        final = await stream.get_final_response()
    assert final.output_text == "one two three"
    message = final.output[0]
    assert message.type == "message" and message.id.startswith("msg_")


async def test_sdk_non_streaming_and_retrieve_and_delete(serve: Serve) -> None:
    http = await serve(EchoAgent())
    client = sdk(http)
    made = await client.responses.create(
        model="nanobot", input="hi", instructions="Be kind.", metadata={"a": "b"}
    )
    assert made.object == "response" and made.status == "completed" and made.output_text == "hi"
    assert made.instructions == "Be kind." and made.metadata == {"a": "b"} and made.error is None
    fetched = await client.responses.retrieve(made.id)
    assert fetched.model_dump() == made.model_dump()
    await client.responses.delete(made.id)
    assert_error(await http.get(f"{PATH}/{made.id}"), 404, code="response_not_found")
    assert_error(await http.delete(f"{PATH}/{made.id}"), 404, code="response_not_found")


async def test_sdk_function_tool_round_trip(serve: Serve) -> None:
    client = sdk(await serve(EchoAgent()))
    first = await client.responses.create(
        model="nanobot",
        input='/call get_weather {"city": "Paris"}',
        tools=[WEATHER],  # type: ignore[list-item]
    )
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert (
        json.loads(call.arguments) == {"city": "Paris"} and call.id is not None and call.id.startswith("fc_")
    )
    # by previous_response_id: only the result is sent
    second = await client.responses.create(
        model="nanobot",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert second.output_text == "sunny"
    # statelessly: the call and its result sent back, as Codex CLI does
    third = await client.responses.create(
        model="nanobot",
        store=False,
        input=[
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": call.call_id, "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": call.call_id, "output": "rain"},
        ],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert third.output_text == "rain"


async def test_streamed_tool_call_events(serve: Serve) -> None:
    http = await serve(EchoAgent())
    body = {"input": '/call get_weather {"city": "Oslo"}', "tools": [WEATHER], "stream": True}
    response = await http.post(PATH, json=body)
    assert response.status_code == 200 and response.headers["content-type"] == "text/event-stream"
    events = sse(response.text)
    kinds = [k for k, _ in events]
    assert kinds[2] == "response.output_item.added" and events[2][1]["item"]["type"] == "function_call"
    deltas = "".join(p["delta"] for k, p in events if k == "response.function_call_arguments.delta")
    assert json.loads(deltas) == {"city": "Oslo"}
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[-1][1]["response"]["output"][0]["arguments"] == deltas


async def test_a_second_turn_by_previous_response_id_sees_the_first(serve: Serve) -> None:
    agent = Counter()
    client = sdk(await serve(agent))
    first = await client.responses.create(model="nanobot", input="apples", instructions="Count.")
    assert first.output_text == "2: system=Count. | user=apples"
    async with client.responses.stream(
        model="nanobot", input="pears", previous_response_id=first.id
    ) as stream:
        second = await stream.get_final_response()
    assert second.output_text == (
        "3: user=apples | assistant=2: system=Count. | user=apples | user=pears"
    )  # the earlier instructions are not carried over, as OpenAI does
    assert second.previous_response_id == first.id
    assert agent.sessions[0] == agent.sessions[1] and agent.sessions[0].startswith("api:resp-")


async def test_store_false_keeps_nothing(serve: Serve) -> None:
    http = await serve(EchoAgent())
    made = (await http.post(PATH, json={"input": "hi", "store": False})).json()
    assert made["store"] is False
    assert_error(await http.get(f"{PATH}/{made['id']}"), 404)
    body = {"input": "again", "previous_response_id": made["id"]}
    assert_error(await http.post(PATH, json=body), 404, param="previous_response_id")


async def test_finish_length_is_response_incomplete(serve: Serve) -> None:
    http = await serve(Truncated())
    events = sse((await http.post(PATH, json={"input": "go", "stream": True})).text)
    kind, last = events[-1]
    assert kind == "response.incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    whole = (await http.post(PATH, json={"input": "go"})).json()
    assert whole["status"] == "incomplete"


async def test_a_failure_after_the_first_byte_is_response_failed(serve: Serve) -> None:
    http = await serve(ScriptedAgent(tokens=["partial"], error=RuntimeError("boom")))
    response = await http.post(PATH, json={"input": "go", "stream": True})
    assert response.status_code == 200
    events = sse(response.text)
    kind, failed = events[-1]
    assert kind == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["code"] == "agent_error"
    assert "boom" not in response.text
    stored = await http.get(f"{PATH}/{failed['response']['id']}")
    assert stored.status_code == 404  # a failed turn is not kept


async def test_agent_activity_is_reasoning_never_a_function_call(serve: Serve) -> None:
    http = await serve(EchoAgent())
    events = sse((await http.post(PATH, json={"input": "/activity look", "stream": True})).text)
    items = [p["item"]["type"] for k, p in events if k == "response.output_item.added"]
    assert items == ["reasoning", "message"]
    reasoning = "".join(p["delta"] for k, p in events if k == "response.reasoning_text.delta")
    assert "echo_lookup" in reasoning


# -- Codex CLI's requests --------------------------------------------------------------------


class Recorder:
    """Records what it was given; calls the namespaced tool on ``/ns``."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def process_direct(
        self,
        *,
        content: str,
        session_key: str,
        on_stream: Any = None,
        on_event: OnEvent | None = None,
        tools: Any = None,
        messages: Any = None,
        options: Any = None,
        **kw: Any,
    ) -> str:
        self.seen.append({"session": session_key, "tools": tools, "messages": messages, "options": options})
        if content == "/ns" and on_event is not None:
            from nanobot.core.events import ToolCallDelta, ToolCallEnd, ToolCallStart

            await on_event(ToolCallStart(0, "c9", "codex_apps__search"))
            await on_event(ToolCallDelta(0, "{}"))
            await on_event(ToolCallEnd(0))
            return ""
        return "ok"


CODEX_TOOLS = [
    {
        "type": "function",
        "name": "shell",
        "description": "Run.",
        "strict": False,
        "parameters": {"type": "object"},
    },
    {
        "type": "namespace",
        "name": "codex_apps",
        "description": "Apps.",
        "tools": [{"type": "function", "name": "search", "parameters": {"type": "object"}}],
    },
    {"type": "web_search", "external_web_access": False},
]


def codex_body(text: str) -> dict[str, Any]:
    return {
        "model": "nanobot",
        "instructions": None,
        "input": [
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "You are Codex."}],
            },
            {
                "type": "message",
                "id": "msg_c1",
                "role": "user",
                "content": [{"type": "input_text", "text": text}],
            },
        ],
        "tools": CODEX_TOOLS,
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0199-thread",
        "client_metadata": {"x": "y"},
        "text": {"verbosity": "low"},
    }


async def test_a_codex_request_is_served_with_namespaces_and_its_session(serve: Serve) -> None:
    agent = Recorder()
    http = await serve(agent)
    headers = {"session-id": "0199a-codex", "thread-id": "t1"}
    response = await http.post(PATH, json=codex_body("/ns"), headers=headers)
    assert response.status_code == 200, response.text
    events = sse(response.text)
    call = events[-1][1]["response"]["output"][0]
    assert (call["name"], call["namespace"], call["call_id"]) == ("search", "codex_apps", "c9")
    seen = agent.seen[0]
    assert seen["session"] == "api:0199a-codex"
    assert [t["function"]["name"] for t in seen["tools"]] == ["shell", "codex_apps__search"]
    assert seen["messages"][0] == {"role": "developer", "content": "You are Codex."}
    assert seen["options"]["reasoning_effort"] == "medium" and seen["options"]["parallel_tool_calls"] is False
    # the next step sends the namespaced call back with its result
    body = codex_body("go on")
    body["input"] += [
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": None},
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "c9",
            "name": "search",
            "namespace": "codex_apps",
            "arguments": "{}",
        },
        {"type": "function_call_output", "id": "fco_1", "call_id": "c9", "output": "found"},
    ]
    response = await http.post(PATH, json=body, headers=headers)
    assert response.status_code == 200, response.text
    messages = agent.seen[1]["messages"]
    assert messages[-2]["tool_calls"][0]["function"]["name"] == "codex_apps__search"
    assert messages[-1] == {"role": "tool", "tool_call_id": "c9", "content": "found"}


async def test_a_function_call_output_of_parts_keeps_a_trace_of_images_and_files(serve: Serve) -> None:
    """Codex CLI's ``view_image`` answers with an ``input_image`` part: a chat tool message holds
    only text, so the agent gets ``[image]`` (as for Anthropic's tool results), never ``""``."""
    agent = Recorder()
    http = await serve(agent)
    output = [
        {"type": "input_text", "text": "Here:"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"},
        {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"},
        {"type": "input_file", "file_id": "file_1"},
    ]
    body = codex_body("look")
    body["input"] += [
        {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "view_image", "arguments": "{}"},
        {"type": "function_call_output", "id": "fco_1", "call_id": "c1", "output": output},
    ]
    response = await http.post(PATH, json=body, headers={"session-id": "img-1"})
    assert response.status_code == 200, response.text
    assert agent.seen[0]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "c1",
        "content": "Here:\n[image]\n[file a.pdf]\n[file]",
    }


async def test_reasoning_summary_requested_streams_summary_events(serve: Serve) -> None:
    http = await serve(EchoAgent())
    body = {"input": "/think x", "stream": True, "reasoning": {"summary": "auto"}}
    kinds = [k for k, _ in sse((await http.post(PATH, json=body)).text)]
    assert "response.reasoning_summary_text.delta" in kinds and "response.reasoning_text.delta" not in kinds


# -- errors before the stream ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "input"),
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": [{"role": "assistant", "content": "hi"}]}, "input[0]"),
        ({"input": [{"type": "bogus"}]}, "input[0].type"),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}
                ]
            },
            "input[0].content[0].image_url",
        ),
        (
            {"input": [{"type": "function_call_output", "call_id": "no", "output": "x"}], "store": False},
            "input",
        ),
        ({"input": "hi", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"input": "hi", "tools": "x"}, "tools"),
        ({"input": "hi", "background": True}, "background"),
        ({"input": "hi", "text": {"format": {"type": "json_object"}}}, "text.format"),
        ({"input": "hi", "previous_response_id": "nope"}, "previous_response_id"),
        ({"input": "hi", "max_output_tokens": "9"}, "max_output_tokens"),
        ({"input": "hi", "tool_choice": "required"}, "tool_choice"),
    ],
)
async def test_bad_requests_are_400_naming_the_field(serve: Serve, body: dict[str, Any], param: str) -> None:
    http = await serve(EchoAgent())
    assert_error(await http.post(PATH, json=body), 400, param=param, type="invalid_request_error")


async def test_other_errors_before_the_stream(serve: Serve) -> None:
    http = await serve(EchoAgent(), api_key="k")
    assert_error(await http.post(PATH, json={"input": "hi"}), 401)
    assert_error(await http.get(f"{PATH}/resp_x"), 401)
    auth = {"Authorization": "Bearer k"}
    assert_error(
        await http.post(PATH, content=b"{", headers={**auth, "content-type": "application/json"}), 400
    )
    assert_error(
        await http.post(PATH, json={"input": "hi", "model": "other"}, headers=auth), 404, param="model"
    )
    body = {"input": "hi", "previous_response_id": "resp_unknown"}
    assert_error(await http.post(PATH, json=body, headers=auth), 404, code="previous_response_not_found")
    assert_error(await http.get(f"{PATH}/resp_unknown", headers=auth), 404, code="response_not_found")
    assert_error(await http.put(f"{PATH}/resp_unknown", headers=auth), 405)
    assert_error(await http.get(PATH, headers=auth), 405)
    form = await http.post(PATH, data={"message": "hi"}, files={"f": ("a.txt", b"x")}, headers=auth)
    assert_error(form, 415, param="content-type")
    bad_session = {**auth, "session-id": "/bad"}
    assert_error(await http.post(PATH, json={"input": "hi"}, headers=bad_session), 400, param="session-id")


async def test_an_agent_without_client_tools_refuses_function_tools_only(serve: Serve) -> None:
    http = await serve(ScriptedAgent(tokens=["x"]))
    assert_error(await http.post(PATH, json={"input": "hi", "tools": [WEATHER]}), 400, param="tools")
    hosted_only = {"input": "hi", "tools": [{"type": "web_search"}]}
    assert (await http.post(PATH, json=hosted_only)).status_code == 200


# -- stored responses across restarts and workers --------------------------------------------


@asynccontextmanager
async def client(stack: str, store: ResponseStore) -> AsyncIterator[httpx.AsyncClient]:
    """A server of :class:`Counter` keeping responses in ``store``, and a client of it."""
    async with (
        run_server(stack, Counter(), response_store=store) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        yield http


@pytest.mark.parametrize("stack", ["aiohttp", "asgi"])
async def test_sqlite_stored_responses_survive_a_restart(stack: str, tmp_path: Path) -> None:
    path = tmp_path / "responses.db"
    async with client(stack, SQLiteResponses(path)) as http:
        made = (await http.post(PATH, json={"input": "first"})).json()
    async with client(stack, SQLiteResponses(path)) as http:
        assert (await http.get(f"{PATH}/{made['id']}")).json() == made
        body = {"input": "second", "previous_response_id": made["id"]}
        text = (await http.post(PATH, json=body)).json()["output"][0]["content"][0]["text"]
    assert text.startswith("3: user=first")


@pytest.mark.parametrize("stack", ["aiohttp", "asgi"])
async def test_redis_stored_responses_are_shared_by_two_workers(stack: str) -> None:
    with running_redis() as redis:
        async with (
            run_server(stack, Counter(), response_store=RedisResponses(redis.url)) as one,
            run_server(stack, Counter(), response_store=RedisResponses(redis.url)) as two,
            httpx.AsyncClient(base_url=one) as first,
            httpx.AsyncClient(base_url=two) as second,
        ):
            made = (await first.post(PATH, json={"input": "a"})).json()
            assert (await second.get(f"{PATH}/{made['id']}")).json() == made
            body = {"input": "b", "previous_response_id": made["id"], "stream": True}
            events = sse((await second.post(PATH, json=body)).text)
            assert events[-1][1]["response"]["output"][0]["content"][0]["text"].startswith("3: user=a")
            assert (await first.delete(f"{PATH}/{made['id']}")).status_code == 200
            assert (await second.get(f"{PATH}/{made['id']}")).status_code == 404
        redis.stop()
        async with client(stack, RedisResponses(redis.url, timeout=0.5)) as http:
            assert_error(await http.get(f"{PATH}/resp_x"), 503)
            reply = await http.post(PATH, json={"input": "a"})
            assert_error(reply, 503, code="service_unavailable")
            assert reply.headers["x-should-retry"] == "false"  # the turn ran: no blind replay
