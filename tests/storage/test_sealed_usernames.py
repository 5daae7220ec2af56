"""Revision 0003: a database whose user names were in the clear gets them sealed (P19)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection, text

from ringfence.provisioning.errors import ConflictError, NotFoundError
from ringfence.provisioning.service import account_subject
from ringfence.runtime import Runtime
from ringfence.storage.engine import make_engine
from ringfence.storage.migrate import MigrationError, Schema, alembic_config, is_current, upgrade
from tests.conftest import make_settings
from tests.support.clock import FakeClock

pytestmark = pytest.mark.usefixtures("backend")

AT = datetime(2026, 12, 1, tzinfo=UTC)
_ACCOUNT = text(
    "INSERT INTO accounts (id, tenant_id, username, status, ha1_md5_sealed, ha1_sha256_sealed,"
    " overrides, created_at, updated_at) VALUES (:id, 't1', :name, 'active', :md5, :sha,"
    " '{}', :at, :at)"
)


def _to_0002(connection: Connection) -> None:
    command.upgrade(alembic_config(Schema.MAIN, connection), "0002")


async def _at_0002(runtime: Runtime, accounts: dict[str, str]) -> None:
    """A database as revision 0002 kept it: `accounts` (id -> name), each with a key; a
    device and a session of the first."""
    await upgrade(runtime.key_engine, Schema.KEYS)
    async with runtime.engine.begin() as connection:
        await connection.run_sync(_to_0002)
    first = next(iter(accounts))
    async with runtime.engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO tenants (id, code, name, sip_domain, defaults, created_at)"
                " VALUES ('t1', 'acme', 'Acme', 'sip.acme.example', '{}', :at)"
            ),
            {"at": AT},
        )
        for account_id, name in accounts.items():
            cipher = await runtime.keyring.create(account_subject(account_id))
            await connection.execute(
                _ACCOUNT,
                {
                    "id": account_id,
                    "name": name,
                    "md5": cipher.seal_text("account.ha1.md5", "0" * 32),
                    "sha": cipher.seal_text("account.ha1.sha256", "0" * 64),
                    "at": AT,
                },
            )
        await connection.execute(
            text(
                "INSERT INTO devices (id, account_id, install_id, platform, created_at,"
                " last_seen_at) VALUES ('d1', :account, 'install-0001', 'ios', :at, :at)"
            ),
            {"account": first, "at": AT},
        )
        await connection.execute(
            text(
                "INSERT INTO sessions (id, account_id, device_id, access_hash, refresh_hash,"
                " access_expires_at, refresh_expires_at, created_at)"
                " VALUES ('s1', :account, 'd1', :a, :r, :at, :at, :at)"
            ),
            {"account": first, "a": "a" * 64, "r": "r" * 64, "at": AT},
        )


async def _still_0002(runtime: Runtime, names: list[str]) -> None:
    async with runtime.engine.connect() as connection:
        version = await connection.execute(text("SELECT version_num FROM alembic_version"))
        assert version.scalar() == "0002"
        rows = (await connection.execute(text("SELECT * FROM accounts"))).mappings().all()
        assert sorted(row["username"] for row in rows) == names
        assert "username_key" not in rows[0]
        assert (await connection.execute(text("SELECT id FROM sessions"))).scalar() == "s1"


@pytest.mark.promise("P19")
async def test_clear_user_names_are_sealed_and_still_found(
    tmp_path: Path, clock: FakeClock, backend: str, request: pytest.FixtureRequest
) -> None:
    runtime = Runtime(make_settings(tmp_path, backend, request), clock)
    try:
        await _at_0002(runtime, {"a-alice": "alice", "a-bob": "bob"})

        await runtime.migrate()

        assert await is_current(runtime.engine, Schema.MAIN)
        account = await runtime.provisioning.account("acme", "alice")
        assert (account.id, account.username) == ("a-alice", "alice")
        credentials = await runtime.provisioning.sip_credentials("sip.acme.example", "bob")
        assert credentials is not None
        assert credentials.username == "bob"
        async with runtime.engine.connect() as connection:
            rows = (await connection.execute(text("SELECT * FROM accounts"))).mappings().all()
            devices = (await connection.execute(text("SELECT * FROM devices"))).mappings().all()
            sessions = (await connection.execute(text("SELECT id FROM sessions"))).scalars()
            assert list(sessions) == ["s1"]  # rebuilding `accounts` cascaded to nothing
        assert "username" not in rows[0]
        for row in rows:
            assert b"alice" not in bytes(row["username_sealed"])
            assert "alice" not in row["username_key"]
        assert [(row["id"], row["install_key"]) for row in devices] == [
            ("d1", runtime.provisioning.install_key("install-0001"))
        ]
        assert "install_id" not in devices[0]
        # A name taken before the migration is still taken after it.
        with pytest.raises(ConflictError, match="exists"):
            await runtime.provisioning.create_account("acme", "alice", "a long secret")
    finally:
        await runtime.aclose()


@pytest.mark.promise("P19")
async def test_accounts_without_a_key_stop_it_unless_the_operator_finishes_their_erasure(
    tmp_path: Path, clock: FakeClock, backend: str, request: pytest.FixtureRequest
) -> None:
    runtime = Runtime(make_settings(tmp_path, backend, request), clock)
    try:
        await _at_0002(runtime, {"a-gone": "gone", "a-alice": "alice"})
        # An erasure that stopped after the key (privacy.erasure destroys it first).
        await runtime.keyring.destroy(account_subject("a-gone"))
        with pytest.raises(MigrationError, match="1 of 2 accounts have no key"):
            await runtime.migrate()
        await _still_0002(runtime, ["alice", "gone"])

        await runtime.migrate(finish_erasures=True)

        assert (await runtime.provisioning.account("acme", "alice")).username == "alice"
        with pytest.raises(NotFoundError):
            await runtime.provisioning.account("acme", "gone")
        async with runtime.engine.connect() as connection:
            left = (await connection.execute(text("SELECT count(*) FROM devices"))).scalar()
        assert left == 0  # the device was the erased account's
        [record] = await runtime.erasure.destructions()
        assert (record.subject, record.at) == ("a-gone", clock.now())
        assert "account identity" in record.categories
    finally:
        await runtime.aclose()


async def test_a_failing_migration_leaves_the_database_as_it_was(
    tmp_path: Path, clock: FakeClock, backend: str, request: pytest.FixtureRequest
) -> None:
    """The unique index on the blind index fails after the columns were added: all of it
    goes back, SQLite included (its driver would commit DDL on its own)."""
    runtime = Runtime(make_settings(tmp_path, backend, request), clock)
    migration = make_engine(runtime.settings.storage.url(), migration=True)
    try:
        await _at_0002(runtime, {"a-alice": "alice", "a-bob": "bob"})
        colliding = {
            "sealed_usernames": {"a-alice": ("same", b"x"), "a-bob": ("same", b"y")},
            "install_keys": {"d1": "k"},
        }
        with pytest.raises(Exception, match=r"(?i)unique"):
            await upgrade(migration, Schema.MAIN, colliding)
        await _still_0002(runtime, ["alice", "bob"])
        # Alembic alone (no sealed names handed over) stops before any change.
        with pytest.raises(RuntimeError, match="ringfence migrate"):
            await upgrade(migration, Schema.MAIN)
        await _still_0002(runtime, ["alice", "bob"])
        # And then the real thing works.
        await runtime.migrate()
        assert (await runtime.provisioning.account("acme", "bob")).id == "a-bob"
    finally:
        await migration.dispose()
        await runtime.aclose()
