"""Encrypted attachments end to end: `ringfence serve`, the client library, a SIPp phone.

Alice's app encrypts a 50 MB file, uploads it and sends Bob the key in a MESSAGE; Bob's
phone (SIPp, registered) takes the MESSAGE, and Bob's apps read it from the history, download
the file and decrypt it. The service holds only ciphertext (P9): its blob contains no piece
of the file, and a plaintext upload is refused and not kept.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ringfence.client import ClientError, DecryptError, EncryptedFile, RingfenceClient, SentFile
from ringfence.files.envelope import HEADER_BYTES, TAG_BYTES
from ringfence.files.service import envelope_limit
from ringfence.files.transfer import CONTENT_TYPE
from tests.e2e.conftest import BIN, DOMAIN, PASSWORDS, Server, serving
from tests.peers.sipp import free_udp_port, run_scenario, uas, write_injection

SCENARIOS = Path(__file__).resolve().parents[1] / "peers" / "scenarios"
MB = 1000 * 1000
MIB = 1024 * 1024
#: The default `attachments.max_size_bytes`; alice's is raised above the 50 MB file.
DEFAULT_LIMIT = 25 * MIB
LIMIT_KEY = "attachments.max_size_bytes"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("files-e2e")) as running:
        # Alice may send more than the default 25 MiB (the running server reads the
        # account's configuration from the database on every request).
        env = {k: v for k, v in os.environ.items() if not k.startswith("RINGFENCE_")}
        subprocess.run(
            [str(BIN), "account", "set", "acme", "alice", "--set", f"{LIMIT_KEY}={64 * MIB}"],
            cwd=running.workdir,
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield running


def client(server: Server, user: str) -> RingfenceClient:
    return RingfenceClient(server.http_url, f"{user}@{DOMAIN}", PASSWORDS[user], timeout=30)


def auth(user: str) -> tuple[str, str]:
    return (f"{user}@{DOMAIN}", PASSWORDS[user])


@pytest.fixture(scope="module")
def bob_phone(server: Server) -> Iterator[None]:
    """Bob's phone, registered and taking every MESSAGE while the module runs."""
    phone = free_udp_port()
    inf = server.workdir / "bob.csv"
    write_injection(inf, [("bob", PASSWORDS["bob"])], DOMAIN)
    assert run_scenario("register_auth.xml", server.port, inf=inf, local_port=phone) == (1, 0)
    with uas(server.port, phone, scenario=SCENARIOS / "uas_message_any.xml"):
        yield


@dataclass(frozen=True)
class Original:
    path: Path
    sha256: bytes


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Original:
    path = tmp_path_factory.mktemp("files-src") / "holiday.mov"
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(50):
            chunk = os.urandom(MB)
            digest.update(chunk)
            out.write(chunk)
    return Original(path, digest.digest())


@pytest.fixture(scope="module")
def sent(server: Server, bob_phone: None, original: Original) -> SentFile:
    with client(server, "alice") as alice:
        return alice.send_file(original.path, "bob", text="the holiday video")


def blob_path(server: Server, file_id: str) -> Path:
    found = [p for p in server.workdir.rglob(file_id) if p.is_file()]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.promise("P9")
def test_a_file_goes_encrypted_from_alice_to_bob(
    server: Server, sent: SentFile, original: Original, tmp_path: Path
) -> None:
    assert sent.state == "delivered"
    assert sent.sha256 == original.sha256
    assert sent.plain_size == 50 * MB
    with client(server, "bob") as bob:
        received = bob.received_files()
        assert len(received) == 1
        message, files = received[0]
        assert message["peer"] == f"sip:alice@{DOMAIN}"
        assert message["content_type"] == CONTENT_TYPE
        assert files.body == "the holiday video"
        (attachment,) = files.attachments
        assert (attachment.url, attachment.size) == (sent.url, sent.size)
        assert attachment.filename == "holiday.mov"
        path = bob.download_attachment(attachment, tmp_path)
    assert path == tmp_path / "holiday.mov"
    assert path.stat().st_size == 50 * MB
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(MIB):
            digest.update(chunk)
    assert digest.digest() == original.sha256
    # What the service keeps is the envelope, not the file: no 64-byte window of it.
    stored = blob_path(server, sent.file_id).read_bytes()
    assert len(stored) == sent.size
    assert stored.startswith(b"RFE\x01")
    plain = original.path.read_bytes()
    assert stored[HEADER_BYTES : HEADER_BYTES + MIB] != plain[:MIB]
    picks = [secrets.randbelow(len(plain) - 64) for _ in range(8)]
    for start in [0, len(plain) - 64, *picks]:
        assert plain[start : start + 64] not in stored
    # Nor does the service's log name the key.
    assert attachment.key.hex() not in (server.workdir / "serve.log").read_text()


@pytest.mark.promise("P9")
def test_a_plaintext_upload_is_refused_and_not_kept(server: Server) -> None:
    data = b"%PDF-1.7\n" + os.urandom(4000)
    opened = httpx.post(
        f"{server.http_url}/v1/files",
        json={"size": len(data), "recipients": ["bob"]},
        auth=auth("alice"),
        timeout=10,
    )
    assert opened.status_code == 201, opened.text
    file_id = opened.json()["id"]
    refused = httpx.put(opened.json()["upload_url"], content=data, auth=auth("alice"), timeout=10)
    assert refused.status_code == 415, refused.text
    assert refused.json()["error"]["code"] == "not_an_envelope"
    state = httpx.get(f"{server.http_url}/v1/files/{file_id}", auth=auth("alice"), timeout=10)
    assert state.status_code == 200, state.text
    assert (state.json()["received"], state.json()["complete"]) == (0, False)
    assert not [p for p in server.workdir.rglob(f"{file_id}*") if p.is_file()]


