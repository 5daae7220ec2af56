"""Provisioning: the rules for tenants and accounts, over a store this module defines."""

from __future__ import annotations

import enum
import hmac
import itertools
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import EllipsisType
from typing import Any, Literal, Protocol

from ringfence.clock import Clock
from ringfence.crypto import Keyring, SubjectCipher
from ringfence.provisioning.errors import ConflictError, InvalidInputError, NotFoundError
from ringfence.provisioning.features import (
    Feature,
    FeatureConfig,
    effective_config,
    merge_overrides,
)
from ringfence.provisioning.models import (
    E164_RE,
    EMAIL_MAX_CHARS,
    EMAIL_RE,
    SIP_DOMAIN_RE,
    TENANT_CODE_RE,
    USERNAME_RE,
    Account,
    AccountChange,
    AccountStatus,
    StoredAccount,
    Tenant,
    UpstreamPbx,
)
from ringfence.sip.digest import DigestAlgorithm, ha1
from ringfence.sip.uri import URIError, is_valid_host, split_hostport

#: How long the SIP credentials cache may answer for another node's change (see __init__);
#: each entry gets between half of it and all of it.
SIP_CACHE_TTL_S = 30.0
SIP_CACHE_MAX_ENTRIES = 200_000
#: An entry past its TTL is still answered from, up to this age, while it is reloaded in the
#: background (`refresh_sip_credentials`); an older one is loaded before answering.
SIP_CACHE_STALE_MAX_S = 300.0


class NotLoaded(enum.Enum):
    """What a memory-only lookup answers when the answer needs the database."""

    NOT_LOADED = "not loaded"


NOT_LOADED = NotLoaded.NOT_LOADED
#: Accounts loaded per database round trip when warming or refreshing the cache (opening
#: them holds the event loop for about 10 ms).
SIP_LOAD_BATCH = 200
PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_CHARS = 128
DISPLAY_NAME_MAX_CHARS = 128
#: The registration intervals an upstream PBX may be asked for (RFC 3261 §10.2.1.1).
UPSTREAM_MIN_EXPIRES_S = 60
UPSTREAM_MAX_EXPIRES_S = 86_400
#: Accounts written per transaction by `import_accounts`.
IMPORT_BATCH = 500
#: Envelope contexts: each sealed field is bound to its own name (see crypto.envelope).
CTX_USERNAME = "account.username"
CTX_DISPLAY_NAME = "account.display_name"
CTX_E164 = "account.e164"
CTX_EMAIL = "account.email"
CTX_HA1_MD5 = "account.ha1.md5"
CTX_HA1_SHA256 = "account.ha1.sha256"


class ProvisioningStore(Protocol):
    """Accounts are found by their user name's blind index (`username_key`), never by name."""

    async def add_tenant(self, tenant: Tenant) -> None: ...
    async def get_tenant(self, tenant_id: str) -> Tenant | None: ...
    async def find_tenant(self, code_or_domain: str) -> Tenant | None: ...
    async def list_tenants(self) -> list[Tenant]: ...
    async def update_tenant(self, tenant: Tenant) -> None: ...
    async def delete_tenant(self, tenant_id: str) -> None: ...
    async def add_account(self, account: StoredAccount) -> None: ...
    async def get_account(self, tenant_id: str, username_key: str) -> StoredAccount | None: ...
    async def get_account_by_id(self, account_id: str) -> StoredAccount | None: ...
    async def find_sip_account(
        self, domain: str, username_key: str
    ) -> tuple[Tenant, StoredAccount] | None: ...
    async def find_sip_accounts(
        self, keys: Sequence[tuple[str, str]]
    ) -> list[tuple[Tenant, StoredAccount]]: ...
    async def sip_accounts_page(
        self, after_id: str | None, limit: int
    ) -> list[tuple[Tenant, StoredAccount]]: ...
    async def list_accounts(
        self, tenant_id: str, *, offset: int, limit: int
    ) -> list[StoredAccount]: ...
    async def add_accounts(self, new: Sequence[StoredAccount]) -> None: ...
    async def taken_usernames(self, tenant_id: str, username_keys: Sequence[str]) -> set[str]: ...
    async def update_account(self, account: StoredAccount, *, revoke_sessions: bool) -> None: ...
    async def delete_account(self, account_id: str) -> None: ...


class AccountListener(Protocol):
    """A service that keeps data of accounts and must hear when they go or change (P3)."""

    async def account_erased(self, account_id: str) -> None:
        """The account is being erased: destroy what is kept of it."""
        ...

    async def accounts_reconfigured(self, configs: Sequence[tuple[str, FeatureConfig]]) -> None:
        """These accounts have a new effective configuration (a feature may be off now)."""
        ...


