"""The pooled CSPRNG behind tags, nonce salts and flow ids."""

from __future__ import annotations

import os

from ringfence.sip.randomness import random_bytes, random_hex


def test_values_are_fresh_across_pool_refills() -> None:
    # 3,000 draws of 8 bytes cross several 4 KiB refills; none may repeat.
    drawn = [random_bytes(8) for _ in range(3000)]
    assert all(len(value) == 8 for value in drawn)
    assert len(set(drawn)) == len(drawn)
    assert len(random_bytes(10_000)) == 10_000  # larger than the pool: read directly


def test_hex_is_twice_the_bytes() -> None:
    value = random_hex(16)
    assert len(value) == 32
    assert int(value, 16) >= 0


def test_a_forked_child_does_not_repeat_the_parents_bytes() -> None:
    random_bytes(8)  # the pool holds unread bytes now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, random_bytes(64))
        os._exit(0)
    os.close(write)
    child = os.read(read, 64)
    os.close(read)
    os.waitpid(pid, 0)
    parent = random_bytes(64)
    assert len(child) == 64
    assert child != parent
