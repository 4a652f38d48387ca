"""Drain before the host server stops, when it is a server we do not drive (``uvicorn asgi.app:app``).

uvicorn handles SIGINT/SIGTERM itself: it closes its sockets and then waits, without limit by
default, for open streams to end on their own. :func:`drain_on_signals` wraps the handlers it
installed: the first signal drains the service (see :meth:`ChatService.drain`) and only then
hands the signal on, so uvicorn finds every stream finished; a second signal stops all turns at
once (each still ends with its error event) and hands the signal on straight away.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Drainable(Protocol):
    async def drain(self, timeout: float | None = None) -> None: ...

    def stop_now(self) -> None: ...


def drain_on_signals(service: Drainable) -> Callable[[], None]:
    """Chain a drain in front of the running server's signal handlers; returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return _nothing
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    if not all(callable(handler) and not _is_asyncio_noop(handler) for handler in previous.values()):
        return _nothing  # no Python handlers (or the loop's own, whose owner drains itself)
    loop = asyncio.get_running_loop()
    draining: list[asyncio.Task[None]] = []  # keeps the drain task referenced
    signalled: list[int] = []

    def pass_on(sig: int, frame: FrameType | None) -> None:
        handler: Any = previous[signal.Signals(sig)]
        handler(sig, frame)

    def start(sig: int) -> None:
        task = loop.create_task(service.drain())
        task.add_done_callback(lambda _: pass_on(sig, None))
        draining.append(task)

    def handler(sig: int, frame: FrameType | None) -> None:
        first = not signalled  # decided before anything else: a signal may interrupt this one
        signalled.append(sig)
        if first:
            loop.call_soon_threadsafe(start, sig)
        else:  # the second signal: no more waiting
            loop.call_soon_threadsafe(service.stop_now)
            pass_on(sig, frame)

    for sig in SIGNALS:
        signal.signal(sig, handler)

    def undo() -> None:
        for sig, old in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, old)

    return undo


def _is_asyncio_noop(handler: object) -> bool:
    """asyncio's placeholder for ``loop.add_signal_handler`` (``nanobot serve``, hypercorn)."""
    return getattr(handler, "__name__", "") == "_sighandler_noop"


def _nothing() -> None:
    """Nothing to undo."""
