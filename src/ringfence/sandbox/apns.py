"""The APNs stand-in: Apple's provider API, as documented, on one environment.

Checks what Apple checks and answers as Apple answers: the JWT (ES256 with a known key id,
the team as issuer, not older than an hour, not renewed more often than every 20 minutes),
the topic and push type, the priority a background push needs, payload limits (4 KiB, 5 KiB
for VoIP) and the device token (410 Unregistered with a timestamp for a token marked dead,
400 BadDeviceToken for a token of the other environment).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ringfence.clock import Clock
from ringfence.sandbox.record import Fault, Inbox, ReceivedPush

MAX_PAYLOAD = 4096
MAX_VOIP_PAYLOAD = 5120
TOKEN_MAX_AGE_S = 3600
TOKEN_MIN_RENEWAL_S = 20 * 60
PUSH_TYPES = frozenset(
    {
        "alert",
        "background",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "location",
        "liveactivity",
        "pushtotalk",
        "controls",
        "widgets",
    }
)
_HEX = re.compile(r"[0-9A-Fa-f]{16,400}")


@dataclass
class _Key:
    team_id: str
    public_key: ec.EllipticCurvePublicKey
    #: The iat of the token last accepted with this key (Apple counts renewals per key).
    last_issued_at: int | None = None


@dataclass
class ApnsCloud:
    """What Apple knows, shared by the production and the sandbox stand-ins.

    Attributes:
        accept_unknown_tokens: A token no device registered is taken as one of the
            environment it was sent to (convenient by hand); tests register their tokens.
    """

    clock: Clock
    accept_unknown_tokens: bool = True
    keys: dict[str, _Key] = field(default_factory=dict)
    bundles: set[str] = field(default_factory=set)
    #: token -> (bundle id, sandbox)
    devices: dict[str, tuple[str, bool]] = field(default_factory=dict)
    #: token -> when it became invalid (UNIX ms)
    unregistered: dict[str, int] = field(default_factory=dict)
    inbox: Inbox = field(default_factory=Inbox)
    faults: list[Fault] = field(default_factory=list)

    def add_key(self, key_id: str, team_id: str, public_key: ec.EllipticCurvePublicKey) -> None:
        self.keys[key_id] = _Key(team_id, public_key)

    def add_app(self, bundle_id: str) -> None:
        self.bundles.add(bundle_id)

    def add_device(self, token: str, bundle_id: str, *, sandbox: bool = False) -> None:
        self.devices[token.lower()] = (bundle_id, sandbox)

    def unregister(self, token: str, at_ms: int | None = None) -> None:
        """The app was removed: from now on the token answers 410 Unregistered."""
        when = at_ms if at_ms is not None else int(self.clock.now().timestamp() * 1000)
        self.unregistered[token.lower()] = when

    def fail_next(self, fault: Fault) -> None:
        self.faults.append(fault)


class _RefusedError(Exception):
    def __init__(self, status: int, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status, self.reason, self.extra = status, reason, extra


def apns_app(cloud: ApnsCloud, *, sandbox: bool) -> Starlette:
    """The ASGI app of one environment (`api.push.apple.com` or `api.sandbox.push.apple.com`)."""
    environment = "sandbox" if sandbox else "production"

    async def push(request: Request) -> Response:
        apns_id = request.headers.get("apns-id") or str(uuid.uuid4()).upper()
        # Read the whole request before answering: hypercorn drops the connection when DATA
        # arrives for a stream it has already answered and closed.
        body = await request.body()
        try:
            if cloud.faults:
                fault = cloud.faults[0]
                fault.count -= 1
                if fault.count <= 0:
                    cloud.faults.pop(0)
                headers = {"retry-after": fault.retry_after} if fault.retry_after else {}
                raise _RefusedError(fault.status, fault.reason, headers=headers)
            received = _check(cloud, request, body, sandbox, environment)
        except _RefusedError as refused:
            answer: dict[str, Any] = {"reason": refused.reason}
            if "timestamp" in refused.extra:
                answer["timestamp"] = refused.extra["timestamp"]
            return JSONResponse(
                answer,
                status_code=refused.status,
                headers={"apns-id": apns_id, **refused.extra.get("headers", {})},
            )
        cloud.inbox.add(received)
        return Response(status_code=200, headers={"apns-id": apns_id})

    async def pushes(request: Request) -> Response:
        return JSONResponse(
            [p.as_json() for p in cloud.inbox.pushes if p.environment == environment]
        )

    return Starlette(
        routes=[
            Route("/3/device/{token}", push, methods=["POST"]),
            Route("/sandbox/pushes", pushes, methods=["GET"]),
        ]
    )


def _check(
    cloud: ApnsCloud, request: Request, body: bytes, sandbox: bool, environment: str
) -> ReceivedPush:
    headers = {name.lower(): value for name, value in request.headers.items()}
    if request.scope.get("http_version") != "2":
        # Apple speaks HTTP/2 only; an HTTP/1.1 client never gets this far there.
        raise _RefusedError(400, "BadRequest: HTTP/2 required")
    _check_token_auth(cloud, headers.get("authorization"))
    topic = headers.get("apns-topic")
    if topic is None:
        raise _RefusedError(400, "MissingTopic")
    push_type = headers.get("apns-push-type", "alert")
    if push_type not in PUSH_TYPES:
        raise _RefusedError(400, "InvalidPushType")
    bundle = topic.removesuffix(".voip") if push_type == "voip" else topic
    if push_type == "voip" and not topic.endswith(".voip"):
        raise _RefusedError(400, "InvalidPushType")
    if bundle not in cloud.bundles:
        raise _RefusedError(400, "TopicDisallowed")
    priority = headers.get("apns-priority", "10")
    if priority not in {"1", "5", "10"} or (push_type == "background" and priority != "5"):
        raise _RefusedError(400, "BadPriority")
    expiration = headers.get("apns-expiration", "0")
    if not expiration.isdigit():
        raise _RefusedError(400, "BadExpirationDate")
    if len(headers.get("apns-collapse-id", "").encode()) > 64:
        raise _RefusedError(400, "BadCollapseId")
    if not body:
        raise _RefusedError(400, "PayloadEmpty")
    if len(body) > (MAX_VOIP_PAYLOAD if push_type == "voip" else MAX_PAYLOAD):
        raise _RefusedError(413, "PayloadTooLarge")
    try:
        payload = json.loads(body)
    except ValueError:
        raise _RefusedError(400, "BadPayload") from None
    if not isinstance(payload, dict):
        raise _RefusedError(400, "BadPayload")
    aps = payload.get("aps", {})
    if push_type == "background" and (
        not isinstance(aps, dict)
        or aps.get("content-available") != 1
        or {"alert", "sound", "badge"} & set(aps)
    ):
        raise _RefusedError(400, "InvalidPushType")
    token = request.path_params["token"].lower()
    if not _HEX.fullmatch(token):
        raise _RefusedError(400, "BadDeviceToken")
    device = cloud.devices.get(token)
    if device is None:
        if not cloud.accept_unknown_tokens:
            raise _RefusedError(400, "BadDeviceToken")
        device = (bundle, sandbox)
    if device[1] != sandbox:
        raise _RefusedError(400, "BadDeviceToken")
    if device[0] != bundle:
        raise _RefusedError(400, "DeviceTokenNotForTopic")
    if token in cloud.unregistered:
        raise _RefusedError(410, "Unregistered", timestamp=cloud.unregistered[token])
    headers.pop("authorization", None)
    return ReceivedPush("apns", environment, token, headers, payload, "2", cloud.clock.monotonic())


def _check_token_auth(cloud: ApnsCloud, authorization: str | None) -> None:
    if authorization is None or not authorization.lower().startswith("bearer "):
        raise _RefusedError(403, "MissingProviderToken")
    token = authorization[7:].strip()
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise _RefusedError(403, "InvalidProviderToken") from None
    key = cloud.keys.get(str(header.get("kid")))
    if header.get("alg") != "ES256" or key is None:
        raise _RefusedError(403, "InvalidProviderToken")
    try:
        claims = jwt.decode(
            token,
            key.public_key,
            algorithms=["ES256"],
            options={"verify_exp": False, "verify_iat": False, "require": ["iss", "iat"]},
        )
    except jwt.PyJWTError:
        raise _RefusedError(403, "InvalidProviderToken") from None
    if claims["iss"] != key.team_id or not isinstance(claims["iat"], int):
        raise _RefusedError(403, "InvalidProviderToken")
    now = cloud.clock.now().timestamp()
    issued = claims["iat"]
    if now - issued > TOKEN_MAX_AGE_S:
        raise _RefusedError(403, "ExpiredProviderToken")
    if issued > now + 60:
        raise _RefusedError(403, "InvalidProviderToken")
    last = key.last_issued_at
    if last is not None and last < issued < last + TOKEN_MIN_RENEWAL_S:
        raise _RefusedError(429, "TooManyProviderTokenUpdates")
    key.last_issued_at = max(issued, key.last_issued_at or issued)
