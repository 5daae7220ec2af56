from __future__ import annotations

import pytest

from ringfence.state.ratelimit import FailureWindow


def test_limit_then_window_slides() -> None:
    window = FailureWindow(limit=3, window_s=60)
    for t in (0.0, 10.0, 20.0):
        assert window.retry_after("k", t) is None
        window.record_failure("k", t)
    assert window.retry_after("k", 30.0) == pytest.approx(30.0)
    assert window.retry_after("other", 30.0) is None
    assert window.retry_after("k", 60.0) is None  # the first failure has left the window


def test_reset_forgets() -> None:
    window = FailureWindow(limit=1, window_s=60)
    window.record_failure("k", 0.0)
    assert window.retry_after("k", 1.0) is not None
    window.reset("k")
    assert window.retry_after("k", 1.0) is None


def test_memory_is_bounded() -> None:
    window = FailureWindow(limit=1, window_s=60, max_keys=10)
    for n in range(100):
        window.record_failure(f"k{n}", 0.0)
    assert window.retry_after("k0", 1.0) is None  # forgotten: oldest first
    assert window.retry_after("k99", 1.0) is not None


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="limit"):
        FailureWindow(limit=0, window_s=1)
