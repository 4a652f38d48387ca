"""The PNG: a row of panels per part of the run that has results, every target drawn as a labelled
line, every legend outside its panel (so it hides no point), the spread over rounds as error bars.

- the echo path, two rows: W1 tokens/s and CPU-µs/token against concurrency, W1y@64 CPU-µs/token;
  W2 and W2burst latencies, W3 CPU-µs/request, idle RSS per stream;
- W4 (when it ran): the relays' fit (fixed CPU per request, CPU per token), their tokens per
  CPU-second, their latencies beside direct's;
- the variants (when they ran): W1y's CPU per text delta, reasoning delta and tool-call argument
  fragment; W1y's and the W4 fit's CPU per token through chat, Responses and Messages; each bar
  labelled with its ratio to chat text (round by round), the goals as labels;
- ``--url`` mode: TTFT, inter-token gaps and tokens/s of the endpoint, per concurrency.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import variantreport
from benchmarks.relayreport import ECHO_OF, tokens_per_cpu_s
from benchmarks.report import FLOOR, ratios, round_values, servers_in, spread

Panel = Callable[[Any, list[dict[str, Any]], dict[str, Any]], None]
GAP_IDEAL_MS = 20.0


def plot(results: list[dict[str, Any]], path: Path, title: str) -> bool:
    """Draw the figure to ``path``; ``False`` if matplotlib is not installed or nothing ran."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    outside = [r for r in results if r.get("outside")]
    relays = [r for r in results if r.get("relay")]
    echo = [r for r in results if not r.get("relay") and not r.get("outside")]
    colours = _colours(servers_in(results))
    rows: list[tuple[list[dict[str, Any]], tuple[Panel, Panel, Panel]]] = []
    if outside:
        rows.append((outside, (url_ttft, url_gaps, url_rate)))
    if any(r["workload"] in ("W1", "W1y") for r in echo):
        rows.append((echo, (w1_tokens, w1_cpu, w1y_cpu)))
    if any(r["workload"] in ("W2", "W2burst", "W3", "idle") for r in echo):
        rows.append((echo, (w2_latency, w3_cpu, idle_memory)))
    if relays:
        rows.append((relays + [r for r in echo if r["workload"] == "W1y"], (w4_fit, w4_rate, w4_latency)))
    if variantreport.ran(results):
        rows.append((results, (variant_events, variant_w1y, variant_w4)))
    if not rows:
        return False
    figure, axes = plt.subplots(len(rows), 3, figsize=(21, 5.2 * len(rows)), dpi=72, squeeze=False)
    for row, (data, panels) in zip(axes, rows, strict=True):
        for axis, panel in zip(row, panels, strict=True):
            panel(axis, data, colours)
            axis.grid(alpha=0.3, axis="y")
            if axis.get_legend_handles_labels()[0]:
                # Beside the panel, never over it: a legend must hide no point.
                axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    figure.suptitle(title, fontsize=11)
    figure.set_layout_engine("constrained")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return True


def _colours(servers: list[str]) -> dict[str, Any]:
    palette = [f"C{i}" for i in range(10)] + ["tab:olive", "tab:cyan", "gold", "navy", "maroon"]
    others = [s for s in servers if s not in (FLOOR, "relay-floor", "direct")]
    colours: dict[str, Any] = {FLOOR: "black", "relay-floor": "black", "direct": "dimgrey"}
    colours.update({server: palette[i % len(palette)] for i, server in enumerate(others)})
    return colours


def _valid(results: list[dict[str, Any]], workload: str) -> dict[str, dict[str, Any]]:
    """The valid results of ``workload`` by server (the highest concurrency if several)."""
    found: dict[str, dict[str, Any]] = {}
    for result in results:
        if result["workload"] == workload and result.get("valid"):
            found[result["server"]] = result
    return found


