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
-> blind index). An account whose key is already destroyed was being erased when its node
stopped: its erasure is finished here.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_devices = sa.table("devices", sa.column("id", sa.String), sa.column("install_key", sa.String))
_accounts = sa.table(
    "accounts",
    sa.column("id", sa.String),
    sa.column("username_key", sa.String),
    sa.column("username_sealed", sa.LargeBinary),
)


def upgrade() -> None:
    sealed: dict[str, tuple[str, bytes]] | None = context.config.attributes.get("sealed_usernames")
    install_keys: dict[str, str] = context.config.attributes.get("install_keys", {})
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("username_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("username_sealed", sa.LargeBinary(), nullable=True))
    bind = op.get_bind()
    ids = list(bind.execute(sa.select(_accounts.c.id)).scalars())
    if ids and sealed is None:
        raise RuntimeError("accounts hold user names to seal: run 'ringfence migrate'")
    for account_id in ids:
        assert sealed is not None
        if account_id in sealed:
            key, name = sealed[account_id]
            bind.execute(
                sa.update(_accounts)
                .where(_accounts.c.id == account_id)
                .values(username_key=key, username_sealed=name)
            )
            continue
        for table, column in (
            ("sessions", "account_id"),
            ("devices", "account_id"),
            ("postmortem_directives", "subject"),
            ("policy_notices", "subject"),
            ("accounts", "id"),
        ):
            dependent = sa.table(table, sa.column(column, sa.String))
            bind.execute(sa.delete(dependent).where(dependent.c[column] == account_id))
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


def downgrade() -> None:
    # The names could come back only by opening each account's key: not from a migration.
    raise RuntimeError("0003 cannot be undone: the user names are sealed")
