"""push instances

The push tokens a device reports over HTTPS (pushgw.instances, P3): sealed with a key per
instance, found by the selector's blind index, erased at `expires_at`.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "push_instances",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("selector_key", sa.String(length=64), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_push_instances_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_instances")),
        sa.UniqueConstraint(
            "account_id", "selector_key", name=op.f("uq_push_instances_account_id_selector_key")
        ),
    )
    op.create_index(
        op.f("ix_push_instances_expires_at"), "push_instances", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_push_instances_expires_at"), table_name="push_instances")
    op.drop_table("push_instances")
