"""Alembic environment of the main database; the connection comes from storage.migrate."""

from alembic import context

from ringfence.storage.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("run migrations with 'ringfence migrate'")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
