"""The run: each server in its own pinned process, driven by the load process on the other core.

For every server: start it, wait for its readiness line (or, for granian, for its port to
answer), hand the load process the plan, collect one result per step (printing a progress line
for each), stop both by PID. A server whose dependencies are missing is skipped with a note.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from benchmarks.processes import cores, read_line, running, wait_listening
from benchmarks.servers import MODEL, Server
from benchmarks.workloads import Step

START_TIMEOUT = 30.0


@dataclass(slots=True)
class Suite:
    """Everything a run produced: one result per server and step, and notes."""

    results: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def invalid(self) -> list[dict[str, Any]]:
        return [r for r in self.results if not r.get("valid")]


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def step_budget(step: Step) -> float:
    """How long the harness waits for one step's result before giving up on the server."""
    return (step.duration or 0.0) + step.timeout * min(step.max_requests, 3) + START_TIMEOUT


def run_suite(servers: list[Server], steps: list[Step]) -> Suite:
    """Run ``steps`` against each server in turn."""
    suite = Suite()
    server_cpu, load_cpu = cores()
    if server_cpu is None:
        suite.notes.append("fewer than 2 usable cores: server and load are not pinned")
    started = time.monotonic()
    for index, server in enumerate(servers, 1):
        missing = server.missing()
        if missing:
            suite.skipped.append(server.name)
            suite.notes.append(f"{server.name}: skipped, not installed: {', '.join(missing)}")
            progress(f"[{index}/{len(servers)} {server.name}] skipped (missing {', '.join(missing)})")
            continue

        def report(label: str, result: dict[str, Any], i: int = index, name: str = server.name) -> None:
            elapsed = time.monotonic() - started
            progress(f"[{i}/{len(servers)} {name}] {label}: {describe(result)}  ({elapsed:.0f} s)")

        try:
            results = run_server(server, steps, server_cpu, load_cpu, report)
        except (TimeoutError, OSError, ValueError) as exc:
            suite.notes.append(f"{server.name}: failed: {exc}")
            results = [_failure(server, step, str(exc)) for step in steps if step.reported]
            progress(f"[{index}/{len(servers)} {server.name}] FAILED: {exc}")
        suite.results.extend(results)
    return suite


def run_server(
    server: Server,
    steps: list[Step],
    server_cpu: int | None,
    load_cpu: int | None,
    report: Callable[[str, dict[str, Any]], None],
) -> list[dict[str, Any]]:
    """Start ``server``, drive it through ``steps``, stop it; the reported steps' results."""
    with running("benchmarks.servers", server.name, _cpu_arg(server_cpu)) as process:
        port = await_ready(process)
        target = {"url": f"http://127.0.0.1:{port}/v1/chat/completions", "model": MODEL, "strict": True}
        plan = {"target": target, "server_pid": process.pid, "cpu": load_cpu, "steps": steps}
        lines = run_load(plan, report)
    return [{"server": server.name, "kind": server.kind, **line} for line in lines if line["reported"]]


def run_load(plan: dict[str, Any], report: Callable[[str, dict[str, Any]], None]) -> list[dict[str, Any]]:
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
            if step.reported:
                report(step.label, result)
    return results


def await_ready(process: Any) -> int:
    """The port of a freshly started server, once it listens."""
    words = read_line(process, START_TIMEOUT).split()
    if len(words) != 2 or words[0] not in (b"READY", b"PORT"):
        raise ValueError(f"the server did not announce its port (exit {process.poll()}): {words!r}")
    port = int(words[1])
    if words[0] == b"PORT":
        wait_listening(process, port, START_TIMEOUT)
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
