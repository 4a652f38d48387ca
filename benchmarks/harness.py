"""The run: every server in its own process pinned to one core, the load on the other core.

Start every installed server (a server whose dependencies are missing is skipped with a note),
waiting for its readiness line (or, for granian, for its port to answer). W4's relays relay to
the cheap upstream (:mod:`benchmarks.upstream`), started first and pinned to the load's core;
``direct`` is that upstream itself. Then, step by step, run a load process per server with that
step (W4 steps on the relays, the other steps on the other servers), servers interleaved, so
each workload's figures are taken close together in time; print a progress line per result.
Every child is stopped by PID on the way out, whatever happened.
"""

from __future__ import annotations

import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import orjson

from benchmarks import quickreport
from benchmarks.processes import cores, read_line, running, stop, stop_all, wait_listening
from benchmarks.servers import MODEL, SCALE_WORKLOADS, Server, by_name
from benchmarks.workloads import Step

START_TIMEOUT = 30.0


@dataclass(slots=True)
class Suite:
    """Everything a run produced: one result per server and step, and notes."""

    results: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    redis_cost: dict[str, Any] | None = None  # benchmarks.rediscost's figures, when it ran

    @property
    def invalid(self) -> list[dict[str, Any]]:
        return [r for r in self.results if not r.get("valid")]


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def step_budget(step: Step) -> float:
    """How long the harness waits for one step's result before giving up on the server."""
    return (step.duration or 0.0) + step.timeout * min(step.max_requests, 3) + START_TIMEOUT


@dataclass(slots=True)
class Live:
    """A started server: its process and port; for a W4 relay, the upstream's process too."""

    server: Server
    process: subprocess.Popen[bytes]
    port: int
    upstream: subprocess.Popen[bytes] | None = None
    api_key: str | None = None

    def plan(self, steps: list[Step], load_cpu: int | None) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/v1/chat/completions"
        target = {"url": url, "model": MODEL, "strict": True, "api_key": self.api_key}
        upstream = self.upstream.pid if self.upstream is not None else None
        return {
            "target": target,
            "server_pid": self.process.pid,
            "upstream_pid": upstream,
            "cpu": load_cpu,
            "steps": steps,
        }


def batches(steps: list[Step]) -> list[list[Step]]:
    """Consecutive warm-up steps go together, and consecutive steps of one ``group`` (a step and
    its variants); every other reported step is a batch of its own."""
    groups: list[list[Step]] = []
    for step in steps:
        last = groups[-1][-1] if groups else None
        warmups = last is not None and not step.reported and not last.reported
        if warmups or (last is not None and bool(step.group) and step.group == last.group):
            groups[-1].append(step)
        else:
            groups.append([step])
    return groups


#: The servers that run the variants (another dialect, reasoning, a tool call): ours, both stacks.
VARIANT_SERVERS = ("aiohttp", "uvicorn", "relay-aiohttp", "relay-uvicorn")


def run_suite(servers: list[Server], steps: list[Step], *, quick: bool = False) -> Suite:
    """Start every server, then run each step on all of them, round after round, interleaved.

    Interleaving puts the figures of one workload close together in time, so a noisy neighbour
    skews them alike; a step with several rounds reports the median of its rounds, and keeps
    every round's figures (see :func:`combine`).

    ``quick`` (a correctness run, no timing asserted): nothing is pinned, and each server gets
    one load process for all its steps (a process start per step and server took most of the
    steps' time); progress lines say only what a handful of requests can (validity, TTFT).
    """
    suite = Suite()
    server_cpu, load_cpu = (None, None) if quick else cores()
    if server_cpu is None and not quick:
        suite.notes.append("fewer than 2 usable cores: server and load are not pinned")
    summary = quickreport.describe if quick else describe
    if not any(step.relay for step in steps):
        servers = [server for server in servers if not server.relay]
    if not any(step.reported and not step.relay and step.workload in SCALE_WORKLOADS for step in steps):
        servers = [server for server in servers if not server.redis]
    with ExitStack() as stack:
        upstream = start_upstream(servers, load_cpu, stack, suite)
        redis = start_redis(servers, load_cpu, stack, suite)
        live = start_servers(servers, server_cpu, stack, suite, upstream, redis)
        started = time.monotonic()
        for batch in [steps] if quick else batches(steps):
            collected: dict[str, list[dict[str, Any]]] = {}
            rounds = max(step.rounds for step in batch)
            for round_ in range(rounds):
                turn = round_ % len(live) if live else 0
                for item in live[turn:] + live[:turn]:
                    mine = [step for step in batch if _runs(item.server, step)]
                    if len(mine) > 1 and all(step.reported for step in mine):  # a step and its variants
                        mine = mine[round_ % len(mine) :] + mine[: round_ % len(mine)]
                    for result in run_batch(item, mine, load_cpu) if mine else []:
                        collected.setdefault(item.server.name, []).append(result)
                        elapsed = time.monotonic() - started
                        where = f"{result['label']}, round {round_ + 1}/{rounds}"
                        progress(f"[{where}] {item.server.name}: {summary(result)}  ({elapsed:.0f} s)")
            for item in live:
                suite.results.extend(combine(collected.get(item.server.name, [])))
        progress("stopping the servers")
        stop_all([item.process for item in live])
    return suite


