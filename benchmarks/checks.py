"""Every response is checked, so nothing fast-and-wrong counts.

Strict checks (our servers and the peers, whose answers are known): status 200, SSE content
type, every event a ``chat.completion.chunk`` of one ``id``, ``created`` and ``model`` (the model
the client asked for), the first delta naming the assistant, each token its own event, all tokens
in order, one ``stop`` chunk after them, then ``[DONE]`` and nothing else. A choice without
``finish_reason`` counts as ``null`` (LiteLLM leaves it out; OpenAI's SDK reads it so too).
Lenient checks (``--url`` against any endpoint): a well-formed stream of JSON chunks ending in
``[DONE]``. Each check returns what it measured, or raises :class:`Invalid` naming the first
problem.

The client must stay far cheaper than the servers, so the strict check has a fast path: when the
middle events are byte for byte the compact JSON chunk of their token, sharing the bytes around
the token with the second event (which is parsed and checked in full, like the first and the
stop chunk), they are correct by construction. Any other encoding is parsed event by event.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from benchmarks.client import EventReader, Response

DONE = b"data: [DONE]"
CONTENT = b'"content":'
TOKEN_TAIL = b'},"finish_reason":null}]}'


class Invalid(Exception):
    """A response that does not say what it should."""


@dataclass(frozen=True, slots=True)
class Expected:
    """The answer a strict check wants: these tokens, one event each, in this order, named
    ``model`` (``None``: any one name)."""

    tokens: tuple[str, ...]
    text: str
    encoded: tuple[bytes, ...]
    model: str | None = None

    @classmethod
    def of(cls, tokens: Sequence[str], model: str | None = None) -> Expected:
        return cls(tuple(tokens), "".join(tokens), tuple(orjson.dumps(t) for t in tokens), model)


@dataclass(frozen=True, slots=True)
class StreamFacts:
    """What a valid stream delivered: its tokens and when they arrived (relative to sending)."""

    tokens: int
    ttft: float | None
    gaps: list[float]
    canonical: bool = False


def check_stream(response: Response, expected: Expected | None, *, gaps: bool = True) -> StreamFacts:
    """Check a streamed answer; ``expected`` ``None`` means lenient (the text is unknown)."""
    if response.status != 200:
        raise Invalid(f"status {response.status}: {bytes(response.body[:200])!r}")
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        raise Invalid(f"content-type {response.headers.get('content-type')!r}")
    events = response.events
    if not events or events[-1] != DONE:
        raise Invalid("the stream does not end with [DONE]")
    canonical = expected is not None and _canonical(events, expected)
    body = [events[0], events[1], events[-2]] if canonical else events[:-1]
    try:
        chunks = orjson.loads(b"[" + b",".join([event[6:] for event in body]) + b"]")
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"an event is not JSON ({exc})") from exc
    try:
        if expected is None:
            contents = _lenient(chunks)
        else:
            want = Expected.of(expected.tokens[:2], expected.model) if canonical else expected
            contents = _strict(chunks, want)
            contents = list(range(len(expected.tokens))) if canonical else contents
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise Invalid(f"a chunk lacks a field ({exc!r}): {str(chunks)[:200]}") from exc
    times = [response.times[i] for i in contents]
    ttft = times[0] - response.sent if times else None
    pairs = [b - a for a, b in itertools.pairwise(times)] if gaps else []
    return StreamFacts(len(contents), ttft, pairs, canonical)


def _canonical(events: list[bytes], expected: Expected) -> bool:
    """Events 1..n-1 are the compact chunks of tokens 1..n-1 around event 1's bytes."""
    count = len(expected.tokens)
    if count < 2 or len(events) != count + 2 or "" in expected.tokens:
        return False
    second = events[1]
    cut = second.find(CONTENT)
    if cut < 0 or not second.endswith(TOKEN_TAIL):
        return False
    head = second[: cut + len(CONTENT)]
    middle = events[1:count]
    # Every event starts with ``head`` (which holds the stream's unique id, so it occurs nowhere
    # else) and the events joined are the expected bytes: then each event is exactly its token's.
    if not all(map(bytes.startswith, middle, itertools.repeat(head))):
        return False
    return b"".join(middle) == head + (TOKEN_TAIL + head).join(expected.encoded[1:]) + TOKEN_TAIL


def _lenient(chunks: list[Any]) -> list[int]:
    """Indices of the chunks that carry text, from any OpenAI-compatible server."""
    found: list[int] = []
    for index, chunk in enumerate(chunks):
        if not isinstance(chunk, dict) or "error" in chunk or not isinstance(chunk.get("choices"), list):
            raise Invalid(f"event {index} is not a chunk: {str(chunk)[:200]}")
        choices = chunk["choices"]
        if choices and isinstance(choices[0], dict) and (choices[0].get("delta") or {}).get("content"):
            found.append(index)
    return found


