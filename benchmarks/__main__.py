"""``python -m benchmarks``: run every server through the workloads and print one table.

- ``python -m benchmarks``: the full run (several minutes); writes ``benchmarks/out/full.*``.
- ``python -m benchmarks --quick``: a tiny run that checks the harness end to end and that every
  response is valid; asserts no timing; exits non-zero on any invalid result (CI runs it).
- ``python -m benchmarks --url URL [--api-key KEY] [--model NAME]``: the load client alone
  against any OpenAI-compatible endpoint: TTFT, inter-token latency, tokens/s.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from benchmarks import dialects, variantreport
from benchmarks import quickreport as quick
from benchmarks.checks import self_test
from benchmarks.harness import QUIET, Suite, describe, progress, run_load, run_suite
from benchmarks.plot import plot
from benchmarks.processes import read_line, running
from benchmarks.relayreport import fits, relay_summary, relay_table, relay_verdicts
from benchmarks.report import machine, rounds_kept, table, targets, write_json
from benchmarks.scalereport import scale_summary, scale_table
from benchmarks.servers import QUICK, QUICK_RELAYS, SERVERS, Server, by_name
from benchmarks.workloads import Step, full_plan, quick_plan, select, url_plan

OUT = Path(__file__).resolve().parent / "out"
SCALE = {server.name for server in SERVERS if server.redis}
REQUIRED = ("floor", "aiohttp", "uvicorn", "direct", "relay-floor", "relay-aiohttp", "relay-uvicorn")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny correctness run (CI)")
    parser.add_argument("--servers", help="comma-separated subset: " + ",".join(s.name for s in SERVERS))
    parser.add_argument("--workloads", help="comma-separated subset: idle,W1,W1y,W2,W2burst,W3,W4")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each W1/W3/W4-fit step")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="rounds of each W1/W1y/W3 and W4-fit step (the median and the spread are reported)",
    )
    parser.add_argument("--idle-streams", type=int, default=1000, help="silent streams for the RSS step")
    parser.add_argument("--out", type=Path, default=OUT, help="where JSON, PNG and markdown go")
    outside = parser.add_argument_group("--url mode (any OpenAI-compatible endpoint)")
    outside.add_argument("--url", help="base URL (…/v1) or the full …/chat/completions URL")
    outside.add_argument("--api-key")
    outside.add_argument("--model", default="nanobot")
    outside.add_argument("--prompt", default="Count from 1 to 100, separated by spaces.")
    outside.add_argument("--max-tokens", type=int, default=None)
    outside.add_argument("--concurrency", default="1,4", help="comma-separated stream counts")
    outside.add_argument("--requests", type=int, default=3, help="requests per client")
    outside.add_argument(
        "--session-ids",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="give each client a session_id of its own, new for this run (the default: nanobot runs "
        "one session's turns one at a time); --no-session-ids sends none",
    )
    return parser.parse_args(argv)


def chosen_servers(args: argparse.Namespace) -> list[Server]:
    if args.servers:
        return [by_name(name.strip()) for name in args.servers.split(",") if name.strip()]
    return [by_name(name) for name in (*QUICK, *QUICK_RELAYS)] if args.quick else list(SERVERS)


def run_local(args: argparse.Namespace) -> int:
    """Our servers, the peers and the floor, in one run."""
    mode = "quick" if args.quick else "full"
    servers = chosen_servers(args)
    steps = quick_plan() if args.quick else full_plan(args.idle_streams, args.seconds, args.rounds)
    if args.workloads:
        steps = select(steps, [name.strip() for name in args.workloads.split(",") if name.strip()])
    self_test()
    dialects.self_test()
    progress(f"benchmarks ({mode}): {len(servers)} servers x {sum(s.reported for s in steps)} steps")
    suite = run_suite(servers, steps, quick=args.quick)
    if not args.quick:
        suite.results.extend(fits(suite.results))
    if any(r["server"] in SCALE for r in suite.results):
        suite.redis_cost = redis_cost(quick=args.quick, notes=suite.notes)
    if not args.quick:
        suite.notes.extend(busy(suite.results))
    if args.quick:
        missing = [name for name in REQUIRED if name in suite.skipped]
        suite.notes.extend(f"{name}: required for --quick but skipped" for name in missing)
    publish(args.out, mode, suite, steps)
    if suite.invalid or (args.quick and any(name in suite.skipped for name in REQUIRED)):
        progress(f"FAILED: {len(suite.invalid)} invalid results")
        return 1
    return 0


#: ``--quick``'s pass of :mod:`benchmarks.rediscost`: every store's turns run once, briefly
#: (it proves the step works; its figures are not reported).
QUICK_REDIS_COST = ("--turns", "32", "--rounds", "1", "--warmup", "8")


def redis_cost(*, quick: bool, notes: list[str]) -> dict[str, Any] | None:
    """:mod:`benchmarks.rediscost` in a child (its own redis-server), after the servers stopped.

    The child reports each round on stderr, so a long full run is not silent."""
    args = ["--json", *(QUICK_REDIS_COST if quick else ())]
    what = "checking that Redis's round trips run" if quick else "timing Redis's round trips alone"
    progress(f"{what} (benchmarks.rediscost)")
    started = time.monotonic()
    try:
        with running("benchmarks.rediscost", *args) as child:
            line = read_line(child, 300.0)
            code = child.wait(timeout=30)
    except (OSError, TimeoutError, subprocess.TimeoutExpired) as exc:
        notes.append(f"benchmarks.rediscost failed: {exc}")
        progress(f"benchmarks.rediscost failed: {exc}")
        return None
    if code != 0 or not line:
        notes.append(f"benchmarks.rediscost failed (exit {code})")
        progress(f"benchmarks.rediscost failed (exit {code})")
        return None
    result: dict[str, Any] = orjson.loads(line)
    progress(f"benchmarks.rediscost: done, {len(result['rows'])} stores ({time.monotonic() - started:.1f} s)")
    return result


def busy(results: list[dict[str, Any]], limit: float = 0.05) -> list[str]:
    """A note for every step with rounds left out for others' CPU, and for every step whose counted
    rounds still saw the rest of the machine take more than ``limit`` of a core."""
    notes = []
    for result in results:
        kept, total = rounds_kept(result)
        if kept < total:
            notes.append(
                f"{result['server']} {result['label']}: {total - kept} of {total} rounds left out "
                f"(others' CPU above {QUIET * 100:.0f} %)"
            )
        others = result.get("others_cpu_share")
        if isinstance(others, int | float) and others > limit:
            notes.append(
                f"{result['server']} {result['label']}: others' CPU reached {others * 100:.0f} % "
                "(a noisy neighbour: read this figure with care)"
            )
    return notes


def publish(out: Path, mode: str, suite: Suite, steps: list[Step], endpoint: str = "") -> None:
    """Print the tables (and, in a full run, the summaries); write JSON, markdown and the plot.

    ``endpoint`` (``--url`` mode) names what was measured, in the plot's title."""
    facts = machine()
    if mode == "quick":
        publish_quick(out, suite, steps, facts)
        return
    echo = [r for r in suite.results if not r.get("relay") and r["server"] not in SCALE]
    tables = [table(echo) if echo else "", relay_table(suite.results), scale_table(suite.results)]
    text = "\n\n".join(t for t in tables if t)
    print(text)
    for note in suite.notes:
        print(f"- {note}")
    for result in suite.invalid:
        print(f"- INVALID {result['server']} {result['label']}: {result.get('error')}")
    document: dict[str, Any] = {
        "mode": mode,
        "machine": facts,
        "steps": [s.to_dict() for s in steps],
        "results": suite.results,
        "notes": suite.notes,
        "redis_cost": suite.redis_cost,
        "variants": variantreport.document(suite.results),
    }
    write_json(out / f"{mode}.json", document)
    summaries = [
        targets(echo) if echo else "",
        variantreport.summary(suite.results),
        relay_summary(suite.results) if tables[1] else "",
        relay_verdicts(suite.results) if tables[1] else "",
        scale_summary(suite.results, suite.redis_cost),
    ]
    summary = "\n\n".join(t for t in summaries if t) if mode == "full" else ""
    if summary:
        print(f"\n{summary}")
    (out / f"{mode}.md").write_text(f"{text}\n\n{summary}\n", encoding="utf-8")
    if endpoint:
        title = f"{endpoint}, {facts['date']}, load client on {_machine_text(facts)}"
    else:
        title = f"nanobot-api benchmarks, {facts['date']}, commit {facts['code']}, {_machine_text(facts)}"
    drawn = plot([r for r in suite.results if r["server"] not in SCALE], out / f"{mode}.png", title)
    _wrote(out / mode, drawn)


