"""The PNG: W1 tokens/s and CPU-µs/token per concurrency, W2 latencies, per stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.report import servers_in


def _series(results: list[dict[str, Any]], server: str, key: str) -> tuple[list[int], list[float]]:
    points = sorted(
        (r["concurrency"], r[key])
        for r in results
        if r["server"] == server and r["workload"] == "W1" and r.get("valid") and r.get(key)
    )
    return [p[0] for p in points], [p[1] for p in points]


def plot(results: list[dict[str, Any]], path: Path, title: str) -> bool:
    """Draw the figure to ``path``; ``False`` if matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    servers = servers_in(results)
    figure, (tokens, cpu, latency) = plt.subplots(1, 3, figsize=(15, 4.6), dpi=72)
    for server in servers:
        style = {"linewidth": 3, "color": "black"} if server == "floor" else {"marker": "o"}
        tokens.plot(*_series(results, server, "tokens_per_s"), label=server, **style)
        cpu.plot(*_series(results, server, "server_cpu_us_per_unit"), label=server, **style)
    for axis, name in ((tokens, "W1 firehose: tokens/s"), (cpu, "W1 firehose: server CPU-µs/token")):
        axis.set_title(name)
        if any(len(line.get_xdata()) for line in axis.get_lines()):  # log axes need data
            axis.set_xscale("log", base=2)
            axis.set_yscale("log")
        axis.set_xlabel("concurrent streams")
        axis.grid(alpha=0.3)
    tokens.legend(fontsize=8)
    _latency_bars(latency, results, servers)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return True


def _latency_bars(axis: Any, results: list[dict[str, Any]], servers: list[str]) -> None:
    """W2: TTFT p50/p99 and inter-token gap p99 per stack; W2burst TTFT p99 (ms)."""
    w2 = {r["server"]: r for r in results if r["workload"] == "W2" and r.get("valid")}
    burst = {r["server"]: r for r in results if r["workload"] == "W2burst" and r.get("valid")}
    names = [s for s in servers if s in w2]
    width = 0.2
    bars = (
        (w2, "ttft_ms", "p50", "TTFT p50"),
        (w2, "ttft_ms", "p99", "TTFT p99"),
        (w2, "gap_ms", "p99", "gap p99"),
        (burst, "ttft_ms", "p99", "burst TTFT p99"),
    )
    for offset, (source, key, quantile, label) in enumerate(bars):
        values = [(source[s][key][quantile] or 0.0) if s in source else 0.0 for s in names]
        axis.bar([i + (offset - 1.5) * width for i in range(len(names))], values, width, label=label)
    axis.axhline(20, color="grey", linestyle="--", linewidth=1)
    axis.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    axis.set_ylabel("ms")
    axis.set_title("W2 paced (20 ms apart, 256 streams)")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3, axis="y")
