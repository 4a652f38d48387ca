"""``nanobot serve`` and ``uvicorn asgi.app:app`` as a user runs them: real processes, real HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from nanobot.config import ConfigError, Settings, parse_args
from tests.support.process import running_server
from tests.support.sse import data_events, text_of

ROOT = Path(__file__).resolve().parent.parent
BODY = {"stream": True, "messages": [{"role": "user", "content": "hello there friend"}]}


@pytest.mark.parametrize("stack", ["aiohttp", "asgi"])
def test_serve_streams_the_echo_agent(stack: str) -> None:
    with running_server("--stack", stack, "--api-key", "k", "--model", "echo-1") as url:
        headers = {"Authorization": "Bearer k"}
        response = httpx.post(f"{url}/v1/chat/completions", json=BODY, headers=headers, timeout=10)
        events = data_events(response.content)
        assert text_of(events) == "hello there friend"
        assert [e["choices"][0]["delta"].get("content") for e in events[:3]] == ["hello", " there", " friend"]
        assert events[0]["model"] == "echo-1"
        assert httpx.get(f"{url}/v1/models", timeout=10).status_code == 401


@pytest.mark.parametrize("stack", ["aiohttp", "asgi"])
def test_sigterm_stops_the_server_cleanly(stack: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "nanobot", "serve", "--port", "0", "--stack", stack],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline() + process.stdout.readline()
        assert "curl -N http://127.0.0.1:" in banner
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stdout.read().strip() == "nanobot stopped"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_bad_agent_spec_is_a_clear_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nanobot", "serve", "--agent", "no_such_module:thing"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "Cannot import 'no_such_module'" in result.stderr
    assert "Traceback" not in result.stderr


def test_uvicorn_serves_asgi_app_from_the_environment() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "NANOBOT_MODEL": "env-model", "NANOBOT_API_KEY": "secret"}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "asgi.app:app", "--port", str(port), "--log-level", "info"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        for _ in range(50):  # uvicorn logs a bounded number of lines before it is up
            line = process.stderr.readline()
            if "Uvicorn running" in line or not line:
                break
        assert "Uvicorn running" in line, line
        url = f"http://127.0.0.1:{port}"
        response = httpx.post(
            f"{url}/v1/chat/completions", json=BODY, headers={"Authorization": "Bearer secret"}
        )
        events = data_events(response.content)
        assert events[0]["model"] == "env-model"
        assert text_of(events) == "hello there friend"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def test_flags_win_over_environment_over_defaults() -> None:
    env = {"NANOBOT_PORT": "9001", "NANOBOT_MODEL": "from-env", "NANOBOT_CORS_ORIGIN": "http://a, http://b"}
    settings = parse_args(["serve", "--model", "from-flag", "--keep-media"], env)
    assert (settings.port, settings.model, settings.keep_media) == (9001, "from-flag", True)
    assert settings.cors_origin == ("http://a", "http://b")
    assert parse_args(["serve", "--cors-origin", "http://c"], env).cors_origin == ("http://c",)
    assert parse_args(["serve"], {}) == Settings()


@pytest.mark.parametrize(
    "env",
    [
        {"NANOBOT_PORT": "x"},
        {"NANOBOT_STACK": "flask"},
        {"NANOBOT_PING_INTERVAL": "-1"},
        {"NANOBOT_KEEP_MEDIA": "perhaps"},
    ],
)
def test_bad_environment_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env(env)


def test_bound_socket_is_known_as_tcp_so_asyncio_disables_nagle() -> None:
    from nanobot.cli import bind

    with bind(Settings(port=0)) as sock:
        assert sock.proto == socket.IPPROTO_TCP
