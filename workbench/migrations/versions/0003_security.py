"""Accounts an admin can disable, and the index of the per-client failed-login limit.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_index("ix_audit_action_client", "audit_log", ["action", "client"])


def downgrade() -> None:
    op.drop_index("ix_audit_action_client", "audit_log")
    with op.batch_alter_table("users") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("disabled")
