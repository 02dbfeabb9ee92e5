"""Alembic environment for PostgreSQL + pgvector.

Alembic's own template, plus what pgvector needs: the database URL from ``app.database``, one
migration run at a time, the ``vector`` extension before the first migration, pgvector types in
reflection and in generated files, pgai-managed tables left alone, and expected failures reported
as one ``FAILED:`` line. Each of those lives in a small module under ``app.migration``.
"""

from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import URL, Connection

from app.database import resolve_url
from app.migration import errors, locking, pgai, rendering
from app.models import Base

config = context.config

if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# Metadata handed in by a caller (pytest-alembic, the template's tests) takes the models' place.
target_metadata = config.attributes.get("target_metadata") or Base.metadata


def configure(**kwargs: Any) -> None:
    """``context.configure`` with the options every mode shares: metadata, comparison, rendering."""
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        render_item=rendering.render_item,
        include_object=pgai.include_object_for(target_metadata),
        **kwargs,
    )


def database_url() -> URL:
    """The URL from ``DATABASE_URL``, ``-x dburl=...``, ``alembic.ini`` or the embedded server."""
    return resolve_url(
        cli_url=context.get_x_argument(as_dictionary=True).get("dburl"),
        ini_url=config.get_main_option("sqlalchemy.url"),
    )


def run_migrations_offline() -> None:
    """Write the migrations as SQL (``alembic upgrade --sql``) without connecting anywhere.

    The script starts by creating the ``vector`` extension, so it applies to an empty database.
    """
    configure(dialect_name="postgresql", literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.execute(locking.CREATE_EXTENSION_SQL)
        context.run_migrations()


def run_migrations_on(connection: Connection) -> None:
    """Run the migrations on ``connection`` while holding the migration lock."""
    rendering.register_vector_types(connection.dialect)
    with locking.migration_lock(connection):
        configure(connection=connection)
        with context.begin_transaction():
            locking.create_vector_extension(connection)
            context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on a live database.

    A connection or engine passed in ``config.attributes["connection"]`` (pytest-alembic,
    programmatic use) is used as it is; otherwise an engine is made from :func:`database_url`.
    """
    connectable = config.attributes.get("connection")
    if isinstance(connectable, Connection):
        with errors.reported(connectable.engine.url):
            run_migrations_on(connectable)
        return
    if connectable is None:
        with errors.reported():
            connectable = create_engine(database_url(), poolclass=pool.NullPool)
    with errors.reported(connectable.url), connectable.connect() as connection:
        run_migrations_on(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
