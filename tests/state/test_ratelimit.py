from __future__ import annotations

import pytest

from ringfence.state.ratelimit import AuthFailureGuard, FailureWindow


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


def test_auth_guard_counts_per_address_and_per_user_at_an_address() -> None:
    guard = AuthFailureGuard(per_source=4, per_user=2, window_s=60)
    guard.failed("198.51.100.1", "alice", 0)
    guard.failed("198.51.100.1", "alice", 1)
    assert guard.blocked("198.51.100.1", "alice", 2)
    assert not guard.blocked("198.51.100.1", "bob", 2)  # the address has 2 of 4 left
    assert not guard.blocked("203.0.113.7", "alice", 2)  # no lock-out from elsewhere
    guard.failed("198.51.100.1", None, 3)  # unknown users count for the address only
    guard.failed("198.51.100.1", "bob", 4)
    assert guard.blocked("198.51.100.1", "carol", 5)
    assert not guard.blocked("198.51.100.1", "carol", 62)  # the window has passed


def test_auth_guard_success_clears_the_user_count() -> None:
    guard = AuthFailureGuard(per_source=10, per_user=2, window_s=60)
    guard.failed("198.51.100.1", "alice", 0)
    guard.succeeded("198.51.100.1", "alice")
    guard.failed("198.51.100.1", "alice", 1)
    assert not guard.blocked("198.51.100.1", "alice", 2)
