"""Address status (quarantine), qualification rules, texts to qualify, inbound bounces.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from postroom.storage.schema import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "address_status",
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_count", sa.Integer, nullable=False),
        sa.Column("first_error_at", UtcDateTime()),
        sa.Column("last_error_at", UtcDateTime()),
        sa.Column("last_reason", sa.Integer),
        sa.Column("last_type", sa.String(16)),
        sa.Column("last_text", sa.Text, nullable=False),
        sa.Column("status_since", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_address_status_domain", "address_status", ["domain"])
    op.create_index("ix_address_status_status", "address_status", ["status"])
    op.create_table(
        "qualification_rules",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("pattern", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_type", sa.String(16), nullable=False),
        sa.Column("reason", sa.Integer, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("builtin", sa.Boolean, nullable=False),
    )
    op.create_index("ix_qualification_rules_position", "qualification_rules", ["position"])
    op.create_table(
        "unqualified_texts",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("normalized", sa.Text, nullable=False),
        sa.Column("first_text", sa.Text, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("first_seen", UtcDateTime(), nullable=False),
        sa.Column("last_seen", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "bounces",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("envelope_to", sa.String(320), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("processed_at", UtcDateTime()),
    )
    op.create_index("ix_bounces_state", "bounces", ["state"])
    op.create_table(
        "bounce_results",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("bounce_id", sa.Integer, sa.ForeignKey("bounces.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("log_id", sa.Integer,
                  sa.ForeignKey("delivery_logs.id", ondelete="SET NULL")),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("failure_type", sa.String(16), nullable=False),
        sa.Column("reason", sa.Integer, nullable=False),
        sa.Column("rule_id", sa.String(64)),
        sa.Column("attributed_by", sa.String(16), nullable=False),
        sa.Column("applied", sa.Boolean, nullable=False),
    )
    op.create_index("ix_bounce_results_bounce_id", "bounce_results", ["bounce_id"])
    op.create_index("ix_bounce_results_log_id", "bounce_results", ["log_id"])


def downgrade() -> None:
    for table in ("bounce_results", "bounces", "unqualified_texts", "qualification_rules",
                  "address_status"):
        op.drop_table(table)
