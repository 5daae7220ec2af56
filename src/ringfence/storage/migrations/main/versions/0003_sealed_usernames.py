"""sealed user names and hashed install ids, found by their blind index

The SIP user name was the last personal field of an account kept in the clear (routing
looked accounts up by it), and a device row kept the app's install id, so a copy of the
database from before an erasure still showed both (P19). The name is now sealed with the
account's key like the other fields, and a keyed hash of it (`ringfence.crypto.blind`) serves
the lookups; of the install id only its keyed hash is kept (it only recognises the
installation at its next sign-in).

Both need the KEK, which a migration does not have: `ringfence migrate` reads the values
before this revision runs and hands the results over in the Alembic config's attributes:
`sealed_usernames` (account id -> (blind index, sealed name)) and `install_keys` (device id
-> blind index). Every account and device must be in them, or the revision stops before it
changes anything (a row added since the values were read, a key store that is not this
database's). An account whose key is already destroyed was being erased when its node
stopped: only when the operator says so (`ringfence migrate --finish-erasures`) is it listed
in `finish_erasures`, and its erasure finished here and recorded (`erased_at`,
`erased_categories`) like any other.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from ringfence.storage.tables import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_devices = sa.table(
    "devices",
    sa.column("id", sa.String),
    sa.column("account_id", sa.String),
    sa.column("install_key", sa.String),
)
_accounts = sa.table(
    "accounts",
    sa.column("id", sa.String),
    sa.column("username_key", sa.String),
    sa.column("username_sealed", sa.LargeBinary),
)


def upgrade() -> None:
    given = context.config.attributes
    sealed: dict[str, tuple[str, bytes]] = given.get("sealed_usernames", {})
    install_keys: dict[str, str] = given.get("install_keys", {})
    erase: set[str] = set(given.get("finish_erasures", ()))
    bind = op.get_bind()
    # Every check before the first change.
    ids = list(bind.execute(sa.select(_accounts.c.id)).scalars())
    if ids and "sealed_usernames" not in given:
        raise RuntimeError("accounts hold user names to seal: run 'ringfence migrate'")
    unknown = [i for i in ids if i not in sealed and i not in erase]
    strays = [
        i
        for i, account in bind.execute(sa.select(_devices.c.id, _devices.c.account_id)).all()
        if i not in install_keys and account not in erase
    ]
    if unknown or strays:
        raise RuntimeError(
            f"{len(unknown)} account(s) and {len(strays)} device(s) appeared since the values "
            "were read: run 'ringfence migrate' again; nothing was changed"
        )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("username_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("username_sealed", sa.LargeBinary(), nullable=True))
    for account_id in ids:
        if account_id in sealed:
            key, name = sealed[account_id]
            bind.execute(
                sa.update(_accounts)
                .where(_accounts.c.id == account_id)
                .values(username_key=key, username_sealed=name)
            )
        else:
            _finish_erasure(bind, account_id, given["erased_at"], given["erased_categories"])
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_accounts_tenant_id_username"), type_="unique")
        batch_op.drop_column("username")
        batch_op.alter_column("username_key", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("username_sealed", existing_type=sa.LargeBinary(), nullable=False)
        batch_op.create_unique_constraint(
            batch_op.f("uq_accounts_tenant_id_username_key"), ["tenant_id", "username_key"]
        )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("install_key", sa.String(length=64), nullable=True))
    for device_id in list(bind.execute(sa.select(_devices.c.id)).scalars()):
        bind.execute(
            sa.update(_devices)
            .where(_devices.c.id == device_id)
            .values(install_key=install_keys[device_id])
        )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_devices_account_id_install_id"), type_="unique")
        batch_op.drop_column("install_id")
        batch_op.alter_column("install_key", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint(
            batch_op.f("uq_devices_account_id_install_key"), ["account_id", "install_key"]
        )


def _finish_erasure(
    bind: sa.Connection, account_id: str, at: object, categories: Sequence[str]
) -> None:
    """Delete what an interrupted erasure left, and record it as `privacy.erasure` does."""
    for table, column in (
        ("sessions", "account_id"),
        ("devices", "account_id"),
        ("postmortem_directives", "subject"),
        ("policy_notices", "subject"),
        ("accounts", "id"),
    ):
        dependent = sa.table(table, sa.column(column, sa.String))
        bind.execute(sa.delete(dependent).where(dependent.c[column] == account_id))
    destructions = sa.table(
        "destructions",
        sa.column("id", sa.String),
        sa.column("at", UTCDateTime()),
        sa.column("subject", sa.String),
        sa.column("categories", sa.JSON),
        sa.column("reason", sa.String),
    )
    bind.execute(
        sa.insert(destructions).values(
            id=str(uuid.uuid4()),
            at=at,
            subject=account_id,
            categories=list(categories),
            reason="erasure finished by storage revision 0003 (its key was destroyed)",
        )
    )


def downgrade() -> None:
    # The names could come back only by opening each account's key: not from a migration.
    raise RuntimeError("0003 cannot be undone: the user names are sealed")
