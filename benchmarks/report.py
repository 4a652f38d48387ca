"""The run's outputs: one markdown table (stacks as columns, each figure with its ratio to the
floor's), the JSON of every result, a PNG plot, and the machine facts.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
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
OTHERS = Metric("others' CPU % (worst round)", lambda r: _percent(r, "others_cpu_share"), ".0f", ratio=False)
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
        for metric in METRICS.get(workload, METRICS.get(workload.split(".")[0], [])):
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
    """The commit measured, and whether the server code differed from it (a dirty tree).

    A tree without git history (``git archive`` of a commit, run clean while others edit the
    checkout) names its commit in ``BENCHMARKS_CODE``."""
    if os.environ.get("BENCHMARKS_CODE"):
        return os.environ["BENCHMARKS_CODE"]
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


def spread(values: list[Any]) -> tuple[float, float, float] | None:
    """Median, min and max of the numbers in ``values``; ``None`` when there are none."""
    numbers = [v for v in values if isinstance(v, int | float)]
    return (statistics.median(numbers), min(numbers), max(numbers)) if numbers else None


def round_values(result: dict[str, Any] | None, key: str) -> list[Any]:
    """Each round's ``key``, ``None`` for a round left out (others' CPU; see
    :func:`benchmarks.harness.combine`); one value for a step of one round."""
    if not result or not result.get("valid"):
        return []
    per_round = result.get("per_round") or {}
    rounds = per_round.get(key)
    if not rounds:
        return [result.get(key)]
    kept = per_round.get("kept") or [True] * len(rounds)
    return [value if keep else None for value, keep in zip(rounds, kept, strict=False)]


def rounds_kept(result: dict[str, Any] | None) -> tuple[int, int]:
    """How many of a step's rounds count, of how many."""
    kept = ((result or {}).get("per_round") or {}).get("kept") or []
    return sum(kept), len(kept)


def ratios(result: dict[str, Any] | None, floor: dict[str, Any] | None, key: str) -> list[float]:
    """Round ``i``'s ``key`` over the floor's round ``i`` (taken seconds apart), for every round."""
    mine, base = round_values(result, key), round_values(floor, key)
    return [
        a / b
        for a, b in zip(mine, base, strict=False)
        if isinstance(a, int | float) and isinstance(b, int | float) and b
    ]


def _span(values: tuple[float, float, float] | None, fmt: str, unit: str = "") -> str:
    if values is None:
        return "-"
    median, low, high = values
    if format(low, fmt) == format(high, fmt):
        return f"{median:{fmt}}{unit}"
    return f"{median:{fmt}}{unit} [{low:{fmt}}-{high:{fmt}}]"


def _find(results: list[dict[str, Any]], server: str, workload: str, concurrency: int | None = None) -> Any:
    for result in results:
        same = result["server"] == server and result["workload"] == workload
        if same and concurrency in (None, result["concurrency"]):
            return result
    return None


def _value_cell(result: dict[str, Any] | None, key: str, fmt: str) -> str:
    if result is None:
        return "-"
    if not result.get("valid"):
        return "INVALID"
    kept, total = rounds_kept(result)
    return _span(spread(round_values(result, key)), fmt) + (f" ({kept}/{total})" if kept < total else "")


def _ratio_cell(result: dict[str, Any] | None, floor: dict[str, Any] | None, key: str) -> str:
    if result is None or floor is None or result is floor:
        return "-"
    if not result.get("valid") or not floor.get("valid"):
        return "INVALID" if not result.get("valid") else "-"
    return _span(spread(ratios(result, floor, key)), ".2f", "x")


def _ms_cell(result: dict[str, Any] | None, key: str, quantile: str, fmt: str = ".1f") -> str:
    if result is None:
        return "-"
    if not result.get("valid"):
        return "INVALID"
    value = (result.get(key) or {}).get(quantile)
    return format(value, fmt) if isinstance(value, int | float) else "-"


#: The per-token and per-request table: heading, workload, concurrency, key, format, ratio only.
COSTS: tuple[tuple[str, str, int | None, str, str, bool], ...] = (
    ("W1y@64 CPU-µs/token", "W1y", 64, "server_cpu_us_per_unit", ".2f", False),
    ("÷ floor", "W1y", 64, "server_cpu_us_per_unit", "", True),
    ("W1y@64 tokens/s", "W1y", 64, "tokens_per_s", ",.0f", False),
    ("W3 CPU-µs/request", "W3", None, "server_cpu_us_per_unit", ".1f", False),
    ("÷ floor", "W3", None, "server_cpu_us_per_unit", "", True),
    ("W1@64 tokens/s ÷ floor (target ≥1.0x)", "W1", 64, "tokens_per_s", "", True),
    ("W1@64 CPU-µs/token ÷ floor (≤1.2x)", "W1", 64, "server_cpu_us_per_unit", "", True),
)


