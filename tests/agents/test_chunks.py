"""Reading upstream streams without I/O: SSE bytes to event data, chunk payloads to the answer."""

from __future__ import annotations

import itertools
import json
import random
import re

import pytest

from nanobot.agents.chunks import MAX_EVENT_BYTES, ChunkReader, EventDecoder, error_detail
from nanobot.agents.upstream import chat_endpoint
from nanobot.core.errors import UpstreamFailed
from nanobot.core.events import (
    ReasoningDelta,
    ReasoningEnd,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from nanobot.core.reply import Usage


def decode(*chunks: bytes, limit: int = MAX_EVENT_BYTES) -> list[bytes]:
    """Every event's data, the body cut into ``chunks``."""
    decoder = EventDecoder("up", limit)
    events = [data for chunk in chunks for data in decoder.feed(chunk)]
    tail = decoder.close()
    return [*events, *([tail] if tail is not None else [])]


def cuts(body: bytes, *at: int) -> list[bytes]:
    """``body`` cut at the positions ``at`` (in order)."""
    bounds = [0, *at, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds)]


def test_decoder_skips_comments_blank_lines_and_other_fields() -> None:
    body = b": ping\n\n\nevent: message\nid: 7\nretry: 10\ndata: {}\n\ndata:[DONE]\n\n"
    assert decode(body) == [b"{}", b"[DONE]"]


def test_decoder_joins_multi_line_data_and_keeps_an_unterminated_last_event() -> None:
    assert decode(b"data: a\ndata:  b\ndata\n\ndata: tail") == [b"a\n b\n", b"tail"]
    assert decode(b"data: a\n\ndata: tail\n") == [b"a", b"tail"]


@pytest.mark.parametrize("end", [b"\n", b"\r", b"\r\n"])
def test_decoder_ends_lines_at_lf_cr_and_crlf(end: bytes) -> None:
    body = b"data: a" + end + b"data: b" + end + end + b": c" + end + end + b"data: d" + end + end
    assert decode(body) == [b"a\nb", b"d"]


def test_decoder_ends_lines_only_at_cr_and_lf() -> None:
    """VT, FF and the separators str.splitlines knows besides CR and LF are data, not line ends."""
    data = "a\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029b".encode()
    assert decode(b"data: " + data + b"\n\n") == [data]


def test_json_may_hold_u2028_u2029_and_u0085_raw() -> None:
    text = "line\u2028para\u2029next\x85end"
    chunk = f'{{"choices": [{{"index": 0, "delta": {{"content": "{text}"}}}}]}}'.encode()
    (data,) = decode(b"data: " + chunk + b"\n\n")
    assert ChunkReader("up").feed(data) == text


def test_decoder_drops_a_bom_only_at_the_start() -> None:
    bom = b"\xef\xbb\xbf"
    assert decode(bom + b"data: a\n\n" + bom + b"data: b\n\n") == [b"a"]  # "\ufeffdata" is no field
    assert decode(bom[:1], bom[1:2], bom[2:] + b"data: a\n\n") == [b"a"]
    assert decode(bom[:2]) == [] and decode(b"\xef", b"data: a") == []  # not a BOM: an unknown field


