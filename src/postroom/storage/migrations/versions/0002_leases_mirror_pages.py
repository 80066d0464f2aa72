"""Leases (claimed_until), recipient domain on logs, proof counter, mirror pages, secrets.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from postroom.storage.schema import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("delivery_logs") as batch:
        batch.add_column(sa.Column("domain", sa.String(255)))
        batch.add_column(sa.Column("claimed_until", UtcDateTime()))
    with op.batch_alter_table("archive_outbox") as batch:
        batch.add_column(sa.Column("claimed_until", UtcDateTime()))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("proofs", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "mirror_pages",
        sa.Column("log_id", sa.Integer,
                  sa.ForeignKey("delivery_logs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("delivery_id", sa.Integer,
                  sa.ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("html", sa.LargeBinary, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_mirror_pages_expires_at", "mirror_pages", ["expires_at"])
    op.create_table(
        "instance_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(255), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("instance_secrets")
    op.drop_table("mirror_pages")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("proofs")
    with op.batch_alter_table("archive_outbox") as batch:
        batch.drop_column("claimed_until")
    with op.batch_alter_table("delivery_logs") as batch:
        batch.drop_column("claimed_until")
        batch.drop_column("domain")