def _bounds(result: dict[str, Any], key: str) -> tuple[float, float, float] | None:
    """The median over rounds, and how far min and max lie below and above it."""
    found = spread(round_values(result, key))
    if found is None:
        return None
    median, low, high = found
    return median, median - low, high - median


def _bars(
    axis: Any, names: list[str], values: list[tuple[float, float, float] | None], colours: dict[str, Any]
) -> None:
    """One bar per server (its median), with the spread over rounds as an error bar."""
    heights = [v[0] if v else 0.0 for v in values]
    errors = [[v[1] if v else 0.0 for v in values], [v[2] if v else 0.0 for v in values]]
    axis.bar(
        range(len(names)),
        heights,
        0.6,
        color=[colours.get(n, "C0") for n in names],
        yerr=errors,
        capsize=3,
        ecolor="grey",
    )
    axis.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)


def _label_bars(axis: Any, heights: list[float], texts: list[str]) -> None:
    for i, (height, text) in enumerate(zip(heights, texts, strict=True)):
        if text:
            axis.annotate(
                text, (i, height), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7
            )


def _hline(axis: Any, value: float, label: str, style: str = "--", colour: str = "red") -> None:
    axis.axhline(value, color=colour, linestyle=style, linewidth=1.2, label=label)


# -- the echo path ----------------------------------------------------------------------------


def _w1_series(results: list[dict[str, Any]], server: str, key: str) -> list[tuple[int, Any]]:
    return sorted(
        (r["concurrency"], _bounds(r, key))
        for r in results
        if r["server"] == server and r["workload"] == "W1" and r.get("valid") and r.get(key)
    )


def _w1_lines(axis: Any, results: list[dict[str, Any]], colours: dict[str, Any], key: str) -> None:
    for server in servers_in([r for r in results if r["workload"] == "W1"]):
        points = [(c, b) for c, b in _w1_series(results, server, key) if b is not None]
        if not points:
            continue
        xs = [c for c, _ in points]
        ys = [b[0] for _, b in points]
        errors = [[b[1] for _, b in points], [b[2] for _, b in points]]
        floor = server == FLOOR
        axis.errorbar(
            xs,
            ys,
            yerr=errors,
            label=server,
            color=colours.get(server),
            linewidth=3 if floor else 1.5,
            marker=None if floor else "o",
            markersize=4,
            capsize=2,
        )
    if axis.get_lines():
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
    axis.set_xlabel("concurrent streams")


def w1_tokens(axis: Any, results: list[dict[str, Any]], colours: dict[str, Any]) -> None:
    """W1 tokens/s against concurrency; the target is the floor's own line (≥ 1.0x)."""
    _w1_lines(axis, results, colours, "tokens_per_s")
    floor = [r for r in results if r["server"] == FLOOR and r["workload"] == "W1" and r.get("valid")]
    if floor:
        axis.plot([], [], color="black", linewidth=3, label="target: ≥ the floor (1.0x)")
    axis.set_title("W1 firehose (agent never yields: gathered): tokens/s", fontsize=10)


def w1_cpu(axis: Any, results: list[dict[str, Any]], colours: dict[str, Any]) -> None:
    """W1 CPU-µs/token against concurrency, with the target: 1.2x the floor's."""
    _w1_lines(axis, results, colours, "server_cpu_us_per_unit")
    floor = sorted(
        (r["concurrency"], r["server_cpu_us_per_unit"])
        for r in results
        if r["server"] == FLOOR
        and r["workload"] == "W1"
        and r.get("valid")
        and r.get("server_cpu_us_per_unit")
    )
    if floor:
        axis.plot(
            [c for c, _ in floor],
            [1.2 * v for _, v in floor],
            color="red",
            linestyle="--",
            label="target: ≤ 1.2x floor",
        )
    axis.set_title("W1 firehose: server CPU-µs per token", fontsize=10)


