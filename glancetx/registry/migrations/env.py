"""
Alembic's entry point for the registry schema.  Run through
L{glancetx.registry.migrate}, which hands in the connection.
"""

from alembic import context

from glancetx.registry.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
