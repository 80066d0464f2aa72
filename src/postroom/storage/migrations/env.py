"""Alembic environment: runs against the connection Postroom hands it (see migrate.py)."""

from __future__ import annotations

from alembic import context

from postroom.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through postroom.storage.migrate, not the alembic CLI")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
