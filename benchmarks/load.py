"""The load process: ``python -m benchmarks.load`` reads a plan (JSON) on stdin, drives one server
with the raw client, checks every response, and prints one JSON line per step on stdout.

It runs in its own process, pinned to its own core, so it competes with the server for nothing
but the loopback; its own CPU share is reported with every step.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from benchmarks import dialects
from benchmarks.agents import Workload, token
from benchmarks.checks import Expected, Invalid, check_completion, check_stream
from benchmarks.client import Connection, ProtocolError, Response, connect, request_bytes
from benchmarks.meters import Reading, ServerMeter, Window, summary_ms
from benchmarks.processes import prepare_process
from benchmarks.workloads import Step

CONNECTS_AT_ONCE = 64
FAILURES = (Invalid, ProtocolError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Target:
    """Where the load goes and what it asks: our servers (strict) or any endpoint (lenient)."""

    url: str
    model: str
    strict: bool
    api_key: str | None = None
    prompt: str | None = None
    max_tokens: int | None = None
    sessions: bool = True  # a session_id per client (nanobot serialises turns of one session)
    session_prefix: str = ""  # --url mode: new names for this run (an endpoint keeps its sessions)

    @property
    def parts(self) -> tuple[str, int, str, bool]:
        split = urlsplit(self.url)
        tls = split.scheme == "https"
        return split.hostname or "127.0.0.1", split.port or (443 if tls else 80), split.path, tls

    async def connect(self) -> Connection:
        host, port, _, tls = self.parts
        return await connect(host, port, tls=tls)

    def expected(self, step: Step) -> Expected | None:
        """What a strict check wants of this step's answers; ``None`` for an outside endpoint."""
        return Expected.of([token(i) for i in range(step.tokens)], self.model) if self.strict else None

    def session(self, step: Step, client: int) -> str:
        """Client ``client``'s own session in ``step`` (its requests are turns of one session)."""
        return f"{self.session_prefix}{step.workload}-c{step.concurrency}-{client}"

    def payload(self, step: Step, session: str, client: int = 0) -> bytes:
        """Client ``client``'s request in ``step``, in its variant's dialect (:mod:`.dialects`)."""
        host, port, path, _ = self.parts
        dialect, emits = step.variant(client)
        work = Workload(step.tokens, step.delay, step.yields, emits)
        prompt = work.prompt() if self.strict else self.prompt or ""
        named = session if self.sessions and step.sessions else None
        body, headers = dialects.body(
            dialect, emits, self.model, prompt, stream=step.kind != "complete", session=named
        )
        if self.max_tokens:
            body["max_tokens"] = self.max_tokens
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return request_bytes(f"{host}:{port}", dialects.path(path, dialect), orjson.dumps(body), headers)


@dataclass(slots=True)
class Tally:
    """What the clients of one step saw, checked against what they should have seen."""

    expected: Expected | None = None
    requests: int = 0
    invalid: int = 0
    tokens: int = 0
    first_error: str | None = None
    ttfts: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    spans: float = 0.0  # paced streams: the seconds from each request to its last token, summed
    spaced: int = 0  # and the token intervals they held, summed

    def fail(self, exc: BaseException) -> None:
        self.requests += 1
        self.invalid += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"[:300]

    def check(self, step: Step, response: Response, client: int = 0) -> None:
        expected = self.expected
        variant = step.variant(client)
        if step.kind == "complete":
            check_completion(response, expected)
            self.tokens += step.tokens
        else:
            gaps = step.delay > 0 or expected is None
            if variant == ("chat", "text") or expected is None:
                facts = check_stream(response, expected, gaps=gaps)
            else:
                facts = dialects.check(*variant, response, expected, gaps=gaps)
            self.tokens += facts.tokens
            if facts.ttft is not None:
                self.ttfts.append(facts.ttft)
                self.spans += facts.ttft + sum(facts.gaps)
                self.spaced += len(facts.gaps)
            self.gaps.extend(facts.gaps)
        self.requests += 1


async def connect_all(target: Target, count: int) -> list[Connection]:
    """``count`` connections, at most :data:`CONNECTS_AT_ONCE` being opened at a time."""
    gate = asyncio.Semaphore(CONNECTS_AT_ONCE)

    async def one() -> Connection:
        async with gate, asyncio.timeout(30):
            return await target.connect()

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def drive(
    connection: Connection,
    payload: bytes,
    step: Step,
    target: Target,
    deadline: float,
    tally: Tally,
    start: float = 0.0,
    client: int = 0,
) -> None:
    """One client: after ``start`` seconds, request after request on its connection, until its
    count or time is up."""
    if start:
        await asyncio.sleep(start)
    for sent in range(step.max_requests):
        if sent and time.perf_counter() >= deadline:
            break
        try:
            if connection.closed:
                connection = await target.connect()
            async with asyncio.timeout(step.timeout):
                response = await connection.request(payload)
            tally.check(step, response, client)
        except FAILURES as exc:
            tally.fail(exc)
            connection.close()
    connection.close()


