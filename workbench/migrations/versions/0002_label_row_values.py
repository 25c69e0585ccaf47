"""Labels keep the version of the batch file they were given on and the labelled row's values.

A batch's scored file is overwritten when a batch of the same name is scored again; without these,
a label would follow its row id onto a different row (see pynomaly_core.feedback). Both columns are
nullable: labels recorded before this revision keep null (feedback.BatchVersion says how they count).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs of nullable columns: SQLite and PostgreSQL both take them without a table copy.
    op.add_column("labels", sa.Column("batch_version", sa.String(64), nullable=True))
    op.add_column("labels", sa.Column("row_values", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("labels") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("row_values")
        batch.drop_column("batch_version")
