"""``/v1/responses`` through the ``openai`` relay to a test upstream that streams tool calls and
reasoning, on both stacks: the OpenAI Agents SDK's default (Responses) model runs a
``@function_tool``, the openai SDK streams reasoning items, and what goes upstream for a
Responses turn is the Chat Completions conversation (tools as chat function tools, a tool
result as a ``tool`` message)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.agents.conftest import Relay
from tests.support.upstream import FakeUpstream, answer, calls_events, raw

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

FRAGMENTS = ['{"ci', 'ty": ', '"Oslo"}']
WEATHER: Any = {  # the SDK's typed tool wants fields OpenAI would fill in
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def base_url(client: httpx.AsyncClient) -> str:
    return f"{str(client.base_url).rstrip('/')}/v1"


async def test_openai_agents_sdk_default_model_runs_a_function_tool(
    relay: Relay, upstream: FakeUpstream
) -> None:
    from agents import Agent, RunConfig, Runner, function_tool, set_tracing_disabled
    from agents.models.openai_provider import OpenAIProvider
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # nothing leaves loopback
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"21 C and sunny in {city}"

    upstream.will(raw(*calls_events(("call_9", "get_weather", FRAGMENTS), thoughts=["Need", " weather."])))
    upstream.will(answer("It is ", "21 C and sunny."))
    sdk = AsyncOpenAI(base_url=base_url(await relay()), api_key="unused", max_retries=0)
    agent = Agent(
        name="weather", instructions="Answer with the weather.", tools=[get_weather], model="nanobot"
    )
    # The SDK's default provider (the Responses API), given our client instead of the global one.
    config = RunConfig(model_provider=OpenAIProvider(openai_client=sdk, use_responses=True))
    result = await Runner.run(agent, "Weather in Oslo?", run_config=config)
    assert asked == ["Oslo"]
    assert result.final_output == "It is 21 C and sunny."
    assert [type(item).__name__ for item in result.new_items] == [
        "ReasoningItem",
        "ToolCallItem",
        "ToolCallOutputItem",
        "MessageOutputItem",
    ]
    first, second = upstream.requests
    assert first.body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": get_weather.params_json_schema,
                "strict": True,
            },
        }
    ]
    assert first.messages == [
        {"role": "system", "content": "Answer with the weather."},
        {"role": "user", "content": "Weather in Oslo?"},
    ]
    call = {
        "id": "call_9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    assert second.messages == [
        {"role": "system", "content": "Answer with the weather."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_9", "content": "21 C and sunny in Oslo"},
    ]
    await sdk.close()


async def test_openai_agents_sdk_streamed_run_through_the_relay(relay: Relay, upstream: FakeUpstream) -> None:
    """``Runner.run_streamed``: the same round trip over ``/v1/responses`` with ``stream: true``."""
    from agents import Agent, RunConfig, Runner, function_tool, set_tracing_disabled
    from agents.models.openai_provider import OpenAIProvider
    from openai import AsyncOpenAI

    set_tracing_disabled(True)

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"21 C and sunny in {city}"

    upstream.will(raw(*calls_events(("call_4", "get_weather", FRAGMENTS), thoughts=["Hmm."])))
    upstream.will(answer("It is ", "sunny."))
    sdk = AsyncOpenAI(base_url=base_url(await relay()), api_key="unused", max_retries=0)
    agent = Agent(name="weather", tools=[get_weather], model="nanobot")
    config = RunConfig(model_provider=OpenAIProvider(openai_client=sdk, use_responses=True))
    result = Runner.run_streamed(agent, "Weather in Oslo?", run_config=config)
    raw_kinds: list[str] = []
    items: list[str] = []
    async for event in result.stream_events():
        if event.type == "raw_response_event":
            raw_kinds.append(event.data.type)
        elif event.type == "run_item_stream_event":
            items.append(event.item.type)
    assert result.final_output == "It is sunny."
    assert items == ["reasoning_item", "tool_call_item", "tool_call_output_item", "message_output_item"]
    assert raw_kinds.count("response.completed") == 2
    assert "response.reasoning_text.delta" in raw_kinds and "response.output_text.delta" in raw_kinds
    assert upstream.last.messages[-1] == {
        "role": "tool",
        "tool_call_id": "call_4",
        "content": "21 C and sunny in Oslo",
    }
    await sdk.close()


async def test_openai_sdk_streams_upstream_reasoning_and_calls_as_items(
    relay: Relay, upstream: FakeUpstream
) -> None:
    from openai import AsyncOpenAI

    upstream.will(raw(*calls_events(("call_7", "get_weather", FRAGMENTS), thoughts=["Need", " weather."])))
    upstream.will(answer("Sunny", " in Oslo."))
    sdk = AsyncOpenAI(base_url=base_url(await relay()), api_key="unused", max_retries=0)
    stream = await sdk.responses.create(
        model="nanobot",
        input="Weather in Oslo?",
        tools=[WEATHER],
        stream=True,
    )
    events: list[Any] = [event async for event in stream]
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert [e.delta for e in events if e.type == "response.reasoning_text.delta"] == ["Need", " weather."]
    assert [e.delta for e in events if e.type == "response.function_call_arguments.delta"] == FRAGMENTS
    final = events[-1]
    assert final.type == "response.completed"
    reasoning, call = final.response.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert [c.text for c in reasoning.content or []] == ["Need weather."]
    assert call.type == "function_call" and call.id.startswith("fc_")
    assert (call.call_id, call.name, call.arguments) == ("call_7", "get_weather", '{"city": "Oslo"}')
    assert final.response.usage is not None and final.response.usage.total_tokens == 12

    # The tool result, by previous_response_id: upstream gets the whole conversation again.
    second = await sdk.responses.create(
        model="nanobot",
        previous_response_id=final.response.id,
        input=[{"type": "function_call_output", "call_id": "call_7", "output": "21 C, sunny"}],
        tools=[WEATHER],
    )
    assert second.output_text == "Sunny in Oslo."
    assert upstream.last.messages == [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_7",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_7", "content": "21 C, sunny"},
    ]
    assert upstream.last.body["tools"] == [
        {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
    ]
    await sdk.close()


async def test_reasoning_summary_asked_streams_upstream_reasoning_as_summary(
    relay: Relay, upstream: FakeUpstream
) -> None:
    from openai import AsyncOpenAI

    upstream.will(raw(*calls_events(("call_1", "get_weather", FRAGMENTS), thoughts=["Think."])))
    sdk = AsyncOpenAI(base_url=base_url(await relay()), api_key="unused", max_retries=0)
    async with sdk.responses.stream(
        model="nanobot",
        input="Weather?",
        tools=[WEATHER],
        reasoning={"summary": "auto"},
    ) as stream:
        deltas = [e.delta async for e in stream if e.type == "response.reasoning_summary_text.delta"]
        final = await stream.get_final_response()
    assert deltas == ["Think."]
    reasoning = final.output[0]
    assert reasoning.type == "reasoning" and [s.text for s in reasoning.summary] == ["Think."]
    await sdk.close()


# -- Codex CLI 0.171.0, as measured through the relay -----------------------------------------

#: The headers Codex CLI 0.171.0 sent (``codex exec``, a custom provider, ``wire_api = "responses"``).
CODEX_HEADERS = {
    "session-id": "01a23c3b-2b0d-7d62-ba6c-d24238d180ef",
    "thread-id": "01a23c3b-2b0d-7d62-ba6c-d24238d180ef",
    "x-client-request-id": "01a23c3b-2b0d-7d62-ba6c-d24238d180ef",
    "x-codex-window-id": "01a23c3b-2b0d-7d62-ba6c-d24238d180ef:0",
    "x-codex-beta-features": "remote_compaction_v2",
    "x-codex-turn-metadata": '{"session_id":"01a23c3b","turn_trigger":"exec","model":"nanobot"}',
    "originator": "codex_exec",
    "User-Agent": "codex_exec/0.171.0 (Debian 12.0.0; x86_64) xterm (codex_exec; 0.171.0)",
    "Accept": "text/event-stream",
    "Accept-Encoding": "zstd,gzip",
}
OBJECT: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


def codex_function(name: str, **properties: Any) -> dict[str, Any]:
    parameters = {**OBJECT, "properties": properties}
    return {
        "type": "function",
        "name": name,
        "description": f"{name}.",
        "strict": False,
        "parameters": parameters,
    }


#: Its tools, in its order: seven functions, a namespace of five, a hosted web search.
CODEX_TOOLS: list[dict[str, Any]] = [
    codex_function("exec_command", cmd={"type": "string"}, workdir={"type": "string"}),
    codex_function("write_stdin", session_id={"type": "number"}, chars={"type": "string"}),
    codex_function("request_user_input", questions={"type": "array", "items": {"type": "object"}}),
    codex_function("view_image", path={"type": "string"}),
    {
        "type": "namespace",
        "name": "multi_agent_v1",
        "description": "Tools for spawning and managing sub-agents.",
        "tools": [
            codex_function(name, target={"type": "string"})
            for name in ("close_agent", "resume_agent", "send_input", "spawn_agent", "wait_agent")
        ],
    },
    codex_function("get_goal"),
    codex_function("create_goal", objective={"type": "string"}),
    codex_function("update_goal", status={"type": "string"}),
    {"type": "web_search", "external_web_access": False},
]
CODEX_NAMES = [
    "exec_command",
    "write_stdin",
    "request_user_input",
    "view_image",
    *(
        f"multi_agent_v1__{name}"
        for name in ("close_agent", "resume_agent", "send_input", "spawn_agent", "wait_agent")
    ),
    "get_goal",
    "create_goal",
    "update_goal",
]
CODEX_PROMPT = [
    {
        "type": "message",
        "id": "msg_73d410af-c910-5a91-b10b-925cbec8e670",
        "role": "developer",
        "content": [{"type": "input_text", "text": "You are a coding agent running in the Codex CLI."}],
    },
    {
        "type": "message",
        "id": "msg_01a23c3b-2b32-7683-9d07-0f0a353d88d2",
        "role": "developer",
        "content": [
            {"type": "input_text", "text": "<skills_instructions>…</skills_instructions>"},
            {"type": "input_text", "text": "<permissions instructions>…</permissions instructions>"},
        ],
    },
    {
        "type": "message",
        "id": "msg_01a23c3b-2b32-7683-9d07-0f1468dd9fb4",
        "role": "user",
        "content": [{"type": "input_text", "text": "<environment_context>…</environment_context>"}],
    },
    {
        "type": "message",
        "id": "msg_01a23c3b-2b43-7010-90d9-26488acb3f77",
        "role": "user",
        "content": [{"type": "input_text", "text": "Run echo"}],
    },
]
CODEX_UPSTREAM_PROMPT = [
    {"role": "developer", "content": "You are a coding agent running in the Codex CLI."},
    {
        "role": "developer",
        "content": "<skills_instructions>…</skills_instructions>\n"
        "<permissions instructions>…</permissions instructions>",
    },
    {"role": "user", "content": "<environment_context>…</environment_context>"},
    {"role": "user", "content": "Run echo"},
]


def codex_step(*items: dict[str, Any]) -> dict[str, Any]:
    """One step's body as Codex CLI 0.171.0 sent it: the whole conversation, every time."""
    return {
        "model": "nanobot",
        "stream": True,
        "input": [*CODEX_PROMPT, *items],
        "tools": CODEX_TOOLS,
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"summary": "auto"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": CODEX_HEADERS["session-id"],
        "client_metadata": {"x-codex-installation-id": "3bf094f1", "x-codex-window-id": "w:0"},
    }