async def run_requests(
    step: Step, target: Target, meter: ServerMeter, upstream: ServerMeter | None = None
) -> dict[str, Any]:
    """A stream or complete step: connect every client, then let them all go at once."""
    connections = await connect_all(target, step.concurrency)
    payloads = [target.payload(step, target.session(step, i), i) for i in range(step.concurrency)]
    tally = Tally(target.expected(step))
    start = Reading.take(meter, upstream)
    deadline = start.wall + step.duration if step.duration is not None else float("inf")
    await asyncio.gather(
        *(
            drive(c, p, step, target, deadline, tally, i * step.stagger, i)
            for i, (c, p) in enumerate(zip(connections, payloads, strict=True))
        )
    )
    window = Window.between(start, Reading.take(meter, upstream))
    return rates(step, tally, window)


def rates(step: Step, tally: Tally, window: Window) -> dict[str, Any]:
    """The figures of one step, from its tally and its time window."""
    per_unit = tally.tokens if step.kind == "stream" else tally.requests
    server_us = window.server_cpu * 1e6 if window.server_cpu is not None else None
    paced = step.delay > 0 and step.kind == "stream" and bool(tally.gaps)
    return {
        "requests": tally.requests,
        "invalid": tally.invalid,
        "error": tally.first_error,
        "valid": tally.invalid == 0 and tally.requests > 0,
        "seconds": window.wall,
        "tokens": tally.tokens,
        "tokens_per_s": tally.tokens / window.wall if step.kind == "stream" else None,
        "requests_per_s": tally.requests / window.wall,
        "server_cpu_us": server_us,
        "server_cpu_us_per_unit": server_us / per_unit if server_us is not None and per_unit else None,
        "server_cpu_us_per_request": server_us / tally.requests
        if server_us is not None and tally.requests
        else None,
        "server_cpu_share": window.server_cpu / window.wall if window.server_cpu is not None else None,
        "client_cpu_share": window.client_cpu / window.wall,
        "others_cpu_share": window.others_cpu / window.wall if window.others_cpu is not None else None,
        "upstream_cpu_share": window.upstream_cpu / window.wall if window.upstream_cpu is not None else None,
        "delivered_share": delivered_share(step, tally) if paced else None,
        "ttft_ms": summary_ms(tally.ttfts),
        "gap_ms": summary_ms(tally.gaps),
    }


def delivered_share(step: Step, tally: Tally) -> float:
    """The share of offered tokens delivered, at the upstream's pace (paced steps).

    The upstream offers a stream's tokens ``delay`` apart; a relay that keeps pace delivers
    them as fast, one that falls behind (or holds the first token back) takes longer from the
    request to the last token. So: the stream time the offered tokens need, ``(tokens - 1) *
    delay``, over the time they took, request to last token, summed over streams (at most 1),
    times the share of requested tokens that came in valid answers (failed requests count as
    undelivered; they also make the step invalid).
    """
    pace = min(1.0, tally.spaced * step.delay / tally.spans) if tally.spans > 0 else 1.0
    offered = tally.requests * step.tokens
    return pace * (tally.tokens / offered if offered else 0.0)


async def run_idle(step: Step, target: Target, meter: ServerMeter) -> dict[str, Any]:
    """Open ``concurrency`` silent streams, wait for every head, and weigh the server's RSS."""
    connections = await connect_all(target, step.concurrency)
    before = meter.rss()
    tally = Tally()
    try:
        for i, connection in enumerate(connections):
            connection.send(target.payload(step, f"idle-{i}"), watch_head=True)
        async with asyncio.timeout(step.timeout):
            heads = await asyncio.gather(*(c.head() for c in connections), return_exceptions=True)
        for head in heads:
            _count_head(head, tally)
        after = meter.rss()
    finally:
        for connection in connections:
            connection.close()
    grown = after - before if after is not None and before is not None else None
    return {
        "requests": tally.requests,
        "invalid": tally.invalid,
        "error": tally.first_error,
        "valid": tally.invalid == 0 and tally.requests == step.concurrency,
        "rss_before": before,
        "rss_after": after,
        "rss_per_stream_bytes": grown / step.concurrency if grown is not None else None,
    }


def _count_head(head: Response | BaseException, tally: Tally) -> None:
    if isinstance(head, BaseException):
        tally.fail(head)
    elif head.status != 200 or not head.headers.get("content-type", "").startswith("text/event-stream"):
        tally.fail(Invalid(f"an idle stream got status {head.status}, {head.headers.get('content-type')}"))
    else:
        tally.requests += 1


async def run_plan(plan: dict[str, Any]) -> None:
    """Every step of the plan, in order; one JSON line per step."""
    target = Target(**plan["target"])
    meter = ServerMeter(plan.get("server_pid"))
    upstream = ServerMeter(plan["upstream_pid"]) if plan.get("upstream_pid") else None
    for raw in plan["steps"]:
        step = Step.from_dict(raw)
        try:
            if step.kind == "idle":
                result = await run_idle(step, target, meter)
            else:
                result = await run_requests(step, target, meter, upstream)
        except FAILURES as exc:
            result = {"valid": False, "requests": 0, "invalid": 1, "error": f"{type(exc).__name__}: {exc}"}
        line = orjson.dumps({"step": step.to_dict(), "label": step.label, "result": result})
        sys.stdout.buffer.write(line + b"\n")
        sys.stdout.buffer.flush()


def main() -> None:
    plan = orjson.loads(sys.stdin.buffer.read())
    prepare_process(plan.get("cpu"))
    try:
        import uvloop
    except ImportError:
        asyncio.run(run_plan(plan))
    else:
        uvloop.run(run_plan(plan))


if __name__ == "__main__":
    main()
