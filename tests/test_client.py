"""`ringfence.client` without a server: encryption on disk, and the resume logic over a fake."""

from __future__ import annotations

import hashlib
import json
import os
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from ringfence.client import (
    ClientError,
    DecryptError,
    EncryptedFile,
    RingfenceClient,
)
from ringfence.files.envelope import Decryptor, decrypt, encrypted_size
from ringfence.files.transfer import Attachment

MIB = 1024 * 1024
FILE_ID = "ab" * 16
URL = f"http://rf.test/v1/files/{FILE_ID}/{'t' * 22}"


def write_random(path: Path, size: int) -> tuple[bytes, int]:
    """Write `size` random bytes; returns their SHA-256 and CRC32."""
    digest, crc = hashlib.sha256(), 0
    with path.open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(MIB, left))
            digest.update(chunk)
            crc = zlib.crc32(chunk, crc)
            out.write(chunk)
            left -= len(chunk)
    return digest.digest(), crc


def test_encrypt_file_streams_a_large_file_in_bounded_memory(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    size = 64 * MIB
    sha256, crc = write_random(source, size)
    tracemalloc.start()
    try:
        encrypted = RingfenceClient.encrypt_file(source, tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MIB, f"peak {peak / MIB:.1f} MiB while encrypting 64 MiB"
    assert encrypted.plain_size == size
    assert encrypted.size == encrypted_size(size) == encrypted.path.stat().st_size
    assert encrypted.sha256 == sha256
    assert encrypted.crc32 == crc
    assert encrypted.filename == "big.bin"
    assert encrypted.content_type == "application/octet-stream"
    # The envelope decrypts, streamed, to the same bytes.
    decryptor = Decryptor(encrypted.key)
    plain = hashlib.sha256()
    with encrypted.path.open("rb") as envelope:
        while chunk := envelope.read(MIB):
            plain.update(decryptor.update(chunk))
    plain.update(decryptor.finalize(expected_sha256=sha256))
    assert plain.digest() == sha256
    encrypted.remove()
    assert not encrypted.path.exists()


@pytest.mark.parametrize("size", [0, 1, 65536, 65537, 3 * MIB + 5])
def test_encrypt_file_round_trips(tmp_path: Path, size: int) -> None:
    source = tmp_path / "note.pdf"
    data = os.urandom(size)
    source.write_bytes(data)
    encrypted = RingfenceClient.encrypt_file(source, tmp_path)
    envelope = encrypted.path.read_bytes()
    if size >= 16:  # a shorter plaintext may turn up in random ciphertext by chance
        assert data[:64] not in envelope
    assert decrypt(envelope, encrypted.key, hashlib.sha256(data).digest()) == data
    assert encrypted.crc32 == zlib.crc32(data)
    assert encrypted.content_type == "application/pdf"
    assert encrypted.key.hex() not in repr(encrypted)


def test_every_file_gets_its_own_key(tmp_path: Path) -> None:
    source = tmp_path / "same.txt"
    source.write_bytes(b"the same words" * 1000)
    first = RingfenceClient.encrypt_file(source, tmp_path)
    second = RingfenceClient.encrypt_file(source, tmp_path)
    assert first.key != second.key
    assert first.path.read_bytes() != second.path.read_bytes()


def test_a_failed_encryption_leaves_no_temporary_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(FileNotFoundError):
        RingfenceClient.encrypt_file(tmp_path / "missing.bin", out)
    assert list(out.iterdir()) == []


# -- upload and download against a fake service ------------------------------------------------


class Dropping(httpx.SyncByteStream):
    """A response body that breaks off after `cut` bytes (None: never)."""

    def __init__(self, data: bytes, cut: int | None) -> None:
        self.data = data
        self.cut = cut

    def __iter__(self) -> Iterator[bytes]:
        stop = len(self.data) if self.cut is None else self.cut
        for at in range(0, stop, 100_000):
            yield self.data[at : min(at + 100_000, stop)]
        if self.cut is not None:
            raise httpx.ReadError("connection reset by peer")


class FakeFiles:
    """The file API's upload and download, over `httpx.MockTransport`."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.stored = bytearray()
        self.served = b""
        self.put_cuts: list[int] = []  # bytes taken by the next PUTs before they break off
        self.get_cuts: list[int] = []  # bytes served by the next GETs before they break off
        self.ranges: list[str | None] = []
        self.content_ranges: list[str | None] = []

    def out(self) -> dict[str, object]:
        return {
            "id": FILE_ID,
            "size": self.size,
            "received": len(self.stored),
            "complete": len(self.stored) == self.size,
            "expires_at": "2030-01-01T00:00:00Z",
            "upload_url": f"http://rf.test/v1/files/{FILE_ID}/content",
            "url": URL,
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/v1/files":
            assert json.loads(request.content)["size"] == self.size
            return httpx.Response(201, json=self.out())
        if request.method == "GET" and path == f"/v1/files/{FILE_ID}":
            return httpx.Response(200, json=self.out())
        if request.method == "PUT":
            return self.put(request)
        if request.method == "GET" and path == httpx.URL(URL).path:
            first = 0
            self.ranges.append(request.headers.get("Range"))
            if "Range" in request.headers:
                first = int(request.headers["Range"].removeprefix("bytes=").rstrip("-"))
            cut = self.get_cuts.pop(0) if self.get_cuts else None
            body = self.served[first:]
            return httpx.Response(
                206 if first else 200, stream=Dropping(body, cut), headers={"X": "y"}
            )
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no"}})

    def put(self, request: httpx.Request) -> httpx.Response:
        self.content_ranges.append(request.headers.get("Content-Range"))
        first = 0
        if "Content-Range" in request.headers:
            first = int(request.headers["Content-Range"].split()[1].split("-")[0])
        if first != len(self.stored):
            return httpx.Response(
                409,
                json={
                    "error": {
                        "code": "wrong_offset",
                        "message": "the upload continues elsewhere",
                        "field": "Content-Range",
                        "expected_offset": len(self.stored),
                    }
                },
            )
        cut = self.put_cuts.pop(0) if self.put_cuts else None
        # MockTransport reads the whole body first: one chunk, cut where the test says.
        for chunk in [request.content]:
            if cut is not None and len(chunk) >= cut:
                self.stored += chunk[:cut]
                raise httpx.WriteError("broken pipe")
            if cut is not None:
                cut -= len(chunk)
            self.stored += chunk
        return httpx.Response(200, json=self.out())


def client_for(fake: FakeFiles) -> RingfenceClient:
    return RingfenceClient(
        "http://rf.test", "alice@sip.test", "pw", transport=httpx.MockTransport(fake), retries=3
    )


@pytest.fixture
def encrypted(tmp_path: Path) -> EncryptedFile:
    source = tmp_path / "photo.jpg"
    source.write_bytes(os.urandom(3 * MIB + 123))
    return RingfenceClient.encrypt_file(source, tmp_path)


def attachment_of(encrypted: EncryptedFile, **changes: object) -> Attachment:
    fields = {
        "url": URL,
        "size": encrypted.size,
        "key": encrypted.key,
        "sha256": encrypted.sha256,
        "plain_size": encrypted.plain_size,
        "content_type": "image/jpeg",
        "filename": "photo.jpg",
        "crc32": encrypted.crc32,
        **changes,
    }
    return Attachment(**fields)  # type: ignore[arg-type]


def test_upload_resumes_where_the_service_copy_ends(encrypted: EncryptedFile) -> None:
    fake = FakeFiles(encrypted.size)
    fake.put_cuts = [MIB + 7, 5]
    with client_for(fake) as client:
        done = client.upload(encrypted, ["bob"])
    assert done.complete
    assert bytes(fake.stored) == encrypted.path.read_bytes()
    size = encrypted.size
    assert fake.content_ranges == [
        None,
        f"bytes {MIB + 7}-{size - 1}/{size}",
        f"bytes {MIB + 12}-{size - 1}/{size}",
    ]


def test_upload_goes_on_with_an_existing_file_after_a_409(encrypted: EncryptedFile) -> None:
    fake = FakeFiles(encrypted.size)
    fake.stored += encrypted.path.read_bytes()[:1000]
    with client_for(fake) as client:
        done = client.upload(encrypted, [], file_id=FILE_ID)
    assert done.complete
    assert bytes(fake.stored) == encrypted.path.read_bytes()
    assert fake.content_ranges[0] == f"bytes 1000-{encrypted.size - 1}/{encrypted.size}"


def test_upload_gives_up_after_its_retries(encrypted: EncryptedFile) -> None:
    fake = FakeFiles(encrypted.size)
    fake.put_cuts = [10] * 10
    with client_for(fake) as client, pytest.raises(ClientError, match="broke off at byte 40"):
        client.upload(encrypted, ["bob"])


def test_download_resumes_with_range_and_checks_the_file(
    encrypted: EncryptedFile, tmp_path: Path
) -> None:
    fake = FakeFiles(encrypted.size)
    fake.served = encrypted.path.read_bytes()
    fake.get_cuts = [1_500_000, 200_000]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with client_for(fake) as client:
        path = client.download_attachment(attachment_of(encrypted), inbox)
    assert path == inbox / "photo.jpg"
    assert hashlib.sha256(path.read_bytes()).digest() == encrypted.sha256
    assert fake.ranges == [None, "bytes=1500000-", "bytes=1700000-"]
    assert [p.name for p in inbox.iterdir()] == ["photo.jpg"]
    # A second copy does not overwrite the first.
    with client_for(fake) as client:
        again = client.download_attachment(attachment_of(encrypted), inbox)
    assert again == inbox / "photo-1.jpg"


@pytest.mark.parametrize(
    ("doctor", "message"),
    [
        (lambda b: b[: 16 + 2 * 65552], "cut short"),
        (lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:], "altered"),
        (lambda b: b[:-1], "altered"),
    ],
    ids=["truncated", "tampered", "cut-inside-a-chunk"],
)
def test_a_doctored_download_is_refused_and_not_kept(
    encrypted: EncryptedFile,
    tmp_path: Path,
    doctor: Callable[[bytes], bytes],
    message: str,
) -> None:
    fake = FakeFiles(encrypted.size)
    fake.served = doctor(encrypted.path.read_bytes())
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with client_for(fake) as client, pytest.raises(DecryptError, match=message):
        client.download_attachment(attachment_of(encrypted, size=len(fake.served)), inbox)
    assert list(inbox.iterdir()) == []


def test_a_download_of_another_file_is_refused(encrypted: EncryptedFile, tmp_path: Path) -> None:
    fake = FakeFiles(encrypted.size)
    fake.served = encrypted.path.read_bytes()
    dest = tmp_path / "out.jpg"
    with client_for(fake) as client, pytest.raises(DecryptError, match="SHA-256"):
        client.download_attachment(attachment_of(encrypted, sha256=b"\x00" * 32), dest)
    assert list(tmp_path.glob("*out.jpg*")) == []


def test_service_errors_carry_status_code_and_field() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        error = {"code": "too_large", "message": "size: over", "field": "size", "limit": 5}
        return httpx.Response(413, json={"error": error})

    with (
        RingfenceClient(
            "http://rf.test", "a@b", "pw", transport=httpx.MockTransport(refuse)
        ) as client,
        pytest.raises(ClientError) as caught,
    ):
        client.create_upload(10**9, ["bob"])
    assert (caught.value.status, caught.value.code, caught.value.field) == (
        413,
        "too_large",
        "size",
    )
    assert caught.value.details == {"limit": 5}
    assert str(caught.value) == "HTTP 413: size: over [size]"


@pytest.mark.parametrize(
    "url",
    [
        "https://rf.test/v1/files/" + "a" * 32 + "/" + "b" * 22,  # another scheme
        "http://evil.example/v1/files/" + "a" * 32 + "/" + "b" * 22,  # another host
        "http://rf.test:8443/v1/files/" + "a" * 32 + "/" + "b" * 22,  # another port
    ],
)
def test_an_attachment_elsewhere_is_never_fetched_with_the_credentials(
    encrypted: EncryptedFile, tmp_path: Path, url: str
) -> None:
    # The URL comes from a message anyone may send: fetching it with this client's Basic
    # credentials would hand the user's password to the sender's host.
    fake = FakeFiles(encrypted.size)
    fake.served = encrypted.path.read_bytes()
    with client_for(fake) as client, pytest.raises(ClientError, match="not on this service"):
        client.download_attachment(attachment_of(encrypted, url=url), tmp_path / "out.jpg")
    assert fake.ranges == []
    assert list(tmp_path.glob("*out.jpg*")) == []


def test_a_download_larger_than_announced_is_cut_off(
    encrypted: EncryptedFile, tmp_path: Path
) -> None:
    fake = FakeFiles(encrypted.size)
    fake.served = encrypted.path.read_bytes() + b"\x00" * 10_000_000
    with client_for(fake) as client, pytest.raises(DecryptError, match="larger than"):
        client.download_attachment(attachment_of(encrypted), tmp_path / "out.jpg")
    assert list(tmp_path.glob("*out.jpg*")) == []
