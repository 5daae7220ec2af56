"""Envelope encryption throughput: what sealing every personal field costs."""

from __future__ import annotations

import os
import time

from ringfence.crypto import KeyEncryptionKey, SubjectCipher


def rate(label: str, n: int, fn: object) -> None:
    assert callable(fn)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    elapsed = time.perf_counter() - start
    print(f"{label:<36} {n / elapsed:>12,.0f} /s   {elapsed / n * 1e6:8.2f} µs each")


def main() -> None:
    cipher = SubjectCipher("account:bench", os.urandom(32))
    kek = KeyEncryptionKey(os.urandom(32))
    value = b"Alice Liddell <+41445551234>"
    sealed = cipher.seal("account.display_name", value)
    wrapped = kek.wrap("account:bench", os.urandom(32))
    print("ringfence keyring (AES-256-GCM, one core)")
    rate("seal 28-byte field", 200_000, lambda: cipher.seal("account.display_name", value))
    rate("open 28-byte field", 200_000, lambda: cipher.open("account.display_name", sealed))
    rate("unwrap data key", 200_000, lambda: kek.unwrap("account:bench", wrapped))
    big = os.urandom(1 << 20)
    rate("seal 1 MiB", 200, lambda: cipher.seal("blob", big))


if __name__ == "__main__":
    main()
