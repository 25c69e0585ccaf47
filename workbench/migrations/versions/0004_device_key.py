"""The key that signs device cookies (auth.device_cookie): one random key per database, so every workbench process
on it accepts the same cookies, across restarts.

Revision ID: 0004
Revises: 0003
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    keys = op.create_table("server_keys", sa.Column("name", sa.String(50), primary_key=True), sa.Column("value", sa.String(64), nullable=False))
    op.bulk_insert(keys, [{"name": "device_cookie", "value": secrets.token_hex(32)}])


def downgrade() -> None:
    op.drop_table("server_keys")
