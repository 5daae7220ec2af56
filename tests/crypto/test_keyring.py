"""The keyring: wrapping, destruction (erasure), key files."""

from __future__ import annotations

import base64
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from ringfence.crypto import (
    KeyDestroyedError,
    KeyEncryptionKey,
    KeyMismatchError,
    Keyring,
    TamperedError,
    UnsupportedVersionError,
)

KEK = bytes(range(32, 64))
DATA_KEY = bytes(range(32))
NONCE = bytes(range(12))
# Known answer, frozen with format version 1 (crypto/keyring.py): version 0x01, the first
# 8 bytes of SHA-256 over KEK, the nonce, then AES-256-GCM of DATA_KEY under KEK and NONCE with
# the associated data "ringfence:dek:v1:account:1".
WRAPPED_KAT = bytes.fromhex(
    "0172dbb7336c767800000102030405060708090a0b5c535fa44e30edebb4f0c3cd2a7e50330361fb777e"
    "04b0063c14c9a1a79cd58753643eb9ee0acef88e5499684a30f7df"
)


class MemoryKeyStore:
    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}

    async def get_wrapped_key(self, subject: str) -> bytes | None:
        return self.keys.get(subject)

    async def get_wrapped_keys(self, subjects: Sequence[str]) -> dict[str, bytes]:
        return {s: self.keys[s] for s in subjects if s in self.keys}

    async def put_wrapped_key(self, subject: str, wrapped: bytes) -> None:
        self.keys[subject] = wrapped

    async def put_wrapped_keys(self, wrapped: Mapping[str, bytes]) -> None:
        self.keys.update(wrapped)

    async def delete_wrapped_key(self, subject: str) -> bool:
        return self.keys.pop(subject, None) is not None


def test_wrap_known_answer() -> None:
    kek = KeyEncryptionKey(KEK)
    assert kek.wrap("account:1", DATA_KEY, nonce=NONCE) == WRAPPED_KAT
    assert kek.unwrap("account:1", WRAPPED_KAT) == DATA_KEY


def test_wrapped_key_tampering_is_detected() -> None:
    kek = KeyEncryptionKey(KEK)
    for position in (9, 21, 40, len(WRAPPED_KAT) - 1):
        tampered = bytearray(WRAPPED_KAT)
        tampered[position] ^= 0x80
        with pytest.raises(TamperedError):
            kek.unwrap("account:1", bytes(tampered))
    with pytest.raises(TamperedError):
        kek.unwrap("account:2", WRAPPED_KAT)
    with pytest.raises(TamperedError):
        kek.unwrap("account:1", WRAPPED_KAT[:-1])
    with pytest.raises(UnsupportedVersionError):
        kek.unwrap("account:1", b"\x07" + WRAPPED_KAT[1:])


def test_wrapped_under_another_kek_is_named_as_such() -> None:
    with pytest.raises(KeyMismatchError):
        KeyEncryptionKey(bytes(32)).unwrap("account:1", WRAPPED_KAT)


@pytest.mark.promise("P16")
@pytest.mark.promise("P19")
async def test_destroy_makes_only_that_subject_unreadable() -> None:
    store = MemoryKeyStore()
    keyring = Keyring(KeyEncryptionKey(KEK), store)
    alice = await keyring.create("account:alice")
    bob = await keyring.create("account:bob")
    alice_sealed = alice.seal_text("account.display_name", "Alice")
    bob_sealed = bob.seal_text("account.display_name", "Bob")

    assert await keyring.destroy("account:alice") is True
    assert await keyring.destroy("account:alice") is False

    with pytest.raises(KeyDestroyedError):
        await keyring.cipher("account:alice")
    bob_again = await keyring.cipher("account:bob")
    assert bob_again.open_text("account.display_name", bob_sealed) == "Bob"
    # Alice's ciphertext opens only with a key that no longer exists anywhere live.
    assert "account:alice" not in store.keys
    with pytest.raises(TamperedError):
        bob_again.open("account.display_name", alice_sealed)


async def test_cipher_opens_what_create_sealed() -> None:
    keyring = Keyring(KeyEncryptionKey(KEK), MemoryKeyStore())
    sealed = (await keyring.create("s")).seal_text("c", "value")
    assert (await keyring.cipher("s")).open_text("c", sealed) == "value"


def test_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "kek.key"
    first = KeyEncryptionKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(base64.b64decode(path.read_text())) == 32
    assert KeyEncryptionKey.load_or_create(path).id == first.id


def test_bad_kek_text_is_refused() -> None:
    with pytest.raises(ValueError, match="base64"):
        KeyEncryptionKey.from_base64("not base64!!")
    with pytest.raises(ValueError, match="32 bytes"):
        KeyEncryptionKey.from_base64(base64.b64encode(b"short").decode())


def test_repr_shows_no_key_material() -> None:
    assert KEK.hex() not in repr(KeyEncryptionKey(KEK))


def test_derived_secrets_are_per_purpose_and_stable() -> None:
    kek = KeyEncryptionKey(KEK)
    assert kek.derive("sip-nonce") == KeyEncryptionKey(KEK).derive("sip-nonce")
    assert kek.derive("sip-nonce") != kek.derive("flow-token")
    assert kek.derive("sip-nonce") != KeyEncryptionKey(bytes(32)).derive("sip-nonce")
    assert len(kek.derive("x")) == 32
