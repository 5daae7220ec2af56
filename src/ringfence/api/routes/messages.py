"""The message history over HTTPS: every device of an account reads the same conversations.

A device keeps the `cursor` of the last message it has and asks for what follows
(`GET /v1/messages?after=N`), on start and on each message push: it gets what the account
received and what it sent from any device, oldest first. `POST /v1/messages` sends a
message to another user of the service (delivered to their devices, or held for sleeping
ones and pushed); `DELETE` removes one message from the history. All of it only with
messaging on in the account's configuration (P1).
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ringfence.api.deps import AccountDep, Responses, ServicesDep, feature_route
from ringfence.api.errors import error_body
from ringfence.messaging.history import MAX_FETCH, Entry, Outgoing
from ringfence.provisioning.errors import InvalidInputError, NotFoundError
from ringfence.provisioning.features import Feature

router = APIRouter(prefix="/v1/messages", tags=["messages"])

#: A media type and its parameters (RFC 9110 §8.3), printable: it becomes the Content-Type
#: header of a MESSAGE, so no CR or LF may come through.
CONTENT_TYPE_PATTERN = r"^[!-~]+/[!-~]+( *;[ -~]*)?$"

#: The largest body the API sends: page-mode messages carry text, and a file's message only
#: its link and key (RFC 3428 §9 keeps larger ones off UDP).
MAX_SEND_BYTES = 64 * 1024

ERRORS: Responses = {
    401: {"description": "Missing or invalid credentials"},
    403: {"description": "Messaging is off for this account (P1)"},
    422: {"description": "A field is invalid"},
}


class MessageOut(BaseModel):
    seq: int = Field(description="Its place in the history: give it as `after` to page on")
    direction: str = Field(description="`in`: received; `out`: sent (from any device)")
    peer: str = Field(description="The other party's SIP URI")
    content_type: str
    body: str | None = Field(description="The body as text, when it is UTF-8")
    body_base64: str | None = Field(description="The body in base64, when it is not text")
    at: datetime
    status: str = Field(description="`received`; or `sent`, `delivered`, `displayed`, `failed`")
    imdn_id: str | None = Field(description="Its IMDN Message-ID (RFC 5438), if any")


class MessagesOut(BaseModel):
    messages: list[MessageOut]
    cursor: int = Field(description="The last seq returned (or `after`): ask after it next")


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: Annotated[str, Field(min_length=1, max_length=320)] = Field(
        description="The recipient: `sip:user@domain`, or a user name of the same tenant"
    )
    content_type: Annotated[
        str, Field(min_length=3, max_length=128, pattern=CONTENT_TYPE_PATTERN)
    ] = "text/plain;charset=utf-8"
    body: str | None = Field(default=None, description="A text body")
    body_base64: str | None = Field(default=None, description="Or any body, in base64")

    @model_validator(mode="after")
    def _one_body(self) -> MessageIn:
        if (self.body is None) == (self.body_base64 is None):
            raise ValueError("give exactly one of body and body_base64")
        return self


class SentOut(BaseModel):
    state: str = Field(description="`delivered` to a device, or `held` for sleeping ones")
    seq: int | None = Field(description="Its place in the sender's history")


def message_out(entry: Entry) -> MessageOut:
    try:
        text: str | None = entry.body.decode("utf-8")
        encoded = None
    except UnicodeDecodeError:
        text, encoded = None, base64.b64encode(entry.body).decode()
    return MessageOut(
        seq=entry.seq,
        direction=entry.direction,
        peer=entry.peer,
        content_type=entry.content_type,
        body=text,
        body_base64=encoded,
        at=entry.at,
        status=entry.status,
        imdn_id=entry.imdn_id,
    )


@router.get("", responses=ERRORS, **feature_route(Feature.MESSAGING))
async def fetch_messages(
    account: AccountDep,
    svc: ServicesDep,
    after: Annotated[int, Query(ge=0, description="The cursor of the last message held")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_FETCH)] = 100,
) -> MessagesOut:
    """The messages after `after`, received and sent, oldest first."""
    entries = await svc.history.after(account.id, after, limit)
    return MessagesOut(
        messages=[message_out(e) for e in entries],
        cursor=entries[-1].seq if entries else after,
    )


def body_bytes(body: MessageIn) -> bytes:
    if body.body is not None:
        data = body.body.encode("utf-8")
        field = "body"
    else:
        field = "body_base64"
        try:
            data = base64.b64decode(body.body_base64 or "", validate=True)
        except binascii.Error as exc:
            raise InvalidInputError(f"{field}: not base64", field=field) from exc
    if len(data) > MAX_SEND_BYTES:
        raise InvalidInputError(
            f"{field}: at most {MAX_SEND_BYTES} bytes (a file goes through /v1/files)",
            field=field,
        )
    return data


def recipient_uri(to: str, domain: str) -> str:
    """`to` as a SIP URI: a bare user name is one of the sender's own domain."""
    if to.startswith(("sip:", "sips:")):
        return to
    if "@" in to or ":" in to or any(c.isspace() for c in to):
        raise InvalidInputError("to: a sip: URI or a user name", field="to")
    return f"sip:{to}@{domain}"


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SentOut,
    responses={
        **ERRORS,
        201: {"description": "Delivered to at least one device"},
        202: {"description": "Held for the recipient's sleeping devices, which are pushed"},
        404: {"description": "No such user"},
        409: {"description": "The recipient cannot take it now (no device, or too many held)"},
        503: {"description": "SIP is not running on this node"},
    },
    **feature_route(Feature.MESSAGING),
)
async def send_message(
    body: MessageIn, account: AccountDep, svc: ServicesDep, response: Response
) -> Response | SentOut:
    """Send a message to another user of the service, kept in both histories."""
    data = body_bytes(body)
    to = recipient_uri(body.to, account.tenant.sip_domain)
    sender = Outgoing(account.id, account.aor, account.config.messaging.retention_days)
    sent = await svc.messages.send_message(sender, to, body.content_type, data)
    if sent.status == 202:
        response.status_code = status.HTTP_202_ACCEPTED
        return SentOut(state="held", seq=sent.seq)
    if 200 <= sent.status < 300:
        return SentOut(state="delivered", seq=sent.seq)
    if sent.status == 404:
        raise NotFoundError(f"to: no user {to}", field="to")
    if sent.status == 400:
        raise InvalidInputError(f"to: {sent.reason}", field="to")
    code = 503 if sent.status == 503 else 409
    return JSONResponse(
        error_body("not_delivered", f"not delivered: {sent.status} {sent.reason}", "to"),
        status_code=code,
    )


@router.delete(
    "/{seq}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**ERRORS, 404: {"description": "No such message in this history"}},
    **feature_route(Feature.MESSAGING),
)
async def delete_message(
    seq: Annotated[int, Path(ge=1)], account: AccountDep, svc: ServicesDep
) -> Response:
    """Remove one message from the account's history, for every device."""
    if not await svc.history.delete(account.id, seq):
        raise NotFoundError(f"seq: no message {seq}", field="seq")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
