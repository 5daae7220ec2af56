"""The stores the services define, implemented over SQLAlchemy Core.

Each method is one transaction. Integrity errors are translated here, once, into the
services' own errors, so nothing above storage ever sees SQLAlchemy.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Row, Select, delete, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ringfence.auth.service import AdminToken, Session
from ringfence.files.service import StoredFile
from ringfence.messaging.held import StoredHeld
from ringfence.messaging.history import NewMessage, StoredMessage
from ringfence.privacy.disclosures import Disclosure, DisclosureStatus
from ringfence.privacy.erasure import Destruction, LegalHold
from ringfence.privacy.policy import Channel, Notice, PolicyVersion
from ringfence.privacy.postmortem import DirectiveAction, StoredDirective
from ringfence.privacy.requests import (
    RequestKind,
    RequestState,
    SubjectRequest,
    Verification,
)
from ringfence.privacy.verification import PendingCode
from ringfence.provisioning.errors import ConflictError
from ringfence.provisioning.features import FeatureConfig
from ringfence.provisioning.models import (
    AccountStatus,
    Device,
    Platform,
    StoredAccount,
    Tenant,
    UpstreamPbx,
)
from ringfence.pushgw.instances import StoredInstance
from ringfence.pushgw.traces import StoredTrace
from ringfence.storage.tables import (
    accounts,
    admin_tokens,
    destructions,
    devices,
    disclosures,
    file_recipients,
    files,
    held_messages,
    identity_documents,
    legal_holds,
    messages,
    policy_notices,
    policy_versions,
    postmortem_directives,
    push_instances,
    push_traces,
    sessions,
    subject_keys,
    subject_requests,
    tenants,
    verification_codes,
)

T = TypeVar("T")
logger = logging.getLogger(__name__)


class _Row:
    """Attribute access over a column mapping, for rows of a join (same names as a Row)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


def _held_subjects() -> Select[Any]:
    """The accounts under a legal hold in force: retention sweeps pass them by (P15)."""
    return select(legal_holds.c.subject).where(legal_holds.c.released_at.is_(None))


class _Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        async with self._engine.begin() as connection:
            yield connection

    async def _first(self, query: Select[Any], convert: Callable[[Row[Any]], T]) -> T | None:
        async with self._tx() as tx:
            row = (await tx.execute(query)).first()
        return None if row is None else convert(row)

    async def _all(self, query: Select[Any], convert: Callable[[Row[Any]], T]) -> list[T]:
        async with self._tx() as tx:
            rows = (await tx.execute(query)).all()
        return [convert(row) for row in rows]


def _tenant(row: Row[Any] | _Row) -> Tenant:
    return Tenant(
        id=row.id,
        code=row.code,
        name=row.name,
        sip_domain=row.sip_domain,
        defaults=FeatureConfig.model_validate(row.defaults),
        created_at=row.created_at,
        upstream=UpstreamPbx.from_json(row.upstream) if row.upstream else None,
    )