def test_a_cr_at_a_chunk_end_and_a_lf_opening_the_next_end_one_line() -> None:
    assert decode(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == [b"a\nb"]
    assert decode(b"data: a\r", b"\r", b"data: b\n\n") == [b"a", b"b"]  # CR CR: two line ends


# A body with every kind of line end, a BOM, comments, other fields, multi-line data, multi-byte
# characters and the separators str.splitlines would split at.
BODY = (
    b"\xef\xbb\xbf: hello\r\n\r\n"
    b'data: {"a": "\xc3\xa9\xe2\x80\xa8\xf0\x9f\x98\x80"}\r\r'
    b"event: x\nid: 1\ndata: one\rdata:two\r\ndata\n\n"
    b'data: {"b": "\xc2\x85\xe2\x80\xa9"}\n\r\n'
    b"data: [DONE]\r\n\r\n"
)
EVENTS = [
    '{"a": "\u00e9\u2028\U0001f600"}'.encode(),
    b"one\ntwo\n",
    '{"b": "\x85\u2029"}'.encode(),
    b"[DONE]",
]


def test_decoder_reads_the_whole_body_at_once_and_byte_by_byte() -> None:
    assert decode(BODY) == EVENTS
    assert decode(*(BODY[k : k + 1] for k in range(len(BODY)))) == EVENTS


def test_decoder_reads_the_body_cut_at_any_one_or_two_places() -> None:
    for i, j in itertools.combinations_with_replacement(range(len(BODY) + 1), 2):
        assert decode(*cuts(BODY, i, j)) == EVENTS, (i, j)


def reference(body: bytes) -> list[bytes]:
    """The WHATWG SSE rules applied to a whole body at once, the simplest way (no limit)."""
    *lines, tail = re.split(rb"\r\n|\r|\n", body.removeprefix(b"\xef\xbb\xbf"))
    events: list[bytes] = []
    data: list[bytes] = []
    for line in [*lines, tail]:
        if not line:
            if data:
                events.append(b"\n".join(data))
            data = []
        elif not line.startswith(b":"):
            name, _, value = line.partition(b":")
            if name == b"data":
                data.append(value.removeprefix(b" "))
    return [*events, *([b"\n".join(data)] if data else [])]


PIECES = [
    b"data:",
    b"data: ",
    b"data",
    b"x",
    b"\xc3\xa9",
    b" ",
    b":",
    b"id: 1",
    b"\r",
    b"\n",
    b"\r\n",
    b"\n\n",
]


def test_decoder_agrees_with_the_reference_on_random_bodies_randomly_cut() -> None:
    rng = random.Random(9)
    for _ in range(3000):
        body = (b"\xef\xbb\xbf" if rng.random() < 0.2 else b"") + b"".join(
            rng.choices(PIECES, k=rng.randint(0, 30))
        )
        at = sorted(rng.choices(range(len(body) + 1), k=rng.randint(0, 6)))
        assert decode(*cuts(body, *at)) == reference(body), (body, at)


def test_the_fast_path_takes_whole_events_and_leaves_the_rest() -> None:
    decoder = EventDecoder("up")
    assert decoder.feed(b"data: {}\n\n") == [b"{}"]
    assert decoder.feed(b"data: {}\r\n\r\n") == [b"{}"]
    assert decoder.feed(b"data: a\n\ndata: b\n\n") == [b"a", b"b"]
    assert decoder.feed(b"data: a\r\n\r\ndata: b\r\n\r\n") == [b"a", b"b"]
    assert decoder.feed(b"data: a\ndata: b\n\n") == [b"a\nb"]
    assert decoder.feed(b"data: a\rdata: b\r\n\r\n") == [b"a\nb"]
    assert decoder.feed(b"data: a\r\ndata: b\n\n") == [b"a\nb"]
    assert decoder.feed(b"data: c\r\n\n") == [b"c"]
    assert decoder.feed(b"data: c\n\r\n") == [b"c"]
    assert decoder.feed(b"data: c\r\r\n") == [b"c"]
    assert decoder.feed(b"data: d\n") == [] and decoder.feed(b"data: e\n\n") == [b"d\ne"]
    assert decoder.feed(b"data: f\r\n") == [] and decoder.feed(b"data: g\r\n\r\n") == [b"f\ng"]
    assert decoder.feed(b"data: \n\n") == [b""]  # an empty data line is an event (a malformed chunk)
    assert decoder.buffered == 0


def test_several_whole_events_in_one_chunk_read_as_if_one_by_one() -> None:
    """A relay that fell behind reads several events at once: the fast path takes the plain ones
    and leaves anything else (comments, blank lines, multi-line data, no space) to the slow one."""
    bodies = [
        b"data: a\n\ndata: b\n\ndata: [DONE]\n\n",
        b"data: a\n\n: ping\n\ndata: b\n\n",
        b"data: a\n\n\n\ndata: b\n\n",
        b"data: a\n\ndata:b\n\n",
        b"data: a\n\ndata: b\ndata: c\n\n",
        b"data: a\n\nevent: x\ndata: b\n\n",
        b"data: a\n\ndata: b\n\ndata: c",
        b"data: a\n\ndata: b\r\n\r\n",
        b"data: a\n\ndata\n\n",
    ]
    for body in bodies:
        decoder = EventDecoder("up")
        events = decoder.feed(body)
        tail = decoder.close()
        assert [*events, *([tail] if tail is not None else [])] == reference(body), body
        assert decoder.buffered == 0


def test_whole_events_with_both_line_ends_read_the_same_however_cut() -> None:
    events = [b'data: {"k": %d}' % k + (b"\r\n\r\n" if k % 2 else b"\n\n") for k in range(6)]
    body = b"".join(events)
    expected = [b'{"k": %d}' % k for k in range(6)]
    assert decode(*events) == expected
    for i, j in itertools.combinations_with_replacement(range(len(body) + 1), 2):
        assert decode(*cuts(body, i, j)) == expected, (i, j)


def test_a_line_longer_than_the_limit_fails_before_it_is_buffered() -> None:
    decoder = EventDecoder("http://up/v1", limit=1000)
    decoder.feed(b"data: ")
    fed = 6
    with pytest.raises(UpstreamFailed) as caught:
        while True:
            decoder.feed(b"x" * 64)
            fed += 64
            assert decoder.buffered == fed < 1000
    assert fed < 1000 <= fed + 64
    assert decoder.buffered == fed
    assert caught.value.code == "upstream_event_too_large" and caught.value.status == 502
    assert caught.value.message == (
        "The upstream at http://up/v1 sent an event larger than 1000 bytes, "
        "the most the relay buffers for one event."
    )


def test_an_event_of_many_lines_longer_than_the_limit_fails() -> None:
    """Each data line counts as sent, with its line end; a pending line must leave room for its end."""
    decoder = EventDecoder("up", limit=100)
    assert decoder.feed(b"data: " + b"x" * 40 + b"\n" + b"data:\n" * 8) == []
    assert decoder.buffered == 47 + 8 * 6
    assert decoder.feed(b"data") == [] and decoder.buffered == 99
    assert decoder.feed(b"\r\n") == [] and decoder.buffered == 100  # just at the limit
    with pytest.raises(UpstreamFailed, match="larger than 100 bytes"):
        decoder.feed(b"d")  # no room for a line end after it
    assert decode(b"data: " + b"x" * 93 + b"\n\n", limit=100) == [b"x" * 93]
    with pytest.raises(UpstreamFailed, match="larger than 100 bytes"):
        decode(b"data:\n" * 17, limit=100)  # empty lines count too


def test_the_limit_counts_one_event_at_a_time() -> None:
    event = b"data: " + b"x" * 90 + b"\n\n"
    assert decode(event * 5, limit=100) == [b"x" * 90] * 5
    assert decode(*[event[:50], event[50:] + event[:50], event[50:]], limit=100) == [b"x" * 90] * 2
    with pytest.raises(UpstreamFailed, match="larger than 100 bytes"):
        decode(b"data: " + b"x" * 101 + b"\n\n", limit=100)  # even one whole event in one chunk


@pytest.mark.parametrize("end", [b"\n", b"\r", b"\r\n"])
def test_the_limit_does_not_depend_on_where_chunks_are_cut(end: bytes) -> None:
    """Two lines of 50 bytes each, line ends included, fit a limit of 100 however they arrive."""
    body = b"data: " + b"x" * 43 + end + b"data:" + b"y" * 44 + end + end
    data = b"x" * 43 + b"\n" + b"y" * 44
    for i, j in itertools.combinations_with_replacement(range(len(body) + 1), 2):
        assert decode(*cuts(body, i, j), limit=100) == [data]
        with pytest.raises(UpstreamFailed):
            decode(*cuts(body, i, j), limit=99)


def test_the_default_limit_names_mebibytes() -> None:
    decoder = EventDecoder("up")
    decoder.feed(b"data: " + b"x" * (MAX_EVENT_BYTES - 7))
    assert decoder.buffered == MAX_EVENT_BYTES - 1
    with pytest.raises(UpstreamFailed, match=f"larger than {MAX_EVENT_BYTES // 2**20} MiB"):
        decoder.feed(b"x")


def test_comments_and_other_fields_are_not_kept() -> None:
    decoder = EventDecoder("up", limit=100)
    for _ in range(10):
        assert decoder.feed(b": " + b"." * 90 + b"\nid: " + b"7" * 90 + b"\n") == []
    assert decoder.buffered == 0


def test_invalid_utf8_in_an_event_is_a_malformed_chunk() -> None:
    (data,) = decode(b'data: {"a": "\xff"}\n\n')
    with pytest.raises(UpstreamFailed, match="malformed chunk") as caught:
        ChunkReader("up").feed(data)
    assert caught.value.code == "upstream_malformed"


def test_reader_folds_deltas_finish_and_usage() -> None:
    reader = ChunkReader("up")
    pieces = [
        reader.feed(b'{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}'),
        reader.feed(b'{"choices":[{"index":0,"delta":{"content":"Hel"}}]}'),
        reader.feed(b'{"choices":[{"index":0,"delta":{"content":null}}]}'),
        reader.feed(b'{"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}'),
        reader.feed(b'{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'),
    ]
    assert pieces == ["", "Hel", "", "lo", ""]
    assert reader.finished and not reader.done and reader.complete
    assert reader.feed(b'{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}') == ""
    assert reader.feed(b"[DONE]") == ""
    assert (reader.content, reader.usage, reader.done) == ("Hello", Usage(9, 2), True)


def test_reader_ignores_other_choices_and_missing_deltas() -> None:
    reader = ChunkReader("up")
    assert reader.feed(b'{"choices":[{"index":1,"delta":{"content":"x"}},{"index":0}]}') == ""
    assert not reader.complete


def test_reader_reads_every_shape_of_a_one_choice_chunk() -> None:
    reader = ChunkReader("up")
    assert reader.feed(b'{"choices":[{"delta":{"content":"a"}}]}') == "a"  # no index: 0
    assert reader.feed(b'{"choices":[{"index":1,"delta":{"content":"x"}}]}') == ""
    assert reader.feed(b'{"choices":[{"index":0,"delta":null}]}') == ""
    assert reader.feed(b'{"choices":[{"index":0}]}') == ""
    assert reader.feed(b'{"choices":[{"index":0,"delta":{"content":""}}],"usage":null}') == ""
    assert not reader.complete
    assert reader.feed(b'{"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":"length"}]}') == "b"
    assert reader.finished and reader.finish_reason == "length"
    assert reader.feed(b" [DONE]\n") == "" and reader.done
    assert reader.content == "ab"


@pytest.mark.parametrize(
    "data",
    [
        "{not json",
        "[1, 2]",
        '{"choices": {"index": 0}}',
        '{"choices": ["text"]}',
        '{"choices": [{"delta": "text"}]}',
        '{"choices": [{"delta": {"content": 7}}]}',
        '{"choices": [{"index": 0, "delta": ["x"]}]}',
        '{"choices": [{"index": 0, "delta": {"content": ["x"]}, "finish_reason": "stop"}]}',
    ],
)
def test_reader_refuses_malformed_chunks(data: str) -> None:
    with pytest.raises(UpstreamFailed, match="upstream at up sent a malformed chunk") as caught:
        ChunkReader("up").feed(data.encode())
    assert caught.value.code == "upstream_malformed"


def test_reader_raises_an_upstream_error_event() -> None:
    with pytest.raises(UpstreamFailed, match="failed mid-answer: out of memory"):
        ChunkReader("up").feed(b'{"error": {"message": "out of memory", "type": "server_error"}}')


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


def test_text_chunks_with_a_role_or_null_fields_stay_plain_text() -> None:
    """Ollama sends the role on every chunk; some servers add null reasoning or tool calls."""
    reader = ChunkReader("up")
    assert reader.feed(b'{"choices":[{"index":0,"delta":{"role":"assistant","content":"a"}}]}') == "a"
    assert (
        reader.feed(b'{"choices":[{"delta":{"content":"b","reasoning_content":null,"tool_calls":null}}]}')
        == "b"
    )
    assert reader.feed(b'{"choices":[{"delta":{"content":"c","reasoning":"","tool_calls":[]}}]}') == "c"
    assert (reader.events, reader.content) == ([], "abc")


def test_reasoning_then_text_in_one_chunk_come_out_in_order() -> None:
    reader = ChunkReader("up")
    assert reader.feed(b'{"choices":[{"delta":{"reasoning":"think"}}]}') == ""
    assert reader.events == [ReasoningDelta("think")]
    reader.events.clear()
    assert reader.feed(b'{"choices":[{"delta":{"reasoning_content":"more","content":"Hi"}}]}') == ""
    assert reader.events == [ReasoningDelta("more"), ReasoningEnd(), TextDelta("Hi")]
    reader.events.clear()
    assert reader.feed(b'{"choices":[{"delta":{"content":" there"}}]}') == " there"  # the fast path again
    assert (reader.content, reader.reasoning) == ("Hi there", "thinkmore")


def test_text_before_a_call_in_one_chunk_and_at_the_finish() -> None:
    reader = ChunkReader("up")
    data = b'{"choices":[{"delta":{"content":"Let me look.","tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":"{}"}}]}}]}'
    assert reader.feed(data) == ""
    assert reader.events == [TextDelta("Let me look."), ToolCallStart(0, "c", "f"), ToolCallDelta(0, "{}")]
    reader.events.clear()
    assert reader.feed(b'{"choices":[{"delta":{"content":"!"},"finish_reason":"tool_calls"}]}') == ""
    assert reader.events == [TextDelta("!"), ToolCallEnd(0)]
    reader.events.clear()
    assert reader.feed(b"[DONE]") == "" and reader.events == []  # the calls ended once
    assert (reader.content, reader.tool_calls, reader.finish_reason) == (
        "Let me look.!",
        (ToolCall("c", "f", "{}"),),
        "tool_calls",
    )


def test_calls_end_at_done_when_no_finish_reason_came() -> None:
    reader = ChunkReader("up")
    reader.feed(b'{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f"}}]}}]}')
    reader.events.clear()
    reader.feed(b"[DONE]")
    assert reader.events == [ToolCallEnd(0)]


def test_a_call_without_an_id_gets_one() -> None:
    reader = ChunkReader("up")
    reader.feed(
        b'{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{}"}}]}}]}'
    )
    (start, _) = reader.events
    assert isinstance(start, ToolCallStart) and start.call_id.startswith("call_") and len(start.call_id) > 8


def test_usage_keeps_reasoning_tokens() -> None:
    reader = ChunkReader("up")
    reader.feed(
        b'{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":5,"completion_tokens_details":{"reasoning_tokens":3}}}'
    )
    assert reader.usage == Usage(1, 5, None, 3)
    reader.feed(
        b'{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":5,"completion_tokens_details":{"reasoning_tokens":-1}}}'
    )
    assert reader.usage == Usage(1, 5)


def test_random_tool_call_and_reasoning_shapes_never_crash_the_reader() -> None:
    """Whatever an upstream puts in a delta, the reader reads it or raises UpstreamFailed."""
    rng = random.Random(18)
    values: list[object] = [None, 0, -1, 1, True, "", "x", "call_1", [], {}, ["x"], {"a": 1}, 2.5]

    def value() -> object:
        return rng.choice(values)

    def call() -> object:
        item: dict[str, object] = {}
        for key in ("index", "id", "type"):
            if rng.random() < 0.7:
                item[key] = rng.choice([value(), 0, 1, "c1"])
        if rng.random() < 0.9:
            function = {
                k: rng.choice([value(), "f", '{"a"']) for k in ("name", "arguments") if rng.random() < 0.8
            }
            item["function"] = rng.choice([function, function, value()])
        return rng.choice([item, item, item, value()])

    for _ in range(3000):
        reader = ChunkReader("up")
        for _ in range(rng.randint(1, 6)):
            delta: dict[str, object] = {}
            for key in ("content", "reasoning", "reasoning_content"):
                if rng.random() < 0.4:
                    delta[key] = rng.choice([value(), "text"])
            if rng.random() < 0.8:
                delta["tool_calls"] = rng.choice([[call() for _ in range(rng.randint(0, 3))], value()])
            finish = rng.choice([None, None, "stop", "tool_calls", 3])
            data = json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            try:
                reader.feed(data.encode())
            except UpstreamFailed:
                break
            for event in reader.events:
                assert isinstance(
                    event,
                    TextDelta | ReasoningDelta | ReasoningEnd | ToolCallStart | ToolCallDelta | ToolCallEnd,
                )
            reader.events.clear()
        assert isinstance(reader.tool_calls, tuple) and isinstance(reader.reasoning, str)
