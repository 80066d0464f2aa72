"""Why a sender ended when one of its loops died (shown by `workers`, counted by `health`).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("error", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("error")