def _account(row: Row[Any] | _Row) -> StoredAccount:
    return StoredAccount(
        id=row.id,
        tenant_id=row.tenant_id,
        username_key=row.username_key,
        username_sealed=row.username_sealed,
        status=AccountStatus(row.status),
        display_name_sealed=row.display_name_sealed,
        e164_sealed=row.e164_sealed,
        email_sealed=row.email_sealed,
        ha1_md5_sealed=row.ha1_md5_sealed,
        ha1_sha256_sealed=row.ha1_sha256_sealed,
        overrides=row.overrides,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _account_values(account: StoredAccount) -> dict[str, Any]:
    return {
        "id": account.id,
        "tenant_id": account.tenant_id,
        "username_key": account.username_key,
        "username_sealed": account.username_sealed,
        "status": account.status.value,
        "display_name_sealed": account.display_name_sealed,
        "e164_sealed": account.e164_sealed,
        "email_sealed": account.email_sealed,
        "ha1_md5_sealed": account.ha1_md5_sealed,
        "ha1_sha256_sealed": account.ha1_sha256_sealed,
        "overrides": account.overrides,
        "created_at": account.created_at,
        "updated_at": account.updated_at,
    }


def _session(row: Row[Any]) -> Session:
    return Session(
        id=row.id,
        account_id=row.account_id,
        device_id=row.device_id,
        access_hash=row.access_hash,
        refresh_hash=row.refresh_hash,
        access_expires_at=row.access_expires_at,
        refresh_expires_at=row.refresh_expires_at,
        created_at=row.created_at,
    )


def _device(row: Row[Any]) -> Device:
    return Device(
        id=row.id,
        account_id=row.account_id,
        install_key=row.install_key,
        platform=Platform(row.platform),
        app_id=row.app_id,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
    )


def _admin_token(row: Row[Any]) -> AdminToken:
    return AdminToken(
        id=row.id, name=row.name, token_hash=row.token_hash, created_at=row.created_at
    )


class SqlStore(_Store):
    """The main database: implements `ProvisioningStore` and `AuthStore`."""

    # -- tenants ---------------------------------------------------------------------------

    async def add_tenant(self, tenant: Tenant) -> None:
        try:
            async with self._tx() as tx:
                await tx.execute(
                    insert(tenants).values(
                        id=tenant.id,
                        code=tenant.code,
                        name=tenant.name,
                        sip_domain=tenant.sip_domain,
                        defaults=tenant.defaults.model_dump(mode="json"),
                        created_at=tenant.created_at,
                        upstream=tenant.upstream.to_json() if tenant.upstream else None,
                    )
                )
        except IntegrityError as exc:
            raise ConflictError(
                "code: the tenant code or SIP domain is taken", field="code"
            ) from exc

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        return await self._first(select(tenants).where(tenants.c.id == tenant_id), _tenant)

    async def find_tenant(self, code_or_domain: str) -> Tenant | None:
        query = select(tenants).where(
            or_(tenants.c.code == code_or_domain, tenants.c.sip_domain == code_or_domain)
        )
        return await self._first(query, _tenant)

    async def list_tenants(self) -> list[Tenant]:
        return await self._all(select(tenants).order_by(tenants.c.code), _tenant)

    async def update_tenant(self, tenant: Tenant) -> None:
        async with self._tx() as tx:
            await tx.execute(
                update(tenants)
                .where(tenants.c.id == tenant.id)
                .values(
                    name=tenant.name,
                    defaults=tenant.defaults.model_dump(mode="json"),
                    upstream=tenant.upstream.to_json() if tenant.upstream else None,
                )
            )

    async def delete_tenant(self, tenant_id: str) -> None:
        async with self._tx() as tx:
            await tx.execute(delete(tenants).where(tenants.c.id == tenant_id))

    # -- accounts --------------------------------------------------------------------------

    async def add_account(self, account: StoredAccount) -> None:
        try:
            async with self._tx() as tx:
                await tx.execute(insert(accounts).values(**_account_values(account)))
        except IntegrityError as exc:
            raise ConflictError("username: the username is taken", field="username") from exc

    async def add_accounts(self, new: Sequence[StoredAccount]) -> None:
        """Insert many accounts in one transaction: all of them or none."""
        if not new:
            return
        try:
            async with self._tx() as tx:
                await tx.execute(insert(accounts), [_account_values(a) for a in new])
        except IntegrityError as exc:
            raise ConflictError("username: a username is taken", field="username") from exc

    async def taken_usernames(self, tenant_id: str, username_keys: Sequence[str]) -> set[str]:
        """Which of `username_keys` (blind indexes) already exist in the tenant."""
        taken: set[str] = set()
        async with self._tx() as tx:
            for start in range(0, len(username_keys), 500):
                chunk = list(username_keys[start : start + 500])
                query = select(accounts.c.username_key).where(
                    accounts.c.tenant_id == tenant_id, accounts.c.username_key.in_(chunk)
                )
                taken.update((await tx.execute(query)).scalars())
        return taken

    async def get_account(self, tenant_id: str, username_key: str) -> StoredAccount | None:
        query = select(accounts).where(
            accounts.c.tenant_id == tenant_id, accounts.c.username_key == username_key
        )
        return await self._first(query, _account)

    async def get_account_by_id(self, account_id: str) -> StoredAccount | None:
        return await self._first(select(accounts).where(accounts.c.id == account_id), _account)

    async def find_sip_account(
        self, domain: str, username_key: str
    ) -> tuple[Tenant, StoredAccount] | None:
        """One round trip for the SIP hot path: the account of `username_key` at `domain`."""
        found = await self._sip_accounts(
            (tenants.c.sip_domain == domain) & (accounts.c.username_key == username_key)
        )
        return found[0] if found else None

    async def find_sip_accounts(
        self, keys: Sequence[tuple[str, str]]
    ) -> list[tuple[Tenant, StoredAccount]]:
        """The accounts of many `(domain, username key)` pairs in one round trip.

        Missing ones are left out. At most 500 pairs, under every database's limit of bound
        parameters.
        """
        if not keys:
            return []
        if len(keys) > 500:
            raise ValueError("at most 500 keys per call")
        # Per domain, so that the (tenant, username_key) index serves the query: a row-value
        # IN over the join makes SQLite scan every account.
        by_domain: dict[str, list[str]] = {}
        for domain, username_key in keys:
            by_domain.setdefault(domain, []).append(username_key)
        conditions = [
            (tenants.c.sip_domain == domain) & accounts.c.username_key.in_(username_keys)
            for domain, username_keys in by_domain.items()
        ]
        return await self._sip_accounts(or_(*conditions))

    async def sip_accounts_page(
        self, after_id: str | None, limit: int
    ) -> list[tuple[Tenant, StoredAccount]]:
        """Every account with its tenant, `limit` at a time in account id order."""
        condition = accounts.c.id > after_id if after_id is not None else accounts.c.id.is_not(None)
        return await self._sip_accounts(condition, order=True, limit=limit)

    async def _sip_accounts(
        self, condition: Any, *, order: bool = False, limit: int | None = None
    ) -> list[tuple[Tenant, StoredAccount]]:
        query = (
            select(accounts).join(tenants, accounts.c.tenant_id == tenants.c.id).where(condition)
        )
        if order:
            query = query.order_by(accounts.c.id)
        if limit is not None:
            query = query.limit(limit)
        async with self._tx() as tx:
            found = [_account(row) for row in (await tx.execute(query)).all()]
            # Each tenant read once, and its value shared by its accounts (the SIP cache
            # holds many).
            tenant_ids = list({account.tenant_id for account in found})
            query = select(tenants).where(tenants.c.id.in_(tenant_ids))
            by_id = {t.id: t for t in map(_tenant, (await tx.execute(query)).all())}
        return [(by_id[account.tenant_id], account) for account in found]

    async def list_accounts(
        self, tenant_id: str, *, offset: int, limit: int
    ) -> list[StoredAccount]:
        query = (
            select(accounts)
            .where(accounts.c.tenant_id == tenant_id)
            # Names are sealed: the database can order them only by when they came.
            .order_by(accounts.c.created_at, accounts.c.id)
            .offset(offset)
            .limit(limit)
        )
        return await self._all(query, _account)

    async def update_account(self, account: StoredAccount, *, revoke_sessions: bool) -> None:
        values = _account_values(account)
        del values["id"], values["created_at"]
        async with self._tx() as tx:
            await tx.execute(update(accounts).where(accounts.c.id == account.id).values(**values))
            if revoke_sessions:
                await tx.execute(delete(sessions).where(sessions.c.account_id == account.id))

    async def delete_account(self, account_id: str) -> None:
        async with self._tx() as tx:
            # Explicit, not only by cascade: a PostgreSQL or SQLite without foreign keys
            # enforced must not keep sessions or devices of an erased account.
            await tx.execute(delete(sessions).where(sessions.c.account_id == account_id))
            await tx.execute(delete(devices).where(devices.c.account_id == account_id))
            await tx.execute(
                delete(push_instances).where(push_instances.c.account_id == account_id)
            )
            await tx.execute(delete(held_messages).where(held_messages.c.account_id == account_id))
            await tx.execute(delete(push_traces).where(push_traces.c.account_id == account_id))
            await tx.execute(delete(messages).where(messages.c.account_id == account_id))
            await tx.execute(delete(accounts).where(accounts.c.id == account_id))

    # -- sessions and devices --------------------------------------------------------------

    async def add_session(self, session: Session) -> None:
        async with self._tx() as tx:
            await tx.execute(
                insert(sessions).values(
                    id=session.id,
                    account_id=session.account_id,
                    device_id=session.device_id,
                    access_hash=session.access_hash,
                    refresh_hash=session.refresh_hash,
                    access_expires_at=session.access_expires_at,
                    refresh_expires_at=session.refresh_expires_at,
                    created_at=session.created_at,
                )
            )

    async def session_by_access(self, access_hash: str) -> Session | None:
        return await self._first(
            select(sessions).where(sessions.c.access_hash == access_hash), _session
        )

    async def session_by_refresh(self, refresh_hash: str) -> Session | None:
        return await self._first(
            select(sessions).where(sessions.c.refresh_hash == refresh_hash), _session
        )

    async def replace_session(self, session: Session) -> None:
        async with self._tx() as tx:
            await tx.execute(
                update(sessions)
                .where(sessions.c.id == session.id)
                .values(
                    access_hash=session.access_hash,
                    refresh_hash=session.refresh_hash,
                    access_expires_at=session.access_expires_at,
                    refresh_expires_at=session.refresh_expires_at,
                )
            )

    async def delete_session(self, session_id: str) -> None:
        async with self._tx() as tx:
            await tx.execute(delete(sessions).where(sessions.c.id == session_id))

    async def delete_expired_sessions(self, now: datetime) -> int:
        async with self._tx() as tx:
            result = await tx.execute(delete(sessions).where(sessions.c.refresh_expires_at <= now))
        return int(result.rowcount or 0)

    async def upsert_device(self, device: Device) -> Device:
        where = (devices.c.account_id == device.account_id) & (
            devices.c.install_key == device.install_key
        )
        async with self._tx() as tx:
            row = (await tx.execute(select(devices).where(where))).first()
            if row is None:
                await tx.execute(
                    insert(devices).values(
                        id=device.id,
                        account_id=device.account_id,
                        install_key=device.install_key,
                        platform=device.platform.value,
                        app_id=device.app_id,
                        created_at=device.created_at,
                        last_seen_at=device.last_seen_at,
                    )
                )
                return device
            await tx.execute(
                update(devices)
                .where(devices.c.id == row.id)
                .values(
                    platform=device.platform.value,
                    app_id=device.app_id,
                    last_seen_at=device.last_seen_at,
                )
            )
            return Device(
                id=row.id,
                account_id=device.account_id,
                install_key=device.install_key,
                platform=device.platform,
                app_id=device.app_id,
                created_at=row.created_at,
                last_seen_at=device.last_seen_at,
            )

    async def devices_of(self, account_id: str) -> list[Device]:
        query = select(devices).where(devices.c.account_id == account_id)
        return await self._all(query.order_by(devices.c.created_at), _device)

    # -- admin tokens ----------------------------------------------------------------------

    async def add_admin_token(self, token: AdminToken) -> None:
        async with self._tx() as tx:
            await tx.execute(
                insert(admin_tokens).values(
                    id=token.id,
                    name=token.name,
                    token_hash=token.token_hash,
                    created_at=token.created_at,
                )
            )

    async def admin_token_by_hash(self, token_hash: str) -> AdminToken | None:
        return await self._first(
            select(admin_tokens).where(admin_tokens.c.token_hash == token_hash), _admin_token
        )

    async def list_admin_tokens(self) -> list[AdminToken]:
        return await self._all(select(admin_tokens).order_by(admin_tokens.c.name), _admin_token)

    async def delete_admin_token(self, token_id: str) -> bool:
        async with self._tx() as tx:
            result = await tx.execute(delete(admin_tokens).where(admin_tokens.c.id == token_id))
        return bool(result.rowcount)


def _disclosure(row: Row[Any]) -> Disclosure:
    return Disclosure(
        id=row.id,
        received_at=row.received_at,
        authority=row.authority,
        reference=row.reference,
        legal_basis=row.legal_basis,
        requested=row.requested,
        subject=row.subject,
        status=DisclosureStatus(row.status),
        given=row.given,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
    )


_HOLD_FIELDS = tuple(column.name for column in legal_holds.columns)


def _hold(row: Row[Any]) -> LegalHold:
    return LegalHold(**{name: getattr(row, name) for name in _HOLD_FIELDS})


def _destruction(row: Row[Any]) -> Destruction:
    return Destruction(row.id, row.at, row.subject, tuple(row.categories), row.reason)


def _request(row: Row[Any]) -> SubjectRequest:
    return SubjectRequest(
        id=row.id,
        subject=row.subject,
        kind=RequestKind(row.kind),
        state=RequestState(row.state),
        received_at=row.received_at,
        due_at=row.due_at,
        verified_by=Verification(row.verified_by) if row.verified_by else None,
        verified_at=row.verified_at,
        closed_at=row.closed_at,
        outcome=row.outcome,
    )


def _request_values(request: SubjectRequest) -> dict[str, Any]:
    return {
        "id": request.id,
        "subject": request.subject,
        "kind": request.kind.value,
        "state": request.state.value,
        "received_at": request.received_at,
        "due_at": request.due_at,
        "verified_by": request.verified_by.value if request.verified_by else None,
        "verified_at": request.verified_at,
        "closed_at": request.closed_at,
        "outcome": request.outcome,
    }


def _policy_version(row: Row[Any]) -> PolicyVersion:
    return PolicyVersion(
        row.id, row.version, row.summary, row.published_at, row.effective_at, row.url
    )


def _notice(row: Row[Any]) -> Notice:
    return Notice(
        row.version_id, row.subject, Channel(row.channel), row.sent_at, row.acknowledged_at
    )


class SqlPrivacyStore(_Store):
    """The privacy tables: implements `DisclosureStore` and `erasure.PrivacyStore`."""

    async def add_disclosure(self, disclosure: Disclosure) -> None:
        async with self._tx() as tx:
            await tx.execute(
                insert(disclosures).values(
                    id=disclosure.id,
                    received_at=disclosure.received_at,
                    authority=disclosure.authority,
                    reference=disclosure.reference,
                    legal_basis=disclosure.legal_basis,
                    requested=disclosure.requested,
                    subject=disclosure.subject,
                    status=disclosure.status.value,
                )
            )

    async def get_disclosure(self, disclosure_id: str) -> Disclosure | None:
        query = select(disclosures).where(disclosures.c.id == disclosure_id)
        return await self._first(query, _disclosure)

    async def decide_disclosure(self, disclosure: Disclosure) -> bool:
        # Only a received entry takes a decision: one statement, so two racing decisions
        # cannot both land.
        async with self._tx() as tx:
            result = await tx.execute(
                update(disclosures)
                .where(
                    disclosures.c.id == disclosure.id,
                    disclosures.c.status == DisclosureStatus.RECEIVED.value,
                )
                .values(
                    status=disclosure.status.value,
                    given=disclosure.given,
                    decided_by=disclosure.decided_by,
                    decided_at=disclosure.decided_at,
                )
            )
        return bool(result.rowcount)

    async def list_disclosures(self) -> list[Disclosure]:
        query = select(disclosures).order_by(disclosures.c.received_at, disclosures.c.id)
        return await self._all(query, _disclosure)

    async def add_hold(self, hold: LegalHold) -> None:
        async with self._tx() as tx:
            await tx.execute(
                insert(legal_holds).values({name: getattr(hold, name) for name in _HOLD_FIELDS})
            )

    async def get_hold(self, hold_id: str) -> LegalHold | None:
        return await self._first(select(legal_holds).where(legal_holds.c.id == hold_id), _hold)

    async def holds_of(
        self, *, subject: str | None = None, tenant_id: str | None = None
    ) -> list[LegalHold]:
        query = select(legal_holds).order_by(legal_holds.c.placed_at, legal_holds.c.id)
        if subject is not None:
            query = query.where(legal_holds.c.subject == subject)
        if tenant_id is not None:
            query = query.where(legal_holds.c.tenant_id == tenant_id)
        return await self._all(query, _hold)

    async def release_hold(self, hold: LegalHold) -> bool:
        async with self._tx() as tx:
            result = await tx.execute(
                update(legal_holds)
                .where(legal_holds.c.id == hold.id, legal_holds.c.released_at.is_(None))
                .values(released_by=hold.released_by, released_at=hold.released_at)
            )
        return bool(result.rowcount)

    async def add_destruction(self, destruction: Destruction) -> None:
        async with self._tx() as tx:
            await tx.execute(
                insert(destructions).values(
                    id=destruction.id,
                    at=destruction.at,
                    subject=destruction.subject,
                    categories=list(destruction.categories),
                    reason=destruction.reason,
                )
            )

    async def destructions(self) -> list[Destruction]:
        query = select(destructions).order_by(destructions.c.at, destructions.c.id)
        return await self._all(query, _destruction)

    async def add_request(self, request: SubjectRequest) -> None:
        async with self._tx() as tx:
            await tx.execute(insert(subject_requests).values(_request_values(request)))

    async def update_request(self, request: SubjectRequest) -> None:
        async with self._tx() as tx:
            await tx.execute(
                update(subject_requests)
                .where(subject_requests.c.id == request.id)
                .values(_request_values(request))
            )

    async def get_request(self, request_id: str) -> SubjectRequest | None:
        query = select(subject_requests).where(subject_requests.c.id == request_id)
        return await self._first(query, _request)

    async def requests(self, *, subject: str | None = None) -> list[SubjectRequest]:
        query = select(subject_requests).order_by(
            subject_requests.c.received_at, subject_requests.c.id
        )
        if subject is not None:
            query = query.where(subject_requests.c.subject == subject)
        return await self._all(query, _request)

    # -- post-mortem directives (privacy.postmortem) ---------------------------------------

    async def put_directive(self, directive: StoredDirective) -> None:
        values = {
            "action": directive.action.value,
            "trustee_sealed": directive.trustee_sealed,
            "set_at": directive.set_at,
        }
        async with self._tx() as tx:
            changed = await tx.execute(
                update(postmortem_directives)
                .where(postmortem_directives.c.subject == directive.subject)
                .values(values)
            )
            if not changed.rowcount:
                await tx.execute(
                    insert(postmortem_directives).values(subject=directive.subject, **values)
                )

    async def get_directive(self, subject: str) -> StoredDirective | None:
        query = select(postmortem_directives).where(postmortem_directives.c.subject == subject)
        return await self._first(
            query,
            lambda row: StoredDirective(
                row.subject, DirectiveAction(row.action), row.trustee_sealed, row.set_at
            ),
        )

    async def delete_directive(self, subject: str) -> bool:
        statement = delete(postmortem_directives).where(postmortem_directives.c.subject == subject)
        return await self._delete(statement) > 0

    # -- ID documents (privacy.requests) ---------------------------------------------------

    async def put_document(
        self, request_id: str, media_type: str, sealed: bytes, received_at: datetime
    ) -> None:
        async with self._tx() as tx:
            await tx.execute(
                delete(identity_documents).where(identity_documents.c.request_id == request_id)
            )
            await tx.execute(
                insert(identity_documents).values(
                    request_id=request_id,
                    media_type=media_type,
                    sealed=sealed,
                    received_at=received_at,
                )
            )

    async def get_document(self, request_id: str) -> tuple[str, bytes] | None:
        query = select(identity_documents).where(identity_documents.c.request_id == request_id)
        return await self._first(query, lambda row: (row.media_type, bytes(row.sealed)))

    async def delete_document(self, request_id: str) -> bool:
        statement = delete(identity_documents).where(identity_documents.c.request_id == request_id)
        return await self._delete(statement) > 0

    # -- verification codes (privacy.verification) ----------------------------------------

    async def reserve_send(self, request_id: str, max_sends: int, now: datetime) -> int | None:
        codes = verification_codes
        counted = (
            update(codes)
            .where(codes.c.request_id == request_id, codes.c.sends < max_sends)
            .values(sends=codes.c.sends + 1)
            .returning(codes.c.sends)
        )
        for _ in range(2):
            try:
                async with self._tx() as tx:
                    sends = (await tx.execute(counted)).scalar_one_or_none()
                    if sends is not None:
                        return int(sends)
                    exists = select(codes.c.request_id).where(codes.c.request_id == request_id)
                    if (await tx.execute(exists)).first() is not None:
                        return None
                    # The first send: an empty hash matches no code, and it is expired.
                    await tx.execute(
                        insert(codes).values(
                            request_id=request_id,
                            code_hash="",
                            expires_at=now,
                            attempts=0,
                            sends=1,
                        )
                    )
                    return 1
            except IntegrityError:
                continue  # another first send won the insert: count against its row
        return None

    async def set_code(self, request_id: str, code_hash: str, expires_at: datetime) -> None:
        async with self._tx() as tx:
            await tx.execute(
                update(verification_codes)
                .where(verification_codes.c.request_id == request_id)
                .values(code_hash=code_hash, expires_at=expires_at)
            )

    async def count_try(self, request_id: str, max_attempts: int) -> PendingCode | None:
        codes = verification_codes
        # One statement: the row lock (PostgreSQL) or the write lock (SQLite) orders
        # concurrent tries, and each sees the count the one before it left.
        statement = (
            update(codes)
            .where(codes.c.request_id == request_id, codes.c.attempts < max_attempts)
            .values(attempts=codes.c.attempts + 1)
            .returning(
                codes.c.request_id,
                codes.c.code_hash,
                codes.c.expires_at,
                codes.c.attempts,
                codes.c.sends,
            )
        )
        async with self._tx() as tx:
            row = (await tx.execute(statement)).first()
        return None if row is None else PendingCode(*row)

    async def get_code(self, request_id: str) -> PendingCode | None:
        query = select(verification_codes).where(verification_codes.c.request_id == request_id)
        return await self._first(
            query,
            lambda row: PendingCode(
                row.request_id, row.code_hash, row.expires_at, row.attempts, row.sends
            ),
        )

    async def delete_code(self, request_id: str) -> bool:
        statement = delete(verification_codes).where(verification_codes.c.request_id == request_id)
        return await self._delete(statement) > 0

    async def delete_orphan_codes_expired_before(self, cutoff: datetime) -> int:
        # A code of an open request keeps the request's counts of tries and sends.
        open_requests = select(subject_requests.c.id).where(
            subject_requests.c.state.in_([state.value for state in RequestState if state.open])
        )
        return await self._delete(
            delete(verification_codes).where(
                verification_codes.c.expires_at < cutoff,
                verification_codes.c.request_id.not_in(open_requests),
            )
        )

    # -- policy versions and notices (privacy.policy) --------------------------------------

    async def add_version(self, version: PolicyVersion) -> bool:
        try:
            async with self._tx() as tx:
                await tx.execute(
                    insert(policy_versions).values(
                        id=version.id,
                        version=version.version,
                        summary=version.summary,
                        url=version.url,
                        published_at=version.published_at,
                        effective_at=version.effective_at,
                    )
                )
        except IntegrityError:
            return False
        return True

    async def get_version(self, version_id: str) -> PolicyVersion | None:
        query = select(policy_versions).where(policy_versions.c.id == version_id)
        return await self._first(query, _policy_version)

    async def versions(self) -> list[PolicyVersion]:
        query = select(policy_versions).order_by(policy_versions.c.published_at)
        return await self._all(query, _policy_version)

    async def notified(self, version_id: str, subjects: list[str]) -> set[str]:
        query = select(policy_notices.c.subject).where(
            policy_notices.c.version_id == version_id, policy_notices.c.subject.in_(subjects)
        )
        async with self._tx() as tx:
            return set((await tx.execute(query)).scalars())

    async def add_notice(self, notice: Notice) -> None:
        async with self._tx() as tx:
            await tx.execute(
                insert(policy_notices).values(
                    version_id=notice.version_id,
                    subject=notice.subject,
                    channel=notice.channel.value,
                    sent_at=notice.sent_at,
                    acknowledged_at=notice.acknowledged_at,
                )
            )

    async def notices_of(self, subject: str) -> list[Notice]:
        query = select(policy_notices).where(policy_notices.c.subject == subject)
        return await self._all(query.order_by(policy_notices.c.sent_at), _notice)

    async def notices_for(self, version_id: str) -> list[Notice]:
        query = select(policy_notices).where(policy_notices.c.version_id == version_id)
        return await self._all(query.order_by(policy_notices.c.sent_at), _notice)

    async def acknowledge(self, version_id: str, subject: str, at: datetime) -> bool:
        async with self._tx() as tx:
            result = await tx.execute(
                update(policy_notices)
                .where(
                    policy_notices.c.version_id == version_id,
                    policy_notices.c.subject == subject,
                )
                .values(acknowledged_at=func.coalesce(policy_notices.c.acknowledged_at, at))
            )
        return bool(result.rowcount)

    # -- retention (privacy.retention) ------------------------------------------------------

    async def _delete(self, statement: Any) -> int:
        async with self._tx() as tx:
            result = await tx.execute(statement)
        return int(result.rowcount or 0)

    async def _delete_subjects(self, table: Any, condition: Any) -> list[str | None]:
        """Delete the rows matching `condition`; the subject of each, in one transaction."""
        async with self._tx() as tx:
            subjects = list((await tx.execute(select(table.c.subject).where(condition))).scalars())
            await tx.execute(delete(table).where(condition))
        return subjects

    async def delete_disclosures_received_before(self, cutoff: datetime) -> list[str | None]:
        return await self._delete_subjects(disclosures, disclosures.c.received_at < cutoff)

    async def delete_holds_released_before(self, cutoff: datetime) -> list[str | None]:
        # A hold in force has no release time: it is never swept.
        return await self._delete_subjects(legal_holds, legal_holds.c.released_at < cutoff)

    async def delete_destructions_before(self, cutoff: datetime) -> int:
        return await self._delete(delete(destructions).where(destructions.c.at < cutoff))

    async def delete_requests_closed_before(self, cutoff: datetime) -> list[str | None]:
        # An open request has no closing time: it is never swept.
        return await self._delete_subjects(subject_requests, subject_requests.c.closed_at < cutoff)

    async def devices_for_export(self, account_id: str) -> list[dict[str, Any]]:
        query = select(devices).where(devices.c.account_id == account_id)
        rows = await self._all(query.order_by(devices.c.created_at), lambda row: row)
        return [
            {
                "platform": row.platform,
                "app_id": row.app_id,
                "created_at": row.created_at,
                "last_seen_at": row.last_seen_at,
            }
            for row in rows
        ]

    async def sessions_for_export(self, account_id: str) -> list[dict[str, Any]]:
        # The token hashes are not the user's data to read: only when and until when.
        query = select(sessions).where(sessions.c.account_id == account_id)
        rows = await self._all(query.order_by(sessions.c.created_at), lambda row: row)
        return [
            {"created_at": row.created_at, "refresh_expires_at": row.refresh_expires_at}
            for row in rows
        ]


def _instance(row: Row[Any]) -> StoredInstance:
    return StoredInstance(
        id=row.id,
        account_id=row.account_id,
        selector_key=row.selector_key,
        sealed=bytes(row.sealed),
        created_at=row.created_at,
        updated_at=row.updated_at,
        expires_at=row.expires_at,
    )


class SqlInstanceStore(_Store):
    """Push instances: implements `pushgw.instances.InstanceStore`."""

    async def get_instance(self, account_id: str, selector_key: str) -> StoredInstance | None:
        query = select(push_instances).where(
            push_instances.c.account_id == account_id,
            push_instances.c.selector_key == selector_key,
        )
        return await self._first(query, _instance)

    async def add_instance(self, instance: StoredInstance) -> None:
        try:
            async with self._tx() as tx:
                await tx.execute(
                    insert(push_instances).values(
                        id=instance.id,
                        account_id=instance.account_id,
                        selector_key=instance.selector_key,
                        sealed=instance.sealed,
                        created_at=instance.created_at,
                        updated_at=instance.updated_at,
                        expires_at=instance.expires_at,
                    )
                )
        except IntegrityError as exc:
            raise ConflictError("selector: reported twice at once", field="selector") from exc

    async def update_instance(self, instance: StoredInstance) -> bool:
        statement = (
            update(push_instances)
            .where(push_instances.c.id == instance.id)
            .values(
                sealed=instance.sealed,
                updated_at=instance.updated_at,
                expires_at=instance.expires_at,
            )
        )
        async with self._tx() as tx:
            return bool((await tx.execute(statement)).rowcount)

    async def instances_of(self, account_id: str) -> list[StoredInstance]:
        query = (
            select(push_instances)
            .where(push_instances.c.account_id == account_id)
            .order_by(push_instances.c.created_at, push_instances.c.id)
        )
        return await self._all(query, _instance)

    async def instance_by_id(self, instance_id: str) -> StoredInstance | None:
        query = select(push_instances).where(push_instances.c.id == instance_id)
        return await self._first(query, _instance)

    async def existing_ids(self, ids: Sequence[str]) -> set[str]:
        query = select(push_instances.c.id).where(push_instances.c.id.in_(list(ids)))
        async with self._tx() as tx:
            return {row.id for row in await tx.execute(query)}

    async def instances_page(
        self, after_id: str | None, now: datetime, limit: int
    ) -> list[StoredInstance]:
        query = select(push_instances).where(push_instances.c.expires_at > now)
        if after_id is not None:
            query = query.where(push_instances.c.id > after_id)
        query = query.order_by(push_instances.c.id).limit(limit)
        return await self._all(query, _instance)

    async def count_instances(self, account_id: str) -> int:
        query = (
            select(func.count())
            .select_from(push_instances)
            .where(push_instances.c.account_id == account_id)
        )
        async with self._tx() as tx:
            return int((await tx.execute(query)).scalar_one())

    async def delete_instances(self, ids: Sequence[str]) -> int:
        deleted = 0
        async with self._tx() as tx:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                result = await tx.execute(
                    delete(push_instances).where(push_instances.c.id.in_(chunk))
                )
                deleted += result.rowcount or 0
        return deleted

    async def accounts_with_instances(self, now: datetime) -> set[str]:
        query = (
            select(push_instances.c.account_id).where(push_instances.c.expires_at > now).distinct()
        )
        async with self._tx() as tx:
            return {row.account_id for row in await tx.execute(query)}

    async def expired_instances(self, now: datetime, limit: int) -> list[StoredInstance]:
        query = (
            select(push_instances)
            .where(push_instances.c.expires_at <= now)
            .order_by(push_instances.c.expires_at)
            .limit(limit)
        )
        return await self._all(query, _instance)


def _held(row: Row[Any]) -> StoredHeld:
    return StoredHeld(
        id=row.id,
        account_id=row.account_id,
        aor_key=row.aor_key,
        sealed=bytes(row.sealed),
        received_at=row.received_at,
        expires_at=row.expires_at,
    )


class SqlHeldStore(_Store):
    """Held messages: implements `messaging.held.HeldStore`."""

    async def add_held(self, held: StoredHeld, max_per_account: int) -> bool:
        count = (
            select(func.count())
            .select_from(held_messages)
            .where(held_messages.c.account_id == held.account_id)
        )
        async with self._tx() as tx:
            # Counted in the inserting transaction; two concurrent holds may pass the limit
            # by one, which bounds nothing that matters.
            if int((await tx.execute(count)).scalar_one()) >= max_per_account:
                return False
            await tx.execute(
                insert(held_messages).values(
                    id=held.id,
                    account_id=held.account_id,
                    aor_key=held.aor_key,
                    sealed=held.sealed,
                    received_at=held.received_at,
                    expires_at=held.expires_at,
                    claimed_until=None,
                )
            )
        return True

    async def claim_held(self, aor_key: str, now: datetime, until: datetime) -> list[StoredHeld]:
        free = or_(held_messages.c.claimed_until.is_(None), held_messages.c.claimed_until <= now)
        where = (held_messages.c.aor_key == aor_key, held_messages.c.expires_at > now, free)
        async with self._tx() as tx:
            ids = [
                row.id
                for row in await tx.execute(
                    select(held_messages.c.id)
                    .where(*where)
                    .order_by(held_messages.c.received_at)
                    .limit(100)
                )
            ]
            if not ids:
                return []
            # The claim is the UPDATE's: a row another claimer took meanwhile no longer
            # matches `free` and is not ours.
            await tx.execute(
                update(held_messages)
                .where(held_messages.c.id.in_(ids), free)
                .values(claimed_until=until)
            )
            rows = await tx.execute(
                select(held_messages)
                .where(held_messages.c.id.in_(ids), held_messages.c.claimed_until == until)
                .order_by(held_messages.c.received_at)
            )
            return [_held(row) for row in rows]

    async def delete_held(self, ids: Sequence[str]) -> int:
        async with self._tx() as tx:
            result = await tx.execute(delete(held_messages).where(held_messages.c.id.in_(ids)))
        return result.rowcount or 0

    async def release_held(self, ids: Sequence[str]) -> None:
        async with self._tx() as tx:
            await tx.execute(
                update(held_messages).where(held_messages.c.id.in_(ids)).values(claimed_until=None)
            )

    async def held_aor_keys(self, now: datetime) -> set[str]:
        query = select(held_messages.c.aor_key).where(held_messages.c.expires_at > now).distinct()
        async with self._tx() as tx:
            return {row.aor_key for row in await tx.execute(query)}

    async def delete_held_expired(self, now: datetime, limit: int) -> int:
        ids = select(held_messages.c.id).where(held_messages.c.expires_at <= now).limit(limit)
        async with self._tx() as tx:
            result = await tx.execute(delete(held_messages).where(held_messages.c.id.in_(ids)))
        return result.rowcount or 0


class SqlTraceStore(_Store):
    """Push traces: implements `pushgw.traces.TraceStore`."""

    async def add_traces(self, traces: Sequence[StoredTrace]) -> None:
        if not traces:
            return
        async with self._tx() as tx:
            await tx.execute(
                insert(push_traces),
                [
                    {
                        "id": trace.id,
                        "account_id": trace.account_id,
                        "started_at": trace.started_at,
                        "expires_at": trace.expires_at,
                        "sealed": trace.sealed,
                    }
                    for trace in traces
                ],
            )

    async def traces_of(self, account_id: str, now: datetime, limit: int) -> list[StoredTrace]:
        query = (
            select(push_traces)
            .where(push_traces.c.account_id == account_id, push_traces.c.expires_at > now)
            .order_by(push_traces.c.started_at.desc())
            .limit(limit)
        )
        return await self._all(
            query,
            lambda row: StoredTrace(
                row.id, row.account_id, row.started_at, row.expires_at, bytes(row.sealed)
            ),
        )

    async def delete_traces_expired(self, now: datetime, limit: int) -> int:
        ids = select(push_traces.c.id).where(push_traces.c.expires_at <= now).limit(limit)
        async with self._tx() as tx:
            result = await tx.execute(delete(push_traces).where(push_traces.c.id.in_(ids)))
        return result.rowcount or 0


class SqlHistoryStore(_Store):
    """Message histories: implements `messaging.history.HistoryStore`."""

    async def add_messages(self, new: Sequence[NewMessage]) -> list[int]:
        if not new:
            return []
        rows = [
            {
                "account_id": m.account_id,
                "direction": m.direction,
                "ref_key": m.ref_key,
                "status": m.status,
                "sealed": m.sealed,
                "at": m.at,
                "expires_at": m.expires_at,
            }
            for m in new
        ]
        async with self._tx() as tx:
            if tx.dialect.name == "postgresql":
                # Devices page an account's history by `seq`, so its rows must commit in
                # `seq` order: a row numbered before another but committed after it would
                # be skipped by a device that read the other. One writer per account at a
                # time (SQLite has one writer in all); accounts in order, against deadlocks.
                for account_id in sorted({m.account_id for m in new}):
                    await tx.execute(
                        text("SELECT pg_advisory_xact_lock(hashtext(:account))"),
                        {"account": f"messages:{account_id}"},
                    )
            result = await tx.execute(
                insert(messages).returning(messages.c.seq, sort_by_parameter_order=True), rows
            )
            return [int(row.seq) for row in result]

    async def messages_after(
        self, account_id: str, after: int, now: datetime, limit: int, direction: str | None
    ) -> list[StoredMessage]:
        query = select(messages).where(
            messages.c.account_id == account_id,
            messages.c.seq > after,
            messages.c.expires_at > now,
        )
        if direction is not None:
            query = query.where(messages.c.direction == direction)
        query = query.order_by(messages.c.seq).limit(limit)
        return await self._all(
            query,
            lambda row: StoredMessage(
                row.account_id,
                row.direction,
                row.ref_key,
                row.status,
                bytes(row.sealed),
                row.at,
                row.expires_at,
                int(row.seq),
            ),
        )

    async def raise_status(
        self,
        account_id: str,
        status: str,
        lower: Sequence[str],
        *,
        ref_key: str | None = None,
        seq: int | None = None,
    ) -> int:
        if ref_key is None and seq is None:
            return 0
        found = messages.c.ref_key == ref_key if ref_key is not None else messages.c.seq == seq
        async with self._tx() as tx:
            result = await tx.execute(
                update(messages)
                .where(
                    messages.c.account_id == account_id,
                    messages.c.direction == "out",
                    messages.c.status.in_(list(lower)),
                    found,
                )
                .values(status=status)
            )
        return result.rowcount or 0

    async def delete_message(self, account_id: str, seq: int) -> bool:
        async with self._tx() as tx:
            result = await tx.execute(
                delete(messages).where(messages.c.account_id == account_id, messages.c.seq == seq)
            )
        return bool(result.rowcount)

    async def delete_messages_expired(self, now: datetime, limit: int) -> int:
        seqs = (
            select(messages.c.seq)
            .where(messages.c.expires_at <= now, messages.c.account_id.not_in(_held_subjects()))
            .limit(limit)
        )
        async with self._tx() as tx:
            result = await tx.execute(delete(messages).where(messages.c.seq.in_(seqs)))
        return result.rowcount or 0


class SqlFileStore(_Store):
    """Attachment metadata: implements `files.service.FileStore`."""

    async def add_file(self, file: StoredFile) -> None:
        async with self._tx() as tx:
            await tx.execute(
                insert(files).values(
                    id=file.id,
                    owner_id=file.owner_id,
                    size=file.size,
                    complete=file.complete,
                    chunk_exp=file.chunk_exp,
                    created_at=file.created_at,
                    expires_at=file.expires_at,
                )
            )
            await tx.execute(
                insert(file_recipients),
                [{"file_id": file.id, "account_id": r} for r in file.recipients],
            )

    async def get_file(self, file_id: str) -> StoredFile | None:
        async with self._engine.connect() as connection:
            row = (await connection.execute(select(files).where(files.c.id == file_id))).first()
            if row is None:
                return None
            recipients = await connection.execute(
                select(file_recipients.c.account_id).where(file_recipients.c.file_id == file_id)
            )
            return StoredFile(
                row.id,
                row.owner_id,
                int(row.size),
                bool(row.complete),
                row.chunk_exp,
                row.created_at,
                row.expires_at,
                tuple(r.account_id for r in recipients),
            )

    async def set_header(self, file_id: str, chunk_exp: int) -> None:
        async with self._tx() as tx:
            await tx.execute(update(files).where(files.c.id == file_id).values(chunk_exp=chunk_exp))

    async def set_complete(self, file_id: str, expires_at: datetime) -> None:
        async with self._tx() as tx:
            await tx.execute(
                update(files)
                .where(files.c.id == file_id)
                .values(complete=True, expires_at=expires_at)
            )

    async def remove_recipient(self, file_id: str, account_id: str) -> int:
        async with self._tx() as tx:
            await tx.execute(
                delete(file_recipients).where(
                    file_recipients.c.file_id == file_id,
                    file_recipients.c.account_id == account_id,
                )
            )
            left = await tx.execute(
                select(func.count())
                .select_from(file_recipients)
                .where(file_recipients.c.file_id == file_id)
            )
            return int(left.scalar_one())

    async def delete_file(self, file_id: str) -> None:
        async with self._tx() as tx:
            await tx.execute(delete(file_recipients).where(file_recipients.c.file_id == file_id))
            await tx.execute(delete(files).where(files.c.id == file_id))

    async def files_of(self, account_id: str) -> list[str]:
        return await self._all(
            select(files.c.id).where(files.c.owner_id == account_id), lambda row: str(row.id)
        )

    async def files_to(self, account_id: str) -> list[str]:
        return await self._all(
            select(file_recipients.c.file_id).where(file_recipients.c.account_id == account_id),
            lambda row: str(row.file_id),
        )

    async def expired_files(self, now: datetime, limit: int) -> list[str]:
        expired = files.c.expires_at <= now, files.c.owner_id.not_in(_held_subjects())
        return await self._all(
            select(files.c.id).where(*expired).limit(limit), lambda row: str(row.id)
        )


class SqlKeyStore(_Store):
    """The key store database: implements `crypto.WrappedKeyStore`."""

    async def get_wrapped_key(self, subject: str) -> bytes | None:
        query = select(subject_keys.c.wrapped).where(subject_keys.c.subject == subject)
        async with self._tx() as tx:
            wrapped = (await tx.execute(query)).scalar_one_or_none()
        return None if wrapped is None else bytes(wrapped)

    async def get_wrapped_keys(self, subjects: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        async with self._tx() as tx:
            # Chunks keep every database under its bound-parameter limit.
            for start in range(0, len(subjects), 500):
                chunk = list(subjects[start : start + 500])
                query = select(subject_keys.c.subject, subject_keys.c.wrapped).where(
                    subject_keys.c.subject.in_(chunk)
                )
                for subject, wrapped in (await tx.execute(query)).all():
                    found[subject] = bytes(wrapped)
        return found

    async def put_wrapped_keys(self, wrapped: Mapping[str, bytes]) -> None:
        if not wrapped:
            return
        rows = [{"subject": subject, "wrapped": key} for subject, key in wrapped.items()]
        async with self._tx() as tx:
            await tx.execute(insert(subject_keys), rows)

    async def put_wrapped_key(self, subject: str, wrapped: bytes) -> None:
        async with self._tx() as tx:
            await tx.execute(insert(subject_keys).values(subject=subject, wrapped=wrapped))

    async def delete_wrapped_key(self, subject: str) -> bool:
        async with self._tx() as tx:
            result = await tx.execute(delete(subject_keys).where(subject_keys.c.subject == subject))
        destroyed = bool(result.rowcount)
        # Only when a key went: `destroy` is also called where none may exist (a first ID
        # document, a failed account creation), and a checkpoint waits for readers.
        if destroyed and self._engine.dialect.name == "sqlite":
            await self._scrub()
        return destroyed

    async def _scrub(self) -> None:
        """Leave no copy of a destroyed key in the files (P19: erasure by key destruction).

        `secure_delete` (engine.py) zeroes the row in the page, but until a checkpoint the
        write-ahead log still holds the page as it was, key and all, and a file copy of the
        data directory would carry it. A TRUNCATE checkpoint writes the log back and
        empties it (https://sqlite.org/pragma.html#pragma_wal_checkpoint).
        """
        async with self._engine.connect() as connection:
            # One row: (busy, log frames, frames checkpointed).
            row = (await connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")).one()
        if row[0]:
            # A reader held the log: the next checkpoint (at the latest the next
            # destruction's) completes it.
            logger.warning("key store: the write-ahead log could not be emptied yet")
