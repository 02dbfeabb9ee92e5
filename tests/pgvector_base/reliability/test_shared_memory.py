"""A parallel index build on a server short of shared memory ends in one line, and the advice works.

A parallel HNSW build allocates all of ``maintenance_work_mem`` as shared memory, from
``/dev/shm``, and Docker gives a container 64 MB of it: a first load into the compose server, or a
migration that builds an index on a full table, can run out. The server here has 16 MB, and its
database plans a parallel build for a table of any size, so a few rows show it. The table is the
test's own; the command line that reports the loader's errors is tested with the example
(``tests/example/test_cli.py``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import numpy as np
import pytest
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, Column, MetaData, Table, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from pgvector_base.database import DATABASE_URL_ENV
from pgvector_base.loading import BuildSettings, load
from pgvector_base.migration.errors import describe

from ..revisions import Migrations, failed_line
from . import servers
from .conftest import PASSWORD, scalars

ROWS = 50
DIMENSIONS = 1536
ADVICE = (
    "ran out of shared memory (/dev/shm) during a parallel index build, which takes all of "
    "maintenance_work_mem; use less (48MB: MIGRATION_MAINTENANCE_WORK_MEM for migrations, "
    "BuildSettings for loads), build without parallel workers (max_parallel_maintenance_workers = "
    "0), or give the server a larger /dev/shm (shm_size in docker-compose.yaml)"
)
CREATE_WIDGET = f"""
op.create_table(
    "widget",
    sa.Column("id", sa.BigInteger(), primary_key=True),
    sa.Column("embedding", VECTOR(dim={DIMENSIONS})),
)
op.create_index(
    "ix_widget_embedding_hnsw",
    "widget",
    ["embedding"],
    postgresql_using="hnsw",
    postgresql_ops={{"embedding": "vector_l2_ops"}},
)
"""
metadata = MetaData()
widget = Table(
    "widget",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("embedding", VECTOR(DIMENSIONS)),
)


@pytest.fixture(scope="module")
def server() -> Iterator[servers.Server]:
    """A PostgreSQL + pgvector server with 16 MB of ``/dev/shm``."""
    if os.geteuid() != 0:
        pytest.skip("only root can give a server a /dev/shm of its own; CI runs as root")
    with servers.start(servers.EMBEDDED_BIN, PASSWORD, shm_size="16m") as server:
        yield server


@pytest.fixture
def database(server: servers.Server, migrations: Migrations) -> Iterator[URL]:
    """A fresh database on that server, where the test's first revision created ``widget`` and
    its HNSW index, and every table is large enough for a parallel index build."""
    admin = create_engine(server.url(), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text("CREATE DATABASE app"))
    url = server.url("app")
    migrations.add("widget", CREATE_WIDGET, imports="from pgvector.sqlalchemy import VECTOR")
    upgraded = migrations.run(
        "upgrade", "head", env={DATABASE_URL_ENV: url.render_as_string(hide_password=False)}
    )
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    with admin.connect() as connection:
        connection.execute(text("ALTER DATABASE app SET min_parallel_table_scan_size = 0"))
    yield url
    with admin.connect() as connection:
        connection.execute(text("DROP DATABASE app WITH (FORCE)"))
    admin.dispose()


def rows() -> list[tuple[int, list[float]]]:
    """``ROWS`` rows of random embeddings."""
    vectors = np.random.default_rng(9).standard_normal((ROWS, DIMENSIONS)).tolist()
    return list(enumerate(vectors, 1))


def load_rows(url: URL, build: BuildSettings) -> None:
    """Load :func:`rows` into ``widget`` in one transaction, with ``build`` for its indexes."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            load(connection, widget, rows(), build=build)
    finally:
        engine.dispose()


def test_a_first_load_short_of_shared_memory_fails_in_one_line(
    server: servers.Server, database: URL, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="pgvector_base.loading"),
        pytest.raises(DBAPIError) as raised,
    ):
        load_rows(database, BuildSettings("64MB", max_parallel_maintenance_workers=1))
    load_rows(database, BuildSettings("48MB"))

    # Before the error, the loader's progress log says which index it was building.
    assert "Building index ix_widget_embedding_hnsw" in caplog.messages
    assert describe(raised.value, database) == f"PostgreSQL at 127.0.0.1:{server.port} {ADVICE}"
    assert scalars(database, "SELECT count(*) FROM widget") == [ROWS]


def test_a_migration_short_of_shared_memory_fails_in_one_line(
    server: servers.Server, database: URL, migrations: Migrations
) -> None:
    """With the server's defaults (64MB, up to 2 workers), an index on a full table is built by
    one worker and 64 MB of shared memory."""
    load_rows(database, BuildSettings(max_parallel_maintenance_workers=0))
    loaded = migrations.head
    migrations.add(
        "l2 index",
        """
        op.create_index(
            "ix_widget_embedding_l2",
            "widget",
            ["embedding"],
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_l2_ops"},
        )
        """,
    )

    raw = database.render_as_string(hide_password=False)
    failed = migrations.run("upgrade", "head", env={DATABASE_URL_ENV: raw})

    assert failed_line(failed) == f"FAILED: PostgreSQL at 127.0.0.1:{server.port} {ADVICE}"
    assert PASSWORD not in failed.stdout + failed.stderr
    assert scalars(database, "SELECT version_num FROM alembic_version") == [loaded]
