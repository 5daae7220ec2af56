"""A small client of the ringfence HTTP API, for apps, scripts and tests.

It sends and fetches encrypted attachments the way an app does (`ringfence.files`):

1. `RingfenceClient.encrypt_file` streams a file through `files.envelope.Encryptor` into a
   temporary file, under a fresh key, in bounded memory (1 MiB buffers).
2. `RingfenceClient.upload` opens an upload (`POST /v1/files`) and streams the envelope from
   disk (`PUT /v1/files/{id}/content`); after a dropped connection or a 409 it asks the
   service how much arrived (`GET /v1/files/{id}`) and goes on from there.
3. `RingfenceClient.send_file` does both, then sends the recipient the key, the hash and the
   URL in a file-transfer message (`files.transfer`, `POST /v1/messages`).
4. `RingfenceClient.received_files` reads those messages from the history, and
   `RingfenceClient.download_attachment` streams the envelope (resuming with `Range`),
   decrypts it on the fly into a temporary file, checks its SHA-256 and size, and only then
   moves it into place.

The key never goes to the service: only inside the message, which travels end to end.

Typical use::

    with RingfenceClient("https://rf.example", "alice@sip.example", password) as client:
        sent = client.send_file(Path("report.pdf"), to="bob")
    with RingfenceClient("https://rf.example", "bob@sip.example", password) as client:
        for message, transfer in client.received_files():
            for attachment in transfer.attachments:
                client.download_attachment(attachment, Path("inbox"))
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import ssl
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import httpx

from ringfence.files import transfer
from ringfence.files.envelope import Decryptor, Encryptor, EnvelopeError

__all__ = [
    "BUFFER_BYTES",
    "ClientError",
    "DecryptError",
    "EncryptedFile",
    "RingfenceClient",
    "SentFile",
    "UploadedFile",
    "file_id_of",
]

#: Files are read, encrypted, uploaded and downloaded this many bytes at a time.
BUFFER_BYTES = 1024 * 1024
#: Attempts after the first, for an upload or a download whose connection dropped.
DEFAULT_RETRIES = 5
_FALLBACK_TYPE = "application/octet-stream"


class ClientError(Exception):
    """A request the service refused, or a transfer that could not be completed.

    Attributes:
        message: what went wrong, as the service (or the client) says it.
        status: the HTTP status, None when no response came (or the error is local).
        code: the service's error code (`too_large`, `wrong_offset`, ...), if any.
        field: the request field the service names as wrong, if any.
        details: the rest of the service's error object (e.g. `limit`, `expected_offset`).
    """

    def __init__(
        self,
        message: str,
        status: int | None = None,
        code: str | None = None,
        field: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.field = field
        self.details = details or {}

    def __str__(self) -> str:
        where = f" [{self.field}]" if self.field else ""
        status = f"HTTP {self.status}: " if self.status is not None else ""
        return f"{status}{self.message}{where}"


class DecryptError(ClientError):
    """A downloaded attachment did not decrypt: cut short, altered, or not the file announced.

    Nothing of it is kept: the partial output is deleted before this is raised.
    """


@dataclass(frozen=True)
class EncryptedFile:
    """A file encrypted into an envelope on disk, ready to upload.

    Attributes:
        path: the temporary file that holds the envelope; `remove` deletes it.
        key: the envelope's key: for the recipients only, never logged nor printed.
        sha256: the SHA-256 of the plaintext.
        crc32: the CRC32 of the plaintext (for Acrobits clients).
        plain_size: the plaintext's size in bytes.
        size: the envelope's size in bytes, what is uploaded.
        filename: the original file's name.
        content_type: the original file's media type, guessed from its name.
    """

    path: Path
    key: bytes = field(repr=False)
    sha256: bytes
    crc32: int
    plain_size: int
    size: int
    filename: str
    content_type: str

    def remove(self) -> None:
        """Delete the temporary envelope (no error if it is gone already)."""
        self.path.unlink(missing_ok=True)

    def attachment(self, url: str) -> transfer.Attachment:
        """The attachment to describe in the message, once uploaded to `url`."""
        return transfer.Attachment(
            url=url,
            size=self.size,
            key=self.key,
            sha256=self.sha256,
            plain_size=self.plain_size,
            content_type=self.content_type,
            filename=self.filename,
            crc32=self.crc32,
        )


@dataclass(frozen=True)
class UploadedFile:
    """An upload as the service describes it (`FileOut`).

    Attributes:
        id: the file's id.
        size: the envelope's size the upload was opened with.
        received: the bytes the service has: where an interrupted upload goes on.
        complete: whether the service has every byte.
        expires_at: when the service deletes it (ISO 8601).
        upload_url: where its bytes are PUT.
        url: the capability URL the recipients download from.
    """

    id: str
    size: int
    received: int
    complete: bool
    expires_at: str
    upload_url: str
    url: str

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> UploadedFile:
        """Read the service's `FileOut` object.

        Raises:
            ClientError: a key is missing or has the wrong type.
        """
        try:
            return cls(
                id=str(obj["id"]),
                size=int(obj["size"]),
                received=int(obj["received"]),
                complete=bool(obj["complete"]),
                expires_at=str(obj["expires_at"]),
                upload_url=str(obj["upload_url"]),
                url=str(obj["url"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ClientError(f"the service's file description is malformed: {exc}") from None


@dataclass(frozen=True)
class SentFile:
    """A file sent in a message.

    Attributes:
        file_id: the uploaded file's id.
        url: the capability URL in the message.
        seq: the message's place in the sender's history.
        state: `delivered` to a device of the recipient, or `held` for sleeping ones.
        sha256: the SHA-256 of the plaintext.
        size: the envelope's size in bytes.
        plain_size: the plaintext's size in bytes.
    """

    file_id: str
    url: str
    seq: int | None
    state: str
    sha256: bytes
    size: int
    plain_size: int


@dataclass
class _Progress:
    """The envelope bytes a download has received and decrypted so far."""

    received: int = 0


def _read_chunks(path: Path, offset: int, end: int) -> Iterator[bytes]:
    """The bytes [offset, end) of `path`, `BUFFER_BYTES` at a time."""
    with path.open("rb") as handle:
        handle.seek(offset)
        left = end - offset
        while left > 0:
            chunk = handle.read(min(BUFFER_BYTES, left))
            if not chunk:
                raise ClientError(f"{path} is shorter than expected: it changed on disk")
            left -= len(chunk)
            yield chunk


def _safe_name(name: str | None, fallback: str) -> str:
    """A file name from a message, reduced to its last component (no path, no dot files)."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1].replace("\x00", "")
    base = base.strip().lstrip(".")
    return fallback if base in ("", ".", "..") else base


