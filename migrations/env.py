"""Alembic environment for PostgreSQL + pgvector.

Alembic's own template, plus what pgvector needs: the database URL from ``pgvector_base.database``,
one migration run at a time, the ``vector`` extension before the first migration, pgvector types in
reflection and in generated files, the models' schemas compared and created, tables of other tools
and of pgai left alone, stored vectors never dropped unasked, enum values migrated, and expected
failures reported as one ``FAILED:`` line. Each of those lives in a small module under
``pgvector_base.migration``.
"""

from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import URL, Connection

from app.models import Base
from pgvector_base.database import resolve_url
from pgvector_base.migration import (
    builds,
    comparison,
    distribution,
    enums,
    errors,
    exclusion,
    locking,
    partitions,
    pgai,
    rendering,
    schemas,
    stored_vectors,
    tenancy,
    timeouts,
    validation,
)

config = context.config

if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# Metadata handed in by a caller (pytest-alembic, the template's tests) takes the models' place.
target_metadata = config.attributes.get("target_metadata") or Base.metadata

# op.create_vectorizer and op.drop_vectorizer, when a migration uses them (the pgai group).
pgai.register_operations_if_used(context.script)
enums.configure()


def configure(**kwargs: Any) -> None:
    """``context.configure`` with the options every mode shares: metadata, comparison, rendering."""
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        # Alembic's comparators plus ours: index definitions and vector dimensions; before any
        # comparison, a check of the models' vector indexes against pgvector; after it, CREATE
        # SCHEMA where needed, no stored vector dropped unasked, each table placed on a Citus
        # cluster as its model declares, partitions created as the models declare them and
        # never dropped, row-level security with its policy and grants as they declare it, and
        # the library type each of the team's own column types is written as. (Enum types
        # compare through alembic-postgresql-enum, which needs no entry here: see enums.py.)
        autogenerate_plugins=[
            "alembic.autogenerate.*",
            comparison.PLUGIN_NAME,
            validation.PLUGIN_NAME,
            partitions.PLUGIN_NAME,
            tenancy.PLUGIN_NAME,
            schemas.PLUGIN_NAME,
            stored_vectors.PLUGIN_NAME,
            distribution.PLUGIN_NAME,
            rendering.PLUGIN_NAME,
        ],
        render_item=rendering.render_item,
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

    The script starts by setting the migration timeouts for its session (which linters such as
    Squawk look for before any DDL) and creating the ``vector`` extension, committed before the
    migrations' transaction, so it applies to an empty database as safely as ``alembic upgrade``
    would.
    """
    configure(dialect_name="postgresql", literal_binds=True, dialect_opts={"paramstyle": "named"})
    for statement in timeouts.statements() + builds.statements():
        context.execute(statement)
    context.execute(locking.CREATE_EXTENSION_SQL)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_on(connection: Connection) -> None:
    """Run the migrations on ``connection`` while holding the migration lock; the ``vector``
    extension is created and committed first, so that others creating it meanwhile do not wait."""
    rendering.register_types(connection.dialect)
    excluded = exclusion.Exclusion(
        target_metadata,
        connection,
        exclusion.parse_patterns(config.get_main_option(exclusion.EXCLUDE_TABLES_OPTION)),
    )
    with locking.migration_lock(connection):
        installed = locking.create_vector_extension(connection)
        configure(
            connection=connection,
            include_schemas=True,
            include_name=excluded.include_name,
            include_object=excluded.include_object,
        )
        with context.begin_transaction():
            locking.check_held(connection)
            timeouts.apply(connection)
            builds.apply(connection)
            validation.check_pgvector_version(installed, target_metadata)
            context.run_migrations()
            # The settings are the session's, to last through autocommit_block(): leave the
            # connection as it came, whoever uses it next.
            builds.reset(connection)
            timeouts.reset(connection)


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
