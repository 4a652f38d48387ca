"""W4's outputs: the CPU fit, the W4 table (relays as columns) and the summary against the goals.

The fit: each round of the two fit steps (``W4n8``, ``W4n512``) gives a server's CPU per request
at two stream lengths; the line through them gives the fixed CPU per request (its intercept)
and the CPU per token (its slope). Rounds pair up in order; the median is reported with the
spread (min-max) over rounds. For ``direct``, whose "server" is the upstream, the figures are the
upstream's own CPU (relays' figures never include it).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

DIRECT = "direct"
RELAY_FLOOR = "relay-floor"
LITELLM = "litellm"
#: The echo-path server of each relay's stack, whose W1y CPU per token its own is set against.
ECHO_OF = {
    "relay-floor": "floor",
    "relay-aiohttp": "aiohttp",
    "relay-uvicorn": "uvicorn",
    "relay-naive": "naive",
}


def stream_tokens(result: dict[str, Any]) -> int:
    """The stream length of a fit step (``W4n<tokens>``, or ``W4n<tokens>.<dialect>`` through
    another dialect; a result's ``tokens`` is its total)."""
    return int(str(result["workload"]).removeprefix("W4n").split(".")[0])


def dialect_suffix(result: dict[str, Any]) -> str:
    """``""`` for a chat fit step, ``".responses"`` for ``W4n8.responses``."""
    _, dot, name = str(result["workload"]).partition(".")
    return dot + name


def fit(results: list[dict[str, Any]], server: str, suffix: str = "") -> dict[str, Any] | None:
    """The ``W4fit`` result of ``server`` (``W4fit.responses`` through another dialect): fixed
    CPU per request and CPU per token, per round."""
    steps = [
        r
        for r in results
        if r["server"] == server and str(r["workload"]).startswith("W4n") and dialect_suffix(r) == suffix
    ]
    steps.sort(key=stream_tokens)
    if len(steps) < 2 or stream_tokens(steps[0]) == stream_tokens(steps[-1]):
        return None
    short, long = steps[0], steps[-1]
    few, many = stream_tokens(short), stream_tokens(long)
    valid = bool(short.get("valid") and long.get("valid"))
    shorts, longs = short.get("rounds_cpu_us_per_request") or [], long.get("rounds_cpu_us_per_request") or []
    pairs = [(a, b) for a, b in zip(shorts, longs, strict=False) if a is not None and b is not None]
    per_token = [(b - a) / (many - few) for a, b in pairs]
    fixed = [a - few * t for (a, _), t in zip(pairs, per_token, strict=True)]
    return {
        "server": server,
        "kind": short.get("kind"),
        "label": f"W4fit{suffix}",
        "workload": f"W4fit{suffix}",
        "relay": True,
        "valid": valid,
        "error": short.get("error") or long.get("error"),
        "fit_tokens": [few, many],
        "fixed_us": _spread(fixed),
        "token_us": _spread(per_token),
        # Round ``i``'s CPU per token (``None``: a round left out), to set against another
        # dialect's round ``i``, taken seconds apart in the same batch.
        "token_us_by_round": [
            (b - a) / (many - few) if a is not None and b is not None else None
            for a, b in zip(shorts, longs, strict=False)
        ],
        "short_us": _spread([a for a, _ in pairs]),
        "long_us": _spread([b for _, b in pairs]),
    }


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fits(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A ``W4fit`` result for every server (and dialect) that ran both fit steps."""
    pairs = dict.fromkeys(
        (r["server"], dialect_suffix(r)) for r in results if str(r.get("workload", "")).startswith("W4n")
    )
    return [f for server, suffix in pairs if (f := fit(results, server, suffix)) is not None]


def _get(results: list[dict[str, Any]], server: str, workload: str) -> dict[str, Any] | None:
    matches = [r for r in results if r["server"] == server and r.get("workload") == workload]
    return max(matches, key=lambda r: r.get("concurrency") or 0) if matches else None


def _median_of(key: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda r: (r.get(key) or {}).get("median")


def tokens_per_cpu_s(result: dict[str, Any]) -> float | None:
    cpu = result.get("server_cpu_us")
    return result["tokens"] / cpu * 1e6 if cpu and result.get("tokens") else None


def _percent(key: str) -> Callable[[dict[str, Any]], float | None]:
    def value(result: dict[str, Any]) -> float | None:
        share = result.get(key)
        return share * 100 if isinstance(share, int | float) else None

    return value


def _ms(key: str, quantile: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda r: (r.get(key) or {}).get(quantile)


#: The W4 table's rows: name, workload, value, format, and what the cell is set against:
#: "floor" (ratio to relay-floor), "direct" (difference to direct, in ms) or "" (nothing).
ROWS: tuple[tuple[str, str, Callable[[dict[str, Any]], float | None], str, str], ...] = (
    ("fit: fixed CPU-µs/request", "W4fit", _median_of("fixed_us"), ".0f", "floor"),
    ("fit: CPU-µs/token", "W4fit", _median_of("token_us"), ".2f", "floor"),
    ("fit: CPU-µs per short request", "W4fit", _median_of("short_us"), ".0f", "floor"),
    ("fit: CPU-µs per long request", "W4fit", _median_of("long_us"), ".0f", "floor"),
    ("W4: tokens per CPU-second", "W4", tokens_per_cpu_s, ",.0f", "floor"),
    ("W4: delivered % of offered", "W4", _percent("delivered_share"), ".2f", "direct"),
    ("W4: TTFT p50 ms", "W4", _ms("ttft_ms", "p50"), ".1f", "direct"),
    ("W4: TTFT p99 ms", "W4", _ms("ttft_ms", "p99"), ".1f", "direct"),
    ("W4: gap p50 ms", "W4", _ms("gap_ms", "p50"), ".1f", "direct"),
    ("W4: gap p99 ms", "W4", _ms("gap_ms", "p99"), ".1f", "direct"),
    ("W4: gap max ms", "W4", _ms("gap_ms", "max"), ".1f", "direct"),
    ("W4: load CPU %", "W4", _percent("client_cpu_share"), ".0f", ""),
    ("W4: upstream CPU %", "W4", _percent("upstream_cpu_share"), ".0f", ""),
    ("W4: others' CPU %", "W4", _percent("others_cpu_share"), ".0f", ""),
)


def _cell(
    result: dict[str, Any] | None,
    base: dict[str, Any] | None,
    value: Callable[[dict[str, Any]], float | None],
    fmt: str,
    against: str,
) -> str:
    if result is None:
        return "-"
    if not result.get("valid"):
        return "INVALID"
    figure = value(result)
    if figure is None:
        return "-"
    text = format(figure, fmt)
    if result.get("server") == DIRECT and against == "floor":
        return text  # the upstream's own CPU: no relay to set against the floor
    reference = value(base) if base is not None and base.get("valid") and base is not result else None
    if reference is not None and against == "floor" and reference > 0:
        text += f" ({figure / reference:.2f}x)"
    elif reference is not None and against == "direct":
        text += f" ({figure - reference:+{fmt}})"
    return text


def relay_servers(results: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["server"] for r in results if r.get("relay")))


def relay_table(results: list[dict[str, Any]]) -> str:
    """W4 as a table: a row per figure, a column per relay (``direct``'s CPU is the upstream's).

    CPU figures carry their ratio to relay-floor's, latencies and the delivered share their
    difference to direct's; the spread of the fit is in the summary.
    """
    rows = [r for r in results if r.get("relay")]
    servers = relay_servers(rows)
    if not servers:
        return ""
    lines = ["| W4 relay | " + " | ".join(servers) + " |", "|---|" + "---|" * len(servers)]
    for name, workload, value, fmt, against in ROWS:
        base_name = RELAY_FLOOR if against == "floor" else DIRECT
        base = _get(rows, base_name, workload)
        cells = [_cell(_get(rows, server, workload), base, value, fmt, against) for server in servers]
        if any(cell != "-" for cell in cells):
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _range(spread: dict[str, float | None], fmt: str) -> str:
    if spread.get("median") is None:
        return "-"
    return f"{spread['median']:{fmt}} [{spread['min']:{fmt}}-{spread['max']:{fmt}}]"


def _delta(result: dict[str, Any] | None, direct: dict[str, Any] | None, key: str) -> str:
    if not result or not direct or not result.get("valid") or not direct.get("valid"):
        return "INVALID" if result and not result.get("valid") else "-"
    mine, base = _ms(key, "p99")(result), _ms(key, "p99")(direct)
    return f"{mine:.1f} ({mine - base:+.1f})" if mine is not None and base is not None else "-"


def relay_summary(results: list[dict[str, Any]]) -> str:
    """Each relay against W4's goals; ours are the rows the goals are for, the rest are context."""
    rows = [r for r in results if r.get("relay")]
    fitted = {r["server"]: r for r in rows if r.get("workload") == "W4fit"}
    direct, litellm = _get(rows, DIRECT, "W4"), _get(rows, LITELLM, "W4")
    litellm_rate = tokens_per_cpu_s(litellm) if litellm and litellm.get("valid") else None
    lines = [
        "| relay | fixed CPU-µs/request (≤400) [spread] | CPU-µs/token [spread] "
        "| ÷ W1y@64 of its stack (≤1.5x) | W4 delivered % (≥99) | W4 TTFT p99 ms (Δ direct ≤10) "
        "| W4 gap p99 ms (Δ direct ≤5) | W4 tokens per CPU-s (vs LiteLLM, ≥20x) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for server in relay_servers(rows):
        if server == DIRECT:
            continue
        f, w4 = fitted.get(server), _get(rows, server, "W4")
        fixed = _range(f["fixed_us"], ".0f") if f and f["valid"] else ("INVALID" if f else "-")
        token = _range(f["token_us"], ".2f") if f and f["valid"] else ("INVALID" if f else "-")
        echo = _get(results, ECHO_OF.get(server, ""), "W1y")
        ratio = "-"
        valid_fit = f is not None and f["valid"] and f["token_us"]["median"] is not None
        if f and valid_fit and echo and echo.get("valid") and echo.get("server_cpu_us_per_unit"):
            w1y = echo["server_cpu_us_per_unit"]
            ratio = f"{f['token_us']['median'] / w1y:.2f}x (W1y {w1y:.2f})"
        delivered = _percent("delivered_share")(w4) if w4 and w4.get("valid") else None
        rate = tokens_per_cpu_s(w4) if w4 and w4.get("valid") else None
        rate_text = f"{rate:,.0f}" if rate else "-"
        if rate and litellm_rate and server != LITELLM:
            rate_text += f" ({rate / litellm_rate:.1f}x)"
        cells = [
            fixed,
            token,
            ratio,
            f"{delivered:.2f}" if delivered is not None else ("INVALID" if w4 else "-"),
            _delta(w4, direct, "ttft_ms"),
            _delta(w4, direct, "gap_ms"),
            rate_text,
        ]
        lines.append(f"| {server} | " + " | ".join(cells) + " |")
    if direct and direct.get("valid"):
        share = _percent("delivered_share")(direct) or 0.0
        lines.append(
            f"| direct (no relay) | - | - | - | {share:.2f} | {_ms('ttft_ms', 'p99')(direct) or 0:.1f} "
            f"| {_ms('gap_ms', 'p99')(direct) or 0:.1f} | - |"
        )
    return "\n".join(lines)


OURS = ("relay-aiohttp", "relay-uvicorn")


def _goal_figures(results: list[dict[str, Any]], server: str) -> list[tuple[float | None, str]]:
    """Server's figure for each goal of :data:`GOALS`, in order, with how it is shown."""
    rows = [r for r in results if r.get("relay")]
    fitted = next((r for r in rows if r["server"] == server and r.get("workload") == "W4fit"), None)
    fit_ok = fitted is not None and fitted.get("valid")
    w4, direct = _get(rows, server, "W4"), _get(rows, DIRECT, "W4")
    w4_ok = w4 is not None and w4.get("valid")
    litellm = _get(rows, LITELLM, "W4")
    echo = _get(results, ECHO_OF.get(server, ""), "W1y")
    fixed = fitted["fixed_us"]["median"] if fit_ok and fitted else None
    token = fitted["token_us"]["median"] if fit_ok and fitted else None
    w1y = echo.get("server_cpu_us_per_unit") if echo and echo.get("valid") else None
    per_token = token / w1y if token is not None and w1y else None
    delivered = _percent("delivered_share")(w4) if w4_ok and w4 else None
    figures: list[tuple[float | None, str]] = [
        (fixed, f"{fixed:.0f} µs" if fixed is not None else "-"),
        (per_token, f"{per_token:.2f}x ({token:.2f} / {w1y:.2f} µs)" if per_token is not None else "-"),
        (delivered, f"{delivered:.2f} %" if delivered is not None else "-"),
    ]
    for key in ("ttft_ms", "gap_ms"):
        mine = _ms(key, "p99")(w4) if w4_ok and w4 else None
        base = _ms(key, "p99")(direct) if direct and direct.get("valid") else None
        gap = mine - base if mine is not None and base is not None else None
        figures.append((gap, f"{gap:+.1f} ms ({mine:.1f} vs {base:.1f})" if gap is not None else "-"))
    rate = tokens_per_cpu_s(w4) if w4_ok and w4 else None
    litellm_rate = tokens_per_cpu_s(litellm) if litellm and litellm.get("valid") else None
    times = rate / litellm_rate if rate and litellm_rate else None
    figures.append((times, f"{times:.1f}x ({rate:,.0f} / {litellm_rate:,.0f})" if times else "-"))
    return figures


#: Issue 10's goals for our relays: the name, and whether a figure meets it.
GOALS: tuple[tuple[str, Callable[[float], bool]], ...] = (
    ("fixed CPU per request ≤ 400 µs (fit)", lambda v: v <= 400),
    ("CPU per token ≤ 1.5x its stack's W1y@64", lambda v: v <= 1.5),
    ("W4: ≥ 99 % of offered tokens delivered", lambda v: v >= 99),
    ("W4: TTFT p99 within 10 ms of direct's", lambda v: v <= 10),
    ("W4: gap p99 within 5 ms of direct's", lambda v: v <= 5),
    ("W4: ≥ 20x LiteLLM's tokens per CPU-second", lambda v: v >= 20),
)


def relay_verdicts(results: list[dict[str, Any]]) -> str:
    """Issue 10's goals, each met or not by our relays (``-``: a figure this run did not take)."""
    servers = [s for s in OURS if any(r["server"] == s for r in results)]
    if not servers:
        return ""
    figures = {server: _goal_figures(results, server) for server in servers}
    lines = ["| goal (W4) | " + " | ".join(servers) + " | verdict |", "|---|" + "---|" * (len(servers) + 1)]
    for index, (name, meets) in enumerate(GOALS):
        cells = [figures[server][index][1] for server in servers]
        values = [figures[server][index][0] for server in servers]
        known = [v for v in values if v is not None]
        verdict = "-" if not known else ("met" if all(meets(v) for v in known) else "not met")
        if known and len(known) < len(values):
            verdict += " (where measured)"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(lines)