@dataclass(frozen=True, slots=True)
class NewAccount:
    """One row of a bulk import (`ProvisioningService.import_accounts`)."""

    username: str
    password: str = field(repr=False)
    display_name: str | None = None
    e164: str | None = None
    email: str | None = None


@dataclass(frozen=True, slots=True)
class SipCredentials:
    """An account's digest secrets, opened for one authentication (never stored opened)."""

    account_id: str
    tenant: Tenant
    username: str
    active: bool
    ha1: dict[DigestAlgorithm, str] = field(repr=False)
    #: The account wakes by push (P4: otherwise nothing may go to the push server).
    push: bool = False
    #: How long a sleeping device's push binding is kept after its last REGISTER (P3).
    push_max_age_s: int = 3 * 86_400
    #: Messages may be kept for the account (P1): held while its devices sleep, and in its
    #: message history.
    messaging: bool = True
    #: How long its message history keeps a message (P15).
    message_retention_days: int = 90


def account_subject(account_id: str) -> str:
    """The keyring subject of an account: its data key seals all its personal data."""
    return f"account:{account_id}"


def _check(pattern_ok: bool, field: str, reason: str) -> None:
    if not pattern_ok:
        raise InvalidInputError(f"{field}: {reason}", field=field)


def _check_upstream(upstream: UpstreamPbx) -> None:
    """The PBX must be a host ringfence can reach, named without a scheme or a port."""
    host = upstream.host.lower()
    _check(
        len(host) <= 253 and is_valid_host(host),
        "upstream.host",
        "must be the PBX's DNS name or IP address (its port goes in upstream.port)",
    )
    _check(
        upstream.port is None or 1 <= upstream.port <= 65535,
        "upstream.port",
        "must be 1 to 65535, or absent for RFC 3263 (SRV) lookup",
    )
    _check(
        UPSTREAM_MIN_EXPIRES_S <= upstream.expires_s <= UPSTREAM_MAX_EXPIRES_S,
        "upstream.expires_s",
        f"must be {UPSTREAM_MIN_EXPIRES_S} to {UPSTREAM_MAX_EXPIRES_S} seconds",
    )
    if upstream.outbound_proxy is not None:
        try:
            _, proxy_port = split_hostport(upstream.outbound_proxy)
            if proxy_port == 0:
                raise URIError("port 0")
        except URIError:
            _check(
                False,
                "upstream.outbound_proxy",
                "must be host[:port], such as sbc.example.com:5060",
            )


def _check_password(password: str) -> None:
    _check(
        PASSWORD_MIN_CHARS <= len(password) <= PASSWORD_MAX_CHARS,
        "password",
        f"must be {PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} characters",
    )


def _check_display_name(name: str) -> None:
    _check(
        0 < len(name) <= DISPLAY_NAME_MAX_CHARS and name.isprintable(),
        "display_name",
        f"must be 1 to {DISPLAY_NAME_MAX_CHARS} printable characters",
    )


def _check_e164(number: str) -> None:
    _check(bool(E164_RE.fullmatch(number)), "e164", "must be an E.164 number such as +41445551234")


def _check_email(address: str) -> None:
    _check(
        len(address) <= EMAIL_MAX_CHARS and bool(EMAIL_RE.fullmatch(address)),
        "email",
        "must be an address such as alice@example.com",
    )