def sse_events(body: str) -> list[dict[str, Any]]:
    events = []
    for block in body.split("\n\n")[:-1]:
        if block.startswith(":"):
            continue
        name, data = block.split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert name == f"event: {payload['type']}"
        events.append(payload)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


async def test_a_codex_cli_tool_turn_through_the_relay(relay: Relay, upstream: FakeUpstream) -> None:
    """Both steps of the shell turn Codex CLI 0.171.0 completed against the relay, as it sent them."""
    arguments = ['{"cmd": "echo', ' hi-from-shell"}']
    upstream.will(raw(*calls_events(("call_shell1", "exec_command", arguments), thoughts=["Thinking."])))
    upstream.will(answer("The tool said: ", "hi-from-shell"))
    http = await relay()
    response = await http.post("/v1/responses", json=codex_step(), headers=CODEX_HEADERS)
    assert response.status_code == 200, response.text
    events = sse_events(response.text)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    reasoning, call = events[-1]["response"]["output"]
    assert events[-1]["response"]["usage"]["total_tokens"] == 12
    first = upstream.requests[0].body
    assert first["messages"] == CODEX_UPSTREAM_PROMPT
    assert [t["function"]["name"] for t in first["tools"]] == CODEX_NAMES  # web_search dropped
    assert {k: first[k] for k in ("tool_choice", "parallel_tool_calls")} == {
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }
    assert not {"include", "store", "prompt_cache_key", "client_metadata", "reasoning"} & set(first)

    # The next step: what Codex sent back (our reasoning item, with its nulls; the call with its
    # status; its own fco_ id on the output) after running the command.
    sent_back = [
        {**reasoning, "content": None, "encrypted_content": None},
        {**call, "status": "completed"},
        {
            "type": "function_call_output",
            "id": "fco_01a23c3b-2d55-7372-b7ae-ea7a68f8a315",
            "call_id": "call_shell1",
            "output": "Process exited with code 0\nOutput:\nhi-from-shell\n",
        },
    ]
    response = await http.post("/v1/responses", json=codex_step(*sent_back), headers=CODEX_HEADERS)
    assert response.status_code == 200, response.text
    assert sse_events(response.text)[-1]["response"]["output"][-1]["content"][0]["text"] == (
        "The tool said: hi-from-shell"
    )
    shell = {"name": "exec_command", "arguments": '{"cmd": "echo hi-from-shell"}'}
    assert upstream.last.messages == [
        *CODEX_UPSTREAM_PROMPT,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_shell1", "type": "function", "function": shell}],
        },
        {
            "role": "tool",
            "tool_call_id": "call_shell1",
            "content": "Process exited with code 0\nOutput:\nhi-from-shell\n",
        },
    ]