def test_an_upload_over_the_limit_is_refused_naming_it(server: Server) -> None:
    with client(server, "carol") as carol, pytest.raises(ClientError) as caught:
        # The limit is the file's; its envelope may be larger by the envelope's overhead.
        carol.create_upload(envelope_limit(DEFAULT_LIMIT) + 1, ["bob"])
    assert (caught.value.status, caught.value.code) == (413, "too_large")
    assert caught.value.details["limit"] == DEFAULT_LIMIT


@pytest.fixture
def small(tmp_path: Path) -> Iterator[tuple[bytes, EncryptedFile]]:
    data = os.urandom(3 * MIB + 1234)
    source = tmp_path / "scan.pdf"
    source.write_bytes(data)
    encrypted = RingfenceClient.encrypt_file(source, tmp_path)
    yield data, encrypted
    encrypted.remove()


def test_an_interrupted_upload_resumes(
    server: Server, small: tuple[bytes, EncryptedFile], tmp_path: Path
) -> None:
    data, encrypted = small
    envelope = encrypted.path.read_bytes()
    k = MIB + 77
    with client(server, "alice") as alice:
        opened = alice.create_upload(encrypted.size, ["bob"])
        first = httpx.put(
            opened.upload_url,
            content=envelope[:k],
            headers={"Content-Range": f"bytes 0-{k - 1}/{encrypted.size}"},
            auth=auth("alice"),
            timeout=30,
        )
        assert first.status_code == 200, first.text
        assert (first.json()["received"], first.json()["complete"]) == (k, False)
        assert alice.file_state(opened.id).received == k
        # Bytes that do not start where the service's copy ends are refused, naming it.
        elsewhere = httpx.put(
            opened.upload_url,
            content=envelope[k + 10 :],
            headers={"Content-Range": f"bytes {k + 10}-{encrypted.size - 1}/{encrypted.size}"},
            auth=auth("alice"),
            timeout=30,
        )
        assert elsewhere.status_code == 409, elsewhere.text
        assert elsewhere.json()["error"]["expected_offset"] == k
        assert elsewhere.headers["Upload-Offset"] == str(k)
        # The app goes on with the same file.
        done = alice.upload(encrypted, [], file_id=opened.id)
    assert done.complete
    assert done.received == encrypted.size
    assert blob_path(server, opened.id).read_bytes() == envelope
    with client(server, "bob") as bob:
        path = bob.download_attachment(encrypted.attachment(done.url), tmp_path / "got.pdf")
    assert path.read_bytes() == data


def test_a_cut_or_altered_file_does_not_decrypt(
    server: Server, small: tuple[bytes, EncryptedFile], tmp_path: Path
) -> None:
    _, encrypted = small
    envelope = encrypted.path.read_bytes()
    chunk = 65536 + TAG_BYTES
    # Cut after two whole chunks (a length an envelope can have, so the service takes it),
    # and one bit flipped in the middle of the second chunk.
    cut = envelope[: HEADER_BYTES + 2 * chunk]
    middle = HEADER_BYTES + chunk + 1000
    altered = envelope[:middle] + bytes([envelope[middle] ^ 0x20]) + envelope[middle + 1 :]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for doctored, says in ((cut, "cut short"), (altered, "altered")):
        copy = tmp_path / "doctored.rfe"
        copy.write_bytes(doctored)
        fake = EncryptedFile(
            copy,
            encrypted.key,
            encrypted.sha256,
            encrypted.crc32,
            encrypted.plain_size,
            len(doctored),
            encrypted.filename,
            encrypted.content_type,
        )
        with client(server, "alice") as alice:
            uploaded = alice.upload(fake, ["bob"])
        with client(server, "bob") as bob, pytest.raises(DecryptError, match=says):
            bob.download_attachment(fake.attachment(uploaded.url), inbox)
        assert list(inbox.iterdir()) == [], "a file that failed to decrypt was kept"


def test_every_device_sees_the_file_message(server: Server, sent: SentFile) -> None:
    with client(server, "bob") as phone, client(server, "bob") as desktop:
        on_phone = phone.received_files()
        on_desktop = desktop.received_files()
    assert [m for m, _ in on_phone] == [m for m, _ in on_desktop]
    assert [f for _, f in on_phone] == [f for _, f in on_desktop]
    assert [f.attachments[0].url for _, f in on_desktop] == [sent.url]
    with client(server, "alice") as tablet:
        mine = [m for m in tablet.fetch_messages() if m["content_type"] == CONTENT_TYPE]
        assert tablet.received_files() == []
    assert [(m["direction"], m["peer"], m["seq"]) for m in mine] == [
        ("out", f"sip:bob@{DOMAIN}", sent.seq)
    ]
    assert sent.url in mine[0]["body"]
    # A device that has the message already asks only for what follows it.
    with client(server, "bob") as phone:
        assert phone.received_files(after=int(on_phone[-1][0]["seq"])) == []


def test_a_file_whose_message_is_refused_is_not_left_behind(
    server: Server, small: tuple[bytes, EncryptedFile]
) -> None:
    def blobs() -> set[Path]:
        return {p for p in (server.workdir / "var").rglob("*") if p.is_file() and "blobs" in str(p)}

    before = blobs()
    source = small[1].path
    # Carol has no device that can take a message now: 409, and the upload goes.
    with client(server, "alice") as alice, pytest.raises(ClientError) as caught:
        alice.send_file(source, "carol")
    assert caught.value.status == 409
    assert "upload was deleted" in caught.value.message
    assert blobs() == before
