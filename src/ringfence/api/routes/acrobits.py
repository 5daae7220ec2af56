"""Acrobits-compatible web services, so Cloud Softphone-based apps work unchanged.

External provisioning: set the portal's provisioning web service to
`POST https://HOST/acrobits/provisioning` with post data
`cloud_username=%username%&cloud_password=%password%` (or GET with the same query). The login
is `username@tenant`. The answer is Account XML; a refusal is an `<error><message>` document
whose text the app shows.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import JSONResponse

from ringfence.api.deps import Responses, ServicesDep, source_address
from ringfence.api.routes.messages import CONTENT_TYPE_PATTERN, MAX_SEND_BYTES, recipient_uri
from ringfence.auth.errors import (
    AccountSuspendedError,
    AuthError,
    InvalidCredentialsError,
    RateLimitedError,
)
from ringfence.messaging.history import IN, OUT, Outgoing
from ringfence.provisioning.acrobits import account_xml, error_xml
from ringfence.provisioning.errors import (
    ConflictError,
    FeatureDisabledError,
    InvalidInputError,
    NotFoundError,
    ProvisioningError,
)
from ringfence.provisioning.features import Feature
from ringfence.pushgw.instances import FCM_TOKEN_RE, InstanceReport, PushService

router = APIRouter(prefix="/acrobits", tags=["acrobits"])

XML = "application/xml"
RESPONSES: Responses = {
    200: {"content": {XML: {}}, "description": "Account XML"},
    403: {"content": {XML: {}}, "description": "Wrong login or password, or suspended"},
    422: {"content": {XML: {}}, "description": "Login is not username@tenant"},
    429: {"content": {XML: {}}, "description": "Too many failed attempts; see Retry-After"},
}


async def _provision(svc: ServicesDep, request: Request, login: str, password: str) -> Response:
    try:
        account_id = await svc.auth.check_password(login, password, source_address(request))
    except InvalidInputError as exc:
        return Response(error_xml(exc.message), status_code=422, media_type=XML)
    except RateLimitedError as exc:
        retry = str(max(1, round(exc.retry_after_s)))
        return Response(
            error_xml(str(exc)), status_code=429, media_type=XML, headers={"Retry-After": retry}
        )
    except (InvalidCredentialsError, AccountSuspendedError) as exc:
        # Acrobits shows a non-2xx answer's <message>; 403 is what its own samples use.
        return Response(error_xml(str(exc)), status_code=403, media_type=XML)
    account = await svc.provisioning.account_by_id(account_id)
    return Response(account_xml(account, login=login, password=password), media_type=XML)


@router.get("/provisioning", responses=RESPONSES, response_class=Response)
async def provisioning_get(
    request: Request,
    svc: ServicesDep,
    cloud_username: Annotated[str, Query(min_length=1, max_length=320)],
    cloud_password: Annotated[str, Query(min_length=1, max_length=128)],
) -> Response:
    return await _provision(svc, request, cloud_username, cloud_password)


@router.post("/provisioning", responses=RESPONSES, response_class=Response)
async def provisioning_post(
    request: Request,
    svc: ServicesDep,
    cloud_username: CloudUsername,
    cloud_password: CloudPassword,
) -> Response:
    return await _provision(svc, request, cloud_username, cloud_password)


# -- Push Token Reporter and Account Removal Reporter ----------------------------------------
#
# Set in the portal (or in Account XML) the reporter's URL to `POST https://HOST/acrobits/
# push-token` with post data
# `cloud_username=%account[cloud_username]%&cloud_password=%account[password]%&selector=
# %selector%&pushToken=%pushToken%&pushappid=%pushappid%&pushTokenIncomingCall=
# %pushTokenIncomingCall%&pushappid_incoming_call=%pushappid_incoming_call%&pushTokenOther=
# %pushTokenOther%&pushappid_other=%pushappid_other%`, and the Account Removal Reporter to
# `POST https://HOST/acrobits/account-removal` with the login and `selector=%selector%`.
# Acrobits sends tokens base64-encoded; APNs tokens are kept as hex. Errors are JSON
# `{"message": ...}`, which the app shows.

JSON_RESPONSES: Responses = {
    200: {"description": "Kept (or erased)"},
    403: {"description": "Wrong login or password, suspended, or push is off (P4)"},
    409: {"description": "The account holds the most instances it may"},
    422: {"description": "A field is invalid"},
    429: {"description": "Too many failed attempts; see Retry-After"},
}
Token = Annotated[str | None, Form(max_length=8192)]
#: The login (`username@tenant`) and password every JSON web service below takes.
CloudUsername = Annotated[str, Form(min_length=1, max_length=320)]
CloudPassword = Annotated[str, Form(min_length=1, max_length=128)]


def _message(status: int, text: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"message": text}, status_code=status, headers=headers)


async def _account_of(svc: ServicesDep, request: Request, login: str, password: str) -> str:
    return await svc.auth.check_password(login, password, source_address(request))


def _refusal(exc: Exception) -> JSONResponse:
    if isinstance(exc, RateLimitedError):
        retry = str(max(1, round(exc.retry_after_s)))
        return _message(429, str(exc), {"Retry-After": retry})
    if isinstance(exc, (InvalidCredentialsError, AccountSuspendedError)):
        return _message(403, str(exc))
    if isinstance(exc, FeatureDisabledError):
        return _message(403, exc.message)
    if isinstance(exc, ConflictError):
        return _message(409, exc.message)
    assert isinstance(exc, ProvisioningError)
    return _message(422, exc.message)


def apns_hex(token: str, field: str) -> str:
    """An APNs token as Acrobits reports it (base64 of its bytes), in hex."""
    try:
        return base64.b64decode(token, validate=True).hex()
    except binascii.Error as exc:
        raise InvalidInputError(f"{field}: must be base64", field=field) from exc


def fcm_token(token: str) -> str:
    """An FCM token as Acrobits reports it: base64 of the token text, or the text itself."""
    try:
        decoded = base64.b64decode(token, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        return token
    return decoded if FCM_TOKEN_RE.fullmatch(decoded) else token


def acrobits_report(
    selector: str,
    push_token: str | None,
    push_app: str | None,
    call_token: str | None,
    call_app: str | None,
    other_token: str | None,
    other_app: str | None,
) -> InstanceReport:
    """The instance an Acrobits app reports: iOS when a PushKit token comes, else Android."""
    if call_token:
        # iOS 13+: one token for calls (PushKit), one for the rest.
        app = (call_app or other_app or push_app or "").removesuffix(".voip")
        other = other_token or push_token
        return InstanceReport(
            selector=selector,
            service=PushService.APNS,
            app_id=app,
            call_token=apns_hex(call_token, "pushTokenIncomingCall"),
            other_token=apns_hex(other, "pushTokenOther") if other else None,
        )
    token = push_token or other_token
    if not token:
        raise InvalidInputError("pushToken: a push token is required", field="pushToken")
    return InstanceReport(
        selector=selector,
        service=PushService.FCM,
        app_id=push_app or other_app or "",
        other_token=fcm_token(token),
    )


@router.post("/push-token", responses=JSON_RESPONSES, response_class=JSONResponse)
async def push_token_reporter(
    request: Request,
    svc: ServicesDep,
    cloud_username: CloudUsername,
    cloud_password: CloudPassword,
    selector: Annotated[str, Form(min_length=1, max_length=128)],
    pushToken: Token = None,  # noqa: N803 - Acrobits' parameter names
    pushappid: Token = None,
    pushTokenIncomingCall: Token = None,  # noqa: N803
    pushappid_incoming_call: Token = None,
    pushTokenOther: Token = None,  # noqa: N803
    pushappid_other: Token = None,
) -> JSONResponse:
    """Acrobits' Push Token Reporter: the app reports its tokens on every start."""
    try:
        account_id = await _account_of(svc, request, cloud_username, cloud_password)
        account = await svc.provisioning.account_by_id(account_id)
        report = acrobits_report(
            selector,
            pushToken,
            pushappid,
            pushTokenIncomingCall,
            pushappid_incoming_call,
            pushTokenOther,
            pushappid_other,
        )
        instance, _ = await svc.push_instances.report(account.id, account.config, report)
    except (AuthError, ProvisioningError) as exc:
        return _refusal(exc)
    return JSONResponse({"expires_at": instance.expires_at.isoformat()})


