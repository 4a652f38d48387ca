"""A strict little SSE reader for tests: bytes in, events out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    """One SSE block: ``data`` (parsed JSON, or the string ``[DONE]``) or a ``comment``."""

    data: Any = None
    comment: str | None = None

    @property
    def done(self) -> bool:
        return self.data == "[DONE]"


def parse_events(body: bytes) -> list[Event]:
    """Split a complete SSE body into events; fail on anything we never send."""
    text = body.decode()
    assert text.endswith("\n\n") or text == "", f"stream does not end on an event boundary: {text[-80:]!r}"
    events = []
    for block in text.split("\n\n")[:-1]:
        lines = block.split("\n")
        assert len(lines) == 1, f"one line per event expected, got {block!r}"
        line = lines[0]
        if line.startswith(":"):
            events.append(Event(comment=line[1:].strip()))
        else:
            assert line.startswith("data: "), f"unexpected SSE line {line!r}"
            raw = line[len("data: ") :]
            events.append(Event(data="[DONE]" if raw == "[DONE]" else json.loads(raw)))
    return events


def data_events(body: bytes) -> list[Any]:
    """The ``data`` payloads, comments dropped."""
    return [e.data for e in parse_events(body) if e.comment is None]


def text_of(events: list[Any]) -> str:
    """The assistant text carried by a list of chunk payloads."""
    return "".join(
        e["choices"][0]["delta"].get("content") or ""
        for e in events
        if isinstance(e, dict) and e.get("choices")
    )
