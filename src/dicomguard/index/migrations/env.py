"""Alembic environment: runs migrations on the engine dicomguard passes in."""

from alembic import context

from dicomguard.index.models import Base

config = context.config
engine = config.attributes.get("engine")

if engine is None:  # `alembic revision --autogenerate` from a developer shell
    from sqlalchemy import create_engine

    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite://")

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