def w1y_cpu(axis: Any, results: list[dict[str, Any]], colours: dict[str, Any]) -> None:
    """W1y@64 CPU-µs/token per stack (every token its own write): the honest per-token figure."""
    found = _valid(results, "W1y")
    names = [s for s in servers_in(results) if s in found]
    values = [_bounds(found[s], "server_cpu_us_per_unit") for s in names]
    _bars(axis, names, values, colours)
    floor = found.get(FLOOR)
    texts = []
    for name in names:
        ratio = spread(ratios(found[name], floor, "server_cpu_us_per_unit")) if floor else None
        texts.append(f"{ratio[0]:.2f}x" if ratio and name != FLOOR else "")
    _label_bars(axis, [(v[0] + v[2]) if v else 0.0 for v in values], texts)
    if floor and floor.get("server_cpu_us_per_unit"):
        _hline(axis, floor["server_cpu_us_per_unit"], "the floor", "-", "black")
    axis.set_ylabel("CPU-µs per token")
    axis.set_title("W1y@64 (every token its own write): CPU-µs/token, x floor", fontsize=10)


def w2_latency(axis: Any, results: list[dict[str, Any]], colours: dict[str, Any]) -> None:
    """W2: TTFT p50/p99 and gap p99 per stack; W2burst TTFT p99; the targets as lines."""
    w2, burst = _valid(results, "W2"), _valid(results, "W2burst")
    names = [s for s in servers_in(results) if s in w2 or s in burst]
    width = 0.2
    bars = (
        (w2, "ttft_ms", "p50", "W2 TTFT p50"),
        (w2, "ttft_ms", "p99", "W2 TTFT p99"),
        (w2, "gap_ms", "p99", "W2 gap p99"),
        (burst, "ttft_ms", "p99", "W2burst TTFT p99"),
    )
    for offset, (source, key, quantile, label) in enumerate(bars):
        values = [((source.get(s) or {}).get(key) or {}).get(quantile) or 0.0 for s in names]
        xs = [i + (offset - 1.5) * width for i in range(len(names))]
        axis.bar(xs, [max(v, 0.05) for v in values], width, label=label)
    if names:
        _hline(axis, 15.0, "target: W2 TTFT p99 ≤ 15 ms", "--", "red")
        _hline(axis, 25.0, "target: W2 gap p99 ≤ 25 ms", "--", "darkorange")
        _hline(axis, GAP_IDEAL_MS, "the pace: 20 ms", ":", "grey")
        axis.set_yscale("log")
    axis.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    axis.set_ylabel("ms")
    axis.set_title("W2 paced (256 streams, 20 ms apart) and W2burst", fontsize=10)


def w3_cpu(axis: Any, results: list[dict[str, Any]], colours: dict[str, Any]) -> None:
    """W3 CPU-µs per non-streamed request, each bar labelled with its requests/s."""
    found = _valid(results, "W3")
    names = [s for s in servers_in(results) if s in found]
    values = [_bounds(found[s], "server_cpu_us_per_unit") for s in names]
    _bars(axis, names, values, colours)
    texts = [f"{found[s]['requests_per_s']:,.0f}/s" if found[s].get("requests_per_s") else "" for s in names]
    _label_bars(axis, [(v[0] + v[2]) if v else 0.0 for v in values], texts)
    axis.set_ylabel("CPU-µs per request")
    axis.set_title("W3 non-streamed (32 clients): CPU-µs/request (label: requests/s)", fontsize=10)


def idle_memory(axis: Any, results: list[dict[str, Any]], colours: dict[str, Any]) -> None:
    """RSS per open, silent stream, with the target."""
    found = _valid(results, "idle")
    names = [s for s in servers_in(results) if s in found and found[s].get("rss_per_stream_bytes")]
    values = [(found[s]["rss_per_stream_bytes"] / 1024, 0.0, 0.0) for s in names]
    _bars(axis, names, list(values), colours)
    _label_bars(axis, [v[0] for v in values], [f"{v[0]:.1f}" for v in values])
    if names:
        _hline(axis, 20.0, "target: < 20 KB per stream", "--", "red")
    axis.set_ylabel("KB RSS per stream")
    concurrency = next(iter(found.values()))["concurrency"] if found else 0
    axis.set_title(f"idle: server RSS growth per open, silent stream ({concurrency} open)", fontsize=10)


