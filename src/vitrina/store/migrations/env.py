"""Alembic environment of the review database: runs on the connection the store hands over.

Vitrina runs migrations from code (:func:`vitrina.store.engine.migrate`), inside a
transaction it holds (with a lock, so two processes never migrate at once); this file
only tells Alembic the connection and the target metadata. ``render_as_batch`` lets
SQLite alter tables (it recreates them).
"""

from alembic import context

from vitrina.store.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the alembic command line is not used
    raise RuntimeError(
        "Vitrina's migrations run from vitrina.store (they open the database themselves)"
    )
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
