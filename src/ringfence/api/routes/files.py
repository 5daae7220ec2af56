"""Encrypted attachments over HTTPS: open an upload, stream it (resumable), download it.

1. `POST /v1/files` with the envelope's size and the recipients: an upload slot, and the
   capability URL the recipients will download from.
2. `PUT /v1/files/{id}/content`, the envelope's bytes. After a dropped connection,
   `GET /v1/files/{id}` says how many bytes arrived (`received`), and the upload goes on with
   `Content-Range: bytes {received}-{last}/{size}`. The last byte completes it.
3. The app sends the recipients a MESSAGE with the URL, the key and the hash
   (`application/x-acro-filetransfer+json`, `files.transfer`).
4. A recipient (or the sender) downloads `GET {url}` with their own credentials, with `Range`
   to resume. `DELETE /v1/files/{id}` removes the sender's file, or a recipient's copy.

Only envelopes (`files.envelope`) are accepted: a plaintext upload is refused with 415 and
nothing of it is kept (P9). All of it only with attachments on (P1).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Path, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import ClientDisconnect

from ringfence.api.deps import AccountDep, Responses, ServicesDep, feature_route
from ringfence.api.errors import error_body
from ringfence.api.routes.messages import recipient_uri
from ringfence.blobs import BlobError, OffsetMismatchError
from ringfence.files.service import (
    MAX_RECIPIENTS,
    FileError,
    FileInfo,
    NoSuchFileError,
    NotAnEnvelopeError,
    OffsetError,
    TooLargeError,
    envelope_limit,
)
from ringfence.provisioning.errors import InvalidInputError
from ringfence.provisioning.features import ATTACHMENT_MAX_BYTES_CEILING, Feature
from ringfence.provisioning.models import Account
from ringfence.sip.uri import SipURI, URIError, parse_uri

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/files", tags=["files"])

ENVELOPE_TYPE = "application/vnd.ringfence.envelope"
ERRORS: Responses = {
    401: {"description": "Missing or invalid credentials"},
    403: {"description": "Attachments are off for this account (P1)"},
    404: {"description": "No such file for this account"},
    422: {"description": "A field is invalid"},
}
FileId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="The file's id")]
_RANGE = re.compile(r"^bytes (\d{1,12})-(\d{1,12})/(\d{1,12}|\*)$")
_GET_RANGE = re.compile(r"^bytes=(\d{1,12})-(\d{0,12})$")


class FileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int = Field(
        gt=0,
        le=envelope_limit(ATTACHMENT_MAX_BYTES_CEILING),
        description="The envelope's size in bytes (the file's, plus the envelope's overhead)",
    )
    recipients: list[Annotated[str, Field(min_length=1, max_length=320)]] = Field(
        min_length=1,
        max_length=MAX_RECIPIENTS,
        description="Who may download it: user names of the same tenant, or sip: URIs",
    )


class FileOut(BaseModel):
    id: str
    size: int
    received: int = Field(description="Bytes the service has: where an upload goes on")
    complete: bool
    expires_at: datetime
    upload_url: str
    url: str = Field(description="The capability URL recipients download from")


def file_out(info: FileInfo, request: Request) -> FileOut:
    base = str(request.base_url).rstrip("/")
    return FileOut(
        id=info.id,
        size=info.size,
        received=info.received,
        complete=info.complete,
        expires_at=info.expires_at,
        upload_url=f"{base}/v1/files/{info.id}/content",
        url=f"{base}{info.url_path}",
    )


def refusal(exc: FileError, headers: dict[str, str] | None = None) -> JSONResponse:
    """A file error as the API's one JSON error shape."""
    if isinstance(exc, NoSuchFileError):
        return JSONResponse(error_body("not_found", exc.message, exc.field), 404)
    if isinstance(exc, TooLargeError):
        body = error_body("too_large", exc.message, exc.field, limit=exc.limit)
        return JSONResponse(body, 413)
    if isinstance(exc, NotAnEnvelopeError):
        return JSONResponse(error_body("not_an_envelope", exc.message, exc.field), 415)
    if isinstance(exc, OffsetError):
        body = error_body("wrong_offset", exc.message, exc.field, expected_offset=exc.expected)
        return JSONResponse(body, 409, headers={"Upload-Offset": str(exc.expected)})
    return JSONResponse(error_body("invalid_input", exc.message, exc.field), 422, headers)


async def _recipient_ids(svc: ServicesDep, account: Account, names: list[str]) -> list[str]:
    ids = []
    for index, name in enumerate(names):
        field = f"recipients[{index}]"
        try:
            uri = parse_uri(recipient_uri(name, account.tenant.sip_domain))
        except (InvalidInputError, URIError):
            uri = None
        user = uri.user_unescaped if isinstance(uri, SipURI) else None
        found = None
        if isinstance(uri, SipURI) and user:
            found = await svc.provisioning.sip_credentials(uri.host.lower(), user)
        if found is None:
            raise InvalidInputError(f"{field}: no user {name!r} of this service", field=field)
        ids.append(found.account_id)
    return ids


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=FileOut,
    responses={**ERRORS, 413: {"description": "Over the account's attachment size limit"}},
    **feature_route(Feature.ATTACHMENTS),
)
async def create_file(
    body: FileIn, account: AccountDep, svc: ServicesDep, request: Request
) -> Response | FileOut:
    """Open an upload of `size` envelope bytes for `recipients`."""
    recipients = await _recipient_ids(svc, account, body.recipients)
    try:
        info = await svc.files.create(
            account.id, body.size, recipients, account.config.attachments.max_size_bytes
        )
    except FileError as exc:
        return refusal(exc)
    return file_out(info, request)


