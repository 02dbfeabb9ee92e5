"""Vector indexes built and dropped concurrently, as a migration on a table with data does it.

The migrations here are written the way docs/autogenerate.md tells users to write them, with
``pgvector_base.migration.indexes``; the last test shows autogenerate writing the same calls for a
model that marks its index ``postgresql_concurrently=True``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, Column, Index, MetaData, Table, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from .project import Project

TABLE_MIGRATION = """
import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import VECTOR

revision = "a1"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "item",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("embedding", VECTOR(3)),
    )
    op.execute(
        "INSERT INTO item (id, embedding) "
        "SELECT n, ARRAY[random(), random(), random()]::vector FROM generate_series(1, 200) AS n"
    )


def downgrade() -> None:
    op.drop_table("item")
"""

INDEX_MIGRATION = """
from pgvector_base.migration import indexes

revision = "a2"
down_revision = "a1"


def upgrade() -> None:
    indexes.create_index_concurrently(
        "ix_item_embedding",
        "item",
        ["embedding"],
        postgresql_using="hnsw",
        postgresql_ops={"embedding": "vector_cosine_ops"},
        postgresql_with={"m": 8},
        maintenance_work_mem="128MB",
        max_parallel_maintenance_workers=0,
    )


def downgrade() -> None:
    indexes.drop_index_concurrently("ix_item_embedding", "item")
"""

CREATE_INDEX = "CREATE INDEX CONCURRENTLY ix_item_embedding ON item USING hnsw"


def model(*, concurrently: bool = False) -> MetaData:
    """The models once both migrations have run."""
    metadata = MetaData()
    table = Table(
        "item",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=False),
        Column("embedding", VECTOR(3)),
    )
    Index(
        "ix_item_embedding",
        table.c.embedding,
        postgresql_using="hnsw",
        postgresql_ops={"embedding": "vector_cosine_ops"},
        postgresql_with={"m": 8},
        postgresql_concurrently=concurrently,
    )
    return metadata


@pytest.fixture
def migrations(project: Project) -> Project:
    """The project with the two migrations above."""
    (project.versions / "a1_create_item.py").write_text(TABLE_MIGRATION)
    (project.versions / "a2_index_item_embedding.py").write_text(INDEX_MIGRATION)
    return project


@pytest.fixture
def statements(project: Project) -> Iterator[list[tuple[int, str]]]:
    """``(connection, SQL)`` of each statement the project's engine runs during the test."""
    recorded: list[tuple[int, str]] = []

    def record(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        recorded.append((id(connection.connection.dbapi_connection), statement.strip()))

    event.listen(project.engine, "before_cursor_execute", record)
    yield recorded
    event.remove(project.engine, "before_cursor_execute", record)


def index_validity(project: Project) -> list[tuple[Any, ...]]:
    """``[(valid,)]`` for ``ix_item_embedding``, or ``[]`` if it does not exist."""
    return project.fetch(
        "SELECT ix.indisvalid FROM pg_index AS ix "
        "WHERE ix.indexrelid = to_regclass('ix_item_embedding')"
    )


def test_builds_with_local_settings_outside_the_transaction_and_drops_concurrently(
    migrations: Project, statements: list[tuple[int, str]]
) -> None:
    migrations.upgrade()

    assert index_validity(migrations) == [(True,)]
    migrations.check(model())
    build = next(i for i, (_, sql) in enumerate(statements) if sql.startswith(CREATE_INDEX))
    session = statements[build][0]
    settings_and_build = [
        sql
        for connection, sql in statements
        if connection == session and sql.startswith(("SET", "RESET", CREATE_INDEX))
    ]
    around = settings_and_build[settings_and_build.index(statements[build][1]) - 4 :][:9]
    # The session's own values come back after the build (test_builds.py checks which).
    restored = [sql.partition(" = ")[0] for sql in around[5:7]]
    assert around[:5] + around[7:] == [
        "SET lock_timeout = 0",
        "SET statement_timeout = 0",
        "SET maintenance_work_mem = '128MB'",
        "SET max_parallel_maintenance_workers = 0",
        f"{CREATE_INDEX} (embedding vector_cosine_ops) WITH (m = 8)",
        "SET lock_timeout = '5s'",
        "SET statement_timeout = '5min'",
    ]
    assert restored == ["SET maintenance_work_mem", "SET max_parallel_maintenance_workers"]

    statements.clear()
    migrations.downgrade()
    assert index_validity(migrations) == []
    assert "DROP INDEX CONCURRENTLY IF EXISTS ix_item_embedding" in [sql for _, sql in statements]


def test_an_interrupted_build_leaves_an_invalid_index_that_the_next_run_rebuilds(
    migrations: Project, statements: list[tuple[int, str]]
) -> None:
    migrations.upgrade("a1")
    with migrations.engine.connect() as writer:
        # An open write transaction: the build must wait for it, and is cancelled while it does.
        writer.execute(text("UPDATE item SET embedding = embedding WHERE id = 1"))
        canceller = threading.Thread(target=cancel_waiting_build, args=(migrations.engine,))
        canceller.start()
        with pytest.raises(DBAPIError, match="canceling statement due to user request"):
            migrations.upgrade()
        canceller.join()
        writer.rollback()

    assert migrations.fetch("SELECT version_num FROM alembic_version") == [("a1",)]
    assert index_validity(migrations) == [(False,)]

    statements.clear()
    migrations.upgrade()
    assert index_validity(migrations) == [(True,)]
    run = [sql for _, sql in statements]
    assert run.index("DROP INDEX CONCURRENTLY ix_item_embedding") < next(
        i for i, sql in enumerate(run) if sql.startswith(CREATE_INDEX)
    )
    migrations.check(model())


def cancel_waiting_build(engine: Engine) -> None:
    """Cancel the concurrent index build once it waits for a lock; give up after 30 seconds."""
    deadline = time.monotonic() + 30
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        while time.monotonic() < deadline:
            cancelled = connection.scalar(
                text(
                    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                    "WHERE query LIKE 'CREATE INDEX CONCURRENTLY%' AND wait_event_type = 'Lock'"
                )
            )
            if cancelled:
                return
            time.sleep(0.05)


def test_an_index_a_previous_run_completed_is_kept(
    migrations: Project, statements: list[tuple[int, str]]
) -> None:
    migrations.upgrade("a1")
    migrations.execute(
        "CREATE INDEX ix_item_embedding ON item USING hnsw (embedding vector_cosine_ops) "
        "WITH (m = 8)"
    )
    statements.clear()
    migrations.upgrade()
    assert not [sql for _, sql in statements if "ix_item_embedding" in sql and "INDEX" in sql]
    assert index_validity(migrations) == [(True,)]
    migrations.check(model())


def test_a_model_index_marked_concurrently_autogenerates_the_helper_calls(
    project: Project, statements: list[tuple[int, str]]
) -> None:
    (project.versions / "a1_create_item.py").write_text(TABLE_MIGRATION)
    project.upgrade()
    metadata = model(concurrently=True)

    generated = project.revise(metadata)
    assert "from pgvector_base.migration import indexes" in generated
    assert (
        "indexes.create_index_concurrently('ix_item_embedding', 'item', ['embedding']" in generated
    )
    assert "indexes.drop_index_concurrently('ix_item_embedding', 'item')" in generated
    assert "postgresql_concurrently" not in generated

    project.upgrade()
    assert index_validity(project) == [(True,)]
    assert any(sql.startswith(CREATE_INDEX) for _, sql in statements)
    project.check(metadata)
    project.downgrade()
    assert index_validity(project) == []
    project.upgrade()
    project.check(metadata)
