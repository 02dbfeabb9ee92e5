"""Bad input ends ``alembic upgrade head`` with one ``FAILED:`` line: no traceback, no password.

Every URL below carries the awkward password (``%``, ``@`` and ``:``, URL-encoded), and neither
its raw nor its encoded form may appear anywhere in the output. The servers are real: a closed
port, a server of our own that checks passwords, and the operating system's PostgreSQL, which
has no pgvector. The migrations are the test's own (one revision that creates a table). Vectors
the server refuses are shown through the ORM, on a model of the test's own, where pgvector's own
messages are already one clear line.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DataError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool

from pgvector_base.database import DATABASE_URL_ENV

from ..revisions import Migrations, failed_line
from .conftest import PASSWORD
from .servers import Server, free_port

ENCODED_PASSWORD = quote(PASSWORD, safe="")
DIMENSIONS = 3
Upgrade = Callable[[URL | str], subprocess.CompletedProcess[str]]


class Base(DeclarativeBase):
    """The test's own models."""


class Widget(Base):
    """A row with an embedding of :data:`DIMENSIONS` values."""

    __tablename__ = "widget"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    embedding: Mapped[list[float]] = mapped_column(VECTOR(DIMENSIONS))


@pytest.fixture
def upgrade(migrations: Migrations) -> Upgrade:
    """``alembic upgrade head`` of a migration that creates a table, with ``DATABASE_URL``."""
    migrations.add("widget", 'op.create_table("widget", sa.Column("id", sa.BigInteger()))')

    def run(url: URL | str) -> subprocess.CompletedProcess[str]:
        raw = url if isinstance(url, str) else url.render_as_string(hide_password=False)
        assert ENCODED_PASSWORD in raw
        return migrations.run("upgrade", "head", env={DATABASE_URL_ENV: raw})

    return run


def failure(result: subprocess.CompletedProcess[str]) -> str:
    """The run's one ``FAILED:`` line, after checking that no form of the password was printed."""
    output = result.stdout + result.stderr
    assert PASSWORD not in output
    assert ENCODED_PASSWORD not in output
    return failed_line(result)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(
            f"postgresql//app:{ENCODED_PASSWORD}@db/app",
            "FAILED: DATABASE_URL is not a database URL; "
            "expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE",
            id="malformed",
        ),
        pytest.param(
            f"postgresql+asyncpg://app:{ENCODED_PASSWORD}@db/app",
            "FAILED: DATABASE_URL asks for the driver 'asyncpg', which is not installed; "
            "use postgresql:// or postgresql+psycopg2://",
            id="unknown driver",
        ),
        pytest.param(
            f"mysql://app:{ENCODED_PASSWORD}@db/app",
            "FAILED: DATABASE_URL names the database 'mysql'; this template needs PostgreSQL",
            id="not postgresql",
        ),
    ],
)
def test_unusable_url(upgrade: Upgrade, url: str, expected: str) -> None:
    assert failure(upgrade(url)).startswith(expected)


def test_unreachable_host(upgrade: Upgrade) -> None:
    port = free_port()
    line = failure(upgrade(f"postgresql://app:{ENCODED_PASSWORD}@127.0.0.1:{port}/app"))
    assert line.startswith(
        f"FAILED: cannot connect to PostgreSQL at 127.0.0.1:{port} (database 'app'): "
        "Connection refused; is the server running?"
    )


def test_wrong_password(upgrade: Upgrade, password_server: Server) -> None:
    line = failure(upgrade(password_server.url(password=PASSWORD + "x")))
    assert line == (
        f"FAILED: PostgreSQL at 127.0.0.1:{password_server.port} rejected user 'postgres' "
        "(authentication failed); check the user and password in DATABASE_URL"
    )


def test_database_does_not_exist(upgrade: Upgrade, password_server: Server) -> None:
    line = failure(upgrade(password_server.url("no_such_database")))
    assert line.startswith(
        f"FAILED: database 'no_such_database' does not exist on PostgreSQL at "
        f"127.0.0.1:{password_server.port}; "
    )


def test_server_without_pgvector(upgrade: Upgrade, server_without_pgvector: Server) -> None:
    line = failure(upgrade(server_without_pgvector.url()))
    assert line.startswith(
        f"FAILED: PostgreSQL at 127.0.0.1:{server_without_pgvector.port} has no pgvector "
        "extension to install; "
    )


@pytest.fixture
def role_without_superuser(password_server: Server) -> Iterator[URL]:
    """A database owned by a role that is no superuser, and that role's URL."""
    admin = create_engine(password_server.url(), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f"CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'"))
        connection.execute(text("CREATE DATABASE app OWNER app"))
    yield password_server.url("app").set(username="app")
    with admin.connect() as connection:
        connection.execute(text("DROP DATABASE app WITH (FORCE)"))
        connection.execute(text("DROP ROLE app"))
    admin.dispose()


def test_no_privilege_to_create_the_extension(
    upgrade: Upgrade, password_server: Server, role_without_superuser: URL
) -> None:
    line = failure(upgrade(role_without_superuser))
    assert line == (
        f"FAILED: user 'app' may not create the vector extension in database 'app' at "
        f"127.0.0.1:{password_server.port}; have a superuser run CREATE EXTENSION vector; "
        "in that database once"
    )


@pytest.mark.parametrize(
    ("embedding", "message"),
    [
        pytest.param([1.0, 2.0], f"expected {DIMENSIONS} dimensions, not 2", id="dim"),
        pytest.param([math.nan] * DIMENSIONS, "NaN not allowed in vector", id="nan"),
        pytest.param([math.inf] * DIMENSIONS, "infinite value not allowed in vector", id="inf"),
        pytest.param([0.0, 0.0, -math.inf], "infinite value not allowed in vector", id="-inf"),
    ],
)
def test_orm_refuses_vectors_pgvector_cannot_store(
    fresh_database_url: URL, embedding: list[float], message: str
) -> None:
    engine = create_engine(fresh_database_url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        Base.metadata.create_all(connection)
    with Session(engine) as session:
        session.add(Widget(id=1, embedding=embedding))
        with pytest.raises(DataError) as raised:
            session.commit()
    engine.dispose()
    assert str(raised.value.orig).splitlines()[0] == message
