"""What ``--quick`` reports: whether every response was valid, and the one timing that means
something in a run of 2-4 streams per step (each stream's time to first token, a latency of its
own), as progress lines, a table and a plot titled as the correctness run it is.

A quick step sends a handful of requests: CPU per token (psutil counts CPU in 10 ms ticks), tokens
per second, the W4 fit and RSS per stream would be noise, so none of them is shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LEGEND = (
    "cells: valid responses / requests; for streams, time to first token p99 (ms). "
    "--quick checks correctness only: no figure here is a benchmark."
)


def title(concurrencies: list[int]) -> str:
    """The plot's first line: what the run was, and how few streams each step had."""
    low, high = min(concurrencies, default=0), max(concurrencies, default=0)
    streams = f"{low}-{high}" if low != high else str(low)
    return f"nanobot-api --quick: a correctness run ({streams} streams per step), not a benchmark"


def ttft_p99(result: dict[str, Any]) -> float | None:
    """The step's time to first token p99 in ms (streams only)."""
    value = (result.get("ttft_ms") or {}).get("p99")
    return float(value) if isinstance(value, int | float) else None


def validity(result: dict[str, Any]) -> str:
    """``"6/6 valid"`` or ``"INVALID (1 of 6 bad: why)"``."""
    requests = int(result.get("requests") or 0)
    if not result.get("valid"):
        return f"INVALID ({result.get('invalid')} bad of {requests}: {result.get('error')})"
    return f"{requests - int(result.get('invalid') or 0)}/{requests} valid"


def describe(result: dict[str, Any]) -> str:
    """A progress line's summary of one quick step."""
    text = validity(result)
    ttft = ttft_p99(result)
    return text if ttft is None or not result.get("valid") else f"{text}, TTFT p99 {ttft:.1f} ms"


def cell(result: dict[str, Any] | None) -> str:
    if result is None:
        return ""
    if not result.get("valid"):
        return f"**INVALID** {result.get('invalid')}/{result.get('requests')}"
    requests = int(result.get("requests") or 0)
    text = f"{requests - int(result.get('invalid') or 0)}/{requests}"
    ttft = ttft_p99(result)
    return text if ttft is None else f"{text}, {ttft:.1f} ms"


def grid(results: list[dict[str, Any]]) -> tuple[list[str], list[str], dict[tuple[str, str], dict[str, Any]]]:
    """The servers (rows) and step labels (columns) in run order, and each result by both."""
    servers: list[str] = []
    labels: list[str] = []
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for result in results:
        server, label = result["server"], result["label"]
        servers += [server] if server not in servers else []
        labels += [label] if label not in labels else []
        found[(server, label)] = result
    return servers, labels, found


def table(results: list[dict[str, Any]]) -> str:
    """A markdown table, a row per server and a column per step, then the legend."""
    servers, labels, found = grid(results)
    lines = ["| server | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for server in servers:
        lines.append(
            f"| {server} | " + " | ".join(cell(found.get((server, label))) for label in labels) + " |"
        )
    return "\n".join([*lines, "", LEGEND])


def plot(results: list[dict[str, Any]], path: Path, heading: str) -> bool:
    """The validity grid as a PNG (green valid, red invalid, blank not run); ``False`` without
    matplotlib or results."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle
    except ImportError:
        return False
    servers, labels, found = grid(results)
    if not servers:
        return False
    figure, axis = plt.subplots(figsize=(2 + 1.3 * len(labels), 1.5 + 0.45 * len(servers)), dpi=72)
    for row, server in enumerate(servers):
        for column, label in enumerate(labels):
            result = found.get((server, label))
            if result is None:
                continue
            colour = "#b7e4c7" if result.get("valid") else "#f4a6a6"
            axis.add_patch(Rectangle((column - 0.5, row - 0.5), 1, 1, color=colour))
            axis.text(column, row, cell(result).replace("**", ""), ha="center", va="center", fontsize=8)
    axis.set_xlim(-0.5, len(labels) - 0.5)
    axis.set_ylim(len(servers) - 0.5, -0.5)
    axis.set_xticks(range(len(labels)), labels, fontsize=8)
    axis.set_yticks(range(len(servers)), servers, fontsize=8)
    axis.xaxis.tick_top()
    axis.set_xlabel(LEGEND, fontsize=8)
    figure.suptitle(heading, fontsize=10)
    figure.set_layout_engine("constrained")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return True
