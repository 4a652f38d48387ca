"""``nanobot serve`` and ``uvicorn asgi.app:app`` as a user runs them: real processes, real HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

import httpx
import pytest

from nanobot.config import ConfigError, Settings, parse_args
from tests.support.process import running_server
from tests.support.redis import running_redis
from tests.support.sse import data_events, text_of

ROOT = Path(__file__).resolve().parent.parent
BODY = {"stream": True, "messages": [{"role": "user", "content": "hello there friend"}]}
#: ``python -c LAUNCHER serve ...`` is ``nanobot serve ...`` with the open-file limit (soft and
#: hard) set to ``NANOBOT_TEST_NOFILE`` first, when that is set.
LAUNCHER = (
    "import os, resource, sys\n"
    "if 'NANOBOT_TEST_NOFILE' in os.environ:\n"
    "    n = int(os.environ['NANOBOT_TEST_NOFILE'])\n"
    "    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))\n"
    "from nanobot.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@contextmanager
def launched(*args: str, nofile: int | None = None) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``nanobot serve --port 0 ARGS`` (at most ``nofile`` fds); the process and its base URL."""
    env = {**os.environ, **({"NANOBOT_TEST_NOFILE": str(nofile)} if nofile else {})}
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, "serve", "--port", "0", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        match = re.search(r"at (http://\S+)/v1", process.stdout.readline())
        assert match, "no banner"
        yield process, match.group(1)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