def costs(results: list[dict[str, Any]]) -> str:
    """Per token (W1y: every token its own write), per request (W3), and what gathering buys
    (W1): the median over rounds [min-max], ratios taken round by round against the floor's."""
    lines = ["| stack | " + " | ".join(c[0] for c in COSTS) + " |", "|---|" + "---|" * len(COSTS)]
    for server in servers_in(results):
        cells = []
        for _, workload, concurrency, key, fmt, ratio in COSTS:
            result = _find(results, server, workload, concurrency)
            floor = _find(results, FLOOR, workload, concurrency)
            cells.append(_ratio_cell(result, floor, key) if ratio else _value_cell(result, key, fmt))
        lines.append(f"| {server} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def latencies(results: list[dict[str, Any]]) -> str:
    """W2 and W2burst latencies and idle memory: one run each (no rounds)."""
    lines = [
        "| stack | W2 TTFT p50 ms | W2 TTFT p99 ms (≤15) | W2 gap p99 ms (≤25) | W2 gap max ms "
        "| W2burst TTFT p99 ms | idle RSS KB/stream (<20) |",
        "|---|---|---|---|---|---|---|",
    ]
    for server in servers_in(results):
        w2, burst = _find(results, server, "W2"), _find(results, server, "W2burst")
        idle = _find(results, server, "idle")
        memory = (
            "-" if idle is None else ("INVALID" if not idle.get("valid") else format(_kb(idle) or 0, ".1f"))
        )
        cells = [
            _ms_cell(w2, "ttft_ms", "p50"),
            _ms_cell(w2, "ttft_ms", "p99"),
            _ms_cell(w2, "gap_ms", "p99"),
            _ms_cell(w2, "gap_ms", "max"),
            _ms_cell(burst, "ttft_ms", "p99"),
            memory,
        ]
        lines.append(f"| {server} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Target:
    """A target set for our stacks: what it reads, and the bound it must keep."""

    name: str
    workload: str
    concurrency: int | None
    read: Callable[[dict[str, Any], dict[str, Any] | None], float | None]
    fmt: str
    limit: float
    at_most: bool  # the figure must stay at or under ``limit`` (else: at or over it)


def _median_ratio(key: str) -> Callable[[dict[str, Any], dict[str, Any] | None], float | None]:
    def read(result: dict[str, Any], floor: dict[str, Any] | None) -> float | None:
        found = spread(ratios(result, floor, key))
        return found[0] if found else None

    return read


def _plain(value: Callable[[dict[str, Any]], float | None]) -> Callable[..., float | None]:
    return lambda result, floor: value(result)


TARGETS = (
    Target("W1@64 tokens/s ≥ 1.0x floor", "W1", 64, _median_ratio("tokens_per_s"), ".2fx", 1.0, False),
    Target(
        "W1@64 CPU-µs/token ≤ 1.2x floor",
        "W1",
        64,
        _median_ratio("server_cpu_us_per_unit"),
        ".2fx",
        1.2,
        True,
    ),
    Target("W2 TTFT p99 ≤ 15 ms", "W2", None, _plain(_get("ttft_ms", "p99")), ".1f ms", 15.0, True),
    Target("W2 gap p99 ≤ 25 ms", "W2", None, _plain(_get("gap_ms", "p99")), ".1f ms", 25.0, True),
    Target("idle stream < 20 KB RSS", "idle", None, _plain(_kb), ".1f KB", 20.0, True),
)
OURS = ("aiohttp", "uvicorn")


def _show(value: float, fmt: str) -> str:
    spec, _, unit = fmt.partition(" ")
    if spec.endswith("x"):
        return f"{value:{spec[:-1]}}x"
    return f"{value:{spec}} {unit}".rstrip()


def verdicts(results: list[dict[str, Any]]) -> str:
    """Each target, for our two main stacks (aiohttp; uvicorn with uvloop + httptools)."""
    stacks = [s for s in OURS if any(r["server"] == s for r in results)]
    if not stacks:
        return ""
    lines = ["| target | " + " | ".join(stacks) + " | verdict |", "|---|" + "---|" * (len(stacks) + 1)]
    for target in TARGETS:
        floor = _find(results, FLOOR, target.workload, target.concurrency)
        cells, met = [], []
        for stack in stacks:
            result = _find(results, stack, target.workload, target.concurrency)
            value = target.read(result, floor) if result and result.get("valid") else None
            if value is None:
                cells.append("INVALID" if result else "-")
                continue
            cells.append(_show(value, target.fmt))
            met.append(value <= target.limit if target.at_most else value >= target.limit)
        verdict = "-" if not met else ("met" if all(met) else "not met")
        lines.append(f"| {target.name} | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(lines)


def targets(results: list[dict[str, Any]]) -> str:
    """The echo-path summary: per-token and per-request costs, latencies and memory, verdicts."""
    ran = {r["workload"] for r in results}
    parts = [
        "Per token and per request (median over rounds [min-max]; ratios taken round by round "
        "against the floor's; (k/n): only k of n rounds counted, the others had a busy neighbour):",
        costs(results),
        "Latencies (W2, W2burst: one run each) and memory:",
        latencies(results),
        verdicts(results),
    ]
    if not ran & {"W1", "W1y", "W3"}:
        parts[:2] = ["", ""]
    if not ran & {"W2", "W2burst", "idle"}:
        parts[2:4] = ["", ""]
    return "\n\n".join(part for part in parts if part)