@router.post("/account-removal", responses=JSON_RESPONSES, response_class=JSONResponse)
async def account_removal_reporter(
    request: Request,
    svc: ServicesDep,
    cloud_username: CloudUsername,
    cloud_password: CloudPassword,
    selector: Annotated[str, Form(min_length=1, max_length=128)],
) -> JSONResponse:
    """Acrobits' Account Removal Reporter: the account left the app; erase its instance."""
    try:
        account_id = await _account_of(svc, request, cloud_username, cloud_password)
        await svc.push_instances.delete(account_id, selector)
    except NotFoundError:
        pass  # already gone: the app's wish holds
    except (AuthError, ProvisioningError) as exc:
        return _refusal(exc)
    return JSONResponse({})


# -- Send Message and Fetch Messages ---------------------------------------------------------
#
# Set in Account XML `genericSmsSendUrl` to `https://HOST/acrobits/send-message`, with
# `genericSmsPostData` `cloud_username=%account[cloud_username]%&cloud_password=
# %account[password]%&sms_to=%sms_to%&sms_body=%sms_body%&content_type=%content_type%&
# disposition_notification=%disposition_notification%`; and the Fetch Messages URL to
# `https://HOST/acrobits/fetch-messages` with `cloud_username=...&cloud_password=...&
# last_id=%last_known_sms_id%&last_sent_id=%last_known_sent_sms_id%&device=%installid%`.
# `sms_id` is the service's sequence number of the message in the account's history.


