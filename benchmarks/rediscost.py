"""What Redis adds to a turn, measured alone: ``python -m benchmarks.rediscost [--cpu N] [--url URL]``.

With ``--redis-url`` every turn of a named session makes round trips to Redis: its queue check
and its place in the session's queue before the agent runs, the release after (``RedisSessions``);
and the ``openai`` agent loads the conversation before it asks the upstream and saves it after
(``RedisHistory``). This times those round trips against what they replace in one process
(``SessionLocks``; ``MemoryHistory`` and ``SQLiteHistory``), on the real ``redis-server`` the
harness started (or one started here, pinned to the other core), this process pinned to ``--cpu``:

- **sequential**: one turn after another, each its own session's next turn (as one client sending
  turns back to back): the latency of a turn's round trips (median and p99) and this process's
  CPU per turn (the background lease renewal and wake-up listener included);
- **concurrent**: :data:`CLIENTS` sessions at once, each sending turns back to back: the CPU per
  turn when round trips overlap, as in a busy server.

A history turn loads a conversation of :data:`MESSAGES` messages and saves it two messages longer
(the question and the answer), as the ``openai`` agent does. Prints one JSON object on stdout
(``--json``) or a table; the full run (:mod:`benchmarks.harness`) puts it in its report.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import orjson

from benchmarks.processes import prepare_process

TURNS = 1_000
ROUNDS = 5
WARMUP = 200
CLIENTS = 32
MESSAGES = 16
#: The goal of issue 13: the round trips of one turn cost at most this, in CPU and in latency.
GOAL_MS = 0.3

Turn = Callable[[str], Awaitable[None]]


@contextmanager
def running_redis(cpu: int | None) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A fresh ``redis-server`` on a free loopback port (no persistence), pinned to ``cpu``;
    stopped by PID on the way out. Raises :class:`FileNotFoundError` when it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (apt-get install -y redis-server)")
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as folder:
        # Port 0 would disable TCP: take a free port and bind it at once (a race is retried).
        for _ in range(3):
            port = _free_port()
            process = subprocess.Popen(
                [
                    binary,
                    *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
                    *("--dir", folder, "--loglevel", "warning", "--logfile", str(Path(folder) / "log")),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            if cpu is not None and hasattr(os, "sched_setaffinity"):
                with suppress(OSError):
                    os.sched_setaffinity(process.pid, {cpu})
            if _answers(process, port):
                break
            _kill(process)
        else:
            raise RuntimeError("redis-server did not start (see its log)")
        try:
            yield process, f"redis://127.0.0.1:{port}/0"
        finally:
            _kill(process)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(process: subprocess.Popen[bytes], port: int, patience: float = 10.0) -> bool:
    """Whether the server answers PING within ``patience`` seconds (False once it exited)."""
    import socket

    deadline = time.monotonic() + patience
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return True
        except OSError:
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.02)  # waits on the child, not a blind sleep
    return False


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def conversation(length: int) -> list[dict[str, str]]:
    """A plausible conversation: alternating turns of a few dozen words each."""
    words = "the quick brown fox jumps over the lazy dog and then asks what comes next "
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"{i}: " + words * (1 + i % 3)}
        for i in range(length)
    ]


def lock_turn(sessions: Any) -> Turn:
    """A turn's session round trips: the queue check, then entering and leaving its turn."""

    async def turn(key: str) -> None:
        await sessions.check(key)
        async with sessions.hold(key):
            pass

    return turn


def history_turn(history: Any) -> Turn:
    """A turn's history round trips: load the conversation, save it with the new question and answer."""
    extra = conversation(2)

    async def turn(key: str) -> None:
        messages = await history.load(key)
        await history.save(key, [*messages, *extra][-MESSAGES:])

    return turn


async def sequential(turn: Turn, turns: int = TURNS, warmup: int = WARMUP) -> dict[str, float]:
    """One turn after another: latency median/p99 (ms) and CPU per turn (µs)."""
    for i in range(warmup):
        await turn(f"bench:{i % 8}")
    walls = []
    cpu = time.process_time()
    for i in range(turns):
        start = time.perf_counter()
        await turn(f"bench:{i % 8}")
        walls.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu
    walls.sort()
    return {
        "p50_ms": statistics.median(walls) * 1e3,
        "p99_ms": walls[int(0.99 * (len(walls) - 1))] * 1e3,
        "cpu_us": cpu / turns * 1e6,
    }


