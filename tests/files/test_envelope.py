"""The attachment envelope: layout, round trips, every misuse, and the keyless validator."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
from collections.abc import Iterable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings, strategies as st

from ringfence.files import envelope
from ringfence.files.envelope import (
    DEFAULT_CHUNK_EXP,
    HEADER_BYTES,
    KEY_BYTES,
    MAGIC,
    TAG_BYTES,
    Decryptor,
    Encryptor,
    EnvelopeError,
    FormatError,
    HashMismatchError,
    Header,
    TamperedError,
    TooLargeError,
    TruncatedError,
    Validator,
    decrypt,
    encrypt,
    encrypted_size,
    plausible_size,
)

EXP = 12  # 4 KiB chunks keep the tests fast; the default size gets its own round trip.
CS = 1 << EXP
CT = CS + TAG_BYTES  # bytes of a full chunk in the envelope
SIZES = [0, 1, CS - 1, CS, CS + 1, 3 * CS]


def seeded(seed: int) -> random.Random:
    """Deterministic randomness for split points and test data, never for keys."""
    return random.Random(seed)  # noqa: S311


def random_split(data: bytes, rng: random.Random, pieces: int = 6) -> list[bytes]:
    """`data` cut at random points, empty pieces included."""
    cuts = sorted(rng.randint(0, len(data)) for _ in range(pieces - 1))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def encrypt_split(
    plaintext: bytes, rng: random.Random, chunk_exp: int = EXP
) -> tuple[Encryptor, bytes]:
    encryptor = Encryptor(chunk_exp=chunk_exp)
    out = [encryptor.header]
    out += [encryptor.update(piece) for piece in random_split(plaintext, rng)]
    out.append(encryptor.finalize())
    return encryptor, b"".join(out)


def decrypt_split(data: bytes, key: bytes, rng: random.Random, sha: bytes | None = None) -> bytes:
    decryptor = Decryptor(key)
    out = [decryptor.update(piece) for piece in random_split(data, rng)]
    out.append(decryptor.finalize(sha))
    return b"".join(out)


def chunks_of(env: bytes) -> list[bytes]:
    """The chunks of an envelope, following the documented layout."""
    size = Header.parse(env).chunk_size + TAG_BYTES
    body = env[HEADER_BYTES:]
    return [body[i : i + size] for i in range(0, len(body), size)]


def seal_by_hand(key: bytes, header: bytes, plaintexts: list[bytes]) -> bytes:
    """An envelope built from the module docstring alone, with the raw AEAD."""
    aead = AESGCM(key)
    prefix = header[8:16]
    out = [header]
    for i, chunk in enumerate(plaintexts):
        final = b"\x01" if i == len(plaintexts) - 1 else b"\x00"
        out.append(aead.encrypt(prefix + i.to_bytes(3, "big") + final, chunk, header))
    return b"".join(out)


def open_all(env: bytes, key: bytes, sha: bytes | None = None) -> bytes:
    decryptor = Decryptor(key)
    return decryptor.update(env) + decryptor.finalize(sha)


# --- layout and confidentiality (promise P9) ------------------------------------------------


@pytest.mark.promise("P9")
def test_layout_matches_the_documented_format() -> None:
    plaintext = os.urandom(2 * CS + 100)
    env, key, sha = encrypt(plaintext, chunk_exp=EXP)
    header = env[:HEADER_BYTES]
    assert header[:4] == b"RFE\x01" == MAGIC
    assert header[4] == EXP
    assert header[5:8] == b"\x00\x00\x00"
    aead = AESGCM(key)
    prefix = header[8:16]
    chunks = chunks_of(env)
    assert [len(c) for c in chunks] == [CT, CT, 100 + TAG_BYTES]
    opened = [
        aead.decrypt(prefix + i.to_bytes(3, "big") + bytes([i == 2]), chunk, header)
        for i, chunk in enumerate(chunks)
    ]
    assert b"".join(opened) == plaintext
    assert sha == hashlib.sha256(plaintext).digest()


@pytest.mark.promise("P9")
def test_the_envelope_does_not_reveal_the_plaintext() -> None:
    # 200 KiB of a pattern whose period divides the chunk size: every plaintext chunk is the
    # same, so any deterministic or per-block encryption would show repeats.
    pattern = b"Meet me at the station at 9. "[:16] * 4
    plaintext = pattern * (200 * 1024 // len(pattern))
    env, _, _ = encrypt(plaintext, chunk_exp=EXP)
    assert pattern[:16] not in env
    chunks = chunks_of(env)
    assert len(set(chunks)) == len(chunks)
    blocks = [env[i : i + 16] for i in range(HEADER_BYTES, len(env) - 15, 16)]
    assert len(set(blocks)) == len(blocks)


@pytest.mark.promise("P9")
def test_every_file_gets_a_fresh_key_and_nonce_prefix() -> None:
    first, key1, sha1 = encrypt(b"same file")
    second, key2, sha2 = encrypt(b"same file")
    assert len(key1) == KEY_BYTES
    assert key1 != key2
    assert first[8:16] != second[8:16]
    assert first[HEADER_BYTES:] != second[HEADER_BYTES:]
    assert sha1 == sha2 == hashlib.sha256(b"same file").digest()


@pytest.mark.promise("P9")
def test_the_wrong_key_cannot_decrypt() -> None:
    env, _, _ = encrypt(b"private photo" * 1000, chunk_exp=EXP)
    with pytest.raises(TamperedError, match="key"):
        open_all(env, os.urandom(KEY_BYTES))


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_with_random_split_points(size: int) -> None:
    rng = seeded(size)
    plaintext = rng.randbytes(size)
    for _ in range(5):
        encryptor, env = encrypt_split(plaintext, rng)
        assert len(env) == encrypted_size(size, EXP)
        assert encryptor.sha256 == hashlib.sha256(plaintext).digest()
        assert decrypt_split(env, encryptor.key, rng, encryptor.sha256) == plaintext


def test_an_empty_file_is_one_empty_final_chunk() -> None:
    env, key, sha = encrypt(b"", chunk_exp=EXP)
    assert len(env) == HEADER_BYTES + TAG_BYTES
    assert decrypt(env, key, sha) == b""


def test_round_trip_at_the_default_chunk_size() -> None:
    plaintext = os.urandom(3 * (1 << DEFAULT_CHUNK_EXP) + 7)
    env, key, sha = encrypt(plaintext)
    assert env[4] == DEFAULT_CHUNK_EXP
    assert decrypt(env, key, sha) == plaintext


@settings(max_examples=60, deadline=None)
@given(
    plaintext=st.binary(max_size=3 * CS + 50),
    seed=st.integers(0, 2**32),
    exp=st.sampled_from([12, 13]),
)
def test_round_trip_property(plaintext: bytes, seed: int, exp: int) -> None:
    rng = seeded(seed)
    encryptor, env = encrypt_split(plaintext, rng, exp)
    assert len(env) == encrypted_size(len(plaintext), exp)
    assert decrypt_split(env, encryptor.key, rng) == plaintext


def test_decryptor_holds_back_the_last_full_chunk() -> None:
    plaintext = os.urandom(2 * CS)
    env, key, _ = encrypt(plaintext, chunk_exp=EXP)
    decryptor = Decryptor(key)
    # Two full chunks: the second may be the final one, so only the first is released.
    assert decryptor.update(env) == plaintext[:CS]
    assert decryptor.finalize() == plaintext[CS:]


def test_encryptor_holds_back_the_last_full_chunk() -> None:
    encryptor = Encryptor(chunk_exp=EXP)
    assert encryptor.update(bytes(CS)) == b""
    assert len(encryptor.update(b"x")) == CT
    assert len(encryptor.finalize()) == 1 + TAG_BYTES


def test_a_given_key_is_used() -> None:
    key = os.urandom(KEY_BYTES)
    env, returned, _ = encrypt(b"data", key=key)
    assert returned == key
    assert decrypt(env, key) == b"data"


def test_an_empty_final_chunk_after_full_ones_is_valid() -> None:
    # Encryptor never writes it, but the format allows it; another client may.
    key = os.urandom(KEY_BYTES)
    header = Header(CS, os.urandom(8)).to_bytes()
    chunk = os.urandom(CS)
    env = seal_by_hand(key, header, [chunk, b""])
    assert decrypt(env, key) == chunk
    validator = Validator()
    validator.update(env)
    assert validator.finalize().chunk_size == CS


# --- integrity ------------------------------------------------------------------------------


@pytest.fixture
def three_chunks() -> tuple[bytes, bytes, bytes]:
    """An envelope of two full chunks and a partial final one: (envelope, key, sha256)."""
    return encrypt(os.urandom(2 * CS + 1000), chunk_exp=EXP)


def assert_flips_detected(env: bytes, key: bytes, positions: Iterable[int], mask: int) -> None:
    """Each single-byte change at `positions` fails authentication."""
    for position in positions:
        tampered = bytearray(env)
        tampered[position] ^= mask
        with pytest.raises(TamperedError):
            open_all(bytes(tampered), key)


def test_a_flipped_byte_in_any_chunk_is_detected(three_chunks: tuple[bytes, bytes, bytes]) -> None:
    env, key, _ = three_chunks
    starts = [HEADER_BYTES, HEADER_BYTES + CT, HEADER_BYTES + 2 * CT]
    positions = [p for s in starts for p in (s, s + 100, s + CT - 1) if p < len(env)]
    positions.append(len(env) - 1)
    assert_flips_detected(env, key, positions, 0x80)


def test_a_flipped_nonce_prefix_is_detected(three_chunks: tuple[bytes, bytes, bytes]) -> None:
    env, key, _ = three_chunks
    assert_flips_detected(env, key, range(8, HEADER_BYTES), 0x01)


def test_swapped_chunks_are_detected(three_chunks: tuple[bytes, bytes, bytes]) -> None:
    env, key, _ = three_chunks
    c0, c1, c2 = chunks_of(env)
    with pytest.raises(TamperedError):
        open_all(env[:HEADER_BYTES] + c1 + c0 + c2, key)


def test_a_repeated_chunk_is_detected(three_chunks: tuple[bytes, bytes, bytes]) -> None:
    env, key, _ = three_chunks
    c0, _, c2 = chunks_of(env)
    with pytest.raises(TamperedError):
        open_all(env[:HEADER_BYTES] + c0 + c0 + c2, key)


@pytest.mark.parametrize("kept", [0, 1, 2])
def test_dropping_the_end_at_a_chunk_boundary_is_truncation(
    three_chunks: tuple[bytes, bytes, bytes], kept: int
) -> None:
    env, key, _ = three_chunks
    with pytest.raises(TruncatedError, match="cut short"):
        open_all(env[: HEADER_BYTES + kept * CT], key)


def test_truncation_of_a_whole_file_of_full_chunks_is_detected() -> None:
    env, key, _ = encrypt(os.urandom(3 * CS), chunk_exp=EXP)
    with pytest.raises(TruncatedError):
        open_all(env[: HEADER_BYTES + 2 * CT], key)


@pytest.mark.parametrize(
    "cut",
    [
        HEADER_BYTES + 1,  # inside the first chunk, shorter than a tag
        HEADER_BYTES + 15,
        HEADER_BYTES + 16,
        HEADER_BYTES + CT - 1,  # one byte short of a full (non-final) chunk
        HEADER_BYTES + CT + 500,  # inside the second chunk
        HEADER_BYTES + 2 * CT + 5,  # inside the final chunk, shorter than a tag
        -1,  # the final chunk's last byte is missing
    ],
)
def test_a_cut_inside_a_chunk_is_reported_as_tampering(
    three_chunks: tuple[bytes, bytes, bytes], cut: int
) -> None:
    # Documented choice: a cut chunk fails its tag, just like an altered one.
    env, key, _ = three_chunks
    with pytest.raises(TamperedError):
        open_all(env[:cut], key)


@pytest.mark.parametrize("size", [2 * CS + 1000, 3 * CS])
@pytest.mark.parametrize("extra", [b"\x00", bytes(16), b"x" * CT])
def test_bytes_after_the_final_chunk_are_detected(size: int, extra: bytes) -> None:
    env, key, _ = encrypt(os.urandom(size), chunk_exp=EXP)
    with pytest.raises(TamperedError):
        open_all(env + extra, key)
    with pytest.raises(TamperedError):
        open_all(env + chunks_of(env)[-1], key)


def test_another_files_header_is_detected() -> None:
    key = os.urandom(KEY_BYTES)
    first, _, _ = encrypt(os.urandom(CS + 10), key=key, chunk_exp=EXP)
    second, _, _ = encrypt(os.urandom(CS + 10), key=key, chunk_exp=EXP)
    with pytest.raises(TamperedError):
        open_all(second[:HEADER_BYTES] + first[HEADER_BYTES:], key)


def test_the_header_is_authenticated_as_associated_data() -> None:
    # Same key, same nonce prefix, one final chunk: only the associated data differs when the
    # chunk-size byte is changed, and it must still fail.
    key = os.urandom(KEY_BYTES)
    header = Header(CS, os.urandom(8)).to_bytes()
    env = seal_by_hand(key, header, [b"short file"])
    assert decrypt(env, key) == b"short file"
    tampered = bytearray(env)
    tampered[4] = EXP + 1
    with pytest.raises(TamperedError):
        decrypt(bytes(tampered), key)


def test_a_wrong_hash_is_detected(three_chunks: tuple[bytes, bytes, bytes]) -> None:
    env, key, sha = three_chunks
    decryptor = Decryptor(key)
    decryptor.update(env)
    with pytest.raises(HashMismatchError, match="SHA-256"):
        decryptor.finalize(hashlib.sha256(b"another file").digest())
    assert decryptor.sha256 == sha
    assert len(decrypt(env, key, sha)) == 2 * CS + 1000


def test_errors_are_envelope_errors_with_readable_messages() -> None:
    for error in (FormatError, TamperedError, TruncatedError, HashMismatchError, TooLargeError):
        assert issubclass(error, EnvelopeError)
    env, key, _ = encrypt(b"", chunk_exp=EXP)
    with pytest.raises(TruncatedError, match=r"^the file was cut short: its last part is missing$"):
        open_all(env[:HEADER_BYTES], key)


def test_a_failed_decryptor_refuses_further_use(three_chunks: tuple[bytes, bytes, bytes]) -> None:
    env, _, _ = three_chunks
    decryptor = Decryptor(os.urandom(KEY_BYTES))
    with pytest.raises(TamperedError):
        decryptor.update(env)
    with pytest.raises(RuntimeError):
        decryptor.update(b"")
    with pytest.raises(RuntimeError):
        decryptor.finalize()
    with pytest.raises(RuntimeError):
        _ = decryptor.sha256


def test_decryptor_header_errors() -> None:
    key = os.urandom(KEY_BYTES)
    decryptor = Decryptor(key)
    assert decryptor.update(b"%PDF-1.7\n%\xe2\xe3") == b""
    with pytest.raises(FormatError):
        decryptor.update(b"\xcf\xd3 1 0 obj")
    for partial in (b"", b"RF", b"RFE\x01\x0c"):
        with pytest.raises(TruncatedError):
            open_all(partial, key)
    with pytest.raises(FormatError):
        open_all(b"hello", key)


def test_misuse_of_the_api() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Encryptor(key=bytes(16))
    with pytest.raises(ValueError, match="32 bytes"):
        Decryptor(bytes(31))
    for exp in (11, 23):
        with pytest.raises(ValueError, match="exponent"):
            Encryptor(chunk_exp=exp)
    encryptor = Encryptor()
    with pytest.raises(RuntimeError):
        _ = encryptor.sha256
    encryptor.finalize()
    with pytest.raises(RuntimeError):
        encryptor.update(b"late")
    with pytest.raises(RuntimeError):
        encryptor.finalize()
    env, key, _ = encrypt(b"x")
    with pytest.raises(ValueError, match="32 bytes"):
        decrypt(env, key, b"short")


# --- size limits ----------------------------------------------------------------------------


def test_a_file_needing_more_chunks_than_the_counter_allows_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(envelope, "MAX_CHUNKS", 3)
    encryptor = Encryptor(chunk_exp=EXP)
    encryptor.update(bytes(2 * CS))
    encryptor.update(bytes(CS))
    with pytest.raises(TooLargeError, match="too large"):
        encryptor.update(b"x")
    # Nothing was consumed: the file can still be finished at the limit.
    encryptor.finalize()
    assert encrypted_size(3 * CS, EXP) == HEADER_BYTES + 3 * CT
    with pytest.raises(TooLargeError):
        encrypted_size(3 * CS + 1, EXP)


def test_a_stream_longer_than_the_counter_allows_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env, key, _ = encrypt(os.urandom(4 * CS), chunk_exp=EXP)
    monkeypatch.setattr(envelope, "MAX_CHUNKS", 3)
    with pytest.raises(FormatError):
        open_all(env, key)
    validator = Validator()
    validator.update(env[: HEADER_BYTES + 3 * CT])
    with pytest.raises(FormatError, match="longer"):
        validator.update(b"x")
    assert not plausible_size(len(env), Header.parse(env))


def test_encrypted_size_matches_the_envelope() -> None:
    sizes = [*range(40), *range(CS - 20, CS + 40), *range(3 * CS - 20, 3 * CS + 20)]
    for size in sizes:
        env, _, _ = encrypt(bytes(size), chunk_exp=EXP)
        assert encrypted_size(size, EXP) == len(env)
        assert plausible_size(len(env), Header.parse(env))
    assert encrypted_size(0) == 32
    assert encrypted_size(1 << 16) == HEADER_BYTES + (1 << 16) + TAG_BYTES
    assert encrypted_size((1 << 16) + 1) == HEADER_BYTES + (1 << 16) + 1 + 2 * TAG_BYTES
    with pytest.raises(ValueError, match="negative"):
        encrypted_size(-1)


def test_plausible_size_agrees_with_every_possible_envelope() -> None:
    header = Header(CS, bytes(8))
    produced = {encrypted_size(size, EXP) for size in range(4 * CS + 1)}
    # An empty final chunk after k full ones: valid, though Encryptor never writes it.
    produced |= {HEADER_BYTES + k * CT + TAG_BYTES for k in range(1, 5)}
    for total in range(HEADER_BYTES + 4 * CT + 1):
        assert plausible_size(total, header) == (total in produced), total


# --- header ---------------------------------------------------------------------------------


def test_header_round_trip() -> None:
    header = Header(1 << 20, b"\x01" * 8)
    data = header.to_bytes()
    assert data == b"RFE\x01\x14\x00\x00\x00" + b"\x01" * 8
    assert Header.parse(data) == header
    assert Header.parse(data + b"rest of the envelope") == header
    assert header.chunk_exp == 20


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"RFE\x01\x10\x00\x00", "too short"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n12", "not an encrypted attachment"),
        (b"RFE\x02\x10\x00\x00\x00" + bytes(8), "version 2"),
        (b"RFE\x01\x0b\x00\x00\x00" + bytes(8), "chunk size"),
        (b"RFE\x01\x17\x00\x00\x00" + bytes(8), "chunk size"),
        (b"RFE\x01\x10\x00\x01\x00" + bytes(8), "reserved"),
        (b"RFE\x01\x10\x80\x00\x00" + bytes(8), "reserved"),
    ],
)
def test_header_parse_refuses(data: bytes, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        Header.parse(data)


@pytest.mark.parametrize(("size", "prefix"), [(5000, bytes(8)), (1 << 11, bytes(8)), (CS, b"")])
def test_header_refuses_bad_values(size: int, prefix: bytes) -> None:
    with pytest.raises(ValueError, match=r"chunk size|nonce prefix"):
        Header(size, prefix)


# --- the keyless validator ------------------------------------------------------------------


@pytest.mark.promise("P9")
@pytest.mark.parametrize("size", SIZES)
def test_validator_accepts_real_envelopes(size: int) -> None:
    rng = seeded(size)
    for exp in (EXP, DEFAULT_CHUNK_EXP):
        env, _, _ = encrypt(rng.randbytes(size), chunk_exp=exp)
        validator = Validator()
        for piece in random_split(env, rng, pieces=8):
            validator.update(piece)
        assert validator.size == len(env)
        assert validator.header == Header.parse(env)
        assert validator.finalize() == Header.parse(env)


def refused_after(validator: Validator, data: bytes, piece: int) -> int:
    """Feed `data` in pieces; return how many bytes had been fed when FormatError came."""
    for start in range(0, len(data), piece):
        try:
            validator.update(data[start : start + piece])
        except FormatError:
            return min(start + piece, len(data))
    pytest.fail("the validator accepted plaintext")


@pytest.mark.promise("P9")
@pytest.mark.parametrize("piece", [1, 5, 16, 4096])
def test_validator_refuses_plaintext_as_soon_as_the_header_is_complete(piece: int) -> None:
    pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" * 100
    fed = refused_after(Validator(), pdf, piece)
    # Refused by the update that completed the 16 header bytes, not later.
    assert HEADER_BYTES <= fed < HEADER_BYTES + piece


@pytest.mark.promise("P9")
def test_validator_refuses_short_plaintext() -> None:
    validator = Validator()
    validator.update(b"hello")
    assert validator.header is None
    assert validator.size == 5
    with pytest.raises(FormatError, match="too short"):
        validator.finalize()


@pytest.mark.promise("P9")
@pytest.mark.parametrize(
    "header",
    [
        b"RFE\x01\x0b\x00\x00\x00" + bytes(8),  # chunk size exponent 11
        b"RFE\x01\x17\x00\x00\x00" + bytes(8),  # chunk size exponent 23
        b"RFE\x01\x10\x00\x00\x01" + bytes(8),  # reserved byte set
        b"RFE\x00\x10\x00\x00\x00" + bytes(8),  # version 0
    ],
)
def test_validator_refuses_bad_headers(header: bytes) -> None:
    validator = Validator()
    validator.update(header[:10])
    with pytest.raises(FormatError):
        validator.update(header[10:] + os.urandom(100))


@pytest.mark.promise("P9")
# Header only; a last chunk shorter than a tag, alone or after full chunks.
@pytest.mark.parametrize("body", [0, 1, 15, CT + 1, CT + 15, 2 * CT + 15])
def test_validator_refuses_impossible_lengths(body: int) -> None:
    validator = Validator()
    validator.update(Header(CS, os.urandom(8)).to_bytes())
    validator.update(os.urandom(body))
    with pytest.raises(FormatError, match=str(HEADER_BYTES + body)):
        validator.finalize()


def test_validator_is_single_use() -> None:
    env, _, _ = encrypt(b"x")
    validator = Validator()
    validator.update(env)
    validator.finalize()
    with pytest.raises(RuntimeError):
        validator.update(b"")
    with pytest.raises(RuntimeError):
        validator.finalize()
