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
from ringfence.storage.migrate import Schema, alembic_config, is_current, upgrade
from tests.conftest import make_settings
from tests.support.clock import FakeClock

pytestmark = pytest.mark.usefixtures("backend")

_ACCOUNT = text(
    "INSERT INTO accounts (id, tenant_id, username, status, ha1_md5_sealed, ha1_sha256_sealed,"
    " overrides, created_at, updated_at) VALUES (:id, 't1', :name, 'active', :md5, :sha,"
    " '{}', :at, :at)"
)


def _to_0002(connection: Connection) -> None:
    command.upgrade(alembic_config(Schema.MAIN, connection), "0002")


@pytest.mark.promise("P19")
async def test_clear_user_names_are_sealed_and_still_found(
    tmp_path: Path, clock: FakeClock, backend: str, request: pytest.FixtureRequest
) -> None:
    runtime = Runtime(make_settings(tmp_path, backend, request), clock)
    try:
        await upgrade(runtime.key_engine, Schema.KEYS)
        async with runtime.engine.begin() as connection:
            await connection.run_sync(_to_0002)
        # Two accounts as revision 0002 kept them; "gone" lost its key to an erasure that
        # did not finish.
        at = datetime(2026, 12, 1, tzinfo=UTC)
        keys = {}
        for account_id in ("a-alice", "a-gone"):
            cipher = await runtime.keyring.create(account_subject(account_id))
            keys[account_id] = cipher
        async with runtime.engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO tenants (id, code, name, sip_domain, defaults, created_at)"
                    " VALUES ('t1', 'acme', 'Acme', 'sip.acme.example', '{}', :at)"
                ),
                {"at": at},
            )
            for account_id, name in (("a-alice", "alice"), ("a-gone", "gone")):
                cipher = keys[account_id]
                await connection.execute(
                    _ACCOUNT,
                    {
                        "id": account_id,
                        "name": name,
                        "md5": cipher.seal_text("account.ha1.md5", "0" * 32),
                        "sha": cipher.seal_text("account.ha1.sha256", "0" * 64),
                        "at": at,
                    },
                )
            await connection.execute(
                text(
                    "INSERT INTO devices (id, account_id, install_id, platform, created_at,"
                    " last_seen_at) VALUES ('d1', 'a-alice', 'install-0001', 'ios', :at, :at)"
                ),
                {"at": at},
            )
            await connection.execute(
                text(
                    "INSERT INTO sessions (id, account_id, device_id, access_hash, refresh_hash,"
                    " access_expires_at, refresh_expires_at, created_at)"
                    " VALUES ('s1', 'a-alice', 'd1', :a, :r, :at, :at, :at)"
                ),
                {"a": "a" * 64, "r": "r" * 64, "at": at},
            )
        await runtime.keyring.destroy(account_subject("a-gone"))

        await runtime.migrate()

        assert await is_current(runtime.engine, Schema.MAIN)
        account = await runtime.provisioning.account("acme", "alice")
        assert (account.id, account.username) == ("a-alice", "alice")
        credentials = await runtime.provisioning.sip_credentials("sip.acme.example", "alice")
        assert credentials is not None
        assert credentials.username == "alice"
        with pytest.raises(NotFoundError):
            await runtime.provisioning.account("acme", "gone")
        async with runtime.engine.connect() as connection:
            rows = (await connection.execute(text("SELECT * FROM accounts"))).mappings().all()
        assert [row["id"] for row in rows] == ["a-alice"]
        assert "username" not in rows[0]
        assert b"alice" not in bytes(rows[0]["username_sealed"])
        assert "alice" not in rows[0]["username_key"]
        async with runtime.engine.connect() as connection:
            rows = (await connection.execute(text("SELECT * FROM devices"))).mappings().all()
        assert [(row["id"], row["install_key"]) for row in rows] == [
            ("d1", runtime.provisioning.install_key("install-0001"))
        ]
        assert "install_id" not in rows[0]
        # Rebuilding the accounts table (SQLite) did not cascade to what refers to it.
        async with runtime.engine.connect() as connection:
            sessions = (await connection.execute(text("SELECT id FROM sessions"))).scalars()
            assert list(sessions) == ["s1"]
        # A name taken before the migration is still taken after it.
        with pytest.raises(ConflictError, match="exists"):
            await runtime.provisioning.create_account("acme", "alice", "a long secret")
    finally:
        await runtime.aclose()


async def test_without_the_keyring_the_migration_refuses_to_drop_names(
    tmp_path: Path, clock: FakeClock, backend: str, request: pytest.FixtureRequest
) -> None:
    runtime = Runtime(make_settings(tmp_path, backend, request), clock)
    try:
        async with runtime.engine.begin() as connection:
            await connection.run_sync(_to_0002)
            await connection.execute(
                text(
                    "INSERT INTO tenants (id, code, name, sip_domain, defaults, created_at)"
                    " VALUES ('t1', 'acme', 'Acme', 'sip.acme.example', '{}', :at)"
                ),
                {"at": clock.now()},
            )
            await connection.execute(
                _ACCOUNT,
                {"id": "a-1", "name": "alice", "md5": b"x", "sha": b"x", "at": clock.now()},
            )
        # Alembic alone (no sealed names handed over) stops, and the names stay.
        with pytest.raises(RuntimeError, match="ringfence migrate"):
            await upgrade(runtime.engine, Schema.MAIN)
        async with runtime.engine.connect() as connection:
            names = (await connection.execute(text("SELECT username FROM accounts"))).scalars()
            assert list(names) == ["alice"]
    finally:
        await runtime.aclose()
