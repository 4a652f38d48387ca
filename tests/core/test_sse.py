"""SSE framing and the stream state machine: exact bytes, no I/O."""

from __future__ import annotations

import json

import pytest

from nanobot.api.sse import DONE, PING, ChunkFormat, json_text
from nanobot.api.stream import ChatStream, Failure, Finish, StreamClosed, StreamState, TextDelta
from nanobot.core.errors import AgentTimeout
from nanobot.core.reply import Usage

HEAD = b'data: {"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":'


def new_stream(include_usage: bool = False) -> ChatStream:
    return ChatStream(ChunkFormat("c1", 7, "m", include_usage=include_usage), include_usage=include_usage)


def test_first_delta_names_the_role_and_later_ones_do_not() -> None:
    stream = new_stream()
    assert stream.send(TextDelta("Hi")) == (
        HEAD + b'[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}\n\n'
    )
    assert (
        stream.send(TextDelta("!"))
        == HEAD + b'[{"index":0,"delta":{"content":"!"},"finish_reason":null}]}\n\n'
    )


def test_finish_without_usage() -> None:
    stream = new_stream()
    stream.send(TextDelta("x"))
    assert stream.send(Finish()) == HEAD + b'[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n' + DONE
    assert stream.state is StreamState.DONE


def test_finish_with_usage_marks_every_chunk() -> None:
    stream = new_stream(include_usage=True)
    assert stream.send(TextDelta("x")).endswith(b'"finish_reason":null}],"usage":null}\n\n')
    assert stream.send(Finish(Usage(3, 4))) == (
        HEAD
        + b'[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}\n\n'
        + HEAD
        + b'[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}\n\n'
        + DONE
    )


def test_finish_with_no_text_still_sends_a_role_delta() -> None:
    out = new_stream().send(Finish())
    assert out.startswith(HEAD + b'[{"index":0,"delta":{"role":"assistant","content":""}')


def test_failure_is_one_error_event_and_ends_the_stream() -> None:
    stream = new_stream()
    out = stream.send(Failure(AgentTimeout("late")))
    assert json.loads(out.removeprefix(b"data: ")) == {
        "error": {"message": "late", "type": "server_error", "param": None, "code": "timeout"}
    }
    assert out.endswith(b"\n\n")
    assert stream.state is StreamState.FAILED
    assert stream.ping() == b""
    with pytest.raises(StreamClosed):
        stream.send(TextDelta("more"))


def test_nothing_after_done() -> None:
    stream = new_stream()
    stream.send(Finish())
    for event in (TextDelta("x"), Finish(), Failure(AgentTimeout("x"))):
        with pytest.raises(StreamClosed):
            stream.send(event)


def test_ping_is_a_comment() -> None:
    assert new_stream().ping() == PING == b": ping\n\n"


@pytest.mark.parametrize("text", ['"', "\\", "\n", "\u2028", "\x00", "é😀", "</script>", "\ud800"])
def test_tokens_are_escaped_to_valid_json(text: str) -> None:
    out = ChunkFormat("c", 1, "m", include_usage=False).delta(text)
    payload = json.loads(out.removeprefix(b"data: ").removesuffix(b"\n\n"))
    assert payload["choices"][0]["delta"]["content"] == text
    assert b"\n" not in out.removesuffix(b"\n\n")
    assert json.loads(json_text(text)) == text


def test_model_and_id_are_escaped_too() -> None:
    out = ChunkFormat('c"1', 1, 'm\n"', include_usage=False).finish("stop")
    payload = json.loads(out.removeprefix(b"data: "))
    assert (payload["id"], payload["model"]) == ('c"1', 'm\n"')


def test_line_separators_are_escaped_so_no_line_splitter_cuts_an_event() -> None:
    text = "a\u2028b\u2029c\x85d \u2014 ok"
    chunk = ChunkFormat("id", 1, "m", include_usage=False).delta(text)
    assert chunk.count(b"\n") == 2 and chunk.endswith(b"\n\n")
    assert chunk.decode().splitlines() == [chunk.decode()[:-2], ""]  # str.splitlines also splits on U+2028
    assert json.loads(chunk[len(b"data: ") :])["choices"][0]["delta"]["content"] == text
