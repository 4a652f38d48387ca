"""What a run costs: the server's CPU time and memory (its whole process tree), the client's CPU.

psutil reads the server's counters from the load process. Without psutil the server figures are
``None`` (the harness still runs and still validates).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (nearest rank) of ``values``; ``None`` when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary_ms(values: list[float]) -> dict[str, float | None]:
    """p50, p99 and max of ``values`` (seconds), in milliseconds."""
    ms = [v * 1000 for v in values]
    return {"p50": percentile(ms, 50), "p99": percentile(ms, 99), "max": max(ms) if ms else None}


class ServerMeter:
    """CPU seconds and resident bytes of a process and all its descendants."""

    def __init__(self, pid: int | None) -> None:
        self._process: Any = None
        if pid is not None:
            try:
                import psutil
            except ImportError:
                return
            self._process = psutil.Process(pid)

    def _tree(self) -> list[Any]:
        return [self._process, *self._process.children(recursive=True)]

    def cpu(self) -> float | None:
        if self._process is None:
            return None
        total = 0.0
        for process in self._tree():
            times = process.cpu_times()
            total += times.user + times.system
        return total

    def rss(self) -> int | None:
        if self._process is None:
            return None
        return sum(process.memory_info().rss for process in self._tree())


def machine_busy() -> float | None:
    """CPU seconds the whole machine has been busy (all cores), or ``None`` without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


@dataclass(frozen=True, slots=True)
class Reading:
    """The clocks at one instant: wall, this process's CPU, the server's CPU, the machine's, and
    the W4 upstream's (``None`` when there is none)."""

    wall: float
    client_cpu: float
    server_cpu: float | None
    machine_cpu: float | None
    upstream_cpu: float | None = None

    @classmethod
    def take(cls, server: ServerMeter, upstream: ServerMeter | None = None) -> Reading:
        upstream_cpu = upstream.cpu() if upstream is not None else None
        return cls(time.perf_counter(), time.process_time(), server.cpu(), machine_busy(), upstream_cpu)


def _delta(start: float | None, end: float | None) -> float | None:
    return end - start if start is not None and end is not None else None


@dataclass(frozen=True, slots=True)
class Window:
    """Elapsed wall time and CPU seconds between two readings.

    ``others_cpu`` is what the rest of the machine burned meanwhile (other processes, the
    kernel's work not charged to ours): a noisy neighbour shows up here. The W4 upstream's CPU is
    counted apart (``upstream_cpu``), not as others'.
    """

    wall: float
    client_cpu: float
    server_cpu: float | None
    others_cpu: float | None
    upstream_cpu: float | None = None

    @classmethod
    def between(cls, start: Reading, end: Reading) -> Window:
        client = end.client_cpu - start.client_cpu
        server = _delta(start.server_cpu, end.server_cpu)
        upstream = _delta(start.upstream_cpu, end.upstream_cpu)
        machine = _delta(start.machine_cpu, end.machine_cpu)
        others = (
            machine - client - server - (upstream or 0.0)
            if machine is not None and server is not None
            else None
        )
        wall = end.wall - start.wall
        return cls(wall, client, server, max(0.0, others) if others is not None else None, upstream)
