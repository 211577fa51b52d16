"""Alembic environment: runs against the engine handed in by `Database.upgrade`, or LEADFLOW_DATABASE_URL."""

from alembic import context

from leadflow.platform.settings import get_settings
from leadflow.platform.store.db import make_engine
from leadflow.platform.store.models import Base

engine = context.config.attributes.get("engine") or make_engine(get_settings().resolved_database_url)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
