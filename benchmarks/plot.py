"""The PNG: W1 tokens/s and CPU-µs/token per concurrency, W2 latencies, per stack; when W4 ran,
a second row: the relays' fit (fixed CPU per request, CPU per token), their tokens per
CPU-second, and their W4 latencies beside direct's."""

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
    relays = [r for r in results if r.get("relay")]
    results = [r for r in results if not r.get("relay")]
    servers = servers_in(results)
    if not any(r["workload"] in ("W1", "W2") for r in results):
        results = []
    rows = (1 if results else 0) + (1 if relays else 0)
    if not rows:
        return False
    figure, axes = plt.subplots(rows, 3, figsize=(15, 4.6 * rows), dpi=72, squeeze=False)
    if relays:
        relay_panels(axes[-1], relays)
    if results:
        echo_panels(axes[0], results, servers)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return True


def echo_panels(axes: Any, results: list[dict[str, Any]], servers: list[str]) -> None:
    """W1 tokens/s and CPU per token against concurrency; W2 and W2burst latencies."""
    tokens, cpu, latency = axes
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


def relay_panels(axes: Any, relays: list[dict[str, Any]]) -> None:
    """W4: the fit (fixed CPU per request, CPU per token), tokens per CPU-second, latencies."""
    cost, rate, latency = axes
    fits = {r["server"]: r for r in relays if r["workload"] == "W4fit" and r.get("valid")}
    w4 = {r["server"]: r for r in relays if r["workload"] == "W4" and r.get("valid")}
    names = [s for s in servers_in(relays) if s != "direct" and s in fits]
    for offset, (key, label) in enumerate((("fixed_us", "fixed per request"), ("token_us", "per token"))):
        heights = [max(fits[s][key]["median"] or 0.0, 0.01) for s in names]
        cost.bar([i + (offset - 0.5) * 0.4 for i in range(len(names))], heights, 0.4, label=label)
    cost.set_xticks(range(len(names)), names)
    cost.set_yscale("log")
    cost.set_ylabel("CPU-µs")
    cost.set_title("W4 relays: fit of CPU per request against tokens")
    named = [s for s in servers_in(relays) if s in w4 and w4[s].get("server_cpu_us")]
    values = [w4[s]["tokens"] / w4[s]["server_cpu_us"] * 1e6 for s in named]
    rate.bar(named, values, color=["black" if s == "direct" else "C2" for s in named])
    rate.set_yscale("log")
    rate.set_title("W4: tokens per CPU-second (direct: the upstream's own)")
    shown = [s for s in servers_in(relays) if s in w4]
    width = 0.25
    bars = (("ttft_ms", "p50", "TTFT p50"), ("ttft_ms", "p99", "TTFT p99"), ("gap_ms", "p99", "gap p99"))
    for offset, (key, quantile, label) in enumerate(bars):
        heights = [w4[s][key][quantile] or 0.0 for s in shown]
        latency.bar([i + (offset - 1) * width for i in range(len(shown))], heights, width, label=label)
    latency.axhline(20, color="grey", linestyle="--", linewidth=1)
    latency.set_xticks(range(len(shown)), shown)
    latency.set_yscale("log")
    latency.set_ylabel("ms")
    latency.set_title("W4: 256 streams x 64 tokens, 20 ms apart")
    for axis in axes:
        axis.tick_params(axis="x", labelrotation=35, labelsize=8)
        axis.grid(alpha=0.3, axis="y")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
