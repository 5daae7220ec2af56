"""Apple Push Notification service: the provider API over HTTP/2.

Token authentication: an ES256 JWT signed with the `.p8` key, `{"alg": "ES256", "kid"}`,
claims `{"iss": team id, "iat"}`. Apple refuses a token older than an hour
(403 ExpiredProviderToken) and one renewed more often than every 20 minutes (429
TooManyProviderTokenUpdates), so one token is reused for `JWT_RENEW_AFTER_S`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ringfence.clock import Clock
from ringfence.config import ApnsAppSettings
from ringfence.push.errors import PushConfigError
from ringfence.push.http import http2_client, network_failure, post, retry_after_s
from ringfence.push.payload import PayloadTooLargeError, apns_request
from ringfence.push.provider import (
    Delivered,
    Misconfigured,
    Notification,
    ProviderName,
    PushResult,
    PushTarget,
    Rejected,
    RetryAfter,
    TokenDead,
)

logger = logging.getLogger(__name__)

#: Inside Apple's window: at least 20 minutes, at most 60.
JWT_RENEW_AFTER_S = 40 * 60
JWT_MIN_AGE_S = 20 * 60
#: Device tokens are hex of variable length (32 bytes today).
_TOKEN = re.compile(r"[0-9A-Fa-f]{16,400}")

#: Reasons that mean the token will never work for this app.
_DEAD = frozenset({"DeviceTokenNotForTopic", "Unregistered", "ExpiredToken"})
#: Reasons that mean our credentials or topic are wrong: an operator must act.
_CONFIG = frozenset(
    {
        "BadCertificate",
        "BadCertificateEnvironment",
        "ExpiredProviderToken",
        "Forbidden",
        "InvalidProviderToken",
        "MissingProviderToken",
        "BadTopic",
        "TopicDisallowed",
        "MissingTopic",
        "UnrelatedKeyIdInToken",
        "BadPath",
    }
)


class ProviderToken:
    """The JWT for one key, renewed inside Apple's 20-60 minute window."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, key_id: str, team_id: str) -> None:
        self._key = key
        self._key_id = key_id
        self._team_id = team_id
        self._token: str | None = None
        self._issued_at = 0.0

    @classmethod
    def from_file(cls, settings: ApnsAppSettings) -> ProviderToken:
        """Load the `.p8` key (PKCS#8 PEM, P-256).

        Raises:
            PushConfigError: the file cannot be read or is not a P-256 key.
        """
        assert settings.key_file is not None
        assert settings.key_id is not None
        assert settings.team_id is not None
        try:
            key = load_pem_private_key(settings.key_file.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise PushConfigError(f"cannot read APNs key {settings.key_file}: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise PushConfigError(f"{settings.key_file} is not an ES256 (P-256) key")
        return cls(key, settings.key_id, settings.team_id)

    def current(self, now: float) -> str:
        """The token to send at `now` (UNIX seconds), made anew once it is 40 minutes old."""
        if self._token is None or now - self._issued_at >= JWT_RENEW_AFTER_S:
            self._issued_at = float(int(now))
            self._token = jwt.encode(
                {"iss": self._team_id, "iat": int(now)},
                self._key,
                algorithm="ES256",
                headers={"kid": self._key_id},
            )
        return self._token

    def renew(self, now: float) -> bool:
        """Drop the token after Apple called it expired; False if renewing is not allowed yet."""
        if now - self._issued_at < JWT_MIN_AGE_S:
            return False
        self._token = None
        return True


def interpret(
    status: int, headers: Mapping[str, str], body: bytes, target: PushTarget, now: float
) -> tuple[PushResult, str | None]:
    """Sort APNs's answer by what to do next; also returns Apple's reason, if any.

    `BadDeviceToken` comes back as `Rejected`: the caller first tries the other environment
    (a development token sent to production), and only then calls the token dead.
    """
    if status == 200:
        return Delivered(provider_id=headers.get("apns-id")), None
    reason = "Unknown"
    timestamp_ms: float | None = None
    try:
        answer = json.loads(body) if body else {}
        if isinstance(answer, dict):
            reason = str(answer.get("reason", reason))
            if isinstance(answer.get("timestamp"), int | float):
                timestamp_ms = float(answer["timestamp"])
    except ValueError:
        pass
    if status == 410 or reason in _DEAD:
        # A 410 deletes the token only if Apple saw it invalid after we last received it:
        # a token the app re-registered since is a new registration of the same token.
        if (
            status == 410
            and timestamp_ms is not None
            and timestamp_ms / 1000 <= target.registered_at
        ):
            return Rejected(f"APNs {status} {reason}, before the token was last registered"), reason
        return TokenDead(f"APNs {status} {reason}"), reason
    if status in {429, 500, 503} or status >= 500:
        if reason == "TooManyProviderTokenUpdates":
            return RetryAfter(f"APNs {status} {reason}", JWT_MIN_AGE_S), reason
        return RetryAfter(
            f"APNs {status} {reason}", retry_after_s(headers.get("retry-after"), now)
        ), reason
    if status == 403 or reason in _CONFIG:
        return Misconfigured(f"APNs {status} {reason}"), reason
    return Rejected(f"APNs {status} {reason}"), reason


@dataclass
class _App:
    settings: ApnsAppSettings
    token: ProviderToken | None
    clients: dict[bool, httpx.AsyncClient]


class ApnsProvider:
    """APNs for every configured iOS app: one HTTP/2 connection per app and environment."""

    name = ProviderName.APNS

    def __init__(self, apps: Sequence[ApnsAppSettings], clock: Clock, *, timeout_s: float) -> None:
        """Load every app's key or certificate.

        Raises:
            PushConfigError: a key, certificate or trust anchor cannot be used.
        """
        self._clock = clock
        self._timeout_s = timeout_s
        self._apps: dict[str, _App] = {}
        for settings in apps:
            token = ProviderToken.from_file(settings) if settings.key_file else None
            clients = {
                sandbox: http2_client(
                    timeout_s=timeout_s,
                    ca_file=settings.ca_file,
                    cert_file=settings.cert_file,
                    cert_key_file=settings.cert_key_file,
                )
                for sandbox in (False, True)
            }
            self._apps[settings.bundle_id] = _App(settings, token, clients)

    def serves(self, target: PushTarget) -> bool:
        return target.provider is ProviderName.APNS and target.app in self._apps

    async def send(self, target: PushTarget, notification: Notification) -> PushResult:
        app = self._apps.get(target.app)
        if app is None:
            return Misconfigured(f"no APNs settings for {target.app}")
        if not _TOKEN.fullmatch(target.token):
            return TokenDead("not an APNs device token")
        now = self._clock.now().timestamp()
        try:
            request = apns_request(target.app, notification, now)
        except (PayloadTooLargeError, ValueError) as exc:
            return Rejected(str(exc))
        result, reason = await self._post(
            app, target, target.sandbox, request.headers, request.body
        )
        if reason == "ExpiredProviderToken" and app.token is not None and app.token.renew(now):
            result, reason = await self._post(
                app, target, target.sandbox, request.headers, request.body
            )
        if reason == "BadDeviceToken":
            # A development token sent to production (or the reverse): try the other
            # environment once; the token is dead only if both refuse it.
            other, reason = await self._post(
                app, target, not target.sandbox, request.headers, request.body
            )
            if isinstance(other, Delivered):
                return Delivered(other.provider_id, sandbox=not target.sandbox)
            if reason == "BadDeviceToken":
                return TokenDead("APNs 400 BadDeviceToken in both environments")
            return other
        if isinstance(result, Delivered):
            return Delivered(result.provider_id, sandbox=target.sandbox)
        return result

    async def _post(
        self,
        app: _App,
        target: PushTarget,
        sandbox: bool,
        headers: dict[str, str],
        body: bytes,
    ) -> tuple[PushResult, str | None]:
        settings = app.settings
        base = str(settings.sandbox_url if sandbox else settings.production_url).rstrip("/")
        sent = dict(headers)
        if app.token is not None:
            sent["authorization"] = f"bearer {app.token.current(self._clock.now().timestamp())}"
        try:
            answer = await post(
                app.clients[sandbox], f"{base}/3/device/{target.token}", headers=sent, content=body
            )
        except httpx.HTTPError as exc:
            return network_failure(exc), None
        result, reason = interpret(
            answer.status_code,
            answer.headers,
            answer.content,
            target,
            self._clock.now().timestamp(),
        )
        if not isinstance(result, Delivered):
            logger.info(
                "APNs refused a %s push to %s: %d %s",
                headers["apns-push-type"],
                target.fingerprint,
                answer.status_code,
                reason,
            )
        return result, reason

    async def aclose(self) -> None:
        for app in self._apps.values():
            for client in app.clients.values():
                await client.aclose()
