"""Workers and their leases; crash accounting ("in doubt") on logs and archive copies.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from postroom.storage.schema import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("heartbeat_at", UtcDateTime(), nullable=False),
        sa.Column("stopped_at", UtcDateTime()),
        sa.Column("delivery_id", sa.Integer),
        sa.Column("sent", sa.Integer, nullable=False, server_default="0"),
    )
    with op.batch_alter_table("delivery_logs") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(40)))
        batch.add_column(sa.Column("attempting", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("in_doubt", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("archive_outbox") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(40)))
        batch.add_column(sa.Column("in_doubt", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("archive_outbox") as batch:
        batch.drop_column("in_doubt")
        batch.drop_column("claimed_by")
    with op.batch_alter_table("delivery_logs") as batch:
        batch.drop_column("in_doubt")
        batch.drop_column("attempting")
        batch.drop_column("claimed_by")
    op.drop_table("workers")
