"""Storage on SQLite and on PostgreSQL: migrations, round trips, constraints, cascades."""

from __future__ import annotations

from dataclasses import replace

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, MetaData, func, select

from ringfence.auth.service import AdminToken, Session
from ringfence.provisioning.errors import ConflictError
from ringfence.provisioning.features import FeatureConfig, PushConfig, PushMode
from ringfence.provisioning.models import AccountStatus, Device, Platform, StoredAccount, Tenant
from ringfence.runtime import Runtime
from ringfence.storage.migrate import Schema, is_current
from ringfence.storage.tables import accounts, keys_metadata, metadata, sessions
from tests.support.clock import FakeClock

pytestmark = pytest.mark.usefixtures("backend")


def _tenant(clock: FakeClock, code: str = "acme", domain: str = "sip.acme.example") -> Tenant:
    return Tenant(
        id=f"t-{code}",
        code=code,
        name="Acme",
        sip_domain=domain,
        defaults=FeatureConfig(push=PushConfig(mode=PushMode.KEEPALIVE)),
        created_at=clock.now(),
    )


def _account(clock: FakeClock, tenant: Tenant, username: str = "alice") -> StoredAccount:
    return StoredAccount(
        id=f"a-{username}",
        tenant_id=tenant.id,
        username_key=f"key-{username}",
        username_sealed=b"\x01sealed-" + username.encode(),
        status=AccountStatus.ACTIVE,
        display_name_sealed=b"\x01sealed-name",
        e164_sealed=None,
        ha1_md5_sealed=b"\x01md5",
        ha1_sha256_sealed=b"\x01sha",
        overrides={"blf": {"enabled": True}},
        created_at=clock.now(),
        updated_at=clock.now(),
    )


def _schema_diff(connection: Connection, target: MetaData) -> list[object]:
    diff: list[object] = compare_metadata(MigrationContext.configure(connection), target)
    return diff


async def test_migrations_reach_head_and_match_the_tables(runtime: Runtime) -> None:
    assert await is_current(runtime.engine, Schema.MAIN)
    assert await is_current(runtime.key_engine, Schema.KEYS)
    async with runtime.engine.connect() as connection:
        assert await connection.run_sync(_schema_diff, metadata) == []
    async with runtime.key_engine.connect() as connection:
        assert await connection.run_sync(_schema_diff, keys_metadata) == []
    # Migrating twice is a no-op.
    await runtime.migrate()


async def test_tenant_round_trip(runtime: Runtime, clock: FakeClock) -> None:
    tenant = _tenant(clock)
    await runtime.store.add_tenant(tenant)
    assert await runtime.store.get_tenant(tenant.id) == tenant
    assert await runtime.store.find_tenant("acme") == tenant
    assert await runtime.store.find_tenant("sip.acme.example") == tenant
    assert await runtime.store.find_tenant("nope") is None
    renamed = replace(tenant, name="Acme AG", defaults=FeatureConfig())
    await runtime.store.update_tenant(renamed)
    assert await runtime.store.list_tenants() == [renamed]
    assert renamed.created_at.tzinfo is not None


async def test_duplicate_tenant_is_a_conflict(runtime: Runtime, clock: FakeClock) -> None:
    await runtime.store.add_tenant(_tenant(clock))
    with pytest.raises(ConflictError):
        await runtime.store.add_tenant(replace(_tenant(clock), id="other"))


async def test_account_round_trip_and_uniqueness(runtime: Runtime, clock: FakeClock) -> None:
    tenant = _tenant(clock)
    await runtime.store.add_tenant(tenant)
    account = _account(clock, tenant)
    await runtime.store.add_account(account)
    assert await runtime.store.get_account(tenant.id, "key-alice") == account
    assert await runtime.store.get_account_by_id(account.id) == account
    with pytest.raises(ConflictError) as caught:
        await runtime.store.add_account(replace(account, id="a-other"))
    assert caught.value.field == "username"
    assert await runtime.store.list_accounts(tenant.id, offset=0, limit=10) == [account]


