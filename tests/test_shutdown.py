"""Graceful drain in real processes: ``nanobot serve`` on both stacks and plain ``uvicorn asgi.app:app``.

On SIGTERM, new requests and ``/health`` get 503 with ``Retry-After``, a stream that finishes
within ``--drain-timeout`` ends normally, one that does not ends with a ``server_shutting_down``
error event (never a silent cut), and the process exits. The drain's start (turns open, time
allowed) and end are logged, and every request has its line in the request log, under plain
uvicorn too (read from the JSON log format).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support.sse import data_events

ROOT = Path(__file__).resolve().parent.parent
AGENT = "tests.support.agents:Lingering"


def turn(content: str) -> dict[str, object]:
    return {"stream": True, "messages": [{"role": "user", "content": content}]}


class Stream(threading.Thread):
    """One streaming request read to its end in a thread; ``started`` once its first bytes came."""

    def __init__(self, url: str, content: str) -> None:
        super().__init__(daemon=True)
        self.url, self.content = url, content
        self.started = threading.Event()
        self.body = b""

    def run(self) -> None:
        with httpx.stream(
            "POST", f"{self.url}/v1/chat/completions", json=turn(self.content), timeout=30
        ) as r:
            for piece in r.iter_bytes():
                self.body += piece
                self.started.set()


@contextmanager
def process(args: list[str], env: dict[str, str], ready: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        args, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        for _ in range(50):  # a bounded number of start-up lines
            line = proc.stdout.readline()
            if ready in line or not line:
                break
        assert ready in line, line
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def log_of(proc: subprocess.Popen[str]) -> list[dict[str, object]]:
    """The JSON log lines the stopped process wrote (other lines skipped)."""
    assert proc.stdout is not None
    lines = [line for line in proc.stdout.read().splitlines() if line.startswith("{")]
    return [orjson.loads(line) for line in lines]


def check_drain_log(lines: list[dict[str, object]], open_streams: int = 50) -> None:
    """The drain said when it began (turns open, time allowed) and how it ended; every request
    has its line in the request log."""
    (started,) = [line for line in lines if line.get("event") == "drain_started"]
    (ended,) = [line for line in lines if line.get("event") == "drain_ended"]
    assert started["turns"] in (open_streams - 1, open_streams) and started["timeout_s"] == 1
    assert ended["stopped"] == open_streams - 1 and ended["finished"] == started["turns"] - ended["stopped"]
    chat = [line for line in lines if line.get("path") == "/v1/chat/completions"]
    assert len(chat) == open_streams + 1 and all(line["logger"] == "nanobot.access" for line in chat)
    assert sorted(str(line["outcome"]) for line in chat) == sorted(
        ["completed", "refused"] + ["stopped"] * (open_streams - 1)
    )
    (refused,) = [line for line in chat if line["status"] == 503]
    assert refused["error"] == "server_shutting_down"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def check_drain(proc: subprocess.Popen[str], url: str, open_streams: int = 50) -> None:
    finishing = Stream(url, "one two three four")
    stuck = [Stream(url, "stuck") for _ in range(open_streams - 1)]
    for stream in (finishing, *stuck):
        stream.start()
    for stream in (finishing, *stuck):
        assert stream.started.wait(10)
    proc.send_signal(signal.SIGTERM)
    # Draining: the server still answers, but refuses new work.
    for _ in range(100):  # until the signal has been handled (bounded)
        health = httpx.get(f"{url}/health", timeout=5)
        if health.status_code == 503:
            break
    assert health.json() == {"status": "draining"} and health.headers["retry-after"] == "1"
    refused = httpx.post(f"{url}/v1/chat/completions", json=turn("late"), timeout=5)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "server_shutting_down"
    for stream in (finishing, *stuck):
        stream.join(15)
        assert not stream.is_alive()
    assert data_events(finishing.body)[-1] == "[DONE]"
    for stream in stuck:  # every one ends with the shutdown event: none is cut silently
        assert data_events(stream.body)[-1]["error"]["code"] == "server_shutting_down"


@pytest.mark.parametrize("stack", ["aiohttp", "asgi"])
def test_nanobot_serve_drains_on_sigterm(stack: str) -> None:
    port = free_port()
    args = [sys.executable, "-m", "nanobot", "serve", "--stack", stack, "--port", str(port)]
    args += ["--agent", AGENT, "--drain-timeout", "1", "--log-format", "json"]
    with process(args, {}, "nanobot serving") as proc:
        check_drain(proc, f"http://127.0.0.1:{port}")
        assert proc.wait(timeout=10) == 0
        check_drain_log(log_of(proc))


def test_plain_uvicorn_drains_on_sigterm() -> None:
    port = free_port()
    env = {"NANOBOT_AGENT": AGENT, "NANOBOT_DRAIN_TIMEOUT": "1", "NANOBOT_LOG_FORMAT": "json"}
    args = [sys.executable, "-m", "uvicorn", "asgi.app:app", "--port", str(port), "--log-level", "info"]
    with process(args, env, "Uvicorn running") as proc:
        check_drain(proc, f"http://127.0.0.1:{port}")
        assert proc.wait(timeout=10) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it caught
        check_drain_log(log_of(proc))  # nanobot's request log and drain lines, under uvicorn too


@pytest.mark.parametrize("stack", ["aiohttp", "asgi"])
def test_an_agent_that_ignores_cancellation_cannot_keep_the_process_alive(stack: str) -> None:
    port = free_port()
    args = [sys.executable, "-m", "nanobot", "serve", "--stack", stack, "--port", str(port)]
    args += ["--agent", "tests.support.agents:Stubborn", "--request-timeout", "0.3", "--drain-timeout", "0.5"]
    with process(args, {}, "nanobot serving") as proc:
        url = f"http://127.0.0.1:{port}"
        reply = httpx.post(f"{url}/v1/chat/completions", json={**turn("x"), "stream": False}, timeout=10)
        assert reply.status_code == 504  # abandoned at its deadline; it still runs
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
