"""daemon/heap.py: the collector set for a server still reclaims garbage cycles by itself."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from daemon import heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def settled() -> Iterator[None]:
    before = gc.get_threshold()
    heap.settle()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_what_existed_at_settling_is_kept_out_of_every_pass(settled: None) -> None:
    assert gc.get_freeze_count() > 0


def test_cycles_made_afterwards_are_still_collected_without_an_explicit_collect(
        settled: None) -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    keep = [[] for _ in range(heap.YOUNG_THRESHOLD + 1000)]  # enough allocations for a pass
    assert gone() is None
    assert len(keep) > heap.YOUNG_THRESHOLD
