"""The garbage collector's settings for a serving process (``nanobot serve``, ``asgi.app``).

CPython's cyclic collector examines the young generation after every 700 net allocations of
container objects, and every tenth of those the middle one too. A server with hundreds of open
streams allocates that fast, and whatever its streams hold at that moment survives into the
middle generation, so the collector keeps walking it: on uvicorn, W2 (256 streams of 64 tokens)
saw 39-46 middle-generation collections per run of up to 14-23 ms each, and every one of those
pauses delays the next token of every open stream. :func:`settle` makes them rare: it collects
once, freezes what survives (the modules, the app, the agent: objects a running server never
frees, so no collection walks them again) and lets 10,000 allocations pass between young
collections (4 middle-generation collections in the same run, 26 ms in all). Only cyclic
garbage waits longer; everything else is freed by reference counting, as before.

The settings are the whole process's, so the app factories leave them alone: the process's
owner calls :func:`settle` once the app is built.
"""

from __future__ import annotations

import gc

#: Allocations of container objects between two young-generation collections (CPython: 700).
YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Collect, freeze the survivors, and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)  # a higher setting is kept
