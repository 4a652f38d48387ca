"""The other ways a stream can carry the same tokens: the Responses and Messages dialects, and
(in Chat Completions) reasoning deltas and a client tool call's argument fragments.

A *variant* is ``(dialect, emits)``: ``("chat", "text")`` is what every other workload sends and
:mod:`benchmarks.checks` checks. For the others, this module builds the request (the path, the
body, the headers) and checks every streamed answer as strictly:

- ``chat`` + ``reasoning``: one id, ``created`` and model; the role in the first delta; every
  token its own ``reasoning_content`` delta, in order; then the answer's one text delta
  (:data:`~benchmarks.agents.REASONING_ANSWER`), the ``stop`` chunk, ``[DONE]``.
- ``chat`` + ``tool`` (the request carries ``tools``): the first delta opens call 0 (its id,
  ``type``, name, empty arguments) with the role and ``content: null``; every token its own
  ``arguments`` fragment of call 0, in order; the ``tool_calls`` finish chunk, ``[DONE]``.
- ``responses`` (``store: false``): ``response.created``, ``response.in_progress``, the message
  item and its text part added, every token its own ``response.output_text.delta`` of that item,
  in order; the text and part done with the whole text, the item done, ``response.completed``
  with the model asked for and the whole text; every event's ``type`` its ``event:`` name and
  its ``sequence_number`` its position.
- ``messages``: ``message_start`` (the model asked for), a text block started at index 0, every
  token its own ``content_block_delta`` (``text_delta``), in order; the block stopped,
  ``message_delta`` with ``end_turn``, ``message_stop`` (``ping`` events may come between).

A token is the event that carries it: its arrival time gives the TTFT and the gaps. Each check
parses every event (one ``orjson.loads`` per stream), so its client costs a little more per
token than the chat text path's byte comparison; the load's CPU share is reported with every
step.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from benchmarks.agents import REASONING_ANSWER, TOOL_CALL_ID, TOOL_NAME
from benchmarks.checks import DONE, Expected, Invalid, StreamFacts
from benchmarks.client import Response

PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"}
#: The one client tool of a ``tool`` request.
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": "Takes the benchmark's tokens as its arguments.",
            "parameters": {"type": "object", "properties": {}},
        },
    }
]
MAX_TOKENS = 100_000  # Messages requires it; no workload comes near it


def path(base: str, dialect: str) -> str:
    """The path of ``dialect``'s route under ``base`` (a chat URL's path, or ``/v1``)."""
    return base.removesuffix(PATHS["chat"]).rstrip("/") + PATHS[dialect]


def body(
    dialect: str, emits: str, model: str, prompt: str, *, stream: bool, session: str | None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The request body and headers of a variant (the session in ``x-session-id`` outside chat)."""
    headers: dict[str, str] = {}
    if dialect == "chat":
        data: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}]}
        if session is not None:
            data["session_id"] = session
        if emits == "tool":
            data["tools"] = TOOLS
    elif dialect == "responses":
        data = {"model": model, "input": prompt, "store": False}
    elif dialect == "messages":
        data = {"model": model, "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": prompt}]}
    else:
        raise ValueError(f"no dialect {dialect!r}")
    if dialect != "chat" and session is not None:
        headers["x-session-id"] = session
    data["stream"] = stream
    return data, headers


def check(dialect: str, emits: str, response: Response, expected: Expected, *, gaps: bool) -> StreamFacts:
    """Check a streamed answer of a variant other than chat text; what it delivered."""
    if response.status != 200:
        raise Invalid(f"status {response.status}: {bytes(response.body[:200])!r}")
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        raise Invalid(f"content-type {response.headers.get('content-type')!r}")
    try:
        if dialect == "chat":
            tokens = _chat(response.events, expected, emits)
        elif dialect == "responses":
            tokens = _responses(response.events, expected)
        else:
            tokens = _messages(response.events, expected)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise Invalid(f"an event lacks a field ({exc!r}): {bytes(response.events[0][:200])!r}") from exc
    times = [response.times[i] for i in tokens]
    ttft = times[0] - response.sent if times else None
    pairs = [b - a for a, b in itertools.pairwise(times)] if gaps else []
    return StreamFacts(len(tokens), ttft, pairs)


