"""Firebase Cloud Messaging HTTP v1, authenticated by a service account.

The service account's key signs a JWT (RS256, `kid` = `private_key_id`) that the OAuth2
token endpoint (`token_uri`, RFC 7523 JWT bearer grant) exchanges for an access token of
about an hour; the token is kept until `REFRESH_EARLY_S` before it expires.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ringfence.clock import Clock
from ringfence.config import FcmAppSettings
from ringfence.push.errors import PushConfigError
from ringfence.push.http import http2_client, network_failure, post, retry_after_s
from ringfence.push.payload import PayloadTooLargeError, fcm_message
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

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Google caps an assertion's lifetime at an hour.
ASSERTION_LIFETIME_S = 3600
#: Refresh the access token this long before it expires, so no push waits on a refresh.
REFRESH_EARLY_S = 300


@dataclass(frozen=True)
class ServiceAccount:
    """The fields of a Google service-account JSON file that FCM needs."""

    project_id: str
    client_email: str
    private_key_id: str
    private_key: rsa.RSAPrivateKey
    token_uri: str

    @classmethod
    def load(cls, path: Path) -> ServiceAccount:
        """Read and check a service-account file.

        Raises:
            PushConfigError: the file is missing, not JSON, lacks a field, or its key is not RSA.
        """
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PushConfigError(f"cannot read service account {path}: {exc}") from exc
        fields = ("project_id", "client_email", "private_key_id", "private_key", "token_uri")
        missing = [name for name in fields if not isinstance(raw.get(name), str)]
        if missing:
            raise PushConfigError(f"service account {path} lacks {', '.join(missing)}")
        try:
            key = load_pem_private_key(raw["private_key"].encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise PushConfigError(f"service account {path}: unreadable private_key") from exc
        if not isinstance(key, rsa.RSAPrivateKey):
            raise PushConfigError(f"service account {path}: private_key is not RSA")
        return cls(
            project_id=raw["project_id"],
            client_email=raw["client_email"],
            private_key_id=raw["private_key_id"],
            private_key=key,
            token_uri=raw["token_uri"],
        )

    def assertion(self, token_uri: str, now: float) -> str:
        """The signed JWT that the token endpoint exchanges for an access token."""
        issued = int(now)
        claims = {
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": token_uri,
            "iat": issued,
            "exp": issued + ASSERTION_LIFETIME_S,
        }
        return jwt.encode(
            claims, self.private_key, algorithm="RS256", headers={"kid": self.private_key_id}
        )


class _TokenRefusedError(Exception):
    def __init__(self, result: PushResult) -> None:
        super().__init__(str(result))
        self.result = result


@dataclass
class _Project:
    account: ServiceAccount
    url: str
    token_uri: str
    client: httpx.AsyncClient
    token_client: httpx.AsyncClient
    access_token: str | None = None
    expires_at: float = 0.0
    #: One refresh at a time: the pushes that find the token stale wait for it.
    refreshing: asyncio.Lock = field(default_factory=asyncio.Lock)


def interpret(status: int, headers: Mapping[str, str], body: bytes, now: float) -> PushResult:
    """Sort FCM's answer by what to do next (FCM HTTP v1 error codes)."""
    if status == 200:
        try:
            name = json.loads(body).get("name")
        except (ValueError, AttributeError):
            name = None
        return Delivered(provider_id=name if isinstance(name, str) else None)
    code, status_name = "", ""
    try:
        error = json.loads(body)["error"]
        status_name = str(error.get("status", ""))
        for detail in error.get("details", ()):
            if str(detail.get("@type", "")).endswith("FcmError"):
                code = str(detail.get("errorCode", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    reason = f"FCM {status} {code or status_name or 'error'}"
    if code in {"UNREGISTERED", "SENDER_ID_MISMATCH"} or status == 404:
        # SENDER_ID_MISMATCH: the token belongs to another project; it will never work here.
        return TokenDead(reason)
    if status in {429, 500, 503} or status >= 500:
        return RetryAfter(reason, retry_after_s(headers.get("retry-after"), now))
    if status in {401, 403} or code == "THIRD_PARTY_AUTH_ERROR":
        return Misconfigured(reason)
    return Rejected(reason)


class FcmProvider:
    """FCM for every configured Firebase project (RFC 8599 `pn-param` is the project id)."""

    name = ProviderName.FCM

    def __init__(
        self, projects: Sequence[FcmAppSettings], clock: Clock, *, timeout_s: float
    ) -> None:
        """Load every service account.

        Raises:
            PushConfigError: a service account or trust anchor cannot be used.
        """
        self._clock = clock
        self._projects: dict[str, _Project] = {}
        for settings in projects:
            account = ServiceAccount.load(settings.service_account_file)
            token_uri = str(settings.token_url) if settings.token_url else account.token_uri
            self._projects[account.project_id] = _Project(
                account=account,
                url=str(settings.url).rstrip("/"),
                token_uri=token_uri,
                client=http2_client(timeout_s=timeout_s, ca_file=settings.ca_file),
                token_client=http2_client(timeout_s=timeout_s, ca_file=settings.ca_file),
            )

    def serves(self, target: PushTarget) -> bool:
        return target.provider is ProviderName.FCM and target.app in self._projects

    async def send(self, target: PushTarget, notification: Notification) -> PushResult:
        project = self._projects.get(target.app)
        if project is None:
            return Misconfigured(f"no FCM settings for project {target.app}")
        try:
            body = fcm_message(target.token, notification)
        except PayloadTooLargeError as exc:
            return Rejected(str(exc))
        result = await self._post(project, body, target)
        if isinstance(result, Misconfigured) and result.reason.startswith("FCM 401"):
            # The access token may have been revoked before its time: one fresh try.
            project.access_token = None
            result = await self._post(project, body, target)
        return result

    async def _post(
        self, project: _Project, body: dict[str, object], target: PushTarget
    ) -> PushResult:
        try:
            token = await self._access_token(project)
        except _TokenRefusedError as refused:
            return refused.result
        try:
            answer = await post(
                project.client,
                f"{project.url}/v1/projects/{project.account.project_id}/messages:send",
                json=body,
                headers={"authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            return network_failure(exc)
        result = interpret(answer.status_code, answer.headers, answer.content, self._now())
        if not isinstance(result, Delivered):
            logger.info("FCM refused a push to %s: %s", target.fingerprint, result)
        return result

    async def _access_token(self, project: _Project) -> str:
        if (token := self._fresh(project)) is not None:
            return token
        async with project.refreshing:
            if (token := self._fresh(project)) is not None:
                return token
            return await self._refresh(project)

    def _fresh(self, project: _Project) -> str | None:
        if project.access_token is not None and self._now() < project.expires_at - REFRESH_EARLY_S:
            return project.access_token
        return None

    async def _refresh(self, project: _Project) -> str:
        now = self._now()
        form = {
            "grant_type": GRANT_TYPE,
            "assertion": project.account.assertion(project.token_uri, now),
        }
        try:
            answer = await post(project.token_client, project.token_uri, data=form)
        except httpx.HTTPError as exc:
            raise _TokenRefusedError(network_failure(exc)) from exc
        if answer.status_code >= 500 or answer.status_code == 429:
            delay = retry_after_s(answer.headers.get("retry-after"), now)
            raise _TokenRefusedError(RetryAfter(f"token endpoint {answer.status_code}", delay))
        try:
            grant = answer.json()
            token, lifetime = str(grant["access_token"]), float(grant["expires_in"])
        except (ValueError, KeyError, TypeError) as exc:
            # 400 invalid_grant, 401 invalid_client: the service account is refused.
            raise _TokenRefusedError(
                Misconfigured(f"token endpoint {answer.status_code}: no access token")
            ) from exc
        if not answer.is_success:
            raise _TokenRefusedError(Misconfigured(f"token endpoint {answer.status_code}"))
        project.access_token, project.expires_at = token, now + lifetime
        return token

    def _now(self) -> float:
        return self._clock.now().timestamp()

    async def aclose(self) -> None:
        for project in self._projects.values():
            await project.client.aclose()
            await project.token_client.aclose()