def publish_quick(out: Path, suite: Suite, steps: list[Step], facts: dict[str, Any]) -> None:
    """``--quick``: validity and each stream's TTFT (:mod:`benchmarks.quickreport`), no figure
    that a handful of requests cannot give; the JSON keeps every field."""
    text = quick.table(suite.results)
    print(text)
    for note in suite.notes:
        print(f"- {note}")
    for result in suite.invalid:
        print(f"- INVALID {result['server']} {result['label']}: {result.get('error')}")
    if suite.redis_cost is not None:
        print(
            f"- benchmarks.rediscost ran every store ({len(suite.redis_cost['rows'])}); figures not reported"
        )
    document: dict[str, Any] = {
        "mode": "quick",
        "machine": facts,
        "steps": [s.to_dict() for s in steps],
        "results": suite.results,
        "notes": suite.notes,
        "redis_cost": suite.redis_cost,
    }
    write_json(out / "quick.json", document)
    (out / "quick.md").write_text(f"{text}\n", encoding="utf-8")
    heading = quick.title([s.concurrency for s in steps if s.reported])
    heading += f"\n{facts['date']}, commit {facts['code']}, {_machine_text(facts)}"
    _wrote(out / "quick", quick.plot(suite.results, out / "quick.png", heading))


def _machine_text(facts: dict[str, Any]) -> str:
    return f"{facts['nproc']} x {facts['cpu']}, Python {facts['python']}"


