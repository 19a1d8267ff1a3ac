"""Alembic environment: iotsec always hands Alembic an open connection."""

from alembic import context

from iotsec.store.models import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
