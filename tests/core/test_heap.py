"""``nanobot.heap.settle``: the collector's settings for a serving process."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from nanobot import heap


@pytest.fixture
def restored() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restored")
def test_settle_freezes_the_survivors_and_raises_the_young_threshold() -> None:
    gc.set_threshold(700, 10, 10)
    heap.settle()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, 10, 10)


@pytest.mark.usefixtures("restored")
def test_settle_keeps_a_higher_threshold_set_by_the_process_owner() -> None:
    gc.set_threshold(200_000, 20, 30)
    heap.settle()
    assert gc.get_threshold() == (200_000, 20, 30)
