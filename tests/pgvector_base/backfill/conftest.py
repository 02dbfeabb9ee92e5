"""Fixtures: a database of the test's own with :class:`Doc` and its rows, and the trigger the
expand migration installs (created here by the same helper, run through Alembic's ``op``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from pgvector_base.loading import load
from pgvector_base.migration import reembed
from tests.conftest import CreateDatabase

from .embedder import OLD_DIM, Base, Doc, vector, vectors

TABLE = Doc.__table__
REPOSITORY_ROOT = Path(__file__).resolve().parents[3]


def body(key: int, version: int = 0) -> str:
    """Row ``key``'s source text, changed by each update."""
    return f"doc {key} v{version}"


def fill(engine: Engine, first: int, count: int) -> None:
    """Insert rows ``first`` .. ``first + count - 1`` with old embeddings and no new ones."""
    keys = list(range(first, first + count))
    bodies = [body(key) for key in keys]
    with engine.begin() as connection:
        load(
            connection,
            TABLE,  # type: ignore[arg-type]
            {"id": keys, "body": bodies, "embedding": vectors(bodies, OLD_DIM)},
            columns=["id", "body", "embedding"],
        )


def install_trigger(engine: Engine) -> None:
    """What the expand migration runs: :func:`reembed.track_source_changes`."""
    with (
        engine.begin() as connection,
        Operations.context(MigrationContext.configure(connection)),
    ):
        reembed.track_source_changes("backfill_doc", ["body"], "embedding_v2")


@pytest.fixture(scope="module")
def module_url(create_database: CreateDatabase) -> URL:
    """A database for the tests of one module, with the ``vector`` extension."""
    url = create_database()
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
    engine.dispose()
    return url


@pytest.fixture
def doc_url(module_url: URL) -> URL:
    """The module's database with the table made anew, its trigger, and no rows."""
    engine = create_engine(module_url, poolclass=NullPool)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    install_trigger(engine)
    engine.dispose()
    return module_url


@pytest.fixture
def doc_engine(doc_url: URL) -> Iterator[Engine]:
    """A direct engine on :func:`doc_url`'s database."""
    engine = create_engine(doc_url, poolclass=NullPool)
    yield engine
    engine.dispose()


def stored(engine: Engine) -> dict[int, tuple[str, Any]]:
    """Every row's source and new embedding (a numpy array, or ``None``), by key."""
    with engine.connect() as connection:
        rows = connection.execute(select(TABLE.c.id, TABLE.c.body, TABLE.c.embedding_v2))
        return {key: (source, vector) for key, source, vector in rows}


def wrong_rows(engine: Engine) -> list[int]:
    """The keys of rows whose new embedding is not exactly the embedding of their source."""
    return sorted(
        key
        for key, (source, found) in stored(engine).items()
        if found is None or not np.array_equal(np.asarray(found, np.float32), vector(source))
    )