@contextmanager
def plain_uvicorn(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> Iterator[str]:
    """``uvicorn asgi.app:app ARGS`` on a free port; its base URL once it is up; stopped after."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "asgi.app:app", "--port", str(port), "--log-level", "info", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
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
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.communicate(timeout=10)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


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
    assert result.stderr.startswith("nanobot serve: error: --agent: cannot import 'no_such_module'")
    assert "Traceback" not in result.stderr


def test_uvicorn_serves_asgi_app_from_the_environment() -> None:
    env = {"NANOBOT_MODEL": "env-model", "NANOBOT_API_KEY": "secret"}
    with plain_uvicorn(env=env) as url:
        response = httpx.post(
            f"{url}/v1/chat/completions", json=BODY, headers={"Authorization": "Bearer secret"}
        )
        events = data_events(response.content)
        assert events[0]["model"] == "env-model"
        assert text_of(events) == "hello there friend"


def test_flags_win_over_environment_over_defaults() -> None:
    env = {"NANOBOT_PORT": "9001", "NANOBOT_MODEL": "from-env", "NANOBOT_CORS_ORIGIN": "http://a, http://b"}
    settings = parse_args(["serve", "--model", "from-flag", "--keep-media"], env)
    assert (settings.port, settings.model, settings.keep_media) == (9001, "from-flag", True)
    assert settings.cors_origin == ("http://a", "http://b")
    assert parse_args(["serve", "--cors-origin", "http://c"], env).cors_origin == ("http://c",)
    assert parse_args(["serve"], {}) == Settings()
    limits = parse_args(["serve", "--max-headers", "20"], {"NANOBOT_HEADER_TIMEOUT": "2.5"}).head_limits()
    assert (limits.max_header_size, limits.max_headers, limits.header_timeout) == (8192, 20, 2.5)


@pytest.mark.parametrize(
    "env",
    [
        {"NANOBOT_PORT": "x"},
        {"NANOBOT_STACK": "flask"},
        {"NANOBOT_PING_INTERVAL": "-1"},
        {"NANOBOT_KEEP_MEDIA": "perhaps"},
        {"NANOBOT_HEADER_TIMEOUT": "0"},
        {"NANOBOT_MAX_HEADERS": "-1"},
        {"NANOBOT_MAX_HEADER_SIZE": "big"},
    ],
)
def test_bad_environment_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env(env)


def test_bound_socket_is_known_as_tcp_so_asyncio_disables_nagle() -> None:
    from nanobot.cli import bind

    with bind(Settings(port=0)) as sock:
        assert sock.proto == socket.IPPROTO_TCP


@pytest.mark.parametrize("stack", ["aiohttp", "asgi"])
def test_a_second_signal_forces_a_prompt_exit(stack: str) -> None:
    """The first SIGTERM waits for an open stream; the second exits at once, non-zero."""
    slow = {"stream": True, "messages": [{"role": "user", "content": "one two three four five six"}]}
    with launched("--stack", stack, "--echo-delay", "2") as (process, url):
        streaming = threading.Event()

        def client() -> None:
            try:
                with httpx.stream("POST", f"{url}/v1/chat/completions", json=slow, timeout=30) as response:
                    streaming.set()
                    for _ in response.iter_bytes():
                        pass
            except httpx.HTTPError:
                pass  # the server went away mid-stream: expected

        reader = threading.Thread(target=client, daemon=True)
        reader.start()
        assert streaming.wait(10)
        process.send_signal(signal.SIGTERM)
        for _ in range(200):  # the first signal drains: /health says so while the stream stays open
            if httpx.get(f"{url}/health", timeout=5).status_code == 503:
                break
        assert process.poll() is None, "the first signal should wait for the open stream"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 128 + signal.SIGINT  # the drain had 30 s left
        reader.join(10)


@pytest.mark.parametrize("stack", ["aiohttp", "asgi"])
def test_out_of_file_descriptors_logs_little_and_recovers(stack: str) -> None:
    """At a 64-fd limit, 100 idle sockets: a warning or two, no traceback; the deadline frees
    the fds and real requests succeed again."""
    with launched("--stack", stack, "--header-timeout", "1", nofile=64) as (process, url):
        idle = [socket.create_connection(("127.0.0.1", port_of(url))) for _ in range(100)]
        try:
            for sock in idle:  # each is closed by the header deadline, once accepted
                sock.settimeout(15)
                assert sock.recv(1) == b""
        finally:
            for sock in idle:
                sock.close()
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=10)[0]
    assert "Traceback" not in output
    warnings = [line for line in output.splitlines() if "cannot accept connections" in line]
    assert 1 <= len(warnings) <= 3, output[-2000:]
    assert len(output.splitlines()) < 10, output[-2000:]


def test_uvicorn_cli_takes_the_limited_protocol_from_the_asgi_module() -> None:
    """``uvicorn asgi.app:app --http asgi.app:HttpProtocol``: limits and deadline from NANOBOT_*."""
    env = {"NANOBOT_MAX_HEADER_SIZE": "1024", "NANOBOT_HEADER_TIMEOUT": "0.5"}
    with plain_uvicorn("--http", "asgi.app:HttpProtocol", env=env) as url:
        response = httpx.get(f"{url}/health", headers={"X-Big": "a" * 1025})
        assert response.status_code == 431
        assert response.json()["error"]["code"] == "request_header_fields_too_large"
        assert httpx.get(f"{url}/health", headers={"X-Big": "a" * 1024}).status_code == 200
        with socket.create_connection(("127.0.0.1", port_of(url))) as idle:
            idle.settimeout(10)
            started = time.perf_counter()
            assert idle.recv(1) == b""
            assert time.perf_counter() - started < 5


def test_a_network_host_without_a_key_refuses_to_start() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nanobot", "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--api-key" in result.stderr and "--allow-unauthenticated" in result.stderr


def test_the_banner_never_prints_the_key() -> None:
    with launched("--api-key", "sk-very-secret") as (process, url):
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    assert "sk-very-secret" not in output


@pytest.mark.parametrize("flag", [["--history-max-messages", "10"], ["--upstream-api-key", "k"]])
def test_openai_only_settings_with_another_agent_are_an_error(flag: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["serve", "--agent", "echo", *flag], environ={})
    upstream = ["--upstream-url", "http://127.0.0.1:1/v1", "--upstream-model", "m"]
    assert parse_args(["serve", "--agent", "openai", *upstream, *flag], environ={}).agent == "openai"


def test_an_agent_module_is_found_in_the_current_folder_and_in_app_dir(tmp_path: Path) -> None:
    (tmp_path / "myagent.py").write_text(
        "class Agent:\n"
        "    async def process_direct(self, *, content, on_stream=None, **kw):\n"
        "        return 'mine: ' + content\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cwd, extra in ((tmp_path, []), (elsewhere, ["--app-dir", str(tmp_path)])):
        process = subprocess.Popen(
            [sys.executable, "-m", "nanobot", "serve", "--port", "0", "--agent", "myagent:Agent", *extra],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert process.stdout is not None
            match = re.search(r"at (http://\S+)/v1", process.stdout.readline())
            assert match, process.stdout.read()
            body = {"messages": [{"role": "user", "content": "hi"}]}
            reply = httpx.post(f"{match.group(1)}/v1/chat/completions", json=body, timeout=10)
            assert reply.json()["choices"][0]["message"]["content"] == "mine: hi"
        finally:
            process.terminate()
            process.communicate(timeout=10)


def test_uvicorn_serves_the_installed_app_from_any_folder(tmp_path: Path) -> None:
    with plain_uvicorn(cwd=tmp_path) as url:
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200


@pytest.mark.parametrize("stack", ["aiohttp", "asgi"])
def test_json_logs_give_one_object_per_request(stack: str) -> None:
    with launched("--stack", stack, "--log-format", "json") as (process, url):
        httpx.post(f"{url}/v1/chat/completions", json=BODY, headers={"X-Request-Id": "rid-7"}, timeout=10)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("logger") == "nanobot.access"]
    assert len(access) == 1, output
    assert access[0]["request_id"] == "rid-7" and access[0]["status"] == 200 and access[0]["tokens"] == 3
    assert "hello" not in output.split("\n", 2)[-1]  # the prompt is in no log line (only the banner)


GC_AGENT = (
    "import gc\n"
    "class Agent:\n"
    "    async def process_direct(self, *, content, on_stream=None, **kw):\n"
    "        return f'{gc.get_threshold()[0]} {gc.get_freeze_count() > 0}'\n"
)


@pytest.mark.parametrize("how", ["aiohttp", "asgi", "uvicorn"])
def test_the_serving_process_freezes_its_heap_and_collects_less_often(how: str, tmp_path: Path) -> None:
    """``nanobot serve`` (both stacks) and ``uvicorn asgi.app:app`` settle the collector once the
    app is built (``nanobot.heap``), so hundreds of open streams do not pause it often."""
    (tmp_path / "gcagent.py").write_text(GC_AGENT)
    body = {"messages": [{"role": "user", "content": "hi"}]}
    if how == "uvicorn":
        with plain_uvicorn(cwd=tmp_path, env={"NANOBOT_AGENT": "gcagent:Agent"}) as url:
            reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
    else:
        args = ("--stack", how, "--agent", "gcagent:Agent", "--app-dir", str(tmp_path))
        with launched(*args) as (_, url):
            reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
    young, frozen = reply.json()["choices"][0]["message"]["content"].split()
    assert int(young) >= 10_000
    assert frozen == "True"


#: Every way a command line or its environment can be wrong, and the one line it gets.
BAD_COMMANDS = [
    (["serve", "--port", "abc"], {}, "--port: expected a whole number, not 'abc'"),
    (["serve", "--port", "99999"], {}, "--port: must be 0-65535, not 99999"),
    (["serve", "--port"], {}, "--port: expected a value"),
    (["serve", "--request-timeout", "-1"], {}, "--request-timeout: must not be negative, not -1"),
    (["serve", "--request-timeout", "nan"], {}, "--request-timeout: expected a number, not 'nan'"),
    (["serve", "--log-level", "loud"], {}, "--log-level: must be debug, info, warning or error, not 'loud'"),
    (["serve", "--stack", "flask"], {}, "--stack: must be aiohttp or asgi, not 'flask'"),
    (["serve", "--drain-timeout", "0"], {}, "--drain-timeout: must be positive, not 0"),
    (["serve", "--api-key", " "], {}, "--api-key: must not be blank"),
    (["serve", "--api-key", ""], {}, "--api-key: must not be blank"),
    (["serve", "--bogus"], {}, "--bogus: no such option (nanobot serve --help lists the options)"),
    (["serve", "stray"], {}, "stray: unexpected argument"),
    (
        ["serve", "--system-prompt", "be brief"],
        {},
        "--system-prompt: only applies to the openai agent, not to 'echo'",
    ),
    (["serve", "--workers", "2"], {}, "--workers: 2 workers need --redis-url redis://HOST:PORT/DB"),
    (["serve", "--redis-url", "http://r"], {}, "--redis-url: must be a redis:// or rediss:// URL"),
    (["serve"], {"NANOBOT_PORT": "abc"}, "NANOBOT_PORT: expected a whole number, not 'abc'"),
    (["serve"], {"NANOBOT_API_KEY": "  "}, "NANOBOT_API_KEY: must not be blank"),
    (["serve"], {"NANOBOT_KEEP_MEDIA": "perhaps"}, "NANOBOT_KEEP_MEDIA: expected on or off"),
    (["serve"], {"NANOBOT_LOG_LEVEL": "loud"}, "NANOBOT_LOG_LEVEL: must be debug, info, warning or error"),
    (
        ["serve", "--port", "1"],
        {"NANOBOT_PORT": "x", "NANOBOT_HEADER_TIMEOUT": "0"},
        "NANOBOT_HEADER_TIMEOUT: ",
    ),
    (["serve", "--agent", "openai"], {}, "--upstream-url and --upstream-model: needed by the openai agent"),
    (
        ["serve", "--agent", "openai", "--upstream-url", "http://h/v1"],
        {},
        "--upstream-model: needed by the openai agent (e.g. llama3.2)",
    ),
    (
        ["serve", "--agent", "openai", "--upstream-url", "ftp://h"],
        {},
        "--upstream-url: must start with http://",
    ),
    (["serve"], {"NANOBOT_AGENT": "openai", "NANOBOT_UPSTREAM_MODEL": "m"}, "--upstream-url: needed by"),
    ([], {}, "a command is needed: nanobot serve (nanobot serve --help lists its options)"),
    (["start"], {}, "'start' is not a command: the one command is serve"),
]


@pytest.mark.parametrize(
    ("argv", "env", "says"), BAD_COMMANDS, ids=[" ".join(c[0]) or "none" for c in BAD_COMMANDS]
)
def test_every_error_is_one_line_naming_the_flag_or_variable(
    argv: list[str],
    env: dict[str, str],
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in [n for n in os.environ if n.startswith("NANOBOT_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from nanobot.cli import main

    assert main(argv) == 2
    out, err = capsys.readouterr()
    prog = "nanobot serve" if argv[:1] == ["serve"] else "nanobot"
    assert err.startswith(f"{prog}: error: {says}"), err
    assert err.count("\n") == 1 and err.endswith("\n"), err  # one line, no usage dump
    assert "usage:" not in err
    assert not [
        field.name for field in fields(Settings) if "_" in field.name and field.name in err
    ]  # no Python
    assert ".;" not in err and not err.rstrip().endswith(".") and out == ""


def test_errors_found_after_parsing_are_one_line_from_a_real_process() -> None:
    """A taken port, a bad variable, an agent that cannot load, a network host without a key."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for argv, env, says in (
            (["--port", str(port)], {}, f"cannot listen on 127.0.0.1:{port}: address already in use"),
            ([], {"NANOBOT_PORT": "abc"}, "NANOBOT_PORT: expected a whole number, not 'abc'"),
            (
                ["--agent", "nope"],
                {},
                "--agent: agent spec 'nope' is not 'echo', 'openai' or 'module:attribute'",
            ),
            ([], {"NANOBOT_HOST": "0.0.0.0"}, "NANOBOT_HOST: 0.0.0.0 serves the network, so set an API key"),
        ):
            result = subprocess.run(
                [sys.executable, "-m", "nanobot", "serve", *argv],
                capture_output=True,
                text=True,
                timeout=30,
                env={**{k: v for k, v in os.environ.items() if not k.startswith("NANOBOT_")}, **env},
            )
            assert result.returncode == 2
            assert result.stderr.startswith(f"nanobot serve: error: {says}"), result.stderr
            assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_version_and_help_grouped_by_topic_with_readable_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from nanobot import __version__
    from nanobot.cli import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"nanobot {__version__}\n"
    assert main(["serve", "--help"]) == 0
    text = capsys.readouterr().out
    topics = ["serving:", "agent:", "relay (the openai agent):", "limits:", "operations:", "scale-out:"]
    at = [text.index(f"\n{topic}\n") for topic in topics]
    assert at == sorted(at)
    squeezed = " ".join(text.split())
    for shown in ("default: 7 days", "default: 120 s", "default: 16 MiB", "default: 8 KiB", "default: off"):
        assert shown in squeezed
    assert (
        "()" not in text
        and "604800" not in text
        and "None" not in text
        and "usage: nanobot serve [OPTIONS]" in text
    )