async def test_listing_pages_in_creation_order(runtime: Runtime, clock: FakeClock) -> None:
    tenant = _tenant(clock)
    await runtime.store.add_tenant(tenant)
    for name in ("carol", "alice", "bob"):
        clock.advance(1)
        await runtime.store.add_account(_account(clock, tenant, name))
    page = await runtime.store.list_accounts(tenant.id, offset=1, limit=1)
    assert [a.id for a in page] == ["a-alice"]


def _session(account: StoredAccount, clock: FakeClock, n: int) -> Session:
    return Session(
        id=f"s{n}",
        account_id=account.id,
        device_id=None,
        access_hash=f"a{n}".ljust(64, "0"),
        refresh_hash=f"r{n}".ljust(64, "0"),
        access_expires_at=clock.now(),
        refresh_expires_at=clock.now(),
        created_at=clock.now(),
    )


async def test_update_with_revocation_deletes_sessions(runtime: Runtime, clock: FakeClock) -> None:
    tenant = _tenant(clock)
    await runtime.store.add_tenant(tenant)
    account = _account(clock, tenant)
    await runtime.store.add_account(account)
    await runtime.store.add_session(_session(account, clock, 1))
    await runtime.store.update_account(
        replace(account, status=AccountStatus.SUSPENDED), revoke_sessions=False
    )
    assert await runtime.store.session_by_access("a1".ljust(64, "0")) is not None
    await runtime.store.update_account(account, revoke_sessions=True)
    assert await runtime.store.session_by_access("a1".ljust(64, "0")) is None
    stored = await runtime.store.get_account_by_id(account.id)
    assert stored is not None
    assert stored.status is AccountStatus.ACTIVE


async def test_deleting_an_account_leaves_no_rows(runtime: Runtime, clock: FakeClock) -> None:
    tenant = _tenant(clock)
    await runtime.store.add_tenant(tenant)
    account = _account(clock, tenant)
    await runtime.store.add_account(account)
    device = await runtime.store.upsert_device(
        Device("d1", account.id, "key-install-0001", Platform.IOS, "app", clock.now(), clock.now())
    )
    await runtime.store.add_session(replace(_session(account, clock, 2), device_id=device.id))
    await runtime.store.delete_account(account.id)
    async with runtime.engine.connect() as connection:
        for table in (accounts, sessions):
            count = (await connection.execute(select(func.count()).select_from(table))).scalar()
            assert count == 0
    assert await runtime.store.devices_of(account.id) == []


async def test_device_upsert_keeps_identity(runtime: Runtime, clock: FakeClock) -> None:
    tenant = _tenant(clock)
    await runtime.store.add_tenant(tenant)
    account = _account(clock, tenant)
    await runtime.store.add_account(account)
    first = await runtime.store.upsert_device(
        Device("d1", account.id, "key-install-0001", Platform.IOS, None, clock.now(), clock.now())
    )
    clock.advance(60)
    again = await runtime.store.upsert_device(
        Device(
            "d2", account.id, "key-install-0001", Platform.IOS, "com.acme", clock.now(), clock.now()
        )
    )
    assert again.id == first.id
    assert again.app_id == "com.acme"
    assert again.last_seen_at > first.last_seen_at
    assert len(await runtime.store.devices_of(account.id)) == 1


async def test_admin_tokens(runtime: Runtime, clock: FakeClock) -> None:
    token = AdminToken("k1", "ops", "h" * 64, clock.now())
    await runtime.store.add_admin_token(token)
    assert await runtime.store.admin_token_by_hash("h" * 64) == token
    assert await runtime.store.list_admin_tokens() == [token]
    assert await runtime.store.delete_admin_token("k1") is True
    assert await runtime.store.delete_admin_token("k1") is False


async def test_key_store(runtime: Runtime) -> None:
    await runtime.key_store.put_wrapped_key("account:1", b"\x01wrapped")
    assert await runtime.key_store.get_wrapped_key("account:1") == b"\x01wrapped"
    assert await runtime.key_store.delete_wrapped_key("account:1") is True
    assert await runtime.key_store.get_wrapped_key("account:1") is None
    assert await runtime.key_store.delete_wrapped_key("account:1") is False