async def test_codex_namespaced_call_and_image_output_round_trip(
    relay: Relay, upstream: FakeUpstream
) -> None:
    """A call of a namespace's function goes to Codex as ``name`` + ``namespace`` (it ran
    ``multi_agent_v1.close_agent``) and back upstream qualified; ``view_image``'s image output
    reaches the chat upstream as ``[image]``, not as an empty tool message."""
    upstream.will(raw(*calls_events(("call_ns1", "multi_agent_v1__close_agent", ['{"target": "a1"}']))))
    http = await relay()
    response = await http.post("/v1/responses", json=codex_step(), headers=CODEX_HEADERS)
    call = sse_events(response.text)[-1]["response"]["output"][0]
    assert (call["name"], call["namespace"], call["call_id"]) == ("close_agent", "multi_agent_v1", "call_ns1")
    image = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAIAAAAmkwkp"
    sent_back = [
        {**call, "status": "completed"},
        {"type": "function_call_output", "id": "fco_1", "call_id": "call_ns1", "output": "closed"},
        {
            "type": "function_call",
            "id": "fc_2",
            "call_id": "call_img1",
            "name": "view_image",
            "arguments": "{}",
        },
        {
            "type": "function_call_output",
            "id": "fco_2",
            "call_id": "call_img1",
            "output": [{"type": "input_image", "image_url": image, "detail": "high"}],
        },
    ]
    response = await http.post("/v1/responses", json=codex_step(*sent_back), headers=CODEX_HEADERS)
    assert response.status_code == 200, response.text
    close = {"name": "multi_agent_v1__close_agent", "arguments": '{"target": "a1"}'}
    view = {"name": "view_image", "arguments": "{}"}
    assert upstream.last.messages[len(CODEX_UPSTREAM_PROMPT) :] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_ns1", "type": "function", "function": close}],
        },
        {"role": "tool", "tool_call_id": "call_ns1", "content": "closed"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_img1", "type": "function", "function": view}],
        },
        {"role": "tool", "tool_call_id": "call_img1", "content": "[image]"},
    ]
