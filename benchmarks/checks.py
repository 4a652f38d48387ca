"""Every response is checked, so nothing fast-and-wrong counts.

Strict checks (our servers and the peers, whose answers are known): status 200, SSE content
type, every event a ``chat.completion.chunk`` of one ``id``, the first delta naming the
assistant, each token its own event, all tokens in order, one ``stop`` chunk after them, then
``[DONE]`` and nothing else. Lenient checks (``--url`` against any endpoint): a well-formed stream
of JSON chunks ending in ``[DONE]``. Each check returns what it measured, or raises
:class:`Invalid` naming the first problem.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import orjson

from benchmarks.client import Response

DONE = b"[DONE]"


class Invalid(Exception):
    """A response that does not say what it should."""


@dataclass(frozen=True, slots=True)
class StreamFacts:
    """What a valid stream delivered: its tokens and when they arrived (relative to sending)."""

    tokens: int
    ttft: float | None
    gaps: list[float]


def check_stream(response: Response, expected: str | None, tokens: int | None) -> StreamFacts:
    """Check a streamed answer; ``expected``/``tokens`` ``None`` means lenient (unknown text)."""
    if response.status != 200:
        raise Invalid(f"status {response.status}: {bytes(response.body[:200])!r}")
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        raise Invalid(f"content-type {response.headers.get('content-type')!r}")
    events = response.events
    if not events or events[-1] != DONE:
        raise Invalid("the stream does not end with [DONE]")
    try:
        chunks = orjson.loads(b"[" + b",".join(events[:-1]) + b"]")
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"an event is not JSON ({exc})") from exc
    contents = _contents(chunks, strict=expected is not None)
    times = [response.times[i] for i in contents]
    if expected is not None:
        try:
            _check_text(chunks, contents, expected, tokens)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise Invalid(f"a chunk lacks a field ({exc!r})") from exc
    ttft = times[0] - response.sent if times else None
    return StreamFacts(len(contents), ttft, [b - a for a, b in itertools.pairwise(times)])


def _contents(chunks: list[Any], *, strict: bool) -> list[int]:
    """Indices of the chunks that carry text; checks the shape of every chunk on the way."""
    found: list[int] = []
    first_id = chunks[0].get("id") if chunks and isinstance(chunks[0], dict) else None
    for index, chunk in enumerate(chunks):
        if not isinstance(chunk, dict) or "error" in chunk:
            raise Invalid(f"event {index} is not a chunk: {str(chunk)[:200]}")
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise Invalid(f"event {index} has no choices list")
        if strict and (chunk.get("object") != "chat.completion.chunk" or chunk.get("id") != first_id):
            raise Invalid(f"event {index} is not a chunk of this completion")
        if choices and isinstance(choices[0], dict) and (choices[0].get("delta") or {}).get("content"):
            found.append(index)
    return found


def _check_text(chunks: list[Any], contents: list[int], expected: str, tokens: int | None) -> None:
    """All tokens, one event each, in order; role first; then exactly one stop chunk, last."""
    if not chunks:
        raise Invalid("no chunks before [DONE]")
    if chunks[0]["choices"][0].get("delta", {}).get("role") != "assistant":
        raise Invalid("the first delta does not name the assistant role")
    text = "".join(chunks[i]["choices"][0]["delta"]["content"] for i in contents)
    if text != expected:
        raise Invalid(f"wrong text: got {len(text)} chars, first difference at {_diff(text, expected)}")
    if tokens is not None and len(contents) != tokens:
        raise Invalid(f"{tokens} tokens came in {len(contents)} content events")
    stops = [i for i, c in enumerate(chunks) if c["choices"] and c["choices"][0].get("finish_reason")]
    if stops != [len(chunks) - 1] or chunks[-1]["choices"][0]["finish_reason"] != "stop":
        raise Invalid(f"finish chunks at {stops} of {len(chunks)}: want one 'stop' chunk, last")
    if chunks[-1]["choices"][0].get("delta") != {}:
        raise Invalid("the stop chunk carries a delta")


def _diff(got: str, want: str) -> int:
    pairs = enumerate(zip(got, want, strict=False))
    return next((i for i, (a, b) in pairs if a != b), min(len(got), len(want)))


def check_completion(response: Response, expected: str | None) -> None:
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
    if expected is not None and message.get("content") != expected:
        raise Invalid("wrong completion text")
    if expected is not None and body["choices"][0].get("finish_reason") != "stop":
        raise Invalid("finish_reason is not 'stop'")


def _synthetic(tokens: list[str], *, stop: bool = True, done: bool = True) -> Response:
    """A response as a correct server would send it (then broken by the caller)."""
    head = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    events = []
    for i, text in enumerate(tokens):
        delta = {"role": "assistant", "content": text} if i == 0 else {"content": text}
        events.append(
            orjson.dumps({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        )
    if stop:
        events.append(orjson.dumps({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    if done:
        events.append(DONE)
    response = Response(sent=0.0, status=200, headers={"content-type": "text/event-stream"})
    response.events, response.times = events, [float(i) for i in range(len(events))]
    return response


def self_test() -> None:
    """Prove the checks reject what they must: a harness that accepts anything measures nothing."""
    good = ["a", "b", "c"]
    facts = check_stream(_synthetic(good), "abc", 3)
    assert facts.tokens == 3 and facts.gaps == [1.0, 1.0], facts
    broken = {
        "no [DONE]": (_synthetic(good, done=False), 3),
        "no stop chunk": (_synthetic(good, stop=False), 3),
        "reordered": (_synthetic(["b", "a", "c"]), 3),
        "a token missing": (_synthetic(["a", "b"]), 3),
        "tokens merged": (_synthetic(["ab", "c"]), 3),
    }
    errored = _synthetic(good)
    errored.events.insert(1, b'{"error": {"message": "boom"}}')
    broken["an error event"] = (errored, 3)
    for name, (response, tokens) in broken.items():
        try:
            check_stream(response, "abc", tokens)
        except Invalid:
            continue
        raise AssertionError(f"the stream checks accepted a stream with {name}")
