"""What the metrics cost a stream, measured alone: ``python -m benchmarks.metercost [FULL.json]``.

nanobot has no switch to turn its metrics off (``prometheus-client`` is a dependency, and every
stream keeps a :class:`~nanobot.api.metrics.StreamMeter`), so the W1y and W2 figures cannot be
set against a metrics-off run. This times what the metrics add instead, in this process, pinned
to one core: per token, ``StreamMeter.token()`` (a clock read and a bisect), against calling a
method that does nothing; per stream, a meter's creation and ``close()`` (the gauge, the token
counter, the gap histogram in one step, the outcome counter and the turn histogram) and the
request counter ``Access.done`` bumps. Given a full run's JSON, it sets these against the W1y@64
and W2 CPU per token of the stacks that ran (a W2 stream is 64 tokens).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from benchmarks.processes import prepare_process

TOKENS = 256
STREAMS = 2_000
REPEATS = 7
W2_TOKENS = 64


class _Idle:
    __slots__ = ()

    def token(self) -> None:
        """The call the hot path would make anyway, doing nothing."""


def _best(run: Callable[[], float]) -> float:
    """The median of :data:`REPEATS` timings (seconds), after one warm-up."""
    run()
    return statistics.median(run() for _ in range(REPEATS))


def per_token(meter_class: Callable[[float], Any] | None) -> float:
    """Seconds per ``token()`` call, over ``STREAMS`` streams of ``TOKENS`` tokens each."""
    from nanobot.api.metrics import StreamMeter

    def run() -> float:
        meters = [StreamMeter(time.perf_counter()) if meter_class else _Idle() for _ in range(STREAMS)]
        start = time.process_time()
        for meter in meters:
            token = meter.token
            for _ in range(TOKENS):
                token()
        took = time.process_time() - start
        for meter in meters:
            if meter_class:
                meter.close("completed")
        return took / (STREAMS * TOKENS)

    return _best(run)


def per_stream() -> float:
    """Seconds per stream for a meter's creation, one token, its close, and the request count."""
    from nanobot.api.metrics import REQUESTS, StreamMeter

    def run() -> float:
        start = time.process_time()
        for _ in range(STREAMS):
            meter = StreamMeter(time.perf_counter())
            meter.token()
            meter.close("completed")
            REQUESTS.labels("/v1/chat/completions", "200").inc()
        return (time.process_time() - start) / STREAMS

    one_token = per_token(StreamMeter)
    return _best(run) - one_token


def measure() -> dict[str, float]:
    """The costs, in microseconds."""
    from nanobot.api.metrics import StreamMeter

    meter, idle = per_token(StreamMeter), per_token(None)
    return {
        "token_us": meter * 1e6,
        "idle_call_us": idle * 1e6,
        "token_added_us": (meter - idle) * 1e6,
        "stream_us": per_stream() * 1e6,
    }


def against(costs: dict[str, float], path: Path) -> list[str]:
    """The costs as shares of a full run's W1y@64 and W2 CPU per token, per stack."""
    results = orjson.loads(path.read_bytes())["results"]
    lines = [
        "| stack | W1y@64 CPU-µs/token | metrics' share | W2 CPU-µs/token | metrics' share (per token "
        f"+ per stream / {W2_TOKENS}) |",
        "|---|---|---|---|---|",
    ]
    token, stream = costs["token_added_us"], costs["stream_us"]
    for server in ("aiohttp", "uvicorn", "uvicorn-h11", "hypercorn", "granian"):
        found = {r["workload"]: r for r in results if r["server"] == server and r.get("valid")}
        w1y = (found.get("W1y") or {}).get("server_cpu_us_per_unit")
        w2 = (found.get("W2") or {}).get("server_cpu_us_per_unit")
        if not w1y or not w2:
            continue
        share_w1y = token / w1y * 100
        share_w2 = (token + stream / W2_TOKENS) / w2 * 100
        lines.append(f"| {server} | {w1y:.2f} | {share_w1y:.1f} % | {w2:.2f} | {share_w2:.1f} % |")
    return lines


def main(argv: list[str]) -> int:
    prepare_process(0)
    costs = measure()
    print(
        f"StreamMeter.token(): {costs['token_us']:.3f} µs per token "
        f"({costs['token_added_us']:.3f} µs more than a method that does nothing, "
        f"{costs['idle_call_us']:.3f} µs)"
    )
    print(f"per stream (meter created and closed, request counted): {costs['stream_us']:.2f} µs")
    if argv:
        print("\n".join(["", *against(costs, Path(argv[0]))]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