def test_a_blank_key_in_the_environment_is_refused_for_uvicorn_too() -> None:
    """``asgi/app.py`` reads ``Settings.from_env``: the same checks, naming the variable."""
    with pytest.raises(ConfigError, match=r"^NANOBOT_API_KEY: must not be blank"):
        Settings.from_env({"NANOBOT_API_KEY": " \t"})
    assert Settings.from_env({"NANOBOT_API_KEY": " k "}).api_key == "k"  # compared trimmed
    assert Settings.from_env({"NANOBOT_API_KEY": ""}).api_key is None  # empty is unset


def _open_stream(url: str) -> threading.Thread:
    """A slow stream read on a thread of its own; returns once its response head arrived."""
    slow = {"stream": True, "messages": [{"role": "user", "content": "one two three four five six"}]}
    streaming = threading.Event()

    def client() -> None:
        try:
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=slow, timeout=30) as response:
                streaming.set()
                for _ in response.iter_bytes():
                    pass
        except httpx.HTTPError:
            pass  # the server went away mid-stream: expected

    reader = threading.Thread(target=client, daemon=True)
    reader.start()
    assert streaming.wait(10)
    return reader


def _wait_for_drain(url: str) -> None:
    """Until /health answers 503 (draining); a connection refused or reset by a worker that
    already stopped is tried again."""
    for _ in range(200):
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 503:
                return
        except httpx.TransportError:
            continue
    raise AssertionError("the server never started draining")


