"""The collector set-up `ringfence serve` applies once started."""

from __future__ import annotations

import gc
import weakref

from ringfence.runtime import (
    FULL_GC_ROUNDS,
    GC_FULL_THRESHOLD,
    GC_YOUNG_THRESHOLD,
    GENERATIONS,
    tune_gc,
)


def test_start_up_objects_are_frozen_and_collections_rarer() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        young, middle, full = gc.get_threshold()
        assert (young, full) == (GC_YOUNG_THRESHOLD, GC_FULL_THRESHOLD)
        assert middle == before[1]
        assert gc.get_freeze_count() > 0
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_what_outlives_a_second_is_frozen_and_cycles_reclaimed_at_the_full_round() -> None:
    try:
        gc.unfreeze()
        # A reference cycle that becomes garbage after it was frozen (a transaction that
        # kept a cycle, say): no young collection can see it any more.
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        GENERATIONS.tend(1)
        frozen = gc.get_freeze_count()
        assert frozen > 0
        del a, b
        gc.collect(1)
        assert alive() is not None  # frozen: out of the young collections' reach
        # Objects made since the last round join the frozen ones at the next.
        made = [[i] for i in range(1000)]
        GENERATIONS.tend(2)
        assert gc.get_freeze_count() >= frozen + len(made)
        # The full round unfreezes, collects everything, and freezes again.
        GENERATIONS.tend(FULL_GC_ROUNDS)
        assert alive() is None
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
