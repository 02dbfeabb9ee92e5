"""The application engine's settings for poolers: prepared statements off unless asked for, and
connection options a pooler refuses named in one line.

Whether a statement was prepared is read from the server's ``pg_prepared_statements`` of the
connection that ran it, not from psycopg's own bookkeeping.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from pgvector_base.database import DatabaseConfigError
from pgvector_base.session import EngineSettings, create_app_engine
from tests.conftest import CreateDatabase

from .conftest import StartPgBouncer

RUNS = 10
QUERY = text("SELECT count(*) FROM pg_class WHERE relname = :name")


@pytest.fixture(scope="module")
def direct_url(create_database: CreateDatabase) -> URL:
    return create_database()


def prepared_after_runs(engine: Engine) -> int:
    """Statements the server holds prepared for the connection after ``RUNS`` runs of one
    query in a committed transaction."""
    try:
        with engine.connect() as connection:
            for _ in range(RUNS):
                connection.execute(QUERY, {"name": "pg_class"})
            connection.commit()
            return int(connection.scalar(text("SELECT count(*) FROM pg_prepared_statements")))
    finally:
        engine.dispose()


def test_the_default_engine_prepares_nothing(direct_url: URL) -> None:
    assert EngineSettings().prepare_threshold is None
    assert prepared_after_runs(create_app_engine(direct_url, EngineSettings())) == 0


def test_prepared_statements_are_an_opt_in_for_direct_connections(direct_url: URL) -> None:
    assert prepared_after_runs(create_app_engine(direct_url, EngineSettings(prepare_threshold=2)))
    from_env = EngineSettings.from_env({"DATABASE_PREPARE_THRESHOLD": "2"})
    assert from_env == EngineSettings(prepare_threshold=2)
    assert prepared_after_runs(create_app_engine(direct_url, from_env))
    assert EngineSettings.from_env({"DATABASE_PREPARE_THRESHOLD": "None"}) == EngineSettings()


@pytest.mark.parametrize(("value", "prepares"), [("None", False), ("none", False), ("2", True)])
def test_a_prepare_threshold_in_the_url_is_honoured(
    direct_url: URL, value: str, prepares: bool
) -> None:
    url = direct_url.update_query_dict({"prepare_threshold": value})
    # The URL's value wins over the settings' either way.
    settings = EngineSettings(prepare_threshold=None if prepares else 2)
    assert bool(prepared_after_runs(create_app_engine(url, settings))) is prepares


def test_psycopg2_ignores_a_prepare_threshold_in_the_url(direct_url: URL) -> None:
    url = direct_url.update_query_dict({"prepare_threshold": "None"})
    assert prepared_after_runs(create_app_engine(url, EngineSettings(driver="psycopg2"))) == 0


@pytest.mark.parametrize(
    ("environ", "url_value", "message"),
    [
        ({"DATABASE_PREPARE_THRESHOLD": "often"}, None, "DATABASE_PREPARE_THRESHOLD must be"),
        ({}, "-1", "?prepare_threshold= in the database URL must be a whole number, not '-1'"),
    ],
)
def test_an_unusable_prepare_threshold_is_refused_in_one_line(
    direct_url: URL, environ: dict[str, str], url_value: str | None, message: str
) -> None:
    url = (
        direct_url.update_query_dict({"prepare_threshold": url_value}) if url_value else direct_url
    )
    with pytest.raises(DatabaseConfigError) as refused:
        create_app_engine(url, EngineSettings.from_env(environ))
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_connection_options_a_pooler_refuses_fail_in_one_line_with_the_alternative(
    pgbouncer: StartPgBouncer,
    direct_url: URL,
    monkeypatch: pytest.MonkeyPatch,
    pool_mode: str,
) -> None:
    # reliability.md's advice for migration jobs, reaching an application through a pooler.
    monkeypatch.setenv("PGOPTIONS", "-c client_connection_check_interval=10s")
    bouncer = pgbouncer(pool_mode=pool_mode)
    engine = create_app_engine(bouncer.url(direct_url))
    with pytest.raises(DatabaseConfigError) as refused, engine.connect():
        pass
    engine.dispose()
    message = str(refused.value)
    assert "\n" not in message
    assert "PGOPTIONS" in message
    assert "ALTER ROLE" in message
    assert "unsupported startup parameter: options" in bouncer.log_text()
    # The same options straight to the server are fine: only the pooler refuses them.
    direct = create_engine(direct_url, poolclass=NullPool)
    with direct.connect() as connection:
        assert connection.scalar(text("SHOW client_connection_check_interval")) == "10s"
    direct.dispose()