@pytest.mark.parametrize("stack", ["aiohttp", "asgi"])
def test_workers_cut_by_a_second_signal_make_the_supervisor_exit_non_zero(stack: str) -> None:
    """``--workers 2``: SIGTERM drains (an open stream keeps a worker busy), SIGINT kills the
    workers and cuts the stream: the supervisor exits 128 + SIGINT, as one process does. With
    nothing open, SIGTERM alone ends it with 0; a second server on its port is refused."""
    with running_redis() as redis:
        workers = ("--stack", stack, "--workers", "2", "--redis-url", redis.url)
        with launched(*workers, "--echo-delay", "2") as (process, url):
            reader = _open_stream(url)
            process.send_signal(signal.SIGTERM)
            _wait_for_drain(url)
            assert process.poll() is None, "the first signal should wait for the open stream"
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 128 + signal.SIGINT
            output = process.communicate(timeout=10)[0]
            assert "SIGINT again, stopping the workers without waiting" in output
            reader.join(10)
        with launched(*workers) as (process, url):
            assert httpx.get(f"{url}/health", timeout=5).status_code == 200
            again = [sys.executable, "-m", "nanobot", "serve", *workers, "--port", str(port_of(url))]
            second = subprocess.run(again, capture_output=True, text=True, timeout=30)
            assert second.returncode == 2  # its sockets would share the port (SO_REUSEPORT) silently
            assert "address already in use" in second.stderr
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"NANOBOT_REQUEST_TIMEOUT": "soon"}, "NANOBOT_REQUEST_TIMEOUT: "),
        (
            {"NANOBOT_AGENT": "openai", "NANOBOT_UPSTREAM_URL": "http://127.0.0.1:1/v1"},
            "NANOBOT_UPSTREAM_MODEL: ",
        ),
    ],
)
def test_plain_uvicorn_reports_a_bad_setting_in_one_line(env: dict[str, str], named: str) -> None:
    """``uvicorn asgi.app:app`` with a bad ``NANOBOT_*`` value: one line naming the variable,
    exit status 2, no traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "uvicorn", "asgi.app:app", "--port", "0"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"asgi.app: error: {named}")