async def concurrent(turn: Turn, turns: int = TURNS, warmup: int = WARMUP) -> dict[str, float]:
    """:data:`CLIENTS` sessions at once, turns back to back: CPU per turn (µs) and turns/s."""

    async def client(index: int, count: int) -> None:
        for _ in range(count):
            await turn(f"bench:c{index}")

    await asyncio.gather(*(client(i, warmup // CLIENTS + 1) for i in range(CLIENTS)))
    each = max(1, turns // CLIENTS)
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(i, each) for i in range(CLIENTS)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"cpu_us": cpu / (each * CLIENTS) * 1e6, "turns_per_s": each * CLIENTS / wall}


async def measure(url: str, turns: int = TURNS, rounds: int = ROUNDS, warmup: int = WARMUP) -> dict[str, Any]:
    """Every store, sequential and concurrent, ``rounds`` times (the stores interleaved in each
    round); per figure the median over rounds and the spread, and the Redis figures less the
    in-process ones, round by round. A round also notes the rest of the machine's CPU, and
    reports itself on stderr (a full measure takes minutes)."""
    from nanobot.agents.history import MemoryHistory, RedisHistory, SQLiteHistory
    from nanobot.api.redis_sessions import RedisSessions
    from nanobot.api.sessions import SessionLocks

    per_round: dict[str, list[dict[str, float]]] = {}
    others: list[float | None] = []
    with tempfile.TemporaryDirectory(prefix="bench-history-") as folder:
        stores: dict[str, Callable[[], Any]] = {
            "locks: in-process": SessionLocks,
            "locks: redis": lambda: RedisSessions(url),
            "history: memory": MemoryHistory,
            "history: sqlite": lambda: SQLiteHistory(Path(folder) / "history.db"),
            "history: redis": lambda: RedisHistory(url, ttl=3600),
        }
        started = time.monotonic()
        for round_ in range(rounds):
            busy = _Busy()
            for name, make in stores.items():
                store = make()
                turn = lock_turn(store) if name.startswith("locks") else history_turn(store)
                try:
                    alone = await sequential(turn, turns, warmup)
                    figures = {**alone, **_prefixed(await concurrent(turn, turns, warmup))}
                finally:
                    await store.aclose()
                per_round.setdefault(name, []).append(figures)
            others.append(busy.others())
            elapsed = time.monotonic() - started
            print(
                f"rediscost: round {round_ + 1}/{rounds} done ({elapsed:.0f} s)", file=sys.stderr, flush=True
            )
    keys = ("p50_ms", "p99_ms", "cpu_us", "concurrent_cpu_us", "concurrent_turns_per_s")
    rows = {name: {key: _median(r[key] for r in runs) for key in keys} for name, runs in per_round.items()}
    spreads = {name: {key: _range(r[key] for r in runs) for key in keys} for name, runs in per_round.items()}
    added: dict[str, dict[str, float]] = {}
    added_spread: dict[str, dict[str, tuple[float, float]]] = {}
    for part, base in (("locks", "in-process"), ("history", "memory")):
        mine, theirs = per_round[f"{part}: redis"], per_round[f"{part}: {base}"]
        added[part], added_spread[part] = {}, {}
        for key in keys[:4]:
            differences = [a[key] - b[key] for a, b in zip(mine, theirs, strict=True)]
            added[part][key] = _median(differences)
            added_spread[part][key] = _range(differences)
    return {
        "rows": rows,
        "spreads": spreads,
        "added": added,
        "added_spread": added_spread,
        "rounds": rounds,
        "turns": turns,
        "others_cpu_share": others,
        "goal_ms": GOAL_MS,
        "hiredis": _hiredis(),
    }


class _Busy:
    """The rest of the machine's CPU (all cores less this process), as a share of one core."""

    def __init__(self) -> None:
        self._start = _machine(), time.process_time(), time.perf_counter()

    def others(self) -> float | None:
        machine, cpu, wall = self._start
        now = _machine()
        if machine is None or now is None:
            return None
        busy = (now - machine) - (time.process_time() - cpu)
        return max(0.0, busy / (time.perf_counter() - wall))


def _machine() -> float | None:
    """CPU seconds the whole machine has spent busy (psutil), if psutil is installed."""
    try:
        import psutil
    except ImportError:
        return None
    times = psutil.cpu_times()
    return float(times.user + times.system + getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0))


def _median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def _range(values: Iterable[float]) -> tuple[float, float]:
    numbers = list(values)
    return min(numbers), max(numbers)


def _prefixed(figures: dict[str, float]) -> dict[str, float]:
    return {f"concurrent_{key}": value for key, value in figures.items()}


def _hiredis() -> bool:
    try:
        from redis.utils import HIREDIS_AVAILABLE
    except ImportError:
        return False
    return bool(HIREDIS_AVAILABLE)


def verdict(result: dict[str, Any]) -> str:
    """Whether a turn's round trips (lock and history together) stay within the goal."""
    added = result["added"]
    latency = added["locks"]["p50_ms"] + added["history"]["p50_ms"]
    cpu_ms = (added["locks"]["cpu_us"] + added["history"]["cpu_us"]) / 1e3
    met = latency <= GOAL_MS and cpu_ms <= GOAL_MS
    return (
        f"Redis per turn (locks + history, one turn after another, median of {result.get('rounds', 1)} "
        f"rounds): {latency:.3f} ms latency (p50), {cpu_ms:.3f} ms CPU; goal <= {GOAL_MS} ms each: "
        f"{'met' if met else 'not met'}"
    )


def _cell(result: dict[str, Any], name: str, key: str, fmt: str) -> str:
    value = result["rows"][name][key]
    low, high = (result.get("spreads") or {}).get(name, {}).get(key, (value, value))
    if format(low, fmt) == format(high, fmt):
        return format(value, fmt)
    return f"{value:{fmt}} [{low:{fmt}}-{high:{fmt}}]"


def table(result: dict[str, Any]) -> str:
    """A markdown table of every store's figures (median [min-max] over rounds), then the verdict."""
    lines = [
        "| store | latency p50 ms | p99 ms | CPU µs/turn | CPU µs/turn, 32 at once | turns/s, 32 at once |",
        "|---|---|---|---|---|---|",
    ]
    for name in result["rows"]:
        cells = [
            _cell(result, name, "p50_ms", ".3f"),
            _cell(result, name, "p99_ms", ".3f"),
            _cell(result, name, "cpu_us", ".0f"),
            _cell(result, name, "concurrent_cpu_us", ".0f"),
            _cell(result, name, "concurrent_turns_per_s", ",.0f"),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    parser = "hiredis" if result.get("hiredis") else "redis-py's Python parser"
    others = [v for v in result.get("others_cpu_share") or [] if v is not None]
    busy = f"; others' CPU up to {max(others) * 100:.0f} % in a round" if others else ""
    return "\n".join([*lines, "", verdict(result) + f" ({parser}{busy})."])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rediscost", description=__doc__)
    parser.add_argument("--url", help="a running Redis (default: start redis-server on the other core)")
    parser.add_argument("--cpu", type=int, help="pin this process to this core")
    parser.add_argument("--turns", type=int, default=TURNS, help="turns per store and round")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="rounds (median and spread reported)")
    parser.add_argument("--warmup", type=int, default=WARMUP, help="unmeasured turns before each measure")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    from benchmarks.processes import cores

    server_cpu, load_cpu = cores()
    cpu = args.cpu if args.cpu is not None else server_cpu
    prepare_process(cpu)
    try:
        import uvloop
    except ImportError:
        run: Callable[[Any], Any] = asyncio.run
    else:
        run = uvloop.run
    if args.url:
        result = run(measure(args.url, args.turns, args.rounds, args.warmup))
    else:
        try:
            with running_redis(load_cpu) as (_, url):
                result = run(measure(url, args.turns, args.rounds, args.warmup))
        except (FileNotFoundError, RuntimeError) as exc:
            print(f"rediscost: {exc}", file=sys.stderr)
            return 2
    print(orjson.dumps(result).decode() if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
