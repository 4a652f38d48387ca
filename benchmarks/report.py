"""The run's outputs: one markdown table (stacks as columns, each figure with its ratio to the
floor's), the JSON of every result, a PNG plot, and the machine facts.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

FLOOR = "floor"
PACKAGES = (
    "aiohttp",
    "uvicorn",
    "uvloop",
    "httptools",
    "h11",
    "starlette",
    "hypercorn",
    "granian",
    "sse-starlette",
    "aiohttp-sse",
    "orjson",
    "httpx",
    "litellm",
)


@dataclass(frozen=True, slots=True)
class Metric:
    """One row of the table: a figure of one workload's results."""

    name: str
    value: Callable[[dict[str, Any]], float | None]
    fmt: str  # format spec of the value
    ratio: bool = True


def _get(*keys: str) -> Callable[[dict[str, Any]], float | None]:
    def value(result: dict[str, Any]) -> float | None:
        node: Any = result
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        return node if isinstance(node, int | float) else None

    return value


def _kb(result: dict[str, Any]) -> float | None:
    value = result.get("rss_per_stream_bytes")
    return value / 1024 if isinstance(value, int | float) else None


LOAD = Metric("load CPU %", lambda r: _percent(r, "client_cpu_share"), ".0f", ratio=False)
OTHERS = Metric("others' CPU %", lambda r: _percent(r, "others_cpu_share"), ".0f", ratio=False)
PACED = [
    Metric("TTFT p50 ms", _get("ttft_ms", "p50"), ".1f"),
    Metric("TTFT p99 ms", _get("ttft_ms", "p99"), ".1f"),
    Metric("gap p50 ms", _get("gap_ms", "p50"), ".1f"),
    Metric("gap p99 ms", _get("gap_ms", "p99"), ".1f"),
    Metric("gap max ms", _get("gap_ms", "max"), ".1f"),
    Metric("server CPU-µs/token", _get("server_cpu_us_per_unit"), ".2f"),
    LOAD,
    OTHERS,
]
METRICS: dict[str, list[Metric]] = {
    "W1": [
        Metric("tokens/s", _get("tokens_per_s"), ",.0f"),
        Metric("server CPU-µs/token", _get("server_cpu_us_per_unit"), ".2f"),
        LOAD,
        OTHERS,
    ],
    "W1y": [
        Metric("tokens/s", _get("tokens_per_s"), ",.0f"),
        Metric("server CPU-µs/token", _get("server_cpu_us_per_unit"), ".2f"),
        LOAD,
        OTHERS,
    ],
    "W2": PACED,
    "W2burst": PACED,
    "W3": [
        Metric("requests/s", _get("requests_per_s"), ",.0f"),
        Metric("server CPU-µs/request", _get("server_cpu_us_per_unit"), ".1f"),
        LOAD,
        OTHERS,
    ],
    "idle": [Metric("RSS KB/stream", _kb, ".1f")],
    "stream": [
        Metric("tokens/s", _get("tokens_per_s"), ",.1f", ratio=False),
        Metric("TTFT p50 ms", _get("ttft_ms", "p50"), ".1f", ratio=False),
        Metric("TTFT p99 ms", _get("ttft_ms", "p99"), ".1f", ratio=False),
        Metric("inter-token p50 ms", _get("gap_ms", "p50"), ".1f", ratio=False),
        Metric("inter-token p99 ms", _get("gap_ms", "p99"), ".1f", ratio=False),
        LOAD,
    ],
}


def _percent(result: dict[str, Any], key: str) -> float | None:
    value = result.get(key)
    return value * 100 if isinstance(value, int | float) else None


def servers_in(results: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["server"] for r in results))


def labels_in(results: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["label"] for r in results))


def index(results: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["server"], r["label"]): r for r in results}


