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
import os
import signal
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

from pgvector_base.database import DATABASE_URL_ENV, EMBEDDED_PGDATA_ENV

from ..revisions import Migrations, failed_line
from .conftest import PASSWORD, scalars
from .gates import (
    CREATE_WIDGET,
    SLOW_MIGRATION,
    WAIT_LIMIT,
    gate_closed,
    schema,
    wait_at_the_gate,
)
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


def tables(url: URL) -> list[str]:
    """The tables of ``url``'s database outside the system schemas, as ``schema.table``."""
    return [
        str(name)
        for name in scalars(
            url,
            "SELECT schemaname || '.' || tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        )
    ]


def test_ssl_required_by_a_server_without_ssl(upgrade: Upgrade, password_server: Server) -> None:
    url = password_server.url().update_query_dict({"sslmode": "require"})
    line = failure(upgrade(url))
    assert line == (
        f"FAILED: cannot connect to PostgreSQL at 127.0.0.1:{password_server.port} "
        "(database 'postgres'): server does not support SSL, but SSL was required; "
        "check the host, port and options (such as sslmode) in DATABASE_URL"
    )
    assert tables(password_server.url()) == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(
            f"postgresql://app:{ENCODED_PASSWORD}@127.0.0.1:99999/app",
            "FAILED: DATABASE_URL has a port outside 1-65535; fix the port",
            id="in the host",
        ),
        pytest.param(
            f"postgresql://app:{ENCODED_PASSWORD}@/app?host=127.0.0.1&port=99999",
            "FAILED: cannot connect to PostgreSQL at 127.0.0.1:99999 (database 'app'): "
            'invalid port number: "99999"; check the host, port and options (such as sslmode) '
            "in DATABASE_URL",
            id="in the query",
        ),
    ],
)
def test_port_out_of_range(upgrade: Upgrade, url: str, expected: str) -> None:
    assert failure(upgrade(url)) == expected


@pytest.mark.parametrize(
    ("env", "arguments", "expected"),
    [
        pytest.param(
            {DATABASE_URL_ENV: " "},
            (),
            "FAILED: DATABASE_URL is set but empty; ",
            id="blank DATABASE_URL",
        ),
        pytest.param({}, ("-x", "dburl="), "FAILED: -x dburl is set but empty; ", id="-x dburl="),
    ],
)
def test_blank_url_setting_is_refused_not_replaced_by_the_embedded_server(
    migrations: Migrations,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    arguments: tuple[str, ...],
    expected: str,
) -> None:
    migrations.add("widget", 'op.create_table("widget", sa.Column("id", sa.BigInteger()))')
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    # Were the embedded server started, it would be here: a file, where it cannot start.
    embedded = migrations.directory / "embedded-pgdata"
    embedded.touch()
    result = migrations.run(
        *arguments, "upgrade", "head", env={**env, EMBEDDED_PGDATA_ENV: str(embedded)}
    )
    assert failed_line(result).startswith(expected)
    assert "postgresql://USER:PASSWORD@HOST:PORT/DATABASE" in failed_line(result)
    assert embedded.is_file()


DEPENDENT_SCHEMA = """
op.execute("CREATE SCHEMA rag")
op.create_table("widget", sa.Column("id", sa.BigInteger(), primary_key=True), schema="rag")
"""
DROP_DEPENDENT_SCHEMA = """
op.drop_table("widget", schema="rag")
op.execute("DROP SCHEMA rag")
"""


def test_downgrade_dropping_a_schema_that_another_tool_uses(
    migrations: Migrations, fresh_database_url: URL
) -> None:
    """The downgrade's ``DROP SCHEMA`` (as autogenerate writes it) meets a table of another
    tool, with a row in it: the downgrade stops, and the tool's table and row stay."""
    head = migrations.add("rag", DEPENDENT_SCHEMA, DROP_DEPENDENT_SCHEMA)
    assert migrations.run("upgrade", "head").returncode == 0
    engine = create_engine(fresh_database_url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE rag.notes (body text)"))
        connection.execute(text("INSERT INTO rag.notes VALUES ('kept')"))
    engine.dispose()
    line = failed_line(migrations.run("downgrade", "base"))
    assert line == (
        "FAILED: cannot drop schema rag because other objects depend on it (table rag.notes "
        "depends on schema rag); the migration was rolled back. Those objects are not this "
        "migration's: move or drop them yourself if they may go, then run it again"
    )
    assert tables(fresh_database_url) == ["public.alembic_version", "rag.notes", "rag.widget"]
    assert scalars(fresh_database_url, "SELECT version_num FROM alembic_version") == [head]
    assert scalars(fresh_database_url, "SELECT body FROM rag.notes") == ["kept"]


def test_ctrl_c_ends_in_one_line_and_rolls_back(
    migrations: Migrations, fresh_database_url: URL
) -> None:
    """SIGINT (Ctrl-C) while the server runs the migration's statement; the statement ends when
    the test opens the gate, and the interrupt, already delivered, stops the run right after."""
    previous = migrations.add("widget", CREATE_WIDGET)
    assert migrations.run("upgrade", "head").returncode == 0
    migrations.add("slow", SLOW_MIGRATION)
    before = schema(fresh_database_url)
    # A process started with SIGINT ignored (a shell's background job) passes that on, and
    # Python then ignores Ctrl-C: with a handler of ours for the moment, the run gets the default.
    ours = signal.signal(signal.SIGINT, signal.default_int_handler)
    with gate_closed(fresh_database_url):
        try:
            upgrade = migrations.start("upgrade", "head")
        finally:
            signal.signal(signal.SIGINT, ours)
        wait_at_the_gate(fresh_database_url, "the migration to reach the gate")
        os.kill(upgrade.pid, signal.SIGINT)
    stdout, stderr = upgrade.communicate(timeout=WAIT_LIMIT)
    line = failed_line(
        subprocess.CompletedProcess(upgrade.args, upgrade.returncode, stdout, stderr)
    )
    assert line == (
        "FAILED: interrupted (Ctrl-C); the migration's open transaction was rolled back; "
        "`alembic current` shows the revision the database is at: run the command again to go on"
    )
    assert schema(fresh_database_url) == before
    assert before[0] == [previous]
