"""message history

Each account's sent and received messages (messaging.history): sealed with the account's
key, fetched by devices after a cursor (`seq`, never reused), found by a keyed hash of their
IMDN Message-ID when a notification names them, deleted at `expires_at` (the account's
messaging retention).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_messages_account_id_seq": ["account_id", "seq"],
    "ix_messages_account_id_ref_key": ["account_id", "ref_key"],
    "ix_messages_expires_at": ["expires_at"],
}


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("ref_key", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_messages_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_messages")),
        sqlite_autoincrement=True,
    )
    for name, columns in INDEXES.items():
        op.create_index(op.f(name), "messages", columns, unique=False)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(op.f(name), table_name="messages")
    op.drop_table("messages")