def _json(datas: list[bytes]) -> list[Any]:
    try:
        return list(orjson.loads(b"[" + b",".join(datas) + b"]"))
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"an event is not JSON ({exc})") from exc


def _named(events: list[bytes]) -> tuple[list[bytes], list[Any]]:
    """The ``event:`` names and the parsed data of a named stream."""
    names, datas = [], []
    for event in events:
        head, _, data = event.partition(b"\ndata: ")
        if not head.startswith(b"event: ") or not data:
            raise Invalid(f"an event without an event: name or data: {event[:120]!r}")
        names.append(head[7:])
        datas.append(data)
    return names, _json(datas)


def _texts(pieces: list[str], expected: Expected, what: str) -> None:
    text = "".join(pieces)
    if text != expected.text:
        raise Invalid(f"wrong {what}: got {len(text)} chars, want {len(expected.text)}")
    if len(pieces) != len(expected.tokens):
        raise Invalid(f"{len(expected.tokens)} tokens came in {len(pieces)} {what} events")


def _chat(events: list[bytes], expected: Expected, emits: str) -> list[int]:
    """Reasoning deltas or a tool call's fragments, in ``chat.completion.chunk`` events."""
    if not events or events[-1] != DONE:
        raise Invalid("the stream does not end with [DONE]")
    chunks = _json([event[6:] for event in events[:-1]])
    if len({c["id"] for c in chunks}) != 1 or {c["object"] for c in chunks} != {"chat.completion.chunk"}:
        raise Invalid("the chunks are not all chat.completion.chunk of one id")
    names = {(c["created"], c["model"]) for c in chunks}
    if len(names) != 1 or chunks[0]["model"] != expected.model:
        raise Invalid(f"the chunks' created and model are not one, or not the model asked for: {names}")
    choices = [c["choices"][0] for c in chunks]
    *body, last = choices
    if choices[0]["delta"].get("role") != "assistant":
        raise Invalid("the first delta does not name the assistant role")
    if any(choice.get("finish_reason") is not None or choice["index"] != 0 for choice in body):
        raise Invalid("a finish_reason before the last chunk, or a choice index but 0")
    if emits == "reasoning":
        *thoughts, answer = body
        if answer["delta"] != {"content": REASONING_ANSWER} or last != {
            "index": 0,
            "delta": {},
            "finish_reason": "stop",
        }:
            raise Invalid(f"not the answer and the stop chunk after the reasoning: {answer}, {last}")
        deltas = [choice["delta"] for choice in thoughts]
        if any("content" in delta for delta in deltas):
            raise Invalid("answer text among the reasoning deltas")
        _texts([delta["reasoning_content"] for delta in deltas], expected, "reasoning_content")
        return list(range(len(thoughts)))
    opening, *fragments = body
    call = opening["delta"]["tool_calls"]
    function = {"name": TOOL_NAME, "arguments": ""}
    want = [{"index": 0, "id": TOOL_CALL_ID, "type": "function", "function": function}]
    if call != want or opening["delta"].get("content", False) is not None:
        raise Invalid(f"the first delta does not open the tool call: {opening}")
    if last["delta"] != {} or last["finish_reason"] != "tool_calls":
        raise Invalid(f"the last chunk is not the tool_calls finish chunk: {last}")
    calls = [choice["delta"]["tool_calls"] for choice in fragments]
    if any(len(c) != 1 or c[0]["index"] != 0 or len(c[0]) != 2 for c in calls):
        raise Invalid("a fragment is not call 0's arguments alone")
    _texts([c[0]["function"]["arguments"] for c in calls], expected, "arguments")
    return list(range(1, len(fragments) + 1))


