"""Initial schema: recipients, templates, deliveries, audience lists, delivery logs, archive outbox.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from postroom.storage.schema import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recipients",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("email_key", sa.String(320), nullable=False),
        sa.Column("first_name", sa.String(200), nullable=False),
        sa.Column("last_name", sa.String(200), nullable=False),
        sa.Column("email_format", sa.String(16), nullable=False),
        sa.Column("opted_out", sa.Boolean, nullable=False),
        sa.Column("fields", sa.JSON, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_recipients_email_key", "recipients", ["email_key"])
    op.create_table(
        "templates",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("builtin", sa.Boolean, nullable=False),
        sa.Column("properties", sa.JSON, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("template_name", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("properties", sa.JSON, nullable=False),
        sa.Column("audience", sa.JSON, nullable=False),
        sa.Column("salt", sa.String(32), nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("analyzed_at", UtcDateTime()),
        sa.Column("started_at", UtcDateTime()),
        sa.Column("finished_at", UtcDateTime()),
    )
    op.create_table(
        "audience_members",
        sa.Column("delivery_id", sa.Integer,
                  sa.ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("recipient_id", sa.Integer,
                  sa.ForeignKey("recipients.id", ondelete="CASCADE"), nullable=False),
    )
    op.create_table(
        "delivery_logs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("delivery_id", sa.Integer,
                  sa.ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("recipient_id", sa.Integer,
                  sa.ForeignKey("recipients.id", ondelete="SET NULL")),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_type", sa.String(16)),
        sa.Column("failure_reason", sa.Integer),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UtcDateTime()),
        sa.Column("smtp_reply", sa.Text, nullable=False),
        sa.Column("message_id", sa.String(255)),
        sa.Column("sent_at", UtcDateTime()),
        sa.Column("size", sa.Integer),
        sa.Column("sha256", sa.String(64)),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_logs_due", "delivery_logs", ["delivery_id", "status", "next_attempt_at"])
    op.create_table(
        "archive_outbox",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("log_id", sa.Integer,
                  sa.ForeignKey("delivery_logs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("delivery_id", sa.Integer,
                  sa.ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
        sa.Column("data", sa.LargeBinary),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("reply", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("archived_at", UtcDateTime()),
        sa.UniqueConstraint("log_id", name="uq_archive_one_copy_per_log"),
    )
    op.create_index("ix_archive_due", "archive_outbox", ["state", "next_attempt_at"])


def downgrade() -> None:
    for table in ("archive_outbox", "delivery_logs", "audience_members", "deliveries",
                  "templates", "recipients"):
        op.drop_table(table)
