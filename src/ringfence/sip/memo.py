"""Memoised parsing of header values.

A proxy reads the same few values many times per message (From, To, Via, CSeq: validation,
loop detection, transaction matching, the registrar), and the same values recur across the
retransmissions and the requests of one dialog. The parsed forms are frozen values, so a
parse of a given string can be shared. Only short values are kept, so a peer cannot fill
the cache with large strings; failures are not cached (they raise every time).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: Values longer than this are parsed every time.
MAX_CACHED_LENGTH = 512


def memoized(maxsize: int) -> Callable[[Callable[[str], T]], Callable[[str], T]]:
    """Decorate a pure `str -> frozen value` parser with a bounded LRU cache."""

    def decorate(parse: Callable[[str], T]) -> Callable[[str], T]:
        cached = functools.lru_cache(maxsize=maxsize)(parse)

        @functools.wraps(parse)
        def parse_memoized(text: str) -> T:
            if len(text) > MAX_CACHED_LENGTH:
                return parse(text)
            return cached(text)

        return parse_memoized

    return decorate
