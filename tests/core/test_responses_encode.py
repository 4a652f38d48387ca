"""The Responses encoder's exact bytes: a text turn, a tool-call turn, a reasoning turn, a failure."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nanobot.api.dialects.responses.encode import ResponsesStream
from nanobot.api.dialects.responses.parse import parse_responses_request, qualify
from nanobot.api.stream import Failure, Finish, StreamClosed
from nanobot.core.errors import AgentFailed
from nanobot.core.events import (
    Activity,
    ReasoningDelta,
    ReasoningEnd,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from nanobot.core.reply import Usage

SETTINGS = {"tools": []}
RESP = "resp_t1"


def stream(summary: bool = False, names: dict[str, tuple[str | None, str]] | None = None) -> ResponsesStream:
    return ResponsesStream(
        SETTINGS,
        turn_id=RESP,
        created=100,
        model="m",
        names=names or {},
        summary=summary,
        clock=lambda: 101.0,
    )


def frame(kind: str, seq: int, **fields: Any) -> bytes:
    payload = {"type": kind, **fields, "sequence_number": seq}
    return (
        f"event: {kind}\ndata: {json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()
    )


def response(status: str, output: list[Any], **extra: Any) -> dict[str, Any]:
    final = status != "in_progress"
    return {
        "id": RESP,
        "object": "response",
        "created_at": 100,
        "status": status,
        "background": False,
        "completed_at": 101 if status == "completed" else None,
        "error": extra.get("error"),
        "incomplete_details": extra.get("incomplete_details"),
        "model": "m",
        "tools": [],
        "output": output,
        "usage": extra.get("usage") if final else None,
    }


USAGE = {
    "input_tokens": 3,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 2,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 5,
}


def opening(seq: int = 0) -> bytes:
    start = response("in_progress", [])
    return frame("response.created", seq, response=start) + frame(
        "response.in_progress", seq + 1, response=start
    )


def message(text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}]
    return {"id": "msg_t1_0", "type": "message", "status": status, "content": content, "role": "assistant"}


def test_a_text_turn() -> None:
    s = stream()
    out = s.send(TextDelta("Hel")) + s.text("lo\u2028")
    out += s.send(Finish(Usage(3, 2), "stop"))
    place = {"item_id": "msg_t1_0", "output_index": 0, "content_index": 0}
    empty = {"id": "msg_t1_0", "type": "message", "status": "in_progress", "content": [], "role": "assistant"}
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    expected = (
        opening()
        + frame("response.output_item.added", 2, output_index=0, item=empty)
        + frame("response.content_part.added", 3, **place, part=part)
        + frame("response.output_text.delta", 4, **place, logprobs=[], delta="Hel")
        + b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
        + b'"item_id":"msg_t1_0","output_index":0,"content_index":0,"logprobs":[],"delta":"lo\\u2028",'
        + b'"sequence_number":5}\n\n'
        + frame("response.output_text.done", 6, **place, text="Hello\u2028", logprobs=[]).replace(
            "\u2028".encode(), b"\\u2028"
        )
    )
    assert out.startswith(expected)
    rest = out[len(expected) :].replace(b"\\u2028", "\u2028".encode())
    done = message("Hello\u2028")
    assert rest == (
        frame("response.content_part.done", 7, **place, part=done["content"][0])
        + frame("response.output_item.done", 8, output_index=0, item=done)
        + frame("response.completed", 9, response=response("completed", [done], usage=USAGE))
    )
    with pytest.raises(StreamClosed):
        s.text("more")


def test_a_tool_call_turn_maps_a_namespaced_name_back() -> None:
    qualified = qualify("mcp.files", "read")
    assert qualified == "mcp_files__read"
    s = stream(names={qualified: ("mcp.files", "read")})
    out = s.send(ToolCallStart(0, "call_1", qualified)) + s.send(ToolCallDelta(0, '{"p":'))
    out += s.send(ToolCallDelta(0, "1}")) + s.send(ToolCallEnd(0)) + s.send(Finish(Usage(3, 2), "tool_calls"))
    call = {
        "id": "fc_t1_0",
        "type": "function_call",
        "status": "in_progress",
        "arguments": "",
        "call_id": "call_1",
        "name": "read",
        "namespace": "mcp.files",
    }
    done = {**call, "status": "completed", "arguments": '{"p":1}'}
    place = {"item_id": "fc_t1_0", "output_index": 0}
    assert out == (
        opening()
        + frame("response.output_item.added", 2, output_index=0, item=call)
        + frame("response.function_call_arguments.delta", 3, **place, delta='{"p":')
        + frame("response.function_call_arguments.delta", 4, **place, delta="1}")
        + frame("response.function_call_arguments.done", 5, **place, arguments='{"p":1}')
        + frame("response.output_item.done", 6, output_index=0, item=done)
        + frame("response.completed", 7, response=response("completed", [done], usage=USAGE))
    )


@pytest.mark.parametrize("summary", [False, True])
def test_a_reasoning_turn_then_text_in_a_new_item(summary: bool) -> None:
    s = stream(summary=summary)
    out = s.send(ReasoningDelta("Hmm")) + s.send(Activity("start", "a1", "look", '{"q":1}'))
    out += s.send(ReasoningEnd()) + s.send(TextDelta("Hi")) + s.send(Finish(Usage(3, 2), "length"))
    rs = {"item_id": "rs_t1_0", "output_index": 0}
    thought = 'Hmm\n▸ look({"q":1})\n'
    if summary:
        names = ("reasoning_summary_part", "reasoning_summary_text", {"summary_index": 0}, "summary_text")
        done_item = {
            "id": "rs_t1_0",
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": thought}],
        }
    else:
        names = ("content_part", "reasoning_text", {"content_index": 0}, "reasoning_text")
        done_item = {
            "id": "rs_t1_0",
            "type": "reasoning",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": thought}],
        }
    part_event, text_event, index, part_type = names
    added = {"id": "rs_t1_0", "type": "reasoning", "summary": [], "status": "in_progress"}
    msg = {"item_id": "msg_t1_1", "output_index": 1, "content_index": 0}
    final_msg = {**message("Hi"), "id": "msg_t1_1"}
    empty_msg = {
        "id": "msg_t1_1",
        "type": "message",
        "status": "in_progress",
        "content": [],
        "role": "assistant",
    }
    text_part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    incomplete = response(
        "incomplete",
        [{**done_item, "status": "completed"}, final_msg],
        usage=USAGE,
        incomplete_details={"reason": "max_output_tokens"},
    )
    assert out == (
        opening()
        + frame("response.output_item.added", 2, output_index=0, item=added)
        + frame(f"response.{part_event}.added", 3, **rs, **index, part={"type": part_type, "text": ""})
        + frame(f"response.{text_event}.delta", 4, **rs, **index, delta="Hmm")
        + frame(f"response.{text_event}.delta", 5, **rs, **index, delta='\n▸ look({"q":1})\n')
        + frame(f"response.{text_event}.done", 6, **rs, **index, text=thought)
        + frame(f"response.{part_event}.done", 7, **rs, **index, part={"type": part_type, "text": thought})
        + frame("response.output_item.done", 8, output_index=0, item={**done_item, "status": "completed"})
        + frame("response.output_item.added", 9, output_index=1, item=empty_msg)
        + frame("response.content_part.added", 10, **msg, part=text_part)
        + frame("response.output_text.delta", 11, **msg, logprobs=[], delta="Hi")
        + frame("response.output_text.done", 12, **msg, text="Hi", logprobs=[])
        + frame("response.content_part.done", 13, **msg, part=final_msg["content"][0])
        + frame("response.output_item.done", 14, output_index=1, item=final_msg)
        + frame("response.incomplete", 15, response=incomplete)
    )


def test_a_failure_after_text_is_response_failed() -> None:
    s = stream()
    out = s.text("Hi") + s.send(Failure(AgentFailed("The agent failed (RuntimeError).")))
    failed = response(
        "failed",
        [message("Hi", status="incomplete")],
        error={"code": "agent_error", "message": "The agent failed (RuntimeError)."},
    )
    assert out.endswith(frame("response.failed", 5, response=failed))
    with pytest.raises(StreamClosed):
        s.send(Finish())


def test_a_failure_before_any_event_still_opens_the_response() -> None:
    s = stream()
    failed = response("failed", [], error={"code": "timeout", "message": "late"})
    from nanobot.core.errors import AgentTimeout

    assert s.send(Failure(AgentTimeout("late"))) == opening() + frame("response.failed", 2, response=failed)


def test_parse_maps_a_codex_request() -> None:
    body = {
        "model": "m",
        "input": [
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "Be brief."}],
            },
            {
                "type": "message",
                "id": "msg_x",
                "role": "user",
                "content": [{"type": "input_text", "text": "ls"}],
            },
            {"type": "reasoning", "id": "rs_x", "summary": [], "encrypted_content": None},
            {"type": "function_call", "id": "fc_x", "call_id": "c1", "name": "shell", "arguments": "{}"},
            {"type": "function_call_output", "id": "fco_x", "call_id": "c1", "output": "a b"},
        ],
        "tools": [
            {"type": "function", "name": "shell", "strict": False, "parameters": {"type": "object"}},
            {
                "type": "namespace",
                "name": "mcp",
                "description": "d",
                "tools": [{"type": "function", "name": "x"}],
            },
            {"type": "web_search", "external_web_access": False},
        ],
        "include": ["reasoning.encrypted_content"],
        "reasoning": {"effort": "low", "summary": "auto"},
        "prompt_cache_key": "k",
        "client_metadata": {"a": "b"},
        "store": False,
        "stream": True,
    }
    request = parse_responses_request(json.dumps(body).encode(), relays=True)
    assert [m.role for m in request.messages] == ["developer", "user", "assistant", "tool"]
    assert request.messages[2].tool_calls[0].name == "shell"
    assert [t["function"]["name"] for t in request.tools] == ["shell", "mcp__x"]
    assert request.names["mcp__x"] == ("mcp", "x")
    assert request.options["reasoning_effort"] == "low"
    assert request.summary and not request.store and request.stream
