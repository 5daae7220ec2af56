"""The stand-in for Google's OAuth2 token endpoint and FCM HTTP v1 `messages:send`.

The token endpoint takes the JWT bearer grant (RFC 7523) signed with a known service
account's key (RS256, `kid` = `private_key_id`), for the FCM scope, with `aud` = this token
endpoint and a lifetime of at most an hour, and answers an access token of an hour.
`messages:send` wants that token, for its project, and a valid message: one target, string
data values, a known Android priority, a duration TTL, at most 4 KiB of data. Tokens marked
dead answer 404 UNREGISTERED; tokens of another project 403 SENDER_ID_MISMATCH.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ringfence.clock import Clock
from ringfence.sandbox.record import Fault, Inbox, ReceivedPush

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ACCESS_TOKEN_LIFETIME_S = 3599
MAX_DATA_BYTES = 4096
_TTL = re.compile(r"\d{1,11}(\.\d{1,9})?s")


@dataclass
class _Account:
    client_email: str
    project_id: str
    public_key: rsa.RSAPublicKey


@dataclass
class FcmCloud:
    """What Google knows: service accounts, access tokens, device tokens, received pushes."""

    clock: Clock
    #: The URL the token endpoint answers at: assertions must name it as their audience.
    token_url: str = ""
    accounts: dict[str, _Account] = field(default_factory=dict)
    #: access token -> (project id, expiry in UNIX seconds)
    access_tokens: dict[str, tuple[str, float]] = field(default_factory=dict)
    #: registration token -> project id; unknown tokens are taken as the sender's own
    devices: dict[str, str] = field(default_factory=dict)
    unregistered: set[str] = field(default_factory=set)
    token_requests: int = 0
    inbox: Inbox = field(default_factory=Inbox)
    faults: list[Fault] = field(default_factory=list)

    def add_service_account(
        self, key_id: str, client_email: str, project_id: str, public_key: rsa.RSAPublicKey
    ) -> None:
        self.accounts[key_id] = _Account(client_email, project_id, public_key)

    def add_device(self, token: str, project_id: str) -> None:
        self.devices[token] = project_id

    def unregister(self, token: str) -> None:
        self.unregistered.add(token)

    def revoke_access_tokens(self) -> None:
        self.access_tokens.clear()

    def fail_next(self, fault: Fault) -> None:
        self.faults.append(fault)


def _error(status: int, code: str, message: str, fcm_code: str | None = None) -> JSONResponse:
    error: dict[str, Any] = {"code": status, "message": message, "status": code}
    if fcm_code is not None:
        error["details"] = [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcm_code}
        ]
    return JSONResponse({"error": error}, status_code=status)


def fcm_app(cloud: FcmCloud) -> Starlette:
    """The ASGI app serving `/token` and `/v1/projects/{project}/messages:send`."""

    async def token(request: Request) -> Response:
        cloud.token_requests += 1
        form = await request.form()
        if form.get("grant_type") != GRANT_TYPE:
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        assertion = form.get("assertion")
        account = _verify_assertion(cloud, assertion if isinstance(assertion, str) else "")
        if account is None:
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "Invalid JWT Signature."},
                status_code=400,
            )
        access = f"ya29.sandbox-{secrets.token_urlsafe(24)}"
        expires = cloud.clock.now().timestamp() + ACCESS_TOKEN_LIFETIME_S
        cloud.access_tokens[access] = (account.project_id, expires)
        return JSONResponse(
            {"access_token": access, "expires_in": ACCESS_TOKEN_LIFETIME_S, "token_type": "Bearer"}
        )

    async def send(request: Request) -> Response:
        # Read the whole request before answering (hypercorn drops the connection on DATA
        # for a stream it has already closed).
        raw = await request.body()
        project = request.path_params["project"]
        authorization = request.headers.get("authorization", "")
        grant = cloud.access_tokens.get(authorization.removeprefix("Bearer ").strip())
        if grant is None or grant[1] <= cloud.clock.now().timestamp():
            return _error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        if grant[0] != project:
            return _error(403, "PERMISSION_DENIED", "Permission denied for this project.")
        if cloud.faults:
            fault = cloud.faults[0]
            fault.count -= 1
            if fault.count <= 0:
                cloud.faults.pop(0)
            answer = _error(fault.status, fault.reason, "Injected fault.", fault.reason)
            if fault.retry_after:
                answer.headers["retry-after"] = fault.retry_after
            return answer
        try:
            message = json.loads(raw).get("message")
        except (ValueError, AttributeError):
            message = None
        if not isinstance(message, dict):
            return _error(
                400, "INVALID_ARGUMENT", "Invalid JSON payload received.", "INVALID_ARGUMENT"
            )
        problem = _check_message(message)
        if problem is not None:
            return _error(400, "INVALID_ARGUMENT", problem, "INVALID_ARGUMENT")
        device = message["token"]
        if device in cloud.unregistered:
            return _error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
        if cloud.devices.get(device, project) != project:
            return _error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() != "authorization"}
        version = str(request.scope.get("http_version"))
        received = ReceivedPush(
            "fcm", project, device, headers, message, version, cloud.clock.monotonic()
        )
        cloud.inbox.add(received)
        return JSONResponse({"name": f"projects/{project}/messages/{secrets.token_hex(8)}"})

    async def pushes(request: Request) -> Response:
        return JSONResponse([p.as_json() for p in cloud.inbox.pushes])

    return Starlette(
        routes=[
            Route("/token", token, methods=["POST"]),
            Route("/v1/projects/{project}/messages:send", send, methods=["POST"]),
            Route("/sandbox/pushes", pushes, methods=["GET"]),
        ]
    )


def _verify_assertion(cloud: FcmCloud, assertion: str) -> _Account | None:
    try:
        header = jwt.get_unverified_header(assertion)
        account = cloud.accounts.get(str(header.get("kid")))
        if account is None or header.get("alg") != "RS256":
            return None
        claims = jwt.decode(
            assertion,
            account.public_key,
            algorithms=["RS256"],
            audience=cloud.token_url,
            issuer=account.client_email,
            options={"verify_exp": False, "verify_iat": False, "require": ["iat", "exp", "scope"]},
        )
    except jwt.PyJWTError:
        return None
    now = cloud.clock.now().timestamp()
    issued, expires = claims["iat"], claims["exp"]
    if not (isinstance(issued, int) and isinstance(expires, int)):
        return None
    if expires - issued > 3600 or expires <= now or issued > now + 60:
        return None
    if SCOPE not in str(claims["scope"]).split():
        return None
    return account


def _check_message(message: dict[str, Any]) -> str | None:
    targets = [name for name in ("token", "topic", "condition") if name in message]
    if targets != ["token"] or not isinstance(message["token"], str) or not message["token"]:
        return "Exactly one of token, topic or condition must be set (here: token)."
    data = message.get("data", {})
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        return "Invalid value at 'message.data': values must be strings."
    if len(json.dumps(data, separators=(",", ":")).encode()) > MAX_DATA_BYTES:
        return "Message is too big."
    android = message.get("android", {})
    if not isinstance(android, dict):
        return "Invalid value at 'message.android'."
    if android.get("priority", "normal").lower() not in {"normal", "high"}:
        return "Invalid value at 'message.android.priority'."
    if "ttl" in android and not (
        isinstance(android["ttl"], str) and _TTL.fullmatch(android["ttl"])
    ):
        return "Invalid value at 'message.android.ttl': not a duration."
    return None
