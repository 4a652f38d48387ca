"""Reading upstream streams without I/O: SSE lines to event data, chunk payloads to the answer."""

from __future__ import annotations

import pytest

from nanobot.agents.chunks import ChunkReader, EventDecoder, error_detail
from nanobot.agents.upstream import chat_endpoint
from nanobot.api.completion import Usage
from nanobot.api.errors import UpstreamFailed


def decode_all(lines: list[str]) -> list[str]:
    decoder = EventDecoder()
    events = [data for line in lines if (data := decoder.decode(line)) is not None]
    tail = decoder.flush()
    return [*events, *([tail] if tail is not None else [])]


def test_decoder_skips_comments_blank_lines_and_other_fields() -> None:
    lines = [": ping", "", "", "event: message", "id: 7", "retry: 10", "data: {}", "", "data:[DONE]", ""]
    assert decode_all(lines) == ["{}", "[DONE]"]


def test_decoder_joins_multi_line_data_and_keeps_an_unterminated_last_event() -> None:
    assert decode_all(["data: a", "data:  b", "", "data: tail"]) == ["a\n b", "tail"]


def test_reader_folds_deltas_finish_and_usage() -> None:
    reader = ChunkReader("up")
    pieces = [
        reader.feed('{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}'),
        reader.feed('{"choices":[{"index":0,"delta":{"content":"Hel"}}]}'),
        reader.feed('{"choices":[{"index":0,"delta":{"content":null}}]}'),
        reader.feed('{"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}'),
        reader.feed('{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'),
    ]
    assert pieces == ["", "Hel", "", "lo", ""]
    assert reader.finished and not reader.done and reader.complete
    assert reader.feed('{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}') == ""
    assert reader.feed("[DONE]") == ""
    assert (reader.content, reader.usage, reader.done) == ("Hello", Usage(9, 2), True)


def test_reader_ignores_other_choices_and_missing_deltas() -> None:
    reader = ChunkReader("up")
    assert reader.feed('{"choices":[{"index":1,"delta":{"content":"x"}},{"index":0}]}') == ""
    assert not reader.complete


@pytest.mark.parametrize(
    "data",
    [
        "{not json",
        "[1, 2]",
        '{"choices": {"index": 0}}',
        '{"choices": ["text"]}',
        '{"choices": [{"delta": "text"}]}',
        '{"choices": [{"delta": {"content": 7}}]}',
    ],
)
def test_reader_refuses_malformed_chunks(data: str) -> None:
    with pytest.raises(UpstreamFailed, match="upstream at up sent a malformed chunk") as caught:
        ChunkReader("up").feed(data)
    assert caught.value.code == "upstream_malformed"


def test_reader_raises_an_upstream_error_event() -> None:
    with pytest.raises(UpstreamFailed, match="failed mid-answer: out of memory"):
        ChunkReader("up").feed('{"error": {"message": "out of memory", "type": "server_error"}}')


def test_reader_reads_a_whole_completion() -> None:
    reader = ChunkReader("up")
    body = b'{"choices":[{"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":1}}'
    assert reader.read_completion(body) == "hi"
    assert (reader.complete, reader.usage) == (True, Usage(1, 0))
    with pytest.raises(UpstreamFailed):
        ChunkReader("up").read_completion(b'{"choices": []}')


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        ({"error": {"message": "bad key"}}, "bad key"),
        ({"error": "model not loaded"}, "model not loaded"),
        ({"object": "error", "message": "vllm says no"}, "vllm says no"),
        ({"detail": "Not Found"}, "Not Found"),
        ({"error": {"code": 1}}, ""),
        (None, ""),
    ],
)
def test_error_detail_reads_the_common_shapes(payload: object, detail: str) -> None:
    assert error_detail(payload) == detail


@pytest.mark.parametrize(
    "url",
    ["http://h:1/v1", "http://h:1/v1/", "http://h:1/v1/chat/completions", "http://h:1/v1/chat/completions/"],
)
def test_chat_endpoint_takes_a_base_or_the_full_url(url: str) -> None:
    assert chat_endpoint(url) == "http://h:1/v1/chat/completions"