@router.get(
    "/{file_id}", response_model=FileOut, responses=ERRORS, **feature_route(Feature.ATTACHMENTS)
)
async def file_state(
    file_id: FileId, account: AccountDep, svc: ServicesDep, request: Request
) -> Response | FileOut:
    """The sender's view of the file: how much of it arrived, where an upload goes on."""
    try:
        return file_out(await svc.files.info(account.id, file_id), request)
    except FileError as exc:
        return refusal(exc)


def _offset(content_range: str | None) -> int:
    if content_range is None:
        return 0
    match = _RANGE.match(content_range.strip())
    if match is None:
        raise InvalidInputError(
            "Content-Range: `bytes FIRST-LAST/SIZE` (RFC 9110 §14.4)", field="Content-Range"
        )
    return int(match.group(1))


@router.put(
    "/{file_id}/content",
    response_model=FileOut,
    responses={
        **ERRORS,
        409: {"description": "The upload goes on elsewhere: see `expected_offset`"},
        413: {"description": "More bytes than the upload was opened for"},
        415: {"description": "Not an encrypted attachment (P9): nothing was kept"},
    },
    dependencies=feature_route(Feature.ATTACHMENTS)["dependencies"],
    openapi_extra={
        **feature_route(Feature.ATTACHMENTS)["openapi_extra"],
        # The body is read as a stream, so FastAPI cannot document it by itself.
        "requestBody": {
            "required": True,
            "content": {ENVELOPE_TYPE: {"schema": {"type": "string", "format": "binary"}}},
            "description": "The envelope's bytes (files.envelope), from Content-Range's FIRST",
        },
    },
)
async def upload(
    file_id: FileId,
    account: AccountDep,
    svc: ServicesDep,
    request: Request,
    content_range: Annotated[str | None, Header()] = None,
) -> Response | FileOut:
    """Stream the envelope's bytes; `Content-Range` says where they start."""
    offset = _offset(content_range)
    try:
        info = await svc.files.upload(
            account.id,
            file_id,
            offset,
            request.stream(),
            account.config.attachments.retention_days,
        )
    except FileError as exc:
        return refusal(exc)
    except OffsetMismatchError as exc:
        # Another upload of the same file ran at the same time and got there first.
        return refusal(OffsetError(exc.expected))
    except ClientDisconnect:
        # What arrived is kept: the app resumes where `GET /v1/files/{id}` says.
        return Response(status_code=status.HTTP_400_BAD_REQUEST)
    except BlobError as exc:
        logger.warning("file store: %s", exc)
        return JSONResponse(error_body("unavailable", "the file store is unavailable"), 503)
    return file_out(info, request)


def _range(value: str | None, field: str = "Range") -> tuple[int, int | None]:
    if value is None:
        return 0, None
    match = _GET_RANGE.match(value.strip())
    if match is None:
        raise InvalidInputError(f"{field}: `bytes=FIRST-[LAST]` (RFC 9110 §14.1.2)", field=field)
    first, last = int(match.group(1)), match.group(2)
    end = int(last) + 1 if last else None
    if end is not None and end <= first:
        raise InvalidInputError(f"{field}: LAST before FIRST", field=field)
    return first, end


@router.get(
    "/{file_id}/{token}",
    response_class=StreamingResponse,
    responses={
        **ERRORS,
        200: {"content": {ENVELOPE_TYPE: {}}, "description": "The envelope"},
        206: {"content": {ENVELOPE_TYPE: {}}, "description": "Part of it (Range)"},
    },
    **feature_route(Feature.ATTACHMENTS),
)
async def download(
    file_id: FileId,
    token: Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{22}$")],
    account: AccountDep,
    svc: ServicesDep,
    range_: Annotated[str | None, Header(alias="Range")] = None,
) -> Response:
    """The envelope, for its sender or a recipient; `Range` resumes a download."""
    start, end = _range(range_)
    try:
        found = await svc.files.download(account.id, file_id, token, start, end)
    except FileError as exc:
        return refusal(exc)

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in found.chunks:
                yield chunk
        finally:
            # A client gone mid-download: the blob's file (or S3 stream) is closed now, not
            # whenever the collector gets to it.
            close = getattr(found.chunks, "aclose", None)
            if close is not None:
                await close()

    headers = {"Content-Length": str(found.end - found.start), "Accept-Ranges": "bytes"}
    code = 200
    if range_ is not None:
        code = 206
        headers["Content-Range"] = f"bytes {found.start}-{found.end - 1}/{found.size}"
    return StreamingResponse(body(), code, headers=headers, media_type=ENVELOPE_TYPE)


@router.delete("/{file_id}", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS)
async def delete_file(file_id: FileId, account: AccountDep, svc: ServicesDep) -> Response:
    """The sender deletes the file; a recipient deletes their copy."""
    try:
        await svc.files.delete(account.id, file_id)
    except FileError as exc:
        return refusal(exc)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
