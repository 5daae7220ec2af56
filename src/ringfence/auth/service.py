"""Device logins (access + refresh tokens) and admin tokens.

Tokens are random (256 bits) and stored only as their SHA-256: a copy of the database gives
no usable token. Access tokens are short-lived; a refresh rotates both tokens. A changed
password or a suspension deletes every session of the account (see provisioning.service).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from ringfence.auth.errors import AccountSuspendedError, InvalidCredentialsError, RateLimitedError
from ringfence.clock import Clock
from ringfence.config import AuthSettings
from ringfence.provisioning.errors import InvalidInputError
from ringfence.provisioning.models import AccountStatus, Device, Platform
from ringfence.provisioning.service import ProvisioningService
from ringfence.state.ratelimit import FailureWindow

ACCESS_PREFIX = "rfa_"
REFRESH_PREFIX = "rfr_"
ADMIN_PREFIX = "rfk_"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str) -> str:
    # The prefix lets secret scanners recognise a leaked token.
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    account_id: str
    device_id: str | None
    access_hash: str
    refresh_hash: str
    access_expires_at: datetime
    refresh_expires_at: datetime
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    access_expires_in_s: int
    refresh_expires_in_s: int


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    install_id: str
    platform: Platform
    app_id: str | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    account_id: str
    #: None when the request carried the password itself (HTTP Basic), not a token.
    session_id: str | None


@dataclass(frozen=True, slots=True)
class AdminToken:
    id: str
    name: str
    token_hash: str
    created_at: datetime


class AuthStore(Protocol):
    async def add_session(self, session: Session) -> None: ...
    async def session_by_access(self, access_hash: str) -> Session | None: ...
    async def session_by_refresh(self, refresh_hash: str) -> Session | None: ...
    async def replace_session(self, session: Session) -> None: ...
    async def delete_session(self, session_id: str) -> None: ...
    async def delete_expired_sessions(self, now: datetime) -> int: ...
    async def upsert_device(self, device: Device) -> Device: ...
    async def add_admin_token(self, token: AdminToken) -> None: ...
    async def admin_token_by_hash(self, token_hash: str) -> AdminToken | None: ...
    async def list_admin_tokens(self) -> list[AdminToken]: ...
    async def delete_admin_token(self, token_id: str) -> bool: ...


def split_login(login: str) -> tuple[str, str]:
    """`alice@acme` → (`alice`, `acme`); split at the last `@`, as Acrobits apps do."""
    username, at, tenant = login.rpartition("@")
    if not at or not username or not tenant:
        raise InvalidInputError("login: must be username@tenant", field="login")
    return username, tenant.lower()


class AuthService:
    def __init__(
        self,
        store: AuthStore,
        provisioning: ProvisioningService,
        settings: AuthSettings,
        clock: Clock,
    ) -> None:
        self._store = store
        self._provisioning = provisioning
        self._settings = settings
        self._clock = clock
        self._per_account = FailureWindow(
            settings.login_failures_per_account, settings.login_window_s
        )
        self._per_address = FailureWindow(
            settings.login_failures_per_address, settings.login_window_s
        )

    async def check_password(self, login: str, password: str, source: str) -> str:
        """Verify a login; returns the account id.

        Raises:
            InvalidInputError: `login` is not `username@tenant`.
            RateLimitedError: too many recent failures for this account or this address.
            InvalidCredentialsError: unknown tenant or account, or wrong password.
            AccountSuspendedError: the credentials are right but the account is suspended.
        """
        username, tenant_ref = split_login(login)
        account_key = f"{tenant_ref}/{username}"
        now = self._clock.monotonic()
        waits = [
            wait
            for wait in (
                self._per_account.retry_after(account_key, now),
                self._per_address.retry_after(source, now),
            )
            if wait is not None
        ]
        if waits:
            raise RateLimitedError(max(waits))
        tenant = await self._provisioning.find_tenant(tenant_ref)
        stored = None
        if tenant is not None:
            stored = await self._provisioning.verify_password(tenant, username, password)
        if stored is None:
            self._per_account.record_failure(account_key, now)
            self._per_address.record_failure(source, now)
            raise InvalidCredentialsError("wrong login or password")
        if stored.status is not AccountStatus.ACTIVE:
            raise AccountSuspendedError("the account is suspended")
        self._per_account.reset(account_key)
        return stored.id

    async def login(
        self, login: str, password: str, source: str, device: DeviceInfo | None = None
    ) -> TokenPair:
        """Log a device in; raises as `check_password`."""
        account_id = await self.check_password(login, password, source)
        device_id = None
        if device is not None:
            now = self._clock.now()
            saved = await self._store.upsert_device(
                Device(
                    id=str(uuid.uuid4()),
                    account_id=account_id,
                    install_key=self._provisioning.install_key(device.install_id),
                    platform=device.platform,
                    app_id=device.app_id,
                    created_at=now,
                    last_seen_at=now,
                )
            )
            device_id = saved.id
        access, refresh = new_token(ACCESS_PREFIX), new_token(REFRESH_PREFIX)
        now = self._clock.now()
        session = Session(
            id=str(uuid.uuid4()),
            account_id=account_id,
            device_id=device_id,
            access_hash=token_hash(access),
            refresh_hash=token_hash(refresh),
            access_expires_at=now + timedelta(seconds=self._settings.access_token_ttl_s),
            refresh_expires_at=now + timedelta(seconds=self._settings.refresh_token_ttl_s),
            created_at=now,
        )
        await self._store.add_session(session)
        return self._pair(access, refresh)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate both tokens of a session.

        Raises:
            InvalidCredentialsError: unknown, revoked or expired refresh token.
            AccountSuspendedError: the account was suspended since.
        """
        session = await self._store.session_by_refresh(token_hash(refresh_token))
        now = self._clock.now()
        if session is None or session.refresh_expires_at <= now:
            raise InvalidCredentialsError("the refresh token is invalid or expired")
        account = await self._provisioning.account_by_id(session.account_id)
        if account.status is not AccountStatus.ACTIVE:
            raise AccountSuspendedError("the account is suspended")
        access, refresh = new_token(ACCESS_PREFIX), new_token(REFRESH_PREFIX)
        await self._store.replace_session(
            replace(
                session,
                access_hash=token_hash(access),
                refresh_hash=token_hash(refresh),
                access_expires_at=now + timedelta(seconds=self._settings.access_token_ttl_s),
                refresh_expires_at=now + timedelta(seconds=self._settings.refresh_token_ttl_s),
            )
        )
        return self._pair(access, refresh)

    async def authenticate(self, access_token: str) -> Principal:
        """The principal behind an access token.

        Raises:
            InvalidCredentialsError: unknown, revoked or expired access token.
        """
        session = await self._store.session_by_access(token_hash(access_token))
        if session is None or session.access_expires_at <= self._clock.now():
            raise InvalidCredentialsError("the access token is invalid or expired")
        return Principal(account_id=session.account_id, session_id=session.id)

    async def logout(self, principal: Principal) -> None:
        if principal.session_id is not None:
            await self._store.delete_session(principal.session_id)

    async def sweep_sessions(self) -> int:
        """Delete sessions whose refresh token has expired: kept no longer than usable (P15)."""
        return await self._store.delete_expired_sessions(self._clock.now())

    # -- admin tokens ----------------------------------------------------------------------

    async def create_admin_token(self, name: str) -> tuple[AdminToken, str]:
        """A new admin token; the secret is returned once and stored only as its hash."""
        if not 0 < len(name) <= 64 or not name.isprintable():
            raise InvalidInputError("name: must be 1 to 64 printable characters", field="name")
        secret = new_token(ADMIN_PREFIX)
        token = AdminToken(
            id=str(uuid.uuid4()),
            name=name,
            token_hash=token_hash(secret),
            created_at=self._clock.now(),
        )
        await self._store.add_admin_token(token)
        return token, secret

    async def authenticate_admin(self, secret: str) -> AdminToken:
        token = await self._store.admin_token_by_hash(token_hash(secret))
        if token is None:
            raise InvalidCredentialsError("the admin token is invalid")
        return token

    async def admin_tokens(self) -> list[AdminToken]:
        return await self._store.list_admin_tokens()

    async def revoke_admin_token(self, token_id: str) -> bool:
        return await self._store.delete_admin_token(token_id)

    def _pair(self, access: str, refresh: str) -> TokenPair:
        return TokenPair(
            access_token=access,
            refresh_token=refresh,
            access_expires_in_s=self._settings.access_token_ttl_s,
            refresh_expires_in_s=self._settings.refresh_token_ttl_s,
        )