RESPONSES_OPENING = (
    b"response.created",
    b"response.in_progress",
    b"response.output_item.added",
    b"response.content_part.added",
)
RESPONSES_CLOSING = (
    b"response.output_text.done",
    b"response.content_part.done",
    b"response.output_item.done",
    b"response.completed",
)


def _responses(events: list[bytes], expected: Expected) -> list[int]:
    names, datas = _named(events)
    if any(data["type"].encode() != name for name, data in zip(names, datas, strict=True)):
        raise Invalid("an event's type is not its event: name")
    if [data["sequence_number"] for data in datas] != list(range(len(datas))):
        raise Invalid("the sequence numbers do not count up from 0")
    count = len(expected.tokens)
    opening, closing = tuple(names[:4]), tuple(names[4 + count :])
    if opening != RESPONSES_OPENING or closing != RESPONSES_CLOSING:
        shown = [name.decode() for name in names[:4] + names[4 + count :]]
        raise Invalid(f"not the events of one text item: {shown}")
    created, added = datas[0]["response"], datas[2]["item"]
    if not created["id"].startswith("resp_") or created["model"] != expected.model:
        raise Invalid(f"response.created names {created['id']!r}, {created['model']!r}")
    deltas = datas[4 : 4 + count]
    if any(name != b"response.output_text.delta" for name in names[4 : 4 + count]):
        raise Invalid("a token is not its own response.output_text.delta")
    if {d["item_id"] for d in deltas} != {added["id"]} or added["type"] != "message":
        raise Invalid("the deltas are not all of the message item")
    _texts([d["delta"] for d in deltas], expected, "output_text")
    done, completed = datas[4 + count], datas[-1]["response"]
    final = completed["output"][0]["content"][0]["text"]
    if done["text"] != expected.text or final != expected.text or completed["status"] != "completed":
        raise Invalid("response.output_text.done or response.completed does not hold the whole text")
    if completed["id"] != created["id"] or completed["model"] != expected.model:
        raise Invalid("response.completed names another response or model")
    return list(range(4, 4 + count))


MESSAGES_CLOSING = (b"content_block_stop", b"message_delta", b"message_stop")


def _messages(events: list[bytes], expected: Expected) -> list[int]:
    kept = [i for i, event in enumerate(events) if not event.startswith(b"event: ping\n")]
    names, datas = _named([events[i] for i in kept])
    if any(data["type"].encode() != name for name, data in zip(names, datas, strict=True)):
        raise Invalid("an event's type is not its event: name")
    count = len(expected.tokens)
    head, closing = names[:2], tuple(names[2 + count :])
    if head != [b"message_start", b"content_block_start"] or closing != MESSAGES_CLOSING:
        raise Invalid(f"not the events of one text block: {[n.decode() for n in head + names[2 + count :]]}")
    message, block = datas[0]["message"], datas[1]
    if not message["id"].startswith("msg_") or message["model"] != expected.model:
        raise Invalid(f"message_start names {message['id']!r}, {message['model']!r}")
    if block["index"] != 0 or block["content_block"] != {"type": "text", "text": ""}:
        raise Invalid(f"not a text block at index 0: {block}")
    deltas = datas[2 : 2 + count]
    if any(d["index"] != 0 or d["delta"]["type"] != "text_delta" for d in deltas):
        raise Invalid("a token is not its own text_delta of block 0")
    _texts([d["delta"]["text"] for d in deltas], expected, "text_delta")
    if datas[-2]["delta"]["stop_reason"] != "end_turn" or datas[-3]["index"] != 0:
        raise Invalid(f"not end_turn: {datas[-2]}")
    return [kept[i] for i in range(2, 2 + count)]


def _reader_test() -> None:
    """Named events: the fast path, a comment between them, a split read."""
    from benchmarks.client import EventReader

    response = Response(sent=0.0)
    reader = EventReader(response)
    for now, piece in enumerate(
        [
            b"event: a\ndata: 1\n\nevent: b\ndata: 2\n\nev",
            b"ent: c\ndata: 3\n\n: ping\n\nevent: d\ndata: 4\n\n",
        ]
    ):
        reader.feed(piece, float(now))
    want = [b"event: a\ndata: 1", b"event: b\ndata: 2", b"event: c\ndata: 3", b"event: d\ndata: 4"]
    assert response.events == want and response.times == [0.0, 0.0, 1.0, 1.0], response


