"""Child processes: start a server or the load client pinned to a core, and always stop them.

Children start in their own session, so a Ctrl-C in the terminal reaches only the harness, which
then stops every child it started, by PID (its descendants too: granian has workers).
"""

from __future__ import annotations

import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

STOP_WAIT = 5.0
NOFILE = 65536


def prepare_process(cpu: int | None) -> None:
    """Pin this process to ``cpu`` (where the OS allows) and allow enough open sockets."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        with suppress(OSError):
            os.sched_setaffinity(0, {cpu})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = NOFILE if hard == resource.RLIM_INFINITY else min(hard, NOFILE)
    if soft < wanted:
        with suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def cores() -> tuple[int | None, int | None]:
    """The server's core and the load's core: the first two this process may use, if two."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0], allowed[1]) if len(allowed) >= 2 else (None, None)


def spawn(
    module: str, *args: str, stdin: bool = False, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``python -m module args`` in its own session, stdout piped; ``env`` adds to the environment."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=None,
        start_new_session=True,
        env={**os.environ, **env} if env else None,
    )


def read_line(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The child's next stdout line, waiting at most ``timeout`` seconds; ``b""`` at its end."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], max(0.0, timeout))
    if not ready:
        raise TimeoutError(f"no output from pid {process.pid} within {timeout:g} s")
    return process.stdout.readline()


def wait_listening(process: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    """Connect until the port answers (bounded in time); fail early if the child died."""
    deadline = time.monotonic() + timeout
    for _ in range(10_000):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                break
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.05)  # waits on the child, not a blind sleep
    raise TimeoutError(f"port {port} did not answer within {timeout:g} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process`` and its descendants by PID; kill what outlives the grace period."""
    descendants = _descendants(process.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is None:
            process.send_signal(sig)
        for child in descendants:
            with suppress(Exception):  # gone already (psutil refuses a reused PID)
                child.send_signal(sig)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_WAIT)
        if process.poll() is not None and not any(_alive(child) for child in descendants):
            break
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """Stop every process at once: each gets SIGTERM before any is waited on, so their graceful
    shutdowns overlap (one after another, they took seconds); then :func:`stop` each, which
    kills what outlived its grace period."""
    for process in processes:
        if process.poll() is None:
            for child in _descendants(process.pid):
                with suppress(Exception):
                    child.send_signal(signal.SIGTERM)
            process.send_signal(signal.SIGTERM)
    for process in processes:
        stop(process)


def _descendants(pid: int) -> list[Any]:
    """The child's descendants as psutil processes (empty without psutil)."""
    try:
        import psutil
    except ImportError:
        return []
    with suppress(psutil.Error):
        return list(psutil.Process(pid).children(recursive=True))
    return []


def _alive(child: Any) -> bool:
    with suppress(Exception):
        return bool(child.is_running()) and child.status() != "zombie"
    return False


@contextmanager
def running(
    module: str, *args: str, stdin: bool = False, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process that is stopped on the way out, whatever happened."""
    process = spawn(module, *args, stdin=stdin, env=env)
    try:
        yield process
    finally:
        stop(process)
