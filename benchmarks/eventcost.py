"""What one event costs in our code, apart from HTTP: ``python -m benchmarks.eventcost [FULL.json]``.

The W1y variants (reasoning deltas, tool-call argument fragments, ``/v1/responses``,
``/v1/messages``) differ from chat text only in the Python between the agent and the socket:
the event object the agent builds, the turn's callback (``StreamTurn._on_stream`` for text,
``_on_event`` for the rest), and the dialect's encoder. The socket write, the loop iteration and
the HTTP framing are the same per event. This times that part alone, on the real classes (the
dialect's own ``parse`` and ``encoder``, a real ``StreamMeter``, an output that drops the
bytes), in this process, pinned to one core, the variants interleaved, the median of
:data:`REPEATS`. It is what a noisy machine cannot hide: the difference between two variants
here is the difference between them in W1y (give a full run's JSON and it sets each variant's
added cost against that run's W1y CPU per text delta, per stack).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson

from benchmarks.agents import TOOL_CALL_ID, TOOL_NAME, Workload, token
from benchmarks.dialects import body
from benchmarks.processes import prepare_process

TOKENS = 256
STREAMS = 400
REPEATS = 9
#: name, dialect, what the agent sends its tokens as.
VARIANTS = (
    ("chat text", "chat", "text"),
    ("chat reasoning", "chat", "reasoning"),
    ("chat tool args", "chat", "tool"),
    ("responses text", "responses", "text"),
    ("messages text", "messages", "text"),
)


class _Sink:
    """An output that drops what it is sent (the socket write is the same for every variant)."""

    __slots__ = ()

    async def send(self, data: bytes) -> None:
        return None


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run a callback that never waits (the sink never does) without an event loop."""
    try:
        coro.send(None)
    except StopIteration:
        return
    raise RuntimeError("the callback waited")


def _dialect(name: str) -> Any:
    if name == "chat":
        from nanobot.api.dialects.chat import CHAT

        return CHAT
    if name == "messages":
        from nanobot.api.dialects.messages import MESSAGES

        return MESSAGES
    from nanobot.api.dialects.responses import Responses

    return Responses()


def _turn(dialect: Any, request: Any, index: int) -> Any:
    """A ``StreamTurn`` as the driver has it once its stream began: encoder, meter, output."""
    from nanobot.api.driver import StreamTurn
    from nanobot.api.metrics import StreamMeter

    turn = StreamTurn.__new__(StreamTurn)
    turn._stream = dialect.encoder(request, turn_id=f"x{index:08d}", created=1, model="bench")
    turn._meter = StreamMeter(time.perf_counter())
    turn._output = _Sink()  # type: ignore[assignment]  # only its send() is called
    return turn


def per_event(dialect_name: str, emits: str) -> Callable[[], float]:
    """A run: seconds of CPU per event over :data:`STREAMS` streams of :data:`TOKENS` events,
    events built as the agent builds them."""
    from nanobot.api.request import Limits
    from nanobot.core.events import ReasoningDelta, ToolCallDelta, ToolCallStart

    dialect = _dialect(dialect_name)
    prompt = Workload(TOKENS, 0, True, emits).prompt()
    data, _ = body(dialect_name, emits, "bench", prompt, stream=True, session=None)
    raw = orjson.dumps(data)
    tokens = [token(i) for i in range(TOKENS)]

    def run() -> float:
        turns = [_turn(dialect, dialect.parse(raw, Limits(), relays=False), i) for i in range(STREAMS)]
        for turn in turns:  # the first event opens the stream (the role, an item): not timed
            if emits == "tool":
                _run(turn._on_event(ToolCallStart(0, TOOL_CALL_ID, TOOL_NAME)))
                _run(turn._on_event(ToolCallDelta(0, " ")))
            elif emits == "reasoning":
                _run(turn._on_event(ReasoningDelta(" ")))
            else:
                _run(turn._on_stream(" "))
        start = time.process_time()
        for turn in turns:
            if emits == "text":
                on_stream = turn._on_stream
                for text in tokens:
                    _run(on_stream(text))
            elif emits == "reasoning":
                on_event = turn._on_event
                for text in tokens:
                    _run(on_event(ReasoningDelta(text)))
            else:
                on_event = turn._on_event
                for text in tokens:
                    _run(on_event(ToolCallDelta(0, text)))
        took = time.process_time() - start
        for turn in turns:
            turn._meter.close("completed")
        return took / (STREAMS * TOKENS)

    return run


def measure() -> dict[str, list[float]]:
    """Every variant's per-event seconds, :data:`REPEATS` times, the variants interleaved."""
    runs = {name: per_event(dialect, emits) for name, dialect, emits in VARIANTS}
    for run in runs.values():
        run()  # warm-up
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(REPEATS):
        for name, run in runs.items():
            timings[name].append(run())
    return timings


def _w1y(document: dict[str, Any], server: str) -> float | None:
    for result in document.get("results", []):
        if result["server"] == server and result.get("workload") == "W1y" and result.get("valid"):
            value = result.get("server_cpu_us_per_unit")
            return float(value) if isinstance(value, int | float) else None
    return None


def report(timings: dict[str, list[float]], document: dict[str, Any] | None) -> str:
    base = statistics.median(timings["chat text"])
    stacks = [s for s in ("aiohttp", "uvicorn") if document and _w1y(document, s)]
    heads = [f"÷ W1y chat text, {s} ({_w1y(document or {}, s):.2f} µs)" for s in stacks]
    columns = ["variant", "our code per event, µs [min-max]", "added over chat text, µs", *heads]
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for name, values in timings.items():
        median = statistics.median(values)
        added = (median - base) * 1e6
        cells = [f"{median * 1e6:.2f} [{min(values) * 1e6:.2f}-{max(values) * 1e6:.2f}]", f"{added:+.2f}"]
        for stack in stacks:
            w1y = _w1y(document or {}, stack) or 0.0
            cells.append(f"{(w1y + added) / w1y:.3f}x")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    prepare_process(0)
    document = orjson.loads(Path(argv[0]).read_bytes()) if argv else None
    print(report(measure(), document))


if __name__ == "__main__":
    main(sys.argv[1:])
