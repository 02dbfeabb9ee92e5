"""Fixtures of the reliability tests: migrations of their own, and servers of their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from ..revisions import Migrations
from . import servers

# Every character that breaks naive handling: % (configparser), @ and : (URLs).
PASSWORD = "p%ss@w:rd"


def scalars(url: URL | str, sql: str) -> list[object]:
    """The first column of a query's rows."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        values = list(connection.scalars(text(sql)))
    engine.dispose()
    return values


@pytest.fixture
def migrations(tmp_path: Path) -> Migrations:
    """Migrations of the test's own, none written yet (see ``tests/pgvector_base/revisions.py``)."""
    return Migrations(tmp_path / "migrations")


@pytest.fixture(scope="session")
def password_server() -> Iterator[servers.Server]:
    """A PostgreSQL + pgvector server of its own that checks passwords (``PASSWORD``)."""
    with servers.start(servers.EMBEDDED_BIN, PASSWORD) as server:
        yield server


@pytest.fixture(scope="session")
def server_without_pgvector() -> Iterator[servers.Server]:
    """The operating system's PostgreSQL, which has no pgvector (Debian's ``postgresql``)."""
    bin_dir = servers.system_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL from the operating system (apt-get install postgresql)")
    with servers.start(bin_dir, PASSWORD) as server:
        engine = create_engine(server.url(), poolclass=NullPool)
        with engine.connect() as connection:
            available = connection.scalar(
                text("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")
            )
        engine.dispose()
        if available:
            pytest.skip(f"the operating system's PostgreSQL in {bin_dir} has pgvector")
        yield server