class ProvisioningService:
    def __init__(self, store: ProvisioningStore, keyring: Keyring, clock: Clock) -> None:
        self._store = store
        self._keyring = keyring
        self._clock = clock
        # User names are sealed like the rest; lookups go by their blind index (P19: an old
        # copy of the database must not show them).
        self._names = keyring.blind_index(CTX_USERNAME)
        self._installs = keyring.blind_index("device.install_id")
        # The SIP hot path asks for the same accounts thousands of times a second: a cache
        # of their opened digest secrets, in memory only, warmed at start. Changes made here
        # evict at once (and bump the generation, so that a load that read the database
        # before the change is not cached); another node's changes are seen within
        # SIP_CACHE_TTL_S plus one background refresh.
        self._sip_cache: dict[tuple[str, str], tuple[float, SipCredentials | None]] = {}
        self._sip_stale: dict[tuple[str, str], None] = {}  # an ordered set
        #: account id -> its key in `_sip_cache` (`sip_identity`).
        self._sip_ids: dict[str, tuple[str, str]] = {}
        self._sip_generation = 0
        self._domains: tuple[float, frozenset[str]] | None = None
        self._domains_loading = False
        #: Told of every erasure and configuration change (the push instances, P3).
        self.listeners: list[AccountListener] = []

    # -- tenants ---------------------------------------------------------------------------

    async def create_tenant(
        self,
        code: str,
        name: str,
        sip_domain: str,
        defaults: FeatureConfig | None = None,
        upstream: UpstreamPbx | None = None,
    ) -> Tenant:
        _check(
            bool(TENANT_CODE_RE.fullmatch(code)),
            "code",
            "must be 1 to 63 lowercase letters, digits or inner hyphens",
        )
        _check(
            bool(SIP_DOMAIN_RE.fullmatch(sip_domain)),
            "sip_domain",
            "must be a lowercase DNS name such as sip.example.com",
        )
        _check(
            0 < len(name) <= 128 and name.isprintable(),
            "name",
            "must be 1 to 128 printable characters",
        )
        if upstream is not None:
            _check_upstream(upstream)
        if await self._store.find_tenant(code) is not None:
            raise ConflictError(f"code: tenant {code!r} exists", field="code")
        if await self._store.find_tenant(sip_domain) is not None:
            raise ConflictError(f"sip_domain: {sip_domain!r} is in use", field="sip_domain")
        tenant = Tenant(
            id=str(uuid.uuid4()),
            code=code,
            name=name,
            sip_domain=sip_domain,
            defaults=defaults or FeatureConfig(),
            created_at=self._clock.now(),
            upstream=upstream,
        )
        await self._store.add_tenant(tenant)
        self._domains = None
        return tenant

    async def tenant(self, code: str) -> Tenant:
        """The tenant with this code (admin paths name tenants by code only)."""
        tenant = await self._store.find_tenant(code)
        if tenant is None or tenant.code != code:
            raise NotFoundError(f"no tenant {code!r}", field="tenant")
        return tenant

    async def find_tenant(self, code_or_domain: str) -> Tenant | None:
        """The tenant a login names after its `@`: its code or its SIP domain."""
        return await self._store.find_tenant(code_or_domain.lower())

    async def tenants(self) -> list[Tenant]:
        return await self._store.list_tenants()

    async def update_tenant(
        self,
        code: str,
        *,
        name: str | None = None,
        defaults: FeatureConfig | None = None,
        upstream: UpstreamPbx | EllipsisType | None = ...,
    ) -> Tenant:
        """Change what is given; `upstream=None` makes the tenant standalone again."""
        tenant = await self.tenant(code)
        if isinstance(upstream, UpstreamPbx):
            _check_upstream(upstream)
        if name is not None:
            _check(
                0 < len(name) <= 128 and name.isprintable(),
                "name",
                "must be 1 to 128 printable characters",
            )
        new_defaults = defaults or tenant.defaults
        configs: list[tuple[str, FeatureConfig]] = []
        if defaults is not None:
            # Every account's overrides must still make a valid configuration.
            offset = 0
            while batch := await self._store.list_accounts(tenant.id, offset=offset, limit=500):
                for stored in batch:
                    try:
                        configs.append(
                            (stored.id, effective_config(new_defaults, stored.overrides))
                        )
                    except InvalidInputError as exc:
                        username = await self._username_of(stored)
                        raise ConflictError(
                            f"config: account {username!r} overrides would become "
                            f"invalid ({exc.message})",
                            field="config",
                        ) from exc
                offset += len(batch)
        updated = replace(
            tenant,
            name=name if name is not None else tenant.name,
            defaults=new_defaults,
            upstream=tenant.upstream if isinstance(upstream, EllipsisType) else upstream,
        )
        await self._store.update_tenant(updated)
        # The defaults decide each account's push mode (SipCredentials.push).
        self._forget_sip(tenant_domain=tenant.sip_domain)
        if configs:
            for listener in self.listeners:
                await listener.accounts_reconfigured(configs)
        return updated

    async def delete_tenant(self, code: str) -> list[str]:
        """Delete a tenant and its accounts, destroying each account's key first.

        Returns:
            The ids of the accounts erased.
        """
        tenant = await self.tenant(code)
        erased = []
        while batch := await self._store.list_accounts(tenant.id, offset=0, limit=500):
            for stored in batch:
                await self._erase_account(stored)
                erased.append(stored.id)
        await self._store.delete_tenant(tenant.id)
        self._forget_sip(tenant_domain=tenant.sip_domain)
        self._domains = None
        return erased

    async def tenant_id(self, code: str) -> str:
        """The id of a tenant.

        Raises:
            NotFoundError: no such tenant.
        """
        return (await self.tenant(code)).id

    # -- accounts --------------------------------------------------------------------------

    async def create_account(
        self,
        tenant_code: str,
        username: str,
        password: str,
        *,
        display_name: str | None = None,
        e164: str | None = None,
        overrides: dict[str, Any] | None = None,
        email: str | None = None,
    ) -> Account:
        tenant = await self.tenant(tenant_code)
        _check(
            bool(USERNAME_RE.fullmatch(username)),
            "username",
            "must be 1 to 64 letters, digits or . _ ~ + -",
        )
        _check_password(password)
        if display_name is not None:
            _check_display_name(display_name)
        if e164 is not None:
            _check_e164(e164)
        if email is not None:
            _check_email(email)
        overrides = merge_overrides({}, overrides or {})
        effective_config(tenant.defaults, overrides)
        username_key = self._names.of(username)
        if await self._store.get_account(tenant.id, username_key) is not None:
            raise ConflictError(f"username: {username!r} exists in {tenant.code}", field="username")
        account_id = str(uuid.uuid4())
        cipher = await self._keyring.create(account_subject(account_id))
        now = self._clock.now()
        stored = StoredAccount(
            id=account_id,
            tenant_id=tenant.id,
            username_key=username_key,
            username_sealed=cipher.seal_text(CTX_USERNAME, username),
            status=AccountStatus.ACTIVE,
            display_name_sealed=_seal_opt(cipher, CTX_DISPLAY_NAME, display_name),
            e164_sealed=_seal_opt(cipher, CTX_E164, e164),
            email_sealed=_seal_opt(cipher, CTX_EMAIL, email),
            ha1_md5_sealed=b"",
            ha1_sha256_sealed=b"",
            overrides=overrides,
            created_at=now,
            updated_at=now,
        )
        stored = _with_password(stored, cipher, tenant, username, password)
        self._forget_sip(domain=tenant.sip_domain, username=username)
        try:
            await self._store.add_account(stored)
        except BaseException:
            # No orphan key: the account row never came to be.
            await self._keyring.destroy(cipher.subject)
            raise
        return self._open(stored, tenant, cipher)

    async def import_accounts(self, tenant_code: str, rows: Sequence[NewAccount]) -> int:
        """Create many accounts: every row is checked before any is written.

        They are then written in transactions of IMPORT_BATCH, keys first, as
        `create_account` does.

        Raises:
            InvalidInputError: a row is invalid (the field is `rows[N].<name>`); nothing
                is written.
            ConflictError: a username is repeated in the rows or exists; nothing is written.

        Returns:
            How many accounts were created.
        """
        tenant = await self.tenant(tenant_code)
        seen: set[str] = set()
        for index, row in enumerate(rows):
            try:
                _check(
                    bool(USERNAME_RE.fullmatch(row.username)),
                    "username",
                    "must be 1 to 64 letters, digits or . _ ~ + -",
                )
                _check_password(row.password)
                if row.display_name is not None:
                    _check_display_name(row.display_name)
                if row.e164 is not None:
                    _check_e164(row.e164)
                if row.email is not None:
                    _check_email(row.email)
            except InvalidInputError as exc:
                raise InvalidInputError(
                    f"rows[{index}].{exc.message}", field=f"rows[{index}].{exc.field}"
                ) from exc
            if row.username in seen:
                raise ConflictError(
                    f"rows[{index}].username: {row.username!r} is repeated",
                    field=f"rows[{index}].username",
                )
            seen.add(row.username)
        by_key = {self._names.of(row.username): row.username for row in rows}
        taken = {by_key[key] for key in await self._store.taken_usernames(tenant.id, list(by_key))}
        if taken:
            first = min(taken)
            raise ConflictError(
                f"username: {first!r} exists in {tenant.code} ({len(taken)} taken)",
                field="username",
            )
        for start in range(0, len(rows), IMPORT_BATCH):
            await self._import_batch(tenant, rows[start : start + IMPORT_BATCH])
        return len(rows)

    async def _import_batch(self, tenant: Tenant, rows: Sequence[NewAccount]) -> None:
        ids = [str(uuid.uuid4()) for _ in rows]
        ciphers = await self._keyring.create_many([account_subject(i) for i in ids])
        now = self._clock.now()
        new = []
        for account_id, row in zip(ids, rows, strict=True):
            cipher = ciphers[account_subject(account_id)]
            stored = StoredAccount(
                id=account_id,
                tenant_id=tenant.id,
                username_key=self._names.of(row.username),
                username_sealed=cipher.seal_text(CTX_USERNAME, row.username),
                status=AccountStatus.ACTIVE,
                display_name_sealed=_seal_opt(cipher, CTX_DISPLAY_NAME, row.display_name),
                e164_sealed=_seal_opt(cipher, CTX_E164, row.e164),
                email_sealed=_seal_opt(cipher, CTX_EMAIL, row.email),
                ha1_md5_sealed=b"",
                ha1_sha256_sealed=b"",
                overrides={},
                created_at=now,
                updated_at=now,
            )
            new.append(_with_password(stored, cipher, tenant, row.username, row.password))
        self._forget_sip(tenant_domain=tenant.sip_domain)
        try:
            await self._store.add_accounts(new)
        except BaseException:
            # No orphan keys: the accounts never came to be.
            for subject in ciphers:
                await self._keyring.destroy(subject)
            raise

    def install_key(self, install_id: str) -> str:
        """What a device row keeps of the app's install id: its blind index."""
        return self._installs.of(install_id)

    async def seal_usernames(
        self, names: Sequence[tuple[str, str]]
    ) -> dict[str, tuple[str, bytes]]:
        """Blind index and sealed form of each (account id, user name) whose key exists.

        For the migration that sealed the names (storage revision 0003).
        """
        sealed: dict[str, tuple[str, bytes]] = {}
        for start in range(0, len(names), IMPORT_BATCH):
            batch = names[start : start + IMPORT_BATCH]
            ciphers = await self._keyring.ciphers([account_subject(i) for i, _ in batch])
            for account_id, username in batch:
                cipher = ciphers.get(account_subject(account_id))
                if cipher is not None:
                    sealed[account_id] = (
                        self._names.of(username),
                        cipher.seal_text(CTX_USERNAME, username),
                    )
        return sealed

    async def account(self, tenant_code: str, username: str) -> Account:
        tenant = await self.tenant(tenant_code)
        stored = await self._stored(tenant, username)
        return await self.open_account(stored, tenant)

    async def account_id(self, tenant_code: str, username: str) -> str:
        """The id of an account, without opening its sealed data.

        Raises:
            NotFoundError: no such tenant or account.
        """
        return (await self._stored(await self.tenant(tenant_code), username)).id

    async def contact_page(self, after_id: str | None, limit: int) -> list[tuple[str, str | None]]:
        """(account id, email or None) of up to `limit` accounts after `after_id`, id order."""
        page = await self._store.sip_accounts_page(after_id, limit)
        ciphers = await self._keyring.ciphers([account_subject(s.id) for _, s in page])
        return [
            (
                stored.id,
                _open_opt(ciphers[account_subject(stored.id)], CTX_EMAIL, stored.email_sealed),
            )
            for _, stored in page
        ]

    #: The personal fields a user may have corrected (P19 rectification).
    RECTIFIABLE = ("display_name", "e164", "email")

    def check_rectification(self, fields: Mapping[str, str | None]) -> None:
        """Refuse unknown fields and bad values before anything is recorded.

        Raises:
            InvalidInputError: naming the field.
        """
        for name, value in fields.items():
            if name not in self.RECTIFIABLE:
                raise InvalidInputError(
                    f"changes.{name}: not a field that can be corrected here; "
                    f"these can: {', '.join(self.RECTIFIABLE)}",
                    field=f"changes.{name}",
                )
            if value is None:
                continue
            check = {
                "display_name": _check_display_name,
                "e164": _check_e164,
                "email": _check_email,
            }[name]
            try:
                check(value)
            except InvalidInputError as exc:
                raise InvalidInputError(
                    f"changes.{exc.message}", field=f"changes.{exc.field}"
                ) from exc

    async def rectify(self, account_id: str, fields: Mapping[str, str | None]) -> None:
        """Set, or with None clear, the account's display name, number or email."""
        self.check_rectification(fields)
        tenant, username = await self.account_summary(account_id)
        change = AccountChange(
            display_name=fields.get("display_name"),
            clear_display_name="display_name" in fields and fields["display_name"] is None,
            e164=fields.get("e164"),
            clear_e164="e164" in fields and fields["e164"] is None,
            email=fields.get("email"),
            clear_email="email" in fields and fields["email"] is None,
        )
        await self.update_account(tenant, username, change)

    async def account_summary(self, account_id: str) -> tuple[str, str]:
        """(tenant code, username) of an account.

        Raises:
            NotFoundError: no such account.
        """
        stored = await self._store.get_account_by_id(account_id)
        tenant = await self._store.get_tenant(stored.tenant_id) if stored else None
        if stored is None or tenant is None:
            raise NotFoundError("no such account", field="account")
        return tenant.code, await self._username_of(stored)

    async def number_of_record(self, account_id: str) -> str | None:
        """The account's E.164 number, if it has one (where verification codes go, P21)."""
        return (await self.account_by_id(account_id)).e164

    async def account_export(self, account_id: str) -> dict[str, dict[str, Any]]:
        """The account's own categories, opened, for its subject's access request (P19)."""
        account = await self.account_by_id(account_id)
        return {
            "account identity": {
                "username": account.username,
                "sip_address": account.aor,
                "display_name": account.display_name,
                "e164": account.e164,
                "email": account.email,
            },
            "account settings": {
                "tenant": account.tenant.code,
                "status": account.status.value,
                "configuration": account.config.model_dump(mode="json"),
                "created_at": account.created_at,
                "updated_at": account.updated_at,
            },
        }

    async def account_by_id(self, account_id: str) -> Account:
        stored = await self._store.get_account_by_id(account_id)
        if stored is None:
            raise NotFoundError("no such account", field="account")
        tenant = await self._store.get_tenant(stored.tenant_id)
        if tenant is None:
            raise NotFoundError("no such tenant", field="tenant")
        return await self.open_account(stored, tenant)

    async def accounts(
        self, tenant_code: str, *, offset: int = 0, limit: int = 100
    ) -> list[Account]:
        tenant = await self.tenant(tenant_code)
        stored = await self._store.list_accounts(tenant.id, offset=offset, limit=limit)
        return [await self.open_account(item, tenant) for item in stored]

    async def update_account(
        self, tenant_code: str, username: str, change: AccountChange
    ) -> Account:
        """Apply `change`; a new password revokes every token of the account."""
        tenant = await self.tenant(tenant_code)
        stored = await self._stored(tenant, username)
        cipher = await self._keyring.cipher(account_subject(stored.id))
        display_sealed = stored.display_name_sealed
        if change.clear_display_name:
            display_sealed = None
        elif change.display_name is not None:
            _check_display_name(change.display_name)
            display_sealed = cipher.seal_text(CTX_DISPLAY_NAME, change.display_name)
        e164_sealed = stored.e164_sealed
        if change.clear_e164:
            e164_sealed = None
        elif change.e164 is not None:
            _check_e164(change.e164)
            e164_sealed = cipher.seal_text(CTX_E164, change.e164)
        email_sealed = stored.email_sealed
        if change.clear_email:
            email_sealed = None
        elif change.email is not None:
            _check_email(change.email)
            email_sealed = cipher.seal_text(CTX_EMAIL, change.email)
        overrides = stored.overrides
        if change.overrides is not None:
            overrides = merge_overrides(stored.overrides, change.overrides)
            effective_config(tenant.defaults, overrides)
        if change.password is not None:
            _check_password(change.password)
        updated = replace(
            stored,
            status=change.status or stored.status,
            display_name_sealed=display_sealed,
            e164_sealed=e164_sealed,
            email_sealed=email_sealed,
            overrides=overrides,
            updated_at=self._clock.now(),
        )
        if change.password is not None:
            updated = _with_password(updated, cipher, tenant, username, change.password)
        # A new password or a suspension ends every session at once.
        revoke = change.password is not None or updated.status is AccountStatus.SUSPENDED
        await self._store.update_account(updated, revoke_sessions=revoke)
        self._forget_sip(domain=tenant.sip_domain, username=username)
        account = self._open(updated, tenant, cipher)
        if change.overrides is not None:
            for listener in self.listeners:
                await listener.accounts_reconfigured([(account.id, account.config)])
        return account

    async def delete_account(self, tenant_code: str, username: str) -> None:
        tenant = await self.tenant(tenant_code)
        await self._erase_account(await self._stored(tenant, username))

    async def verify_password(
        self, tenant: Tenant, username: str, password: str
    ) -> StoredAccount | None:
        """The account if `password` is right, else None; same work whether or not it exists."""
        candidate = ha1(DigestAlgorithm.SHA256, username, tenant.sip_domain, password)
        stored = await self._store.get_account(tenant.id, self._names.of(username))
        if stored is None:
            hmac.compare_digest(candidate, candidate)
            return None
        cipher = await self._keyring.cipher(account_subject(stored.id))
        expected = cipher.open_text(CTX_HA1_SHA256, stored.ha1_sha256_sealed)
        return stored if hmac.compare_digest(candidate, expected) else None

    async def is_tenant_domain(self, domain: str) -> bool:
        """Whether `domain` is a tenant's SIP domain (a code does not count).

        From a cache of SIP_CACHE_TTL_S. One request reloads it when it expires; the
        others meanwhile answer from the old set, so that a busy node does not send every
        request of that moment to the database (which exhausted its connection pool).
        """
        cached = self._domains
        if cached is None or cached[0] <= self._clock.monotonic():
            if cached is not None and self._domains_loading:
                return domain.lower() in cached[1]
            self._domains_loading = True
            try:
                tenants = await self._store.list_tenants()
            finally:
                self._domains_loading = False
            domains = frozenset(tenant.sip_domain for tenant in tenants)
            cached = self._domains = (self._clock.monotonic() + SIP_CACHE_TTL_S, domains)
        return domain.lower() in cached[1]

    async def sip_credentials(self, domain: str, username: str) -> SipCredentials | None:
        """What a registrar needs to check a digest response for `username@domain`.

        None when the domain is no tenant's or the user does not exist. Served from the
        cache (see `__init__`): fresh entries as they are; entries past SIP_CACHE_TTL_S, up
        to SIP_CACHE_STALE_MAX_S, as they are while `refresh_sip_credentials` reloads them.
        """
        cached = self.cached_sip_credentials(domain, username)
        if cached is not NOT_LOADED:
            return cached
        key = (domain.lower(), username)
        now = self._clock.monotonic()
        generation = self._sip_generation
        found = await self._load_sip_credentials(*key)
        if generation == self._sip_generation:
            self._cache_sip(key, found, now)
        return found

    def cached_sip_credentials(
        self, domain: str, username: str
    ) -> SipCredentials | Literal[NotLoaded.NOT_LOADED] | None:
        """`sip_credentials` from memory only: NOT_LOADED when it would read the database.

        The registrar's fast path answers from here without awaiting; an entry past its TTL
        is answered and queued for reloading, as `sip_credentials` does.
        """
        key = (domain.lower(), username)
        cached = self._sip_cache.get(key)
        if cached is not None:
            expires, found = cached
            now = self._clock.monotonic()
            if expires > now:
                return found
            if now - expires < SIP_CACHE_STALE_MAX_S - SIP_CACHE_TTL_S:
                self._sip_stale[key] = None
                return found
        return NOT_LOADED

    def cached_tenant_domain(self, domain: str) -> bool | None:
        """`is_tenant_domain` from memory only: None when the domain list must be read."""
        cached = self._domains
        if cached is None or cached[0] <= self._clock.monotonic():
            return None
        return domain.lower() in cached[1]

    async def refresh_sip_credentials(self) -> int:
        """Reload, in one batch, cache entries that were answered from after their TTL.

        Returns:
            How many entries were reloaded (0: nothing was waiting).
        """
        keys = list(itertools.islice(self._sip_stale, SIP_LOAD_BATCH))
        for key in keys:
            del self._sip_stale[key]
        if not keys:
            return 0
        generation = self._sip_generation
        rows = await self._store.find_sip_accounts(
            [(domain, self._names.of(username)) for domain, username in keys]
        )
        opened = {(c.tenant.sip_domain, c.username): c for c in await self._open_sip(rows)}
        if generation == self._sip_generation:
            now = self._clock.monotonic()
            for key in keys:
                self._cache_sip(key, opened.get(key), now)
        return len(keys)

    async def warm_sip_credentials(self, limit: int = SIP_CACHE_MAX_ENTRIES) -> int:
        """Fill the cache with every account (up to `limit`), a batch per round trip.

        Then the first REGISTER of each account does not wait for the database.

        Returns:
            How many accounts were loaded.
        """
        after: str | None = None
        count = 0
        while count < limit:
            generation = self._sip_generation
            rows = await self._store.sip_accounts_page(after, min(SIP_LOAD_BATCH, limit - count))
            if not rows:
                break
            opened = await self._open_sip(rows)
            if generation == self._sip_generation:
                now = self._clock.monotonic()
                for credentials in opened:
                    key = (credentials.tenant.sip_domain, credentials.username)
                    self._cache_sip(key, credentials, now)
            after = rows[-1][1].id
            count += len(rows)
        return count

    def _cache_sip(self, key: tuple[str, str], found: SipCredentials | None, now: float) -> None:
        if len(self._sip_cache) >= SIP_CACHE_MAX_ENTRIES and key not in self._sip_cache:
            self._sip_cache.clear()
            self._sip_stale.clear()
            self._sip_ids.clear()
        if found is not None:
            self._sip_ids[found.account_id] = key
        # Spread over half the TTL, so that entries loaded together (the warm-up) do not all
        # fall due for a refresh in the same second.
        ttl = SIP_CACHE_TTL_S * random.uniform(0.5, 1.0)  # noqa: S311 - load spreading
        self._sip_cache[key] = (now + ttl, found)

    def _forget_sip(
        self,
        *,
        domain: str | None = None,
        username: str | None = None,
        account_id: str | None = None,
        tenant_domain: str | None = None,
    ) -> None:
        self._sip_generation += 1
        if tenant_domain is not None:
            for key in [key for key in self._sip_cache if key[0] == tenant_domain.lower()]:
                del self._sip_cache[key]
        if domain is not None and username is not None:
            self._sip_cache.pop((domain.lower(), username), None)
        if account_id is not None:
            for key, (_, value) in list(self._sip_cache.items()):
                if value is not None and value.account_id == account_id:
                    del self._sip_cache[key]

    async def sip_identity(
        self, account_id: str, *, stale_ok: bool = False
    ) -> tuple[str, Tenant] | None:
        """An account's user name and tenant: from the SIP credentials cache when there.

        The overlay restores thousands of registrations at start; the cache, warmed with
        every account, spares it three round trips each.

        `stale_ok`: an entry past its TTL will do. Otherwise it is read again: another
        process (the CLI) may have changed the tenant since.

        Returns:
            None when the account does not exist.
        """
        key = self._sip_ids.get(account_id)
        cached = self._sip_cache.get(key) if key is not None else None
        if (
            cached is not None
            and (stale_ok or cached[0] > self._clock.monotonic())
            and cached[1] is not None
            and cached[1].account_id == account_id
        ):
            return cached[1].username, cached[1].tenant
        try:
            account = await self.account_by_id(account_id)
        except NotFoundError:
            return None
        return account.username, account.tenant

    async def _load_sip_credentials(self, domain: str, username: str) -> SipCredentials | None:
        found = await self._store.find_sip_account(domain.lower(), self._names.of(username))
        if found is None:
            return None
        tenant, stored = found
        cipher = await self._keyring.cipher(account_subject(stored.id))
        return self._sip_credentials_of(tenant, stored, cipher)

    async def _open_sip(self, rows: Sequence[tuple[Tenant, StoredAccount]]) -> list[SipCredentials]:
        ciphers = await self._keyring.ciphers([account_subject(s.id) for _, s in rows])
        opened = []
        for tenant, stored in rows:
            cipher = ciphers.get(account_subject(stored.id))
            if cipher is not None:  # None: the key is destroyed, the account being erased
                opened.append(self._sip_credentials_of(tenant, stored, cipher))
        return opened

    @staticmethod
    def _sip_credentials_of(
        tenant: Tenant, stored: StoredAccount, cipher: SubjectCipher
    ) -> SipCredentials:
        # Most accounts override nothing: the tenant's defaults answer without validating.
        config = (
            effective_config(tenant.defaults, stored.overrides)
            if stored.overrides
            else tenant.defaults
        )
        return SipCredentials(
            account_id=stored.id,
            tenant=tenant,
            username=cipher.open_text(CTX_USERNAME, stored.username_sealed),
            active=stored.status is AccountStatus.ACTIVE,
            push=config.is_enabled(Feature.PUSH),
            push_max_age_s=config.push.instance_max_age_days * 86_400,
            messaging=config.is_enabled(Feature.MESSAGING),
            message_retention_days=config.messaging.retention_days,
            ha1={
                DigestAlgorithm.MD5: cipher.open_text(CTX_HA1_MD5, stored.ha1_md5_sealed),
                DigestAlgorithm.SHA256: cipher.open_text(CTX_HA1_SHA256, stored.ha1_sha256_sealed),
            },
        )

    async def open_account(self, stored: StoredAccount, tenant: Tenant) -> Account:
        return self._open(stored, tenant, await self._keyring.cipher(account_subject(stored.id)))

    # -- internals -------------------------------------------------------------------------

    async def _stored(self, tenant: Tenant, username: str) -> StoredAccount:
        stored = await self._store.get_account(tenant.id, self._names.of(username))
        if stored is None:
            raise NotFoundError(f"no account {username!r} in {tenant.code}", field="username")
        return stored

    async def _username_of(self, stored: StoredAccount) -> str:
        cipher = await self._keyring.cipher(account_subject(stored.id))
        return cipher.open_text(CTX_USERNAME, stored.username_sealed)

    async def _erase_account(self, stored: StoredAccount) -> None:
        # Key first: should the row deletion fail, what remains can no longer be read (P19).
        self._forget_sip(account_id=stored.id)
        await self._keyring.destroy(account_subject(stored.id))
        for listener in self.listeners:
            await listener.account_erased(stored.id)
        await self._store.delete_account(stored.id)

    def _open(self, stored: StoredAccount, tenant: Tenant, cipher: SubjectCipher) -> Account:
        return Account(
            id=stored.id,
            tenant=tenant,
            username=cipher.open_text(CTX_USERNAME, stored.username_sealed),
            status=stored.status,
            display_name=_open_opt(cipher, CTX_DISPLAY_NAME, stored.display_name_sealed),
            e164=_open_opt(cipher, CTX_E164, stored.e164_sealed),
            email=_open_opt(cipher, CTX_EMAIL, stored.email_sealed),
            overrides=stored.overrides,
            config=effective_config(tenant.defaults, stored.overrides),
            created_at=stored.created_at,
            updated_at=stored.updated_at,
        )


def _seal_opt(cipher: SubjectCipher, context: str, value: str | None) -> bytes | None:
    return None if value is None else cipher.seal_text(context, value)


def _open_opt(cipher: SubjectCipher, context: str, sealed: bytes | None) -> str | None:
    return None if sealed is None else cipher.open_text(context, sealed)


def _with_password(
    stored: StoredAccount, cipher: SubjectCipher, tenant: Tenant, username: str, password: str
) -> StoredAccount:
    # RFC 8760 §3: the realm is the tenant's SIP domain; both algorithms are kept so phones
    # that offer only MD5 still register.
    md5 = ha1(DigestAlgorithm.MD5, username, tenant.sip_domain, password)
    sha256 = ha1(DigestAlgorithm.SHA256, username, tenant.sip_domain, password)
    return replace(
        stored,
        ha1_md5_sealed=cipher.seal_text(CTX_HA1_MD5, md5),
        ha1_sha256_sealed=cipher.seal_text(CTX_HA1_SHA256, sha256),
    )
