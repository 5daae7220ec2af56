"""held messages

MESSAGE requests held for sleeping devices (messaging.held): sealed with the account's key,
found by the AOR's blind index, claimed while a delivery runs, deleted at `expires_at`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "held_messages",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("aor_key", sa.String(length=64), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_held_messages_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_held_messages")),
    )
    for column in ("aor_key", "account_id", "expires_at"):
        op.create_index(op.f(f"ix_held_messages_{column}"), "held_messages", [column], unique=False)


def downgrade() -> None:
    for column in ("aor_key", "account_id", "expires_at"):
        op.drop_index(op.f(f"ix_held_messages_{column}"), table_name="held_messages")
    op.drop_table("held_messages")