def _unique_path(directory: Path, name: str) -> Path:
    candidate = directory / name
    stem, suffix = Path(name).stem, Path(name).suffix
    number = 1
    while candidate.exists():
        candidate = directory / f"{stem}-{number}{suffix}"
        number += 1
    return candidate


def file_id_of(url: str) -> str:
    """The file id in a capability URL (`.../v1/files/{id}/{token}`), or '' if none."""
    parts = urlsplit(url).path.rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 else ""


class RingfenceClient:
    """A session with the service as one user, over HTTP Basic authentication.

    Args:
        base_url: the service's URL, e.g. ``https://rf.example``.
        login: ``user@domain``.
        password: the account's password.
        verify: TLS: True (the system's CAs), False (no check, for tests only), or the path
            of a CA bundle.
        timeout: seconds to wait for a connection, a read or a write.
        retries: attempts after the first when an upload or a download breaks off.
        transport: an httpx transport to use instead of the network (for tests).
    """

    def __init__(
        self,
        base_url: str,
        login: str,
        password: str,
        *,
        verify: bool | str = True,
        timeout: float = 60,
        retries: int = DEFAULT_RETRIES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        tls: bool | ssl.SSLContext
        if isinstance(verify, str):
            # An SSL context, not the path: httpx deprecates `verify=<str>`.
            if os.path.isdir(verify):
                tls = ssl.create_default_context(capath=verify)
            else:
                tls = ssl.create_default_context(cafile=verify)
        else:
            tls = verify
        self.login = login
        self.retries = retries
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            auth=httpx.BasicAuth(login, password),
            verify=tls,
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> RingfenceClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    # -- HTTP ----------------------------------------------------------------------------------

    @staticmethod
    def _raise_for(response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        try:
            error = response.json()["error"]
            details = {k: v for k, v in error.items() if k not in ("code", "message", "field")}
            raise ClientError(
                str(error.get("message") or response.reason_phrase),
                response.status_code,
                error.get("code"),
                error.get("field"),
                details,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
        raise ClientError(response.reason_phrase or "request refused", response.status_code)

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise ClientError(f"cannot reach the service: {exc}") from exc
        self._raise_for(response)
        return response

    # -- encryption ----------------------------------------------------------------------------

    @staticmethod
    def encrypt_file(path: Path, directory: Path | None = None) -> EncryptedFile:
        """Encrypt `path` under a fresh key into a temporary envelope file.

        The file is streamed `BUFFER_BYTES` at a time: memory stays bounded whatever its size.

        Args:
            path: the file to send.
            directory: where the temporary envelope goes (default: the system's temp dir).

        Returns:
            The envelope's path, key, hashes and sizes; `EncryptedFile.remove` deletes it.

        Raises:
            OSError: the file cannot be read, or the envelope cannot be written.
            ringfence.files.envelope.TooLargeError: the file is too large for an envelope.
        """
        encryptor = Encryptor()
        crc = 0
        plain_size = 0
        fd, name = tempfile.mkstemp(prefix="ringfence-", suffix=".rfe", dir=directory)
        out_path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out, path.open("rb") as source:
                out.write(encryptor.header)
                while chunk := source.read(BUFFER_BYTES):
                    crc = zlib.crc32(chunk, crc)
                    plain_size += len(chunk)
                    out.write(encryptor.update(chunk))
                out.write(encryptor.finalize())
                size = out.tell()
        except BaseException:
            out_path.unlink(missing_ok=True)
            raise
        content_type = mimetypes.guess_type(path.name)[0] or _FALLBACK_TYPE
        return EncryptedFile(
            path=out_path,
            key=encryptor.key,
            sha256=encryptor.sha256,
            crc32=crc,
            plain_size=plain_size,
            size=size,
            filename=path.name,
            content_type=content_type,
        )

    # -- files ---------------------------------------------------------------------------------

    def create_upload(self, size: int, recipients: list[str]) -> UploadedFile:
        """Open an upload of `size` envelope bytes for `recipients` (`POST /v1/files`).

        Raises:
            ClientError: refused, e.g. 413 `too_large` (``details["limit"]``).
        """
        response = self._request("POST", "/v1/files", json={"size": size, "recipients": recipients})
        return UploadedFile.from_json(response.json())

    def file_state(self, file_id: str) -> UploadedFile:
        """The sender's view of a file: `received` is where an upload goes on.

        Raises:
            ClientError: no such file for this user (404), or another refusal.
        """
        return UploadedFile.from_json(self._request("GET", f"/v1/files/{file_id}").json())

    def delete_file(self, file_id: str) -> None:
        """Delete a file sent (or one's own copy of a file received).

        Raises:
            ClientError: no such file for this user (404), or another refusal.
        """
        self._request("DELETE", f"/v1/files/{file_id}")

    def _put(self, file_id: str, encrypted: EncryptedFile, offset: int) -> UploadedFile:
        size = encrypted.size
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size - offset),
        }
        if offset:
            headers["Content-Range"] = f"bytes {offset}-{size - 1}/{size}"
        response = self._http.put(
            f"/v1/files/{file_id}/content",
            content=_read_chunks(encrypted.path, offset, size),
            headers=headers,
        )
        self._raise_for(response)
        return UploadedFile.from_json(response.json())

    def upload(
        self,
        encrypted: EncryptedFile,
        recipients: list[str],
        file_id: str | None = None,
        *,
        retries: int | None = None,
    ) -> UploadedFile:
        """Upload an envelope, resuming where the service's copy ends if it breaks off.

        Args:
            encrypted: what `encrypt_file` returned.
            recipients: user names of the same tenant, or ``sip:`` URIs.
            file_id: an upload opened before (e.g. by an earlier, interrupted run): go on
                with it instead of opening a new one; `recipients` is then unused.
            retries: attempts after the first (default: the client's).

        Returns:
            The complete file.

        Raises:
            ClientError: refused (413 over the limit, 415 not an envelope...), or still
                broken off after `retries` attempts.
        """
        attempts = self.retries if retries is None else retries
        if file_id is None:
            state = self.create_upload(encrypted.size, recipients)
        else:
            state = self.file_state(file_id)
        if state.size != encrypted.size:
            raise ClientError(
                f"file {state.id} was opened for {state.size} bytes, "
                f"but the envelope has {encrypted.size}"
            )
        failure: Exception | None = None
        for attempt in range(attempts + 1):
            if state.complete:
                return state
            if attempt:
                time.sleep(min(0.2 * attempt, 2.0))
            try:
                state = self._put(state.id, encrypted, state.received)
                continue
            except httpx.TransportError as exc:
                failure = exc
            except ClientError as exc:
                if exc.status != 409:
                    raise
                failure = exc
            # Where does the service's copy end? Go on from there.
            state = self.file_state(state.id)
        if state.complete:
            return state
        raise ClientError(
            f"the upload of file {state.id} broke off at byte {state.received} of "
            f"{state.size} after {attempts + 1} attempts: {failure}"
        )

    # -- messages ------------------------------------------------------------------------------

    def send_message(self, to: str, body: bytes | str, content_type: str) -> dict[str, Any]:
        """Send a message (`POST /v1/messages`); returns `{"state", "seq"}`.

        Raises:
            ClientError: refused: 404 no such user, 409 nobody can take it now, ...
        """
        text = body.decode() if isinstance(body, bytes) else body
        response = self._request(
            "POST",
            "/v1/messages",
            json={"to": to, "content_type": content_type, "body": text},
        )
        sent: dict[str, Any] = response.json()
        return sent

    def send_file(self, path: Path, to: str, text: str = "") -> SentFile:
        """Encrypt `path`, upload it for `to`, and send `to` a file-transfer message.

        Args:
            path: the file.
            to: the recipient, a user name of the same tenant or a ``sip:`` URI.
            text: a text to go with the file.

        Raises:
            ClientError: the upload or the message was refused (a file whose message was
                refused is deleted from the service).
            OSError: the file cannot be read.
        """
        encrypted = self.encrypt_file(path)
        try:
            uploaded = self.upload(encrypted, [to])
        finally:
            encrypted.remove()
        body = transfer.FileTransfer(
            body=text, attachments=(encrypted.attachment(uploaded.url),)
        ).to_json()
        try:
            sent = self.send_message(to, body, transfer.CONTENT_TYPE)
        except ClientError as exc:
            # Nobody will ever learn the key: the uploaded envelope is useless, delete it.
            with contextlib.suppress(ClientError):
                self.delete_file(uploaded.id)
            raise ClientError(
                f"the file was uploaded but the message was not sent, so the upload was "
                f"deleted: {exc.message}",
                exc.status,
                exc.code,
                exc.field,
                exc.details,
            ) from exc
        seq = sent.get("seq")
        return SentFile(
            file_id=uploaded.id,
            url=uploaded.url,
            seq=int(seq) if seq is not None else None,
            state=str(sent.get("state")),
            sha256=encrypted.sha256,
            size=encrypted.size,
            plain_size=encrypted.plain_size,
        )

    def fetch_messages(self, after: int = 0) -> list[dict[str, Any]]:
        """Every message of the history after `after`, received and sent, oldest first.

        Raises:
            ClientError: refused (e.g. messaging is off for this account).
        """
        messages: list[dict[str, Any]] = []
        cursor = after
        while True:
            page = self._request("GET", "/v1/messages", params={"after": cursor}).json()
            batch: list[dict[str, Any]] = page.get("messages") or []
            if not batch:
                return messages
            messages.extend(batch)
            cursor = int(page["cursor"])

    def received_files(self, after: int = 0) -> list[tuple[dict[str, Any], transfer.FileTransfer]]:
        """The file-transfer messages received after `after`, parsed.

        Messages of that type whose body is malformed are left out.

        Raises:
            ClientError: the history could not be read.
        """
        found = []
        for message in self.fetch_messages(after):
            kind = str(message.get("content_type") or "").split(";", 1)[0].strip().lower()
            if message.get("direction") != "in" or kind != transfer.CONTENT_TYPE:
                continue
            text = message.get("body")
            if text is None:
                continue
            try:
                parsed = transfer.FileTransfer.from_json(str(text).encode())
            except ValueError:
                continue
            found.append((message, parsed))
        return found

    # -- download ------------------------------------------------------------------------------

    def _check_origin(self, url: str) -> None:
        """Refuse a URL of another origin: the credentials go only to the own service.

        An attachment's URL comes from a message, which anyone may send; fetched with this
        client's credentials, a URL of the sender's own host would hand them the user's
        password.
        """
        mine, theirs = self._http.base_url, httpx.URL(url)
        if (theirs.scheme, theirs.host, theirs.port) != (mine.scheme, mine.host, mine.port):
            raise ClientError(
                f"the attachment is not on this service ({theirs.scheme}://{theirs.host}): "
                "not fetched"
            )

    def _stream_into(
        self, url: str, progress: _Progress, decryptor: Decryptor, out: BinaryIO, size: int
    ) -> None:
        """Download `url` from byte `progress.received` on, decrypting into `out`."""
        start = progress.received
        headers = {"Range": f"bytes={start}-"} if start else {}
        with self._http.stream("GET", url, headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                self._raise_for(response)
            if start and response.status_code != 206:
                raise ClientError(
                    f"asked for the bytes from {start} on, got HTTP {response.status_code}",
                    response.status_code,
                )
            for chunk in response.iter_bytes():
                if progress.received + len(chunk) > size:
                    raise DecryptError(f"the file is larger than the {size} bytes announced")
                # Counted as soon as it is decrypted: a resumed download starts after it.
                out.write(decryptor.update(chunk))
                progress.received += len(chunk)

    def download_attachment(self, attachment: transfer.Attachment, dest: Path) -> Path:
        """Download, decrypt and check an attachment; only a checked file is put in place.

        The envelope is streamed and decrypted on the fly into a temporary file next to
        `dest`; after a dropped connection the download goes on with ``Range``. The file is
        moved into place only once its SHA-256 and size are the announced ones.

        Args:
            attachment: from a received message (`received_files`).
            dest: the file to write, or an existing directory to write it into under its
                announced name (made unique: ``name-1.ext``...).

        Returns:
            The path of the decrypted file.

        Raises:
            DecryptError: the file was cut short, altered, or is not the one announced
                (nothing is left behind).
            ClientError: the download was refused, or broke off more than `retries` times.
        """
        if dest.is_dir():
            fallback = file_id_of(attachment.url) or "attachment"
            dest = _unique_path(dest, _safe_name(attachment.filename, fallback))
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        part = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                have = self._download(attachment, out)
                if have != attachment.size:
                    raise DecryptError(
                        f"the file is {have} bytes, but {attachment.size} were announced"
                    )
                plain_size = out.tell()
            if plain_size != attachment.plain_size:
                raise DecryptError(
                    f"the file decrypted to {plain_size} bytes, "
                    f"but {attachment.plain_size} were announced"
                )
            os.replace(part, dest)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return dest

    def _download(self, attachment: transfer.Attachment, out: BinaryIO) -> int:
        self._check_origin(attachment.url)
        decryptor = Decryptor(attachment.key)
        progress = _Progress()
        try:
            for attempt in range(self.retries + 1):
                if attempt:
                    time.sleep(min(0.2 * attempt, 2.0))
                try:
                    self._stream_into(attachment.url, progress, decryptor, out, attachment.size)
                    break
                except httpx.TransportError as exc:
                    # What came is decrypted already: the next attempt goes on after it.
                    if attempt == self.retries:
                        raise ClientError(
                            f"the download broke off at byte {progress.received} after "
                            f"{self.retries + 1} attempts: {exc}"
                        ) from exc
            out.write(decryptor.finalize(expected_sha256=attachment.sha256))
        except EnvelopeError as exc:
            raise DecryptError(str(exc)) from exc
        return progress.received