def start_upstream(servers: list[Server], cpu: int | None, stack: ExitStack, suite: Suite) -> Live | None:
    """The cheap upstream, on the load's core, if any relay is to run (as ``direct``)."""
    if not any(server.relay for server in servers):
        return None
    process = stack.enter_context(running("benchmarks.upstream", _cpu_arg(cpu)))
    try:
        return Live(by_name("direct"), process, await_ready(process))
    except (TimeoutError, OSError, ValueError) as exc:
        suite.notes.append(f"the W4 upstream did not start: {exc}")
        progress(f"the W4 upstream did not start: {exc}")
        return None


def _runs(server: Server, step: Step) -> bool:
    """Whether ``server`` takes part in ``step`` (warm-ups: every server of its kind; variants:
    :data:`VARIANT_SERVERS`)."""
    if step.relay != server.relay or (step.reported and not server.runs(step.workload)):
        return False
    return step.chat_text or server.name in VARIANT_SERVERS


def start_redis(
    servers: list[Server], cpu: int | None, stack: ExitStack, suite: Suite
) -> tuple[subprocess.Popen[bytes], str] | None:
    """A fresh ``redis-server`` on the load's core, if any scale-out server is to run."""
    if not any(server.redis and not server.missing() for server in servers):
        return None
    from benchmarks.rediscost import running_redis

    try:
        return stack.enter_context(running_redis(cpu))
    except (OSError, RuntimeError) as exc:
        suite.notes.append(f"redis-server did not start: {exc}")
        progress(f"redis-server did not start: {exc}")
        return None


def start_servers(
    servers: list[Server],
    cpu: int | None,
    stack: ExitStack,
    suite: Suite,
    upstream: Live | None = None,
    redis: tuple[subprocess.Popen[bytes], str] | None = None,
) -> list[Live]:
    """Start each installed server (``stack`` stops them on the way out); note the others.

    A scale-out server gets the Redis URL, and the redis-server's CPU is metered apart from
    others' (as W4's upstream's is)."""
    started: list[tuple[Server, subprocess.Popen[bytes]]] = []
    keys: dict[str, str | None] = {}
    for server in servers:
        missing = server.missing()
        if missing or (server.relay and upstream is None) or (server.redis and redis is None):
            why = f"not installed: {', '.join(missing)}{server.hint}" if missing else "no W4 upstream"
            why = "no redis-server" if not missing and server.redis else why
            suite.skipped.append(server.name)
            suite.notes.append(f"{server.name}: skipped, {why}")
            progress(f"{server.name}: skipped ({why})")
            continue
        if upstream is not None and server.name == "direct":
            started.append((server, upstream.process))
            continue
        args, env, key = [server.name, _cpu_arg(cpu if server.pinned else None)], None, None
        if upstream is not None and server.relay:
            args.append(f"http://127.0.0.1:{upstream.port}/v1")
        if redis is not None and server.redis:
            args.append(redis[1])
        if server.name == "litellm":
            key = f"sk-bench-{secrets.token_hex(24)}"
            env = {"LITELLM_MASTER_KEY": key}
        started.append((server, stack.enter_context(running("benchmarks.servers", *args, env=env))))
        keys[server.name] = key
    # Every server starts at once (their imports overlap); then each is awaited in turn.
    live = []
    for server, process in started:
        if upstream is not None and process is upstream.process:
            live.append(upstream)
            continue
        try:
            port = await_ready(process, server.start_timeout)
            upstream_process = upstream.process if upstream is not None and server.relay else None
            if redis is not None and server.redis:
                upstream_process = redis[0]
            live.append(Live(server, process, port, upstream_process, keys[server.name]))
        except (TimeoutError, OSError, ValueError) as exc:
            stop(process)  # now: one still starting must not share the server core with the steps
            suite.skipped.append(server.name)
            suite.notes.append(f"{server.name}: did not start: {exc}")
            progress(f"{server.name}: did not start: {exc}")
    progress(f"servers up: {', '.join(item.server.name for item in live)}")
    return live


def run_batch(item: Live, batch: list[Step], load_cpu: int | None) -> list[dict[str, Any]]:
    """One load process running ``batch`` against one server; the reported steps' results."""
    try:
        if item.process.poll() is not None:
            raise ValueError(f"the server exited ({item.process.returncode})")
        lines = run_load(item.plan(batch, load_cpu))
    except (TimeoutError, OSError, ValueError) as exc:
        return [_failure(item.server, step, str(exc)) for step in batch if step.reported]
    return [{"server": item.server.name, "kind": item.server.kind, **r} for r in lines if r["reported"]]


#: The figures a step with several rounds reports as their median, each round's value kept.
ROUND_KEYS = (
    "tokens_per_s",
    "requests_per_s",
    "server_cpu_us_per_unit",
    "server_cpu_us_per_request",
    "server_cpu_share",
    "client_cpu_share",
    "upstream_cpu_share",
)


