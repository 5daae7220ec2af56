"""Envelopes: known answers, round trips, and every way a ciphertext can be misused."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, strategies as st

from ringfence.crypto import SubjectCipher, TamperedError, UnsupportedVersionError

KEY = bytes(range(32))
NONCE = bytes(range(12))
# Known answer, frozen when format version 1 was defined (crypto/envelope.py): version 0x01,
# the nonce, then AES-256-GCM of "Alice" under KEY and NONCE with the associated data
# "ringfence:v1:account:1", NUL, "account.display_name".
KAT = bytes.fromhex("01000102030405060708090a0b066ebf78a0a176e269cf66474555c1197f39161091")


def test_known_answer() -> None:
    cipher = SubjectCipher("account:1", KEY)
    assert cipher.seal("account.display_name", b"Alice", nonce=NONCE) == KAT
    assert cipher.open("account.display_name", KAT) == b"Alice"


def test_layout_matches_the_documented_format() -> None:
    # Decrypt with the primitive directly, following only the docstring's layout.
    aad = b"ringfence:v1:account:1\x00account.display_name"
    assert KAT[0] == 1
    assert AESGCM(KEY).decrypt(KAT[1:13], KAT[13:], aad) == b"Alice"


@given(st.binary(max_size=2048), st.text(min_size=1, max_size=40))
def test_round_trip(plaintext: bytes, context: str) -> None:
    cipher = SubjectCipher("account:x", KEY)
    sealed = cipher.seal(context, plaintext)
    assert cipher.open(context, sealed) == plaintext
    # A plaintext of 8+ bytes appearing in the output by chance: probability ~2^-60.
    assert len(plaintext) < 8 or plaintext not in sealed


def test_nonces_are_fresh() -> None:
    cipher = SubjectCipher("account:1", KEY)
    assert cipher.seal("c", b"same") != cipher.seal("c", b"same")


@pytest.mark.parametrize("position", [0, 1, 12, 13, len(KAT) - 1])
def test_any_flipped_bit_is_detected(position: int) -> None:
    cipher = SubjectCipher("account:1", KEY)
    tampered = bytearray(KAT)
    tampered[position] ^= 0x01
    with pytest.raises((TamperedError, UnsupportedVersionError)):
        cipher.open("account.display_name", bytes(tampered))


def test_truncation_is_detected() -> None:
    cipher = SubjectCipher("account:1", KEY)
    for cut in (0, 1, 13, 28, len(KAT) - 1):
        with pytest.raises(TamperedError):
            cipher.open("account.display_name", KAT[:cut])


def test_envelope_moved_to_another_field_does_not_open() -> None:
    cipher = SubjectCipher("account:1", KEY)
    with pytest.raises(TamperedError):
        cipher.open("account.e164", KAT)


def test_envelope_moved_to_another_subject_does_not_open() -> None:
    # Same key material on purpose: only the subject binding differs.
    with pytest.raises(TamperedError):
        SubjectCipher("account:2", KEY).open("account.display_name", KAT)


def test_unknown_version_is_reported() -> None:
    with pytest.raises(UnsupportedVersionError):
        SubjectCipher("account:1", KEY).open("account.display_name", b"\x02" + KAT[1:])


def test_bad_key_and_nonce_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SubjectCipher("s", b"short")
    with pytest.raises(ValueError, match="12 bytes"):
        SubjectCipher("s", KEY).seal("c", b"x", nonce=b"123")
