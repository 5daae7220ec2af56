from __future__ import annotations

import pytest

from ringfence.transport.limits import ConnectionCounter, TokenBuckets


def test_bucket_allows_a_burst_then_the_rate() -> None:
    buckets = TokenBuckets(rate=10, burst=20)

    assert sum(buckets.take("a", 0.0) for _ in range(30)) == 20
    assert not buckets.take("a", 0.05)  # half a token back
    assert buckets.take("a", 0.1)
    assert sum(buckets.take("a", 10.0) for _ in range(30)) == 20  # refilled, never above burst


def test_buckets_are_per_key() -> None:
    buckets = TokenBuckets(rate=1, burst=1)

    assert buckets.take("a", 0.0)
    assert not buckets.take("a", 0.0)
    assert buckets.take("b", 0.0)


def test_least_recent_keys_are_forgotten() -> None:
    buckets = TokenBuckets(rate=1, burst=1, max_keys=2)
    buckets.take("a", 0.0)
    buckets.take("b", 0.0)
    buckets.take("c", 0.0)

    assert buckets.take("a", 0.0)  # forgotten, so full again
    assert not buckets.take("c", 0.0)


def test_bucket_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBuckets(rate=0, burst=1)


def test_connection_counter() -> None:
    counter = ConnectionCounter(limit=2)

    assert counter.admit("a")
    assert counter.admit("a")
    assert not counter.admit("a")
    assert counter.admit("b")
    counter.release("a")
    assert counter.count("a") == 1
    assert counter.admit("a")
    for _ in range(3):
        counter.release("a")
    assert counter.count("a") == 0