# -- W4 ---------------------------------------------------------------------------------------


def w4_fit(axis: Any, results: list[dict[str, Any]], colours: dict[str, Any]) -> None:
    """The fit: fixed CPU per request and CPU per token (median, spread over rounds), with the
    targets: fixed ≤ 400 µs, per token ≤ 1.5x its stack's W1y@64."""
    fits = {r["server"]: r for r in results if r["workload"] == "W4fit" and r.get("valid")}
    w1y = _valid(results, "W1y")
    names = [s for s in servers_in(results) if s in fits and s != "direct"]
    width = 0.38
    for offset, (key, label) in enumerate(
        (("fixed_us", "fixed CPU-µs per request"), ("token_us", "CPU-µs per token"))
    ):
        spreads = [fits[s][key] for s in names]
        heights = [max(v["median"] or 0.0, 0.01) for v in spreads]
        errors = [
            [max(0.0, h - (v["min"] or h)) for h, v in zip(heights, spreads, strict=True)],
            [max(0.0, (v["max"] or h) - h) for h, v in zip(heights, spreads, strict=True)],
        ]
        xs = [i + (offset - 0.5) * width for i in range(len(names))]
        axis.bar(xs, heights, width, yerr=errors, capsize=3, ecolor="grey", label=label)
    if names:
        _hline(axis, 400.0, "target: fixed ≤ 400 µs per request", "--", "red")
        limits = [
            (i + 0.5 * width, 1.5 * w1y[ECHO_OF[s]]["server_cpu_us_per_unit"])
            for i, s in enumerate(names)
            if ECHO_OF.get(s) in w1y and w1y[ECHO_OF[s]].get("server_cpu_us_per_unit")
        ]
        if limits:
            axis.scatter(
                [x for x, _ in limits],
                [y for _, y in limits],
                marker="_",
                s=400,
                linewidths=2,
                color="darkorange",
                zorder=3,
                label="target: per token ≤ 1.5x its stack's W1y@64",
            )
        axis.set_yscale("log")
    axis.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    axis.set_ylabel("CPU-µs")
    axis.set_title("W4 relays: CPU fit (8- and 512-token streams, 2 ms pace)", fontsize=10)


def w4_rate(axis: Any, results: list[dict[str, Any]], colours: dict[str, Any]) -> None:
    """Tokens per CPU-second in W4 (direct: the upstream's own), with the target: 20x LiteLLM."""
    w4 = _valid(results, "W4")
    names = [s for s in servers_in(results) if s in w4 and tokens_per_cpu_s(w4[s])]
    values = [tokens_per_cpu_s(w4[s]) or 0.0 for s in names]
    axis.bar(range(len(names)), values, 0.6, color=[colours.get(s, "C2") for s in names])
    axis.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    _label_bars(axis, values, [f"{v:,.0f}" for v in values])
    if "litellm" in w4 and tokens_per_cpu_s(w4["litellm"]):
        _hline(axis, 20 * (tokens_per_cpu_s(w4["litellm"]) or 0.0), "target: ≥ 20x LiteLLM's", "--", "red")
    if names:
        axis.set_yscale("log")
    axis.set_ylabel("tokens per CPU-second")
    axis.set_title("W4: tokens per CPU-second of the relay (direct: the upstream's own)", fontsize=10)