CHECKED = (("responses", "text"), ("messages", "text"), ("chat", "reasoning"), ("chat", "tool"))


def self_test() -> None:
    """Each check accepts what a correct server sends (a real one, in ``--quick``) and rejects
    a token merged, lost or out of order; the reader keeps ``event:`` names."""
    _reader_test()
    tokens = ["a", ' "b"', "c\n"]
    expected = Expected.of(tokens, "m")
    for broken in ([tokens[0], tokens[2], tokens[1]], [tokens[0], tokens[1] + tokens[2]], tokens[:2]):
        for dialect, emits in CHECKED:
            response = synthetic(dialect, emits, broken)
            try:
                check(dialect, emits, response, expected, gaps=True)
            except Invalid:
                continue
            raise AssertionError(f"the {dialect} {emits} check accepted {broken!r}")
    for dialect, emits in CHECKED:
        facts = check(dialect, emits, synthetic(dialect, emits, tokens), expected, gaps=True)
        assert facts.tokens == 3 and len(facts.gaps) == 2, (dialect, emits, facts)


def synthetic(dialect: str, emits: str, tokens: list[str]) -> Response:
    """A stream of ``tokens`` as a correct server sends it in this variant (the model ``m``)."""
    events: list[bytes] = []
    if dialect == "chat":
        head = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        if emits == "reasoning":
            deltas: list[dict[str, Any]] = [{"reasoning_content": t} for t in tokens]
            deltas.append({"content": REASONING_ANSWER})
            finish = "stop"
        else:
            opening = {"index": 0, "id": TOOL_CALL_ID, "type": "function"}
            call = {**opening, "function": {"name": TOOL_NAME, "arguments": ""}}
            deltas = [{"content": None, "tool_calls": [call]}]
            deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": t}}]} for t in tokens]
            finish = "tool_calls"
        deltas[0] = {"role": "assistant", **deltas[0]}
        choices: list[dict[str, Any]] = [{"index": 0, "delta": d, "finish_reason": None} for d in deltas]
        choices.append({"index": 0, "delta": {}, "finish_reason": finish})
        events = [b"data: " + orjson.dumps({**head, "choices": [choice]}) for choice in choices] + [DONE]
    elif dialect == "responses":
        text = "".join(tokens)
        item = {"id": "msg_1", "type": "message"}
        output = [{"content": [{"text": text}]}]
        done = {"id": "resp_1", "model": "m", "status": "completed", "output": output}
        payloads: list[dict[str, Any]] = [
            {"type": "response.created", "response": {"id": "resp_1", "model": "m"}},
            {"type": "response.in_progress"},
            {"type": "response.output_item.added", "item": item},
            {"type": "response.content_part.added"},
            *({"type": "response.output_text.delta", "item_id": "msg_1", "delta": t} for t in tokens),
            {"type": "response.output_text.done", "text": text},
            {"type": "response.content_part.done"},
            {"type": "response.output_item.done"},
            {"type": "response.completed", "response": done},
        ]
        events = [_named_event({**p, "sequence_number": i}) for i, p in enumerate(payloads)]
    else:
        payloads = [
            {"type": "message_start", "message": {"id": "msg_1", "model": "m"}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            *(
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}
                for t in tokens
            ),
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}},
            {"type": "message_stop"},
        ]
        events = [_named_event(p) for p in payloads]
        events.insert(3, b'event: ping\ndata: {"type":"ping"}')
    response = Response(sent=0.0, status=200, headers={"content-type": "text/event-stream"})
    response.events, response.times = events, [float(i) for i in range(len(events))]
    return response


def _named_event(payload: dict[str, Any]) -> bytes:
    kind: str = payload["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload)
