"""The archive hash ledger: entries, the chain head, signed checkpoints.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from postroom.storage.schema import UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "archive_ledger",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("copy_id", sa.Integer, nullable=False, unique=True),
        sa.Column("delivery_id", sa.Integer, nullable=False, index=True),
        sa.Column("log_id", sa.Integer, nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("accepted_at", UtcDateTime(), nullable=False),
        sa.Column("acked_at", UtcDateTime(), nullable=False, index=True),
        sa.Column("ack", sa.Text, nullable=False),
        sa.Column("prev", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    head = op.create_table(
        "archive_ledger_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("head", sa.String(64), nullable=False),
        sa.Column("checkpoint_count", sa.Integer, nullable=False),
        sa.Column("checkpoint_at", UtcDateTime()),
    )
    op.bulk_insert(head, [{"id": 1, "count": 0, "head": "0" * 64, "checkpoint_count": 0,
                           "checkpoint_at": None}])
    op.create_table(
        "archive_checkpoints",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("head", sa.String(64), nullable=False),
        sa.Column("time", UtcDateTime(), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("archive_checkpoints")
    op.drop_table("archive_ledger_head")
    op.drop_table("archive_ledger")
