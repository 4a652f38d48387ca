"""A real ``redis-server`` for tests: a free loopback port, a temp folder, no persistence.

``redis_server`` (a fixture) yields a :class:`RedisServer`, stopped by PID afterwards; its
:meth:`~RedisServer.stop`, :meth:`~RedisServer.start`, :meth:`~RedisServer.pause` and
:meth:`~RedisServer.resume` make "Redis is down / hung / back" for tests. Each start is a fresh,
empty Redis on the same port (``--save "" --appendonly no``), as a restart without persistence.

:func:`broken_redis` is a listener that is no Redis at all: it accepts connections and never
answers (``"silent"``, a hung host) or closes each at once (``"closing"``, a socket-level fault).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

#: Seconds a redis-server may take to answer PING after it started.
START_PATIENCE = 10.0


def redis_server_binary() -> str:
    """The system ``redis-server``, or a failure that says how to install it."""
    found = shutil.which("redis-server")
    if found is None:
        pytest.fail(
            "These tests need a real redis-server on PATH: apt-get install -y redis-server "
            "(.ci/run installs it when missing).",
            pytrace=False,
        )
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port``; restartable on the same port."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary = binary
        self.folder = folder
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.folder / "redis.log"

    def start(self) -> None:
        """Start a fresh, empty server and wait until it answers PING."""
        assert self.process is None, "already running"
        self.starts += 1
        self.process = subprocess.Popen(
            [
                self.binary,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.folder)),
                *("--daemonize", "no", "--loglevel", "warning", "--logfile", str(self.log)),
                *("--maxmemory-policy", "noeviction"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_PATIENCE
        while not _pings(self.port):
            if self.process.poll() is not None:
                self.process = None
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                raise RuntimeError(f"redis-server exited at start on port {self.port}:\n{log}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING within {START_PATIENCE:g} s")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop the server (SIGKILL: gone at once, as a crash or a dead host), by PID."""
        process, self.process = self.process, None
        if process is None:
            return
        if self.paused:
            self.resume_process(process)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start again on the same port: an empty Redis, as after a crash."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections open, nothing answers, as a hung host."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.resume_process(self.process)

    def resume_process(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGCONT)
        self.paused = False


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A started :class:`RedisServer` in a temp folder; stopped (by PID) on exit."""
    binary = redis_server_binary()
    with tempfile.TemporaryDirectory(prefix="nanobot-redis-") as folder:
        server = RedisServer(binary, Path(folder))
        for attempt in range(3):  # the free port may be taken between our probe and the bind
            try:
                server.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                server.port = _free_port()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@asynccontextmanager
async def broken_redis(kind: str) -> AsyncIterator[str]:
    """A loopback listener that takes connections as Redis would, then never answers
    (``"silent"``) or closes them at once (``"closing"``); yields its ``redis://`` URL."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if kind == "closing":
            writer.close()
        else:
            held.append(writer)  # open, read by nobody, answered never

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()
