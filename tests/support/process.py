"""Run ``nanobot serve`` as a child process on a free loopback port, stopped by PID afterwards."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_URL = re.compile(r"at (http://\S+)/v1")


@contextmanager
def running_server(*args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Start ``python -m nanobot serve --port 0 ARGS``; yield its base URL once it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "nanobot", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # the banner: printed once the socket listens
        match = _URL.search(first)
        assert match, f"no URL in the server's first line: {first!r}"
        yield match.group(1)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