def w4_latency(axis: Any, results: list[dict[str, Any]], colours: dict[str, Any]) -> None:
    """W4 TTFT p50/p99 and gap p99 per relay and direct, the targets relative to direct's, and
    each relay's share of offered tokens delivered under its name."""
    w4 = _valid(results, "W4")
    names = [s for s in servers_in(results) if s in w4]
    width = 0.25
    bars = (("ttft_ms", "p50", "TTFT p50"), ("ttft_ms", "p99", "TTFT p99"), ("gap_ms", "p99", "gap p99"))
    for offset, (key, quantile, label) in enumerate(bars):
        heights = [max((w4[s].get(key) or {}).get(quantile) or 0.0, 0.05) for s in names]
        axis.bar([i + (offset - 1) * width for i in range(len(names))], heights, width, label=label)
    direct = w4.get("direct")
    if direct:
        ttft, gap = (direct.get("ttft_ms") or {}).get("p99"), (direct.get("gap_ms") or {}).get("p99")
        if ttft is not None:
            _hline(axis, ttft + 10, f"target: TTFT p99 ≤ direct's + 10 ms ({ttft + 10:.1f})", "--", "red")
        if gap is not None:
            _hline(axis, gap + 5, f"target: gap p99 ≤ direct's + 5 ms ({gap + 5:.1f})", "--", "darkorange")
    if names:
        axis.set_yscale("log")
    shares = [w4[s].get("delivered_share") for s in names]
    ticks = [
        f"{s}\n{share * 100:.1f} % delivered" if share is not None else s
        for s, share in zip(names, shares, strict=True)
    ]
    axis.set_xticks(range(len(names)), ticks, rotation=35, ha="right", fontsize=8)
    axis.set_ylabel("ms")
    axis.set_title("W4: 256 streams x 64 tokens, 20 ms apart (target: ≥ 99 % delivered)", fontsize=10)


# -- --url mode -------------------------------------------------------------------------------