def _strict(chunks: list[Any], expected: Expected) -> list[int]:
    """One id, all chunks; role first; every token its own event, in order; one stop chunk, last.

    Comprehensions rather than one loop with branches: this runs for every token of the run.
    """
    if not chunks:
        raise Invalid("no chunks before [DONE]")
    if len({c["id"] for c in chunks}) != 1 or {c["object"] for c in chunks} != {"chat.completion.chunk"}:
        raise Invalid("the chunks are not all chat.completion.chunk of one id")
    names = {(c["created"], c["model"]) for c in chunks}
    if len(names) != 1 or (expected.model is not None and chunks[0]["model"] != expected.model):
        raise Invalid(f"the chunks' created and model are not one, or not the model asked for: {names}")
    choices = [c["choices"][0] for c in chunks]
    *body, last = choices
    if choices[0]["delta"].get("role") != "assistant":
        raise Invalid("the first delta does not name the assistant role")
    if last["delta"] != {} or last["finish_reason"] != "stop":
        raise Invalid(f"the last chunk is not the stop chunk: {last}")
    if any(choice.get("finish_reason") is not None or choice["index"] != 0 for choice in body):
        raise Invalid("a finish_reason before the last chunk, or a choice index but 0")
    texts = [choice["delta"]["content"] for choice in body]
    text = "".join(texts)
    if text != expected.text:
        raise Invalid(f"wrong text: got {len(text)} chars, first difference at {_diff(text, expected.text)}")
    if expected.tokens and len(texts) != len(expected.tokens):
        raise Invalid(f"{len(expected.tokens)} tokens came in {len(texts)} content events")
    return [i for i, t in enumerate(texts) if t]


def _diff(got: str, want: str) -> int:
    pairs = enumerate(zip(got, want, strict=False))
    return next((i for i, (a, b) in pairs if a != b), min(len(got), len(want)))


def check_completion(response: Response, expected: Expected | None) -> None:
    """Check a non-streamed ``chat.completion`` answer."""
    if response.status != 200:
        raise Invalid(f"status {response.status}: {bytes(response.body[:200])!r}")
    try:
        body = orjson.loads(response.body)
        message = body["choices"][0]["message"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        raise Invalid(f"not a chat.completion body: {bytes(response.body[:200])!r}") from exc
    if body.get("object") != "chat.completion" or message.get("role") != "assistant":
        raise Invalid("not an assistant chat.completion")
    if expected is not None and message.get("content") != expected.text:
        raise Invalid("wrong completion text")
    if expected is not None and body["choices"][0].get("finish_reason") != "stop":
        raise Invalid("finish_reason is not 'stop'")


def _synthetic(tokens: list[str], *, stop: bool = True, done: bool = True) -> Response:
    """A response as a correct server would send it (then broken by the caller)."""
    head = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    events = []
    deltas: list[tuple[dict[str, str], str | None]] = [
        ({"role": "assistant", "content": text} if i == 0 else {"content": text}, None)
        for i, text in enumerate(tokens)
    ]
    if stop:
        deltas.append(({}, "stop"))
    for delta, finish in deltas:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        events.append(b"data: " + orjson.dumps({**head, "choices": [choice]}))
    if done:
        events.append(DONE)
    response = Response(sent=0.0, status=200, headers={"content-type": "text/event-stream"})
    response.events, response.times = events, [float(i) for i in range(len(events))]
    return response


def _framing_test() -> None:
    """The event reader: split reads, comments, CRLF line ends and multi-line data."""
    response = Response(sent=0.0)
    reader = EventReader(response)
    pieces = [
        b"data: a\r\n\r\n: ping\n\ndata: b\n",
        b"\ndata: c\r",
        b"\n\r\ndata: x\ndata: y\n\nda",
        b"ta: z\n\n",
    ]
    for now, piece in enumerate(pieces):
        reader.feed(piece, float(now))
    want = [b"data: a", b"data: b", b"data: c", b"data: x\ny", b"data: z"]
    assert response.events == want and response.times == [0.0, 1.0, 2.0, 2.0, 3.0], response


def self_test() -> None:
    """Prove the checks reject what they must: a harness that accepts anything measures nothing."""
    _framing_test()
    good = ["a", ' "b"', "c\n", "d"]
    expected = Expected.of(good, "m")
    facts = check_stream(_synthetic(good), expected)
    assert facts.canonical and facts.tokens == 4 and facts.gaps == [1.0, 1.0, 1.0], facts
    spaced = _synthetic(good)
    spaced.events[2] = spaced.events[2].replace(CONTENT, CONTENT + b" ")
    assert not check_stream(spaced, expected).canonical, "a differently spaced chunk is not canonical"
    other_id = _synthetic(good)
    other_id.events[2] = other_id.events[2].replace(b"chatcmpl-x", b"chatcmpl-y")
    other_model = _synthetic(good)
    other_model.events[3] = other_model.events[3].replace(b'"model":"m"', b'"model":"n"')
    other_created = _synthetic(good)
    other_created.events[-2] = other_created.events[-2].replace(b'"created":0', b'"created":1')
    broken = {
        "no [DONE]": _synthetic(good, done=False),
        "no stop chunk": _synthetic(good, stop=False),
        "reordered tokens": _synthetic([good[0], good[2], good[1], good[3]]),
        "a token missing": _synthetic(good[:3]),
        "tokens merged": _synthetic([good[0], good[1] + good[2], good[3]]),
        "another id": other_id,
        "another model": other_model,
        "another created": other_created,
    }
    errored = _synthetic(good)
    errored.events.insert(2, b'data: {"error": {"message": "boom"}}')
    broken["an error event"] = errored
    for name, response in broken.items():
        try:
            check_stream(response, expected)
        except Invalid:
            continue
        raise AssertionError(f"the stream checks accepted a stream with {name}")
    try:
        check_stream(_synthetic(good), Expected.of(good, "other"))
    except Invalid:
        return
    raise AssertionError("the stream checks accepted a stream naming another model")
