"""The variants' outputs: the same tokens as reasoning, as a tool call, through Responses and
Messages, each set against chat text from the same run (issues 18, 19 and 20).

- Per event (issue 18): W1y's server CPU per reasoning delta and per tool-call argument fragment
  over its CPU per text delta, on each stack; goal ≤ 1.1x.
- Per token by dialect (issues 19, 20): W1y's CPU per token through ``/v1/responses`` and
  ``/v1/messages`` over chat's, and the W4 fit's CPU per relayed token likewise; goal ≤ 1.2x.

Each variant ran in one batch with its chat-text step, so round ``i`` of one is set against round
``i`` of the other (seconds apart); a ratio is the median over rounds [min-max].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.report import round_values, spread

#: Each stack's echo server and relay.
STACKS = (("aiohttp", "relay-aiohttp"), ("uvicorn", "relay-uvicorn"))
KEY = "server_cpu_us_per_unit"


@dataclass(frozen=True, slots=True)
class Comparison:
    """A variant's figure set against chat text's: what, which steps, and the goal."""

    name: str
    base: str  # the chat-text workload (``W1y``, or ``W4fit`` on the relay)
    variant: str
    limit: float
    relay: bool = False


COMPARISONS = (
    Comparison("W1y@64 CPU per reasoning delta ÷ per text delta (≤1.1x)", "W1y", "W1y.reasoning", 1.1),
    Comparison("W1y@64 CPU per tool-call argument fragment ÷ per text delta (≤1.1x)", "W1y", "W1y.tool", 1.1),
    Comparison("W1y@64 CPU per token, /v1/responses ÷ chat (≤1.2x)", "W1y", "W1y.responses", 1.2),
    Comparison("W1y@64 CPU per token, /v1/messages ÷ chat (≤1.2x)", "W1y", "W1y.messages", 1.2),
    Comparison(
        "W4 relay CPU per token (fit), /v1/responses ÷ chat (≤1.2x)", "W4fit", "W4fit.responses", 1.2, True
    ),
    Comparison(
        "W4 relay CPU per token (fit), /v1/messages ÷ chat (≤1.2x)", "W4fit", "W4fit.messages", 1.2, True
    ),
)


def find(results: list[dict[str, Any]], server: str, workload: str) -> dict[str, Any] | None:
    matches = [r for r in results if r["server"] == server and r.get("workload") == workload]
    return max(matches, key=lambda r: r.get("concurrency") or 0) if matches else None


def per_round(result: dict[str, Any] | None) -> list[Any]:
    """Each round's CPU per token (per event), ``None`` for a round left out: a step's, or a
    fit's (its slope, round by round)."""
    if not result or not result.get("valid"):
        return []
    if "token_us_by_round" in result:
        return list(result["token_us_by_round"])
    return round_values(result, KEY)


def ratio_rounds(results: list[dict[str, Any]], server: str, base: str, variant: str) -> list[float]:
    """Round ``i`` of ``variant`` over round ``i`` of ``base``, on ``server``."""
    mine, theirs = per_round(find(results, server, variant)), per_round(find(results, server, base))
    return [
        a / b
        for a, b in zip(mine, theirs, strict=False)
        if isinstance(a, int | float) and isinstance(b, int | float) and b
    ]


def _span(values: list[Any], fmt: str, unit: str = "") -> str:
    found = spread(values)
    if found is None:
        return "-"
    median, low, high = found
    return f"{median:{fmt}}{unit} [{low:{fmt}}-{high:{fmt}}]"


def ran(results: list[dict[str, Any]]) -> bool:
    """Whether any variant ran (a step named ``W1y.…`` or ``W4n….…``)."""
    return any("." in str(r.get("workload", "")) for r in results)


#: The values table: heading, workload, echo (``False``: the relay).
VALUES: tuple[tuple[str, str, bool], ...] = (
    ("W1y text CPU-µs/event", "W1y", True),
    ("reasoning", "W1y.reasoning", True),
    ("tool args", "W1y.tool", True),
    ("W1y /v1/responses CPU-µs/token", "W1y.responses", True),
    ("W1y /v1/messages", "W1y.messages", True),
    ("W4 fit chat CPU-µs/token", "W4fit", False),
    ("W4 fit /v1/responses", "W4fit.responses", False),
    ("W4 fit /v1/messages", "W4fit.messages", False),
)


def values_table(results: list[dict[str, Any]]) -> str:
    """Each stack's CPU per event (per token), median over rounds [min-max]."""
    lines = ["| stack | " + " | ".join(v[0] for v in VALUES) + " |", "|---|" + "---|" * len(VALUES)]
    for echo, relay in STACKS:
        cells = []
        for _, workload, on_echo in VALUES:
            result = find(results, echo if on_echo else relay, workload)
            cells.append("INVALID" if result and not result.get("valid") else _span(per_round(result), ".2f"))
        lines.append(f"| {echo} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each comparison on each stack: the ratios round by round, their median, met or not."""
    rows = []
    for comparison in COMPARISONS:
        for echo, relay in STACKS:
            server = relay if comparison.relay else echo
            ratios = ratio_rounds(results, server, comparison.base, comparison.variant)
            found = spread(ratios)
            rows.append(
                {
                    "goal": comparison.name,
                    "server": server,
                    "limit": comparison.limit,
                    "ratios": ratios,
                    "median": found[0] if found else None,
                    "min": found[1] if found else None,
                    "max": found[2] if found else None,
                    "met": found[0] <= comparison.limit if found else None,
                }
            )
    return rows


def verdicts(results: list[dict[str, Any]]) -> str:
    """Each goal: the ratio on each stack (median over rounds [min-max]), and the verdict."""
    rows = verdict_rows(results)
    lines = ["| goal | aiohttp | uvicorn | verdict |", "|---|---|---|---|"]
    for comparison in COMPARISONS:
        mine = [r for r in rows if r["goal"] == comparison.name]
        cells = [_span(r["ratios"], ".2f", "x") for r in mine]
        known = [r["met"] for r in mine if r["met"] is not None]
        verdict = "-" if not known else ("met" if all(known) else "not met")
        if known and len(known) < len(mine):
            verdict += " (where measured)"
        lines.append(f"| {comparison.name} | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(lines)


def summary(results: list[dict[str, Any]]) -> str:
    """The variants' part of a full run's summary; empty when none ran."""
    if not ran(results):
        return ""
    return "\n\n".join(
        [
            "Reasoning, tool calls and the other dialects against chat text (same run, round by "
            "round; median over rounds [min-max]):",
            values_table(results),
            verdicts(results),
        ]
    )


def document(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The verdicts for the JSON."""
    return verdict_rows(results) if ran(results) else []
