"""Alembic environment: migrations run on a connection handed over by lmsbridge.storage.migrate."""

from __future__ import annotations

from alembic import context

from lmsbridge.storage.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - lmsbridge always passes a connection
    raise RuntimeError("run migrations with `lmsbridge migrate`, which passes the connection")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
