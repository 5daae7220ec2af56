"""Per-source limits: messages per second and open connections per IP address.

Both are pure: time is an argument (the transports pass the event loop's clock).
"""

from __future__ import annotations

from collections import OrderedDict


class TokenBuckets:
    """One token bucket per key: `rate` tokens a second, holding at most `burst`.

    A key whose bucket has refilled is as good as new, so the least recently used keys are
    forgotten first once `max_keys` are tracked; a flood of distinct keys cannot exhaust
    memory (it can at worst give an evicted key a fresh bucket).
    """

    def __init__(self, rate: float, burst: float, *, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        # key -> (tokens, time of the last refill)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float) -> bool:
        """Spend one token of `key`'s bucket; False when it is empty (drop the message)."""
        tokens, last = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return allowed


class ConnectionCounter:
    """Open connections per key, at most `limit` each."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._counts: dict[str, int] = {}

    def admit(self, key: str) -> bool:
        """Count one more connection for `key`, unless it is at the limit."""
        count = self._counts.get(key, 0)
        if count >= self._limit:
            return False
        self._counts[key] = count + 1
        return True

    def release(self, key: str) -> None:
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
        else:
            self._counts.pop(key, None)

    def count(self, key: str) -> int:
        return self._counts.get(key, 0)
