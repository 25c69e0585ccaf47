"""Alembic environment: the URL comes from `workbench.db.migrate`."""

from alembic import context
from sqlalchemy import create_engine

from workbench.db import METADATA

engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=METADATA)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