def cell(metric: Metric, result: dict[str, Any] | None, floor: dict[str, Any] | None) -> str:
    """A value, with its ratio to the floor's where both are valid; ``INVALID`` when it failed."""
    if result is None:
        return "-"
    if not result.get("valid"):
        return "INVALID"
    value = metric.value(result)
    if value is None:
        return "-"
    text = format(value, metric.fmt)
    base = metric.value(floor) if metric.ratio and floor and floor.get("valid") else None
    if base and result is not floor:
        text += f" ({value / base:.2f}x)"
    return text


def table(results: list[dict[str, Any]]) -> str:
    """The markdown table: a row per workload figure, a column per server."""
    servers, by_key = servers_in(results), index(results)
    lines = [
        "| workload | figure | " + " | ".join(servers) + " |",
        "|---|---|" + "---|" * len(servers),
    ]
    for label in labels_in(results):
        workload = label.split()[0]
        floor = by_key.get((FLOOR, label))
        for metric in METRICS.get(workload, []):
            cells = [cell(metric, by_key.get((server, label)), floor) for server in servers]
            lines.append(f"| {label} | {metric.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """The facts a reader needs to weigh the numbers."""
    model = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "code": _code_version(),
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "packages": versions,
    }


def _code_version() -> str:
    """The commit measured, and whether the server code differed from it (a dirty tree)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "nanobot", "asgi"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} + uncommitted changes to nanobot/" if dirty else head or "unknown"


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))


def _ratio(result: dict[str, Any] | None, floor: dict[str, Any] | None, value: Callable[..., Any]) -> str:
    if not result or not floor or not result.get("valid") or not floor.get("valid"):
        return "-"
    mine, base = value(result), value(floor)
    return f"{mine / base:.2f}x" if mine is not None and base else "-"


def _figure(result: dict[str, Any] | None, value: Callable[..., Any], fmt: str) -> str:
    if not result or not result.get("valid"):
        return "INVALID" if result else "-"
    figure = value(result)
    return format(figure, fmt) if figure is not None else "-"


#: The summary's columns: heading, workload, concurrency (None: any), figure, format.
TARGETS: tuple[tuple[str, str, int | None, Callable[[dict[str, Any]], float | None], str], ...] = (
    ("W1@64 tokens/s (target ≥1.0x floor)", "W1", 64, _get("tokens_per_s"), ",.0f"),
    ("W1@64 CPU-µs/token (≤1.2x floor)", "W1", 64, _get("server_cpu_us_per_unit"), ".2f"),
    ("W1y@64 tokens/s", "W1y", 64, _get("tokens_per_s"), ",.0f"),
    ("W1y@64 CPU-µs/token", "W1y", 64, _get("server_cpu_us_per_unit"), ".2f"),
    ("W2 TTFT p99 ms (≤15)", "W2", None, _get("ttft_ms", "p99"), ".1f"),
    ("W2 gap p99 ms (≤25)", "W2", None, _get("gap_ms", "p99"), ".1f"),
    ("W2burst TTFT p99 ms", "W2burst", None, _get("ttft_ms", "p99"), ".1f"),
    ("idle RSS KB/stream (<20)", "idle", None, _kb, ".1f"),
)


def targets(results: list[dict[str, Any]]) -> str:
    """Every stack on the figures we set targets for, each with its ratio to the floor's."""
    by_key = index(results)
    labels = [_label(results, workload, concurrency) for _, workload, concurrency, _, _ in TARGETS]
    lines = [
        "| stack | " + " | ".join(column[0] for column in TARGETS) + " |",
        "|---|" + "---|" * len(TARGETS),
    ]
    for server in servers_in(results):
        cells = []
        for label, (_, _, _, value, fmt) in zip(labels, TARGETS, strict=True):
            result, floor = by_key.get((server, label or "")), by_key.get((FLOOR, label or ""))
            ratio = _ratio(result, floor, value)
            cells.append(_figure(result, value, fmt) + (f" ({ratio})" if ratio != "-" else ""))
        lines.append(f"| {server} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _label(results: list[dict[str, Any]], workload: str, concurrency: int | None = None) -> str | None:
    for result in results:
        if result["workload"] == workload and concurrency in (None, result["concurrency"]):
            return str(result["label"])
    return None
