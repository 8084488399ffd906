"""Alembic environment: runs on the connection tapevault hands it (see tapevault.db.migrate)."""

from __future__ import annotations

from alembic import context

from tapevault.db.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - tapevault always passes its own connection
    raise RuntimeError("run migrations through `tapevault migrate`")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