def _by_concurrency(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((r for r in results if r.get("valid")), key=lambda r: r["concurrency"])


def _grouped(axis: Any, results: list[dict[str, Any]], bars: tuple[tuple[str, str, str], ...]) -> None:
    found = _by_concurrency(results)
    width = 0.8 / len(bars)
    for offset, (key, quantile, label) in enumerate(bars):
        heights = [(r.get(key) or {}).get(quantile) or 0.0 for r in found]
        xs = [i + (offset - (len(bars) - 1) / 2) * width for i in range(len(found))]
        axis.bar(xs, heights, width, label=label)
        _label_at(axis, xs, heights)
    axis.set_xticks(range(len(found)), [_streams(r["concurrency"]) for r in found])
    axis.set_ylabel("ms")


def _label_at(axis: Any, xs: list[float], heights: list[float]) -> None:
    for x, height in zip(xs, heights, strict=True):
        axis.annotate(
            f"{height:.1f}" if height < 10 else f"{height:,.0f}",
            (x, height),
            textcoords="offset points",
            xytext=(0, 2),
            ha="center",
            fontsize=7,
        )


def _streams(count: int) -> str:
    return f"{count} stream" + ("s" if count != 1 else "")


def url_ttft(axis: Any, results: list[dict[str, Any]], colours: dict[str, Any]) -> None:
    _grouped(axis, results, (("ttft_ms", "p50", "TTFT p50"), ("ttft_ms", "p99", "TTFT p99")))
    axis.set_title("time to first token (from the request's write)", fontsize=10)


def url_gaps(axis: Any, results: list[dict[str, Any]], colours: dict[str, Any]) -> None:
    bars = (("gap_ms", "p50", "gap p50"), ("gap_ms", "p99", "gap p99"), ("gap_ms", "max", "gap max"))
    _grouped(axis, results, bars)
    axis.set_title("inter-token gap", fontsize=10)


def url_rate(axis: Any, results: list[dict[str, Any]], colours: dict[str, Any]) -> None:
    found = _by_concurrency(results)
    total = [r.get("tokens_per_s") or 0.0 for r in found]
    per_stream = [t / r["concurrency"] for t, r in zip(total, found, strict=True)]
    xs = list(range(len(found)))
    axis.bar([x - 0.2 for x in xs], total, 0.4, label="tokens/s, all streams")
    axis.bar([x + 0.2 for x in xs], per_stream, 0.4, label="tokens/s per stream")
    _label_at(axis, [x - 0.2 for x in xs], total)
    _label_at(axis, [x + 0.2 for x in xs], per_stream)
    axis.set_xticks(xs, [_streams(r["concurrency"]) for r in found])
    axis.set_ylabel("tokens/s")
    axis.set_title("tokens/s (whole step: requests, waits and all)", fontsize=10)


def _variant_bars(
    axis: Any,
    results: list[dict[str, Any]],
    workloads: tuple[tuple[str, str], ...],
    relay: bool,
    limit: float,
) -> None:
    """Per stack, a bar per workload (median over rounds, spread as error bars), each variant's
    labelled with its ratio to the first (chat text), round by round."""
    width = 0.8 / len(workloads)
    stacks = [
        pair for pair in variantreport.STACKS if variantreport.find(results, pair[relay], workloads[0][0])
    ]
    for offset, (workload, label) in enumerate(workloads):
        heights: list[float] = []
        errors: list[list[float]] = [[], []]
        texts: list[str] = []
        for pair in stacks:
            server = pair[relay]
            found = spread(variantreport.per_round(variantreport.find(results, server, workload)))
            median, low, high = found if found else (0.0, 0.0, 0.0)
            heights.append(median)
            errors[0].append(median - low)
            errors[1].append(high - median)
            ratio = spread(variantreport.ratio_rounds(results, server, workloads[0][0], workload))
            texts.append(f"{ratio[0]:.2f}x" if ratio and offset else "")
        xs = [i + (offset - (len(workloads) - 1) / 2) * width for i in range(len(stacks))]
        axis.bar(xs, heights, width, yerr=errors, capsize=3, ecolor="grey", label=label)
        for x, height, text, top in zip(xs, heights, texts, errors[1], strict=True):
            if text:
                axis.annotate(text, (x, height + top), ha="center", va="bottom", fontsize=8)
    axis.set_xticks(range(len(stacks)), [pair[relay] for pair in stacks], fontsize=9)
    axis.plot([], [], " ", label=f"goal: each ≤ {limit}x chat text (labels: ratio, round by round)")


def variant_events(axis: Any, results: list[dict[str, Any]], colours: dict[str, Any]) -> None:
    """W1y@64: CPU per text delta, per reasoning delta, per tool-call argument fragment."""
    kinds = (("W1y", "text delta"), ("W1y.reasoning", "reasoning delta"), ("W1y.tool", "tool-call fragment"))
    _variant_bars(axis, results, kinds, False, 1.1)
    axis.set_ylabel("server CPU-µs per event")
    axis.set_title("W1y@64 (chat): CPU-µs per event, by kind", fontsize=10)


DIALECTS = (("", "/v1/chat/completions"), (".responses", "/v1/responses"), (".messages", "/v1/messages"))


def variant_w1y(axis: Any, results: list[dict[str, Any]], colours: dict[str, Any]) -> None:
    """W1y@64: CPU per token through each dialect."""
    _variant_bars(axis, results, tuple((f"W1y{suffix}", name) for suffix, name in DIALECTS), False, 1.2)
    axis.set_ylabel("server CPU-µs per token")
    axis.set_title("W1y@64: CPU-µs per token, by dialect", fontsize=10)


def variant_w4(axis: Any, results: list[dict[str, Any]], colours: dict[str, Any]) -> None:
    """The W4 fit's CPU per relayed token through each dialect."""
    _variant_bars(axis, results, tuple((f"W4fit{suffix}", name) for suffix, name in DIALECTS), True, 1.2)
    axis.set_ylabel("relay CPU-µs per token (fit)")
    axis.set_title("W4 relay: CPU-µs per token (fit), by dialect", fontsize=10)
