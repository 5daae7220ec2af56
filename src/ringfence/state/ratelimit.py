"""Counting failures per key in a sliding window (login attempts per account and per address)."""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import ClassVar


class FailureWindow:
    """At most `limit` failures per key within `window_s` seconds; time is an argument.

    Memory is bounded: at most `max_keys` keys are tracked, the least recently touched one
    is forgotten first, so a flood of distinct keys cannot exhaust memory.
    """

    def __init__(self, limit: int, window_s: float, *, max_keys: int = 100_000) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("limit must be >= 1 and window_s > 0")
        self._limit = limit
        self._window_s = window_s
        self._max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self._window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, key: str, now: float) -> float | None:
        """Seconds until `key` may try again, or None if it may try now."""
        times = self._recent(key, now)
        if times is None or len(times) < self._limit:
            return None
        return times[0] + self._window_s - now

    def record_failure(self, key: str, now: float) -> None:
        times = self._recent(key, now)
        if times is None:
            times = self._failures[key] = deque()
        self._failures.move_to_end(key)
        times.append(now)
        if len(times) > self._limit:
            times.popleft()
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)

    def reset(self, key: str) -> None:
        self._failures.pop(key, None)


class AuthFailureGuard:
    """Refuses digest authentication to sources that keep failing it (password guessing).

    Two windows: failures per source address (a scanner trying many users, or enumerating
    them), and failures per user at one source (a guess at one password). Failures from
    other addresses do not lock a user out, so nobody can deny a user service by failing
    in their name. Time is an argument, on any monotonic clock.
    """

    #: The reason phrase of the 403 a blocked source gets.
    REASON: ClassVar[str] = "Too many failed authentications"

    def __init__(self, per_source: int, per_user: int, window_s: float) -> None:
        self._sources = FailureWindow(per_source, window_s)
        self._users = FailureWindow(per_user, window_s)

    def blocked(self, source: str, user: str, now: float) -> bool:
        """Whether `source` may not try to authenticate (as `user`) now."""
        return (
            self._sources.retry_after(source, now) is not None
            or self._users.retry_after(_user_key(source, user), now) is not None
        )

    def failed(self, source: str, user: str | None, now: float) -> None:
        """Count a wrong digest response, or an unknown user (`user` None)."""
        self._sources.record_failure(source, now)
        if user is not None:
            self._users.record_failure(_user_key(source, user), now)

    def succeeded(self, source: str, user: str) -> None:
        """A right response clears that user's count at that source."""
        self._users.reset(_user_key(source, user))


def _user_key(source: str, user: str) -> str:
    return f"{user}\0{source}"