#: A round in which the rest of the machine took more than this share of a core is left out of a
#: step's median, as long as at least half of the step's rounds were quieter.
QUIET = 0.10


def combine(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per step, the median over its quiet rounds of every figure in :data:`ROUND_KEYS`.

    Every round's values stay in ``per_round`` (in round order, so a server's round ``i`` can be
    set against the floor's round ``i``, taken seconds apart), with ``kept``: whether the round
    counts. A round counts when others' CPU stayed within :data:`QUIET` (a neighbour slows the
    load client, and a floor whose client falls behind gathers its writes in the socket buffer,
    so its CPU per token drops), unless fewer than half the rounds did: then all count. Others'
    CPU is the worst counted round's. The rest (the latencies) is the median-rate counted
    round's. An invalid round makes the step invalid.
    """
    by_label: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        by_label.setdefault(result["label"], []).append(result)
    chosen = []
    for rounds in by_label.values():
        invalid = [r for r in rounds if not r.get("valid")]
        kept = [_quiet(r) for r in rounds]
        if 2 * sum(kept) < len(rounds):
            kept = [True] * len(rounds)
        counted = [r for r, keep in zip(rounds, kept, strict=True) if keep]
        ordered = sorted(counted, key=_rate)
        pick = invalid[0] if invalid else ordered[(len(ordered) - 1) // 2]
        per_round: dict[str, list[Any]] = {
            key: [r.get(key) for r in rounds] for key in (*ROUND_KEYS, "others_cpu_share")
        }
        per_round["kept"] = kept
        combined = {**pick, "per_round": per_round}
        for key in ROUND_KEYS:
            values = [v for v, keep in zip(per_round[key], kept, strict=True) if keep and _number(v)]
            if values and not invalid:
                combined[key] = statistics.median(values)
        shares = zip(per_round["others_cpu_share"], kept, strict=True)
        others = [v for v, keep in shares if keep and _number(v)]
        combined["others_cpu_share"] = max(others) if others else None
        combined["rounds"] = [_rate(r) for r in rounds]
        combined["rounds_cpu_us_per_request"] = [
            value if keep else None
            for value, keep in zip(per_round["server_cpu_us_per_request"], kept, strict=True)
        ]
        chosen.append(combined)
    return chosen


def _quiet(result: dict[str, Any]) -> bool:
    others = result.get("others_cpu_share")
    return not _number(others) or others <= QUIET


def _number(value: Any) -> bool:
    return isinstance(value, int | float)


def _rate(result: dict[str, Any]) -> float:
    return float(result.get("tokens_per_s") or result.get("requests_per_s") or 0.0)


def run_load(
    plan: dict[str, Any], report: Callable[[str, dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    """Run the load process on ``plan``; one flattened result per step."""
    steps: list[Step] = plan["steps"]
    payload = orjson.dumps({**plan, "steps": [step.to_dict() for step in steps]})
    results = []
    with running("benchmarks.load", stdin=True) as load:
        assert load.stdin is not None
        load.stdin.write(payload)
        load.stdin.close()
        for step in steps:
            line = read_line(load, step_budget(step))
            if not line:
                raise ValueError(f"the load process ended early (exit {load.wait()})")
            result = orjson.loads(line)["result"]
            flat = {"label": step.label, **step.to_dict(), "reported": step.reported, **result}
            results.append(flat)
            if step.reported and report is not None:
                report(step.label, result)
    return results


def await_ready(process: Any, timeout: float = START_TIMEOUT) -> int:
    """The port of a freshly started server, once it listens."""
    words = read_line(process, timeout).split()
    if len(words) != 2 or words[0] not in (b"READY", b"PORT"):
        raise ValueError(f"the server did not announce its port (exit {process.poll()}): {words!r}")
    port = int(words[1])
    if words[0] == b"PORT":
        wait_listening(process, port, timeout)
    return port


def describe(result: dict[str, Any]) -> str:
    """A short human summary of one step's result."""
    if not result.get("valid"):
        return f"INVALID ({result.get('invalid')} bad of {result.get('requests')}: {result.get('error')})"
    if result.get("rss_per_stream_bytes") is not None:
        return f"{result['rss_per_stream_bytes'] / 1024:.1f} KB RSS per idle stream"
    parts = []
    if result.get("tokens_per_s"):
        parts.append(f"{result['tokens_per_s']:,.0f} tok/s")
    else:
        parts.append(f"{result.get('requests_per_s', 0):,.0f} req/s")
    ttft = (result.get("ttft_ms") or {}).get("p99")
    if ttft is not None:
        parts.append(f"TTFT p99 {ttft:.1f} ms")
    return ", ".join(parts) + ", valid"


def _failure(server: Server, step: Step, error: str) -> dict[str, Any]:
    return {
        "server": server.name,
        "kind": server.kind,
        "label": step.label,
        **step.to_dict(),
        "reported": True,
        "valid": False,
        "requests": 0,
        "invalid": 0,
        "error": error,
    }


def _cpu_arg(cpu: int | None) -> str:
    return "-" if cpu is None else str(cpu)
