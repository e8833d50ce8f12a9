"""Alembic environment for the DSW state tables.

Run only through ``spawner_ext.catalog.db.upgrade`` (or ``alembic`` with the same
configuration): the caller hands in an open connection inside a transaction that already
holds the migration lock, so this file neither makes engines nor reads alembic.ini.
"""

from alembic import context

from spawner_ext.catalog.db import VERSION_TABLE, Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, version_table=VERSION_TABLE,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
