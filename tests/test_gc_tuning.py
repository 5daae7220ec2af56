"""The collector set-up `ringfence serve` applies once started."""

from __future__ import annotations

import gc

from ringfence.runtime import GC_FULL_THRESHOLD, GC_YOUNG_THRESHOLD, tune_gc


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
