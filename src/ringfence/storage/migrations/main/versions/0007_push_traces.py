"""push traces

Per-call push traces (pushgw.traces): sealed with the account's key, deleted at
`expires_at` (7 days after the call).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "push_traces",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_push_traces_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_traces")),
    )
    op.create_index(
        op.f("ix_push_traces_account_id_started_at"),
        "push_traces",
        ["account_id", "started_at"],
        unique=False,
    )
    op.create_index(op.f("ix_push_traces_expires_at"), "push_traces", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_push_traces_expires_at"), table_name="push_traces")
    op.drop_index(op.f("ix_push_traces_account_id_started_at"), table_name="push_traces")
    op.drop_table("push_traces")
