"""The bytes of archive copies move from `archive_outbox.data` to `archive_copy_data` (ADR 0033).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "archive_copy_data",
        sa.Column("log_id", sa.Integer, sa.ForeignKey("delivery_logs.id", ondelete="CASCADE"),
                  primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.execute("INSERT INTO archive_copy_data (log_id, data) "
               "SELECT log_id, data FROM archive_outbox WHERE data IS NOT NULL")
    with op.batch_alter_table("archive_outbox") as batch:
        batch.drop_column("data")


def downgrade() -> None:
    with op.batch_alter_table("archive_outbox") as batch:
        batch.add_column(sa.Column("data", sa.LargeBinary))
    op.execute("UPDATE archive_outbox SET data = (SELECT archive_copy_data.data "
               "FROM archive_copy_data WHERE archive_copy_data.log_id = archive_outbox.log_id)")
    op.drop_table("archive_copy_data")
