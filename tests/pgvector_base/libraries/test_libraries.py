"""LangChain's and LlamaIndex's real stores beside the template's migrations, in one database.

A team that uses langchain-postgres (its legacy ``PGVector``, its ``PGVectorStore`` and its chat
history) or llama-index-vector-stores-postgres beside its own models shares the database with
them. Their tables come before the template's first migration, after it, or while it runs; in
each case, with ``exclude_tables`` set to the names docs/autogenerate.md gives, ``alembic check``,
autogenerate, upgrade, downgrade and upgrade again leave their tables, indexes, sequences and rows
as they were (the same oids: never dropped and created again), and their own searches still
find what they stored.

The libraries run in a process of their own (``stores.py``), from their own virtualenv: they pin
pgvector below 0.4 and SQLAlchemy below 2.1, which the project's lock cannot share. Their fake
embeddings need no model, and a proxy that refuses every connection makes sure nothing is
downloaded. Without that virtualenv, the module is skipped.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    MetaData,
    Table,
    Text,
    create_engine,
    func,
    select,
    text,
)
from sqlalchemy import table as table_clause
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import NullPool

from ..autogenerate.project import REPOSITORY_ROOT, Project
from ..reliability.gates import (
    AT_THE_GATE,
    WAIT_AT_THE_GATE,
    first_value,
    gate_closed,
    wait_at_the_gate,
)

PYTHON = REPOSITORY_ROOT / ".venv-libraries" / "bin" / "python"
STORES = Path(__file__).with_name("stores.py")
INSTALL = (
    "python3 -m venv .venv-libraries && "
    ".venv-libraries/bin/pip install -r tests/pgvector_base/libraries/requirements.txt"
)
pytestmark = pytest.mark.skipif(
    not PYTHON.exists(),
    reason=f"LangChain and LlamaIndex are not installed; their tests need `{INSTALL}`",
)

# Exactly the tables stores.py makes, as docs/autogenerate.md says to list them.
THEIR_TABLES = {
    "langchain_pg_collection",
    "langchain_pg_embedding",
    "knowledge",
    "chat_history",
    "data_docs",
}
# Any HTTP(S) request fails at once (nothing listens on port 9); Hugging Face stays offline.
NO_NETWORK = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "no_proxy": "",
    "HF_HUB_OFFLINE": "1",
}
STORES_TIMEOUT = 120
# Tables, indexes, sequences and views in public, but the team's and Alembic's.
THEIR_RELATIONS = text(
    "SELECT relname, relkind, oid::int FROM pg_class WHERE relnamespace = 'public'::regnamespace "
    "AND relname NOT LIKE 'article%' AND relname NOT LIKE 'ix\\_article%' "
    "AND relname NOT LIKE 'alembic\\_%'"
)
GATE = f'''
    op.execute(
        """{WAIT_AT_THE_GATE}"""
    )
'''


def team_models() -> MetaData:
    """The team's own table, with an HNSW index, beside the libraries' tables."""
    metadata = MetaData()
    article = Table(
        "article",
        metadata,
        Column("id", BigInteger, primary_key=True),
        Column("body", Text),
        Column("embedding", VECTOR(8)),
    )
    Index(
        "ix_article_embedding",
        article.c.embedding,
        postgresql_using="hnsw",
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )
    return metadata


def stores(url: URL, command: str) -> str:
    """Run ``stores.py command`` with the libraries' interpreter; its output."""
    result = subprocess.run(
        [str(PYTHON), str(STORES), command],
        env={
            **os.environ,
            **NO_NETWORK,
            "LIBRARIES_DATABASE_URL": url.set(drivername="postgresql+psycopg").render_as_string(
                hide_password=False
            ),
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=STORES_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def snapshot(engine: Engine) -> dict[str, tuple[str, int, int | None]]:
    """Every relation of the libraries: kind, oid and, for a table, its row count."""
    with engine.connect() as connection:
        relations = connection.execute(THEIR_RELATIONS).all()
        return {
            name: (
                kind,
                oid,
                connection.scalar(select(func.count()).select_from(table_clause(name)))
                if kind == "r"
                else None,
            )
            for name, kind, oid in relations
        }


@pytest.fixture
def engine(fresh_database_url: URL) -> Iterator[Engine]:
    """An engine on a fresh database."""
    engine = create_engine(fresh_database_url, poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("when", ["before", "after", "during"])
def test_their_tables_rows_and_searches_survive_the_migrations(
    when: str, fresh_database_url: URL, engine: Engine, tmp_path: Path
) -> None:
    project = Project(engine, tmp_path / "versions")
    project.config.set_main_option("exclude_tables", ", ".join(sorted(THEIR_TABLES)))
    models = team_models()
    if when == "before":
        stores(fresh_database_url, "create")
    generated = project.revise(models, message="first")
    assert not any(name in generated for name in THEIR_TABLES)
    if when == "during":
        # The first migration waits at a gate, its transaction open, while the libraries start.
        (path,) = project.versions.glob("*.py")
        path.write_text(
            generated.replace('"""Upgrade schema."""', f'"""Upgrade schema."""{GATE}', 1)
        )
        with ThreadPoolExecutor(1) as executor, gate_closed(fresh_database_url):
            upgrade = executor.submit(project.upgrade)
            wait_at_the_gate(fresh_database_url, "the migration's gate")
            stores(fresh_database_url, "create")
            assert first_value(fresh_database_url, AT_THE_GATE) is not None
        upgrade.result()
    else:
        project.upgrade()
    if when == "after":
        stores(fresh_database_url, "create")

    before = snapshot(engine)
    assert {name for name, (kind, _, _) in before.items() if kind == "r"} == THEIR_TABLES
    assert all(rows for kind, _, rows in before.values() if kind == "r")
    project.settled(models)
    project.downgrade("base")
    project.upgrade()
    project.settled(models)

    assert snapshot(engine) == before
    assert project.index("ix_article_embedding") is not None
    assert stores(fresh_database_url, "search").strip() == (
        '{"PGVector": 2, "PGVectorStore": 2, "PostgresChatMessageHistory": 2, '
        '"LlamaIndex PGVectorStore": 2}'
    )
