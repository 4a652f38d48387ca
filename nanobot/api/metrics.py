"""Prometheus metrics (``GET /metrics``), with ``prometheus-client``; multiprocess-aware.

Per-token figures never touch a Prometheus object on the hot path: a stream counts its tokens
and buckets its inter-token gaps in a :class:`StreamMeter` (a clock read and a bisect per
token), and adds them to the histograms once, when it ends. With several workers serving one
port, set ``PROMETHEUS_MULTIPROC_DIR`` (``nanobot serve --workers`` does): every worker writes
its own files and any worker's ``/metrics`` reports the sum. The format follows the scraper's
``Accept`` (OpenMetrics or Prometheus text); no ``*_created`` series, which nobody reads.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Sequence

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

disable_created_metrics()  # type: ignore[no-untyped-call]  # `*_created` series: noise to every scrape

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
GAP_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
TURN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

REQUESTS = Counter("nanobot_requests", "Requests answered, by route and status.", ("route", "status"))
STREAMS_OPEN = Gauge("nanobot_streams_open", "Streaming turns open now.", multiprocess_mode="livesum")
TTFT = Histogram(
    "nanobot_time_to_first_token_seconds",
    "From the request's arrival to its first token written.",
    buckets=LATENCY_BUCKETS,
)
GAP = Histogram(
    "nanobot_inter_token_gap_seconds", "Time between two tokens of one stream.", buckets=GAP_BUCKETS
)
TURN = Histogram("nanobot_turn_duration_seconds", "A turn from arrival to its end.", buckets=TURN_BUCKETS)
TOKENS = Counter("nanobot_tokens_streamed", "Tokens written to streaming clients.")
OUTCOMES = Counter(
    "nanobot_turns",
    "Turns ended, by outcome: completed, failed, timeout, stopped (shutdown), disconnected, stalled.",
    ("outcome",),
)
ABANDONED = Counter(
    "nanobot_turns_abandoned",
    "Turns whose agent ignored its cancellation and kept running after the request ended.",
)
UPSTREAM_TIME = Histogram(
    "nanobot_upstream_request_duration_seconds",
    "openai agent: one upstream request, from sending it to the end of its answer.",
    buckets=TURN_BUCKETS,
)
UPSTREAM_FAILURES = Counter(
    "nanobot_upstream_failures", "openai agent: failed upstream requests, by kind.", ("kind",)
)


def add_observations(histogram: Histogram, counts: Sequence[int], total: float) -> None:
    """Add pre-bucketed observations (``counts[i]`` fell in bucket ``i``; the last is +Inf) in
    one step, instead of one ``observe`` (~1.7 us) per value. Uses the histogram's value cells,
    stable across prometheus-client releases and kept exact by the metrics tests."""
    buckets = histogram._buckets
    for cell, count in zip(buckets, counts, strict=True):
        if count:
            cell.inc(count)
    histogram._sum.inc(total)


_clock = time.perf_counter
_bucket = bisect.bisect_left


class StreamMeter:
    """One stream's tokens and gaps, kept as plain ints until :meth:`close`."""

    __slots__ = ("_arrived", "_counts", "_first", "_last", "_started", "tokens")

    def __init__(self, arrived: float) -> None:
        self._arrived = arrived
        self._last = 0.0
        self._started = 0.0  #: when the first token was written
        self._first: float | None = None
        self._counts: list[int] | None = None  #: the gaps, bucketed: made at the second token
        self.tokens = 0
        STREAMS_OPEN.inc()

    @property
    def first_token(self) -> float | None:
        """Seconds from arrival to the first token, once there was one."""
        return self._first

    def token(self) -> None:
        """A token is being written now."""
        now = _clock()
        if self.tokens:
            counts = self._counts
            if counts is None:
                counts = self._counts = [0] * (len(GAP_BUCKETS) + 1)
            counts[_bucket(GAP_BUCKETS, now - self._last)] += 1
        else:
            self._started = now
            self._first = now - self._arrived
            TTFT.observe(self._first)
        self._last = now
        self.tokens += 1

    def close(self, outcome: str) -> None:
        STREAMS_OPEN.dec()
        if self.tokens:
            TOKENS.inc(self.tokens)
        if self._counts is not None:  # two tokens or more
            add_observations(GAP, self._counts, self._last - self._started)  # the gaps add up to that
        end_turn(outcome, time.perf_counter() - self._arrived)


_outcomes: dict[str, Counter] = {}  # OUTCOMES' children: ``labels()`` costs more than ``inc()``


def end_turn(outcome: str, seconds: float) -> None:
    counter = _outcomes.get(outcome)
    if counter is None:
        counter = _outcomes[outcome] = OUTCOMES.labels(outcome)
    counter.inc()
    TURN.observe(seconds)


def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """The metrics, in the format ``accept`` asks for (OpenMetrics, or Prometheus text by
    default), and its content type: every worker's, in multiprocess mode."""
    encode, content_type = choose_encoder(accept or "")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return encode(registry), content_type
    return encode(REGISTRY), content_type