def _acro_date(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _acro_id(value: str | None, field: str) -> int:
    if value is None or value == "":
        return 0
    if not value.isdigit() or len(value) > 18:
        raise InvalidInputError(f"{field}: an sms_id given by this service", field=field)
    return int(value)


@router.post("/send-message", responses=JSON_RESPONSES, response_class=JSONResponse)
async def send_message(
    request: Request,
    svc: ServicesDep,
    cloud_username: CloudUsername,
    cloud_password: CloudPassword,
    sms_to: Annotated[str, Form(min_length=1, max_length=320)],
    sms_body: Annotated[str, Form(max_length=MAX_SEND_BYTES)],
    content_type: Annotated[
        str, Form(min_length=3, max_length=128, pattern=CONTENT_TYPE_PATTERN)
    ] = "text/plain",
    disposition_notification: Annotated[str | None, Form(max_length=1024)] = None,
    # Whether the app recognised sms_to as a Smart Contact: accepted, no use here.
    smart: Annotated[str | None, Form(max_length=8)] = None,
) -> JSONResponse:
    """Acrobits' Send Message: one call per recipient; answers the message's `sms_id`."""
    try:
        account_id = await _account_of(svc, request, cloud_username, cloud_password)
        account = await svc.provisioning.account_by_id(account_id)
        account.config.require(Feature.MESSAGING)
        body = sms_body.encode("utf-8")
        if len(body) > MAX_SEND_BYTES:
            raise InvalidInputError(f"sms_body: at most {MAX_SEND_BYTES} bytes", field="sms_body")
        to = recipient_uri(sms_to, account.tenant.sip_domain)
    except (AuthError, ProvisioningError) as exc:
        return _refusal(exc)
    sender = Outgoing(account.id, account.aor, account.config.messaging.retention_days)
    sent = await svc.messages.send_message(
        sender, to, content_type, body, disposition_notification or None
    )
    if 200 <= sent.status < 300:
        return JSONResponse({"sms_id": str(sent.seq) if sent.seq is not None else ""})
    status = {404: 404, 400: 422, 503: 503}.get(sent.status, 409)
    return _message(status, f"not delivered: {sent.status} {sent.reason}")


@router.post("/fetch-messages", responses=JSON_RESPONSES, response_class=JSONResponse)
async def fetch_messages(
    request: Request,
    svc: ServicesDep,
    cloud_username: CloudUsername,
    cloud_password: CloudPassword,
    last_id: Annotated[str | None, Form(max_length=32)] = None,
    last_sent_id: Annotated[str | None, Form(max_length=32)] = None,
    device: Annotated[str | None, Form(max_length=128)] = None,
) -> JSONResponse:
    """Acrobits' Fetch Messages: what came after `last_id`, and what was sent after it.

    Sent messages come after `last_sent_id`, from any device of the account: the history
    every device shares.
    """
    try:
        account_id = await _account_of(svc, request, cloud_username, cloud_password)
        account = await svc.provisioning.account_by_id(account_id)
        account.config.require(Feature.MESSAGING)
        after_in = _acro_id(last_id, "last_id")
        after_out = _acro_id(last_sent_id, "last_sent_id")
    except (AuthError, ProvisioningError) as exc:
        return _refusal(exc)
    # One cursor per direction: a device that never sends keeps `last_sent_id` at 0, and must
    # still get what came after `last_id`.
    entries = [
        *await svc.history.after(account.id, after_in, direction=IN),
        *await svc.history.after(account.id, after_out, direction=OUT),
    ]
    received, sent = [], []
    for entry in entries:
        item = {
            "sms_id": str(entry.seq),
            "sending_date": _acro_date(entry.at),
            "sms_text": entry.body.decode("utf-8", errors="replace"),
            "content_type": entry.content_type,
            "disposition_notification": entry.disposition or "",
        }
        peer = entry.peer.removeprefix("sip:").removeprefix("sips:")
        if entry.direction == IN:
            received.append({**item, "sender": peer})
        else:
            sent.append({**item, "recipient": peer})
    return JSONResponse(
        {"date": _acro_date(svc.clock.now()), "received_smss": received, "sent_smss": sent}
    )
