"""Scale-out (issue 13): what sessions in Redis cost, and what a second worker buys.

The scale-out servers run W1y and W3 only, beside ours from the same run:

- ``STACK`` (pinned, sessions in this process) against ``STACK-redis`` (pinned, sessions in Redis):
  the CPU that Redis's round trips add to a request (W3) and to a token (W1y), round by round;
- ``STACK-w1`` against ``STACK-w2`` (nanobot's Supervisor, 1 and 2 workers, sessions in Redis,
  both cores: the 2-core machine runs the load client too): throughput, and throughput per
  server CPU-second.

``redis-server``'s own CPU (on the load's core) is shown apart. :mod:`benchmarks.rediscost`'s
table, when it ran, times the round trips themselves.
"""

from __future__ import annotations

from typing import Any

from benchmarks.report import _find, _span, round_values, spread

STACKS = ("aiohttp", "uvicorn")
TAGS = ("", "-redis", "-w1", "-w2")
WHAT = {
    "": "one process, sessions in-process, pinned",
    "-redis": "one process, sessions in Redis, pinned",
    "-w1": "Supervisor, 1 worker, Redis, both cores",
    "-w2": "Supervisor, 2 workers, Redis, both cores",
}


def _per_cpu_second(result: dict[str, Any] | None) -> str:
    """Units (tokens or requests) per server CPU-second: 1e6 over the CPU-µs per unit, by round."""
    costs = round_values(result, "server_cpu_us_per_unit")
    values = [1e6 / v for v in costs if isinstance(v, int | float) and v]
    return _span(spread(values), ",.0f")


def _cell(result: dict[str, Any] | None, key: str, fmt: str, scale: float = 1.0) -> str:
    if result is None:
        return "-"
    if not result.get("valid"):
        return "INVALID"
    values = [v * scale for v in round_values(result, key) if isinstance(v, int | float)]
    return _span(spread(values), fmt)


def scale_servers(results: list[dict[str, Any]]) -> list[str]:
    ran = {r["server"] for r in results}
    return [f"{stack}{tag}" for stack in STACKS for tag in TAGS if f"{stack}{tag}" in ran]


def scale_table(results: list[dict[str, Any]]) -> str:
    """A row per server: W1y and W3 throughput, CPU per unit, units per CPU-second, Redis's CPU."""
    servers = scale_servers(results)
    if not any(s.endswith(("-redis", "-w1", "-w2")) for s in servers):
        return ""
    lines = [
        "| server | what | W1y@64 tokens/s | CPU-µs/token | tokens per CPU-s | W3 requests/s | "
        "CPU-µs/request | requests per CPU-s | server CPU % (W3) | redis-server CPU % (W3) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for server in servers:
        w1y, w3 = _find(results, server, "W1y", 64), _find(results, server, "W3")
        tag = server.removeprefix(server.split("-")[0])
        redis = _cell(w3, "upstream_cpu_share", ".0f", 100) if tag else "-"
        lines.append(
            f"| {server} | {WHAT[tag]} | {_cell(w1y, 'tokens_per_s', ',.0f')} | "
            f"{_cell(w1y, 'server_cpu_us_per_unit', '.2f')} | {_per_cpu_second(w1y)} | "
            f"{_cell(w3, 'requests_per_s', ',.0f')} | {_cell(w3, 'server_cpu_us_per_unit', '.1f')} | "
            f"{_per_cpu_second(w3)} | {_cell(w3, 'server_cpu_share', '.0f', 100)} | {redis} |"
        )
    return "\n".join(lines)


def _differences(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> list[float]:
    """Round ``i``'s ``key`` of ``a`` less round ``i``'s of ``b`` (taken seconds apart)."""
    return [
        x - y
        for x, y in zip(round_values(a, key), round_values(b, key), strict=False)
        if isinstance(x, int | float) and isinstance(y, int | float)
    ]


def _ratios(a: Any, b: Any, key: str, invert: bool = False) -> list[float]:
    """Round ``i``'s ``key`` of ``a`` over round ``i``'s of ``b`` (``invert``: ``b`` over ``a``)."""
    pairs = zip(round_values(a, key), round_values(b, key), strict=False)
    numbers = [(x, y) for x, y in pairs if isinstance(x, int | float) and isinstance(y, int | float)]
    return [y / x if invert else x / y for x, y in numbers if x and y]


def scale_summary(results: list[dict[str, Any]], cost: dict[str, Any] | None = None) -> str:
    """What Redis adds per request and per token, and what the second worker buys (median over
    rounds [min-max], each round set against the same round of the other server)."""
    lines = []
    for stack in STACKS:
        base, redis = _find(results, stack, "W3"), _find(results, f"{stack}-redis", "W3")
        if base and redis:
            added = _span(spread(_differences(redis, base, "server_cpu_us_per_unit")), ".0f", " µs")
            per_token = _span(
                spread(
                    _differences(
                        _find(results, f"{stack}-redis", "W1y", 64),
                        _find(results, stack, "W1y", 64),
                        "server_cpu_us_per_unit",
                    )
                ),
                ".2f",
                " µs",
            )
            lines.append(
                f"- {stack}: sessions in Redis add {added} of server CPU per request (W3: check, "
                f"enter and release, 3 round trips) and {per_token} per token (W1y, 256-token streams)"
            )
        one, two = (_find(results, f"{stack}-w{n}", "W3") for n in (1, 2))
        one_y, two_y = (_find(results, f"{stack}-w{n}", "W1y", 64) for n in (1, 2))
        if one and two:
            lines.append(
                f"- {stack}, 2 workers against 1 (both with Redis, on both cores beside the load "
                f"client): W3 requests/s {_span(spread(_ratios(two, one, 'requests_per_s')), '.2f', 'x')}, "
                f"requests per server CPU-s "
                f"{_span(spread(_ratios(two, one, 'server_cpu_us_per_unit', invert=True)), '.2f', 'x')}; "
                f"W1y tokens/s {_span(spread(_ratios(two_y, one_y, 'tokens_per_s')), '.2f', 'x')}, "
                f"tokens per server CPU-s "
                f"{_span(spread(_ratios(two_y, one_y, 'server_cpu_us_per_unit', invert=True)), '.2f', 'x')}"
            )
    parts = []
    if lines:
        parts.append(
            "Scale-out (median over rounds [min-max], each round against the same round of the other "
            "server):\n\n" + "\n".join(lines)
        )
    if cost:
        from benchmarks.rediscost import table

        parts.append("Redis's round trips timed alone (`python -m benchmarks.rediscost`):\n\n" + table(cost))
    return "\n\n".join(parts)
