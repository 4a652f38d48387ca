"""``nanobot serve --workers N``: N processes serving one listening socket, supervised together.

The parent binds the socket, then forks the workers. On Linux, when the socket was made with
``SO_REUSEPORT`` (``nanobot serve`` does so), the parent opens one more listening socket per
worker on the same port and gives each worker its own: the kernel then spreads new connections
evenly among them (by a hash of their addresses), where processes accepting on one shared socket
get them unevenly (one busy worker's event loop, woken first, takes most of a burst). A worker's
socket outlives the worker: connections queued on it wait for its replacement. Elsewhere the
workers share the one socket. Each worker builds its own agent and serves exactly as a single
``nanobot serve`` does (same stacks, limits, drain). The parent only supervises: a worker that
dies is reported and replaced; the first SIGINT/SIGTERM is passed on to every worker, which
drain, and the parent exits once all have; a second one kills them at once, and the parent then
exits with 128 + that signal's number (as a single ``nanobot serve`` does), not 0.

Per-session order across workers needs a shared store: without ``--redis-url`` more than one
worker is refused (``cli.check_workers``). Metrics from every worker are summed through
``PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary folder unless one is set).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType

logger = logging.getLogger("nanobot.workers")

#: A worker that dies within this many seconds of starting is not restarted again at once.
RESTART_BACKOFF = 1.0
#: A worker's exit code when its agent cannot be built (as ``nanobot serve``'s own).
CONFIG_ERROR = 2

Serve = Callable[[socket.socket], int]


def reuse_port_spreads() -> bool:
    """Whether sockets sharing a port (``SO_REUSEPORT``) get an even share of its connections:
    Linux's behaviour; other systems give them all to one socket, or none has the option."""
    return sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


def worker_sockets(sock: socket.socket, count: int) -> list[socket.socket]:
    """``count`` listening sockets for the workers: ``sock`` and, when it shares its port
    (``SO_REUSEPORT`` on Linux), siblings on the same address; else ``sock`` for every worker."""
    if count == 1 or not reuse_port_spreads() or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
        return [sock] * count
    sockets = [sock]
    try:
        for _ in range(count - 1):
            sibling = socket.socket(sock.family, sock.type, sock.proto)
            sockets.append(sibling)
            sibling.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sibling.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sibling.bind(sock.getsockname())
            sibling.listen(LISTEN_BACKLOG)
            sibling.setblocking(False)
    except OSError:
        for sibling in sockets[1:]:
            sibling.close()
        raise
    return sockets


#: The accept queue of each worker's own socket (as ``nanobot serve``'s socket).
LISTEN_BACKLOG = 1024


class Supervisor:
    """Starts ``count`` workers running ``serve(sock)`` and keeps them running until told to stop."""

    def __init__(self, serve: Serve, sock: socket.socket, count: int) -> None:
        self._serve = serve
        self._sockets = worker_sockets(sock, count)
        self._context = multiprocessing.get_context("fork")
        self._workers: dict[int, tuple[BaseProcess, float, int]] = {}  # pid: process, start, slot
        self._stopping = 0  # signals received
        self._forced_by = 0  # the signal that killed the workers, if a second one came
        self._parent = os.getpid()

    def run(self) -> int:
        """Supervise until stopped; 0 when every worker ended cleanly after a signal."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for slot in range(len(self._sockets)):
                self._start(slot)
            return self._watch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for sock in set(self._sockets[1:]) - {self._sockets[0]}:
                sock.close()  # the siblings made here; the caller's own socket is the caller's

    def _start(self, slot: int) -> None:
        worker = self._context.Process(target=self._child, args=(slot,), name="nanobot-worker", daemon=False)
        worker.start()
        assert worker.pid is not None
        self._workers[worker.pid] = (worker, time.monotonic(), slot)
        logger.info("worker %d started", worker.pid)

    def _child(self, slot: int) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)  # the worker's own loop installs its handlers
        _die_with_parent(self._parent)
        own = self._sockets[slot]
        for sock in self._sockets:
            if sock is not own:
                sock.close()  # only the parent's copy keeps them open
        os._exit(self._serve(own))

    def _watch(self) -> int:
        """Reap workers; replace the ones that die unasked; return when all have stopped: 0 when
        each ended cleanly, 128 + the signal when a second one killed workers (and the turns
        they still served), else a worker's own non-zero exit code."""
        status = 0
        while self._workers:
            try:
                pid, raw = os.waitpid(-1, 0)
            except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
                continue
            except ChildProcessError:
                break
            entry = self._workers.pop(pid, None)
            if entry is None:
                continue
            code = os.waitstatus_to_exitcode(raw)
            _forget(pid)
            _, started, slot = entry
            if self._stopping:
                killed = code < 0 and self._forced_by  # by the second signal: its open turns cut
                status = 128 + self._forced_by if killed else status or max(code, 0)
                if len(set(self._sockets)) > 1:
                    self._sockets[slot].close()  # no connection waits there for a worker now
                continue
            if code == CONFIG_ERROR:  # the agent cannot be built: another worker would not do better
                logger.error("worker %d could not start; stopping", pid)
                self._on_signal(signal.SIGTERM, None)
                status = CONFIG_ERROR
                continue
            logger.error("worker %d died (exit code %d); starting another", pid, code)
            if time.monotonic() - started < RESTART_BACKOFF:
                time.sleep(RESTART_BACKOFF)  # a worker that dies at once must not spin the CPU
            self._start(slot)  # its socket, and the connections queued on it
        return status

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping += 1
        forced = self._stopping > 1
        if forced and self._workers:
            self._forced_by = signum
            name = signal.Signals(signum).name
            print(f"nanobot: {name} again, stopping the workers without waiting", file=sys.stderr, flush=True)
        for pid in list(self._workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL if forced else signal.SIGTERM)


#: Linux ``prctl`` option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """A worker whose supervisor is killed (even by SIGKILL) gets SIGTERM and drains, rather
    than serving on as an orphan nobody stops. Linux only; elsewhere the supervisor's own
    signal handling is all there is."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def metrics_dir() -> str | None:
    """A fresh ``PROMETHEUS_MULTIPROC_DIR`` for the workers, unless the user gave one; must run
    before ``nanobot.api.metrics`` is imported (prometheus-client reads it then). The caller
    removes the folder it returns when done."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    folder = tempfile.mkdtemp(prefix="nanobot-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    return folder


def remove_metrics_dir(folder: str | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def _forget(pid: int) -> None:
    """A dead worker's live gauges (streams open) no longer count."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
