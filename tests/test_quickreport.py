"""``python -m benchmarks --quick`` reports validity and TTFT only, never a CPU figure."""

from __future__ import annotations

from typing import Any

from benchmarks import quickreport


def result(server: str, label: str, **extra: Any) -> dict[str, Any]:
    base = {"server": server, "label": label, "requests": 6, "invalid": 0, "valid": True, "error": None}
    return {**base, "server_cpu_us_per_unit": 208.33, "tokens_per_s": 7400.0, **extra}


def test_the_quick_table_has_validity_and_ttft_and_no_cpu_figure() -> None:
    results = [
        result("aiohttp", "W1y c=2", ttft_ms={"p50": 0.7, "p99": 1.06}),
        result("aiohttp", "W3 c=2", ttft_ms={"p50": None, "p99": None}),
        result("naive", "W1y c=2", valid=False, invalid=2, error="bad chunk"),
    ]
    table = quickreport.table(results)
    assert "| aiohttp | 6/6, 1.1 ms | 6/6 |" in table
    assert "| naive | **INVALID** 2/6 |  |" in table
    assert "CPU" not in table and "tok/s" not in table and "7400" not in table
    assert quickreport.describe(results[0]) == "6/6 valid, TTFT p99 1.1 ms"
    assert quickreport.describe(results[2]) == "INVALID (2 bad of 6: bad chunk)"


def test_the_quick_plot_is_titled_as_a_correctness_run() -> None:
    assert quickreport.title([1, 2, 2, 4]).startswith(
        "nanobot-api --quick: a correctness run (1-4 streams per step), not a benchmark"
    )