def _wrote(stem: Path, drawn: bool) -> None:
    if drawn:
        print(f"wrote {stem}.json, .md, .png")
    else:
        print(f"wrote {stem}.json, .md (no plot: matplotlib is not installed, or nothing to draw)")


def run_url(args: argparse.Namespace) -> int:
    """The load client alone against an outside endpoint (lenient checks)."""
    url = args.url.rstrip("/")
    if not url.endswith("/chat/completions"):
        url += "/chat/completions"
    steps = url_plan([int(c) for c in args.concurrency.split(",")], args.requests)
    target = {
        "url": url,
        "model": args.model,
        "strict": False,
        "api_key": args.api_key,
        "prompt": args.prompt,
        "max_tokens": args.max_tokens,
        "sessions": args.session_ids,
        "session_prefix": f"bench-{secrets.token_hex(4)}-" if args.session_ids else "",
    }
    suite = Suite()
    plan = {"target": target, "server_pid": None, "cpu": None, "steps": steps}
    for line in run_load(plan, lambda label, result: progress(f"{label}: {describe(result)}")):
        suite.results.append({"server": "endpoint", **line, "outside": True})
    sessions = "a session_id per client" if args.session_ids else "no session_id"
    publish(args.out, "url", suite, steps, f"{url}, model {args.model}, {sessions}")
    return 1 if suite.invalid else 0


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every ``finally``: children get stopped


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run_url(args) if args.url else run_local(args)
    except KeyboardInterrupt:
        progress("interrupted: every child process was stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
