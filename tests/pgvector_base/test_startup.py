"""What an ``alembic`` command imports: nothing it does not use.

Each command runs in a subprocess, as a user runs it, on migrations of the test's own
(:class:`Migrations`). A small wrapper imports the team's models first (what they import is theirs,
not the machinery's), then runs Alembic's command line and prints the modules imported after them.
pgai's operations are imported only when a migration uses them; numpy and psycopg 3 (the
application layer's) never.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from .revisions import REPOSITORY_ROOT, Migrations, failed_line

# The team's models first, then Alembic's command line with this process's arguments; on exit,
# whatever the command imported beyond the models, on a line of its own.
WRAPPER = """\
import atexit, json, sys
{prelude}
import app.models
before = set(sys.modules)
atexit.register(lambda: print("IMPORTED", json.dumps(sorted(set(sys.modules) - before))))
from alembic.config import main
main(argv=sys.argv[1:], prog="alembic")
"""
UNUSED = {"numpy", "psycopg", "pgai"}
# As if pgai were not installed: `import pgai` raises ImportError, `find_spec("pgai")` is None.
WITHOUT_PGAI = "sys.modules['pgai'] = None"

BLOG_TABLE = """
    op.create_table(
        "blog",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
    )
"""
# docs/pgai.md's migration, trimmed to what pgai needs.
VECTORIZER_IMPORTS = """\
from pgai.vectorizer.configuration import (
    DestinationTableConfig,
    EmbeddingOpenaiConfig,
    LoadingColumnConfig,
)"""
CREATE_VECTORIZER = """
    op.create_vectorizer(  # type: ignore[attr-defined]  # registered by env.py at run time
        source="blog",
        name="blog_content_embedder",
        destination=DestinationTableConfig(destination="blog_embeddings"),
        loading=LoadingColumnConfig(column_name="content"),
        embedding=EmbeddingOpenaiConfig(model="text-embedding-3-small", dimensions=768),
    )
"""
DROP_VECTORIZER = (
    'op.drop_vectorizer(name="blog_content_embedder", drop_all=True)  # type: ignore[attr-defined]'
)


def alembic(
    migrations: Migrations, *arguments: str, prelude: str = ""
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``alembic ARGUMENTS`` on ``migrations`` through the wrapper; return the finished
    process and the top-level packages it imported beyond the models."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            WRAPPER.format(prelude=prelude),
            "-c",
            str(migrations.ini),
            *arguments,
        ],
        cwd=REPOSITORY_ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("IMPORTED ")]
    imported = {name.partition(".")[0] for name in json.loads(line.removeprefix("IMPORTED "))}
    return result, imported


def vectorizers(url: URL) -> list[str]:
    """Names of the vectorizers in the database's ``ai.vectorizer``."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        names = list(connection.scalars(text("SELECT name FROM ai.vectorizer ORDER BY name")))
    engine.dispose()
    return names


@pytest.mark.usefixtures("fresh_database_url")
@pytest.mark.parametrize("command", [["upgrade", "head"], ["current"], ["check"]])
def test_commands_import_neither_numpy_psycopg_nor_pgai(tmp_path: Path, command: list[str]) -> None:
    migrations = Migrations(tmp_path)
    migrations.add(
        "items",
        upgrade="""
            op.create_table(
                "item",
                sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("v", VECTOR(3)),
            )
        """,
        imports="from pgvector.sqlalchemy import VECTOR",
    )
    migrations.models(
        """
        from pgvector.sqlalchemy import VECTOR
        from sqlalchemy import Column, Integer, MetaData, Table

        metadata = MetaData()
        Table("item", metadata, Column("id", Integer, primary_key=True), Column("v", VECTOR(3)))
        """
    )
    if command != ["upgrade", "head"]:
        assert migrations.run("upgrade", "head").returncode == 0

    result, imported = alembic(migrations, *command)

    assert result.returncode == 0, result.stdout + result.stderr
    assert imported & UNUSED == set()
    assert {"alembic", "pgvector_base"} <= imported  # the wrapper saw the command's imports


def test_a_migration_using_create_vectorizer_registers_pgais_operations(
    tmp_path: Path, fresh_database_url: URL
) -> None:
    pgai = pytest.importorskip(
        "pgai", reason="pgai is not installed; its tests need `poetry install --with pgai`"
    )
    # Not pgai_setup's helper: a project made without pgai support has no pgai_setup module.
    pgai.install(
        fresh_database_url.set(drivername="postgresql").render_as_string(hide_password=False)
    )
    migrations = Migrations(tmp_path)
    first = migrations.add("blog", upgrade=BLOG_TABLE, downgrade='op.drop_table("blog")')
    migrations.add(
        "blog vectorizer",
        upgrade=CREATE_VECTORIZER,
        downgrade=DROP_VECTORIZER,
        imports=VECTORIZER_IMPORTS,
    )

    result, imported = alembic(migrations, "upgrade", "head")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pgai" in imported
    assert vectorizers(fresh_database_url) == ["blog_content_embedder"]

    result, _ = alembic(migrations, "downgrade", first)
    assert result.returncode == 0, result.stdout + result.stderr
    assert vectorizers(fresh_database_url) == []


def test_a_migration_using_create_vectorizer_without_pgai_fails_in_one_line(
    tmp_path: Path, fresh_database_url: URL
) -> None:
    migrations = Migrations(tmp_path)
    migrations.add("blog", upgrade=BLOG_TABLE)
    migrations.add("blog vectorizer", upgrade=CREATE_VECTORIZER, downgrade=DROP_VECTORIZER)
    user = next(migrations.versions.glob("*_blog_vectorizer.py")).name

    result, _ = alembic(migrations, "upgrade", "head", prelude=WITHOUT_PGAI)

    assert failed_line(result) == (
        f"FAILED: migration {user} uses pgai's op.create_vectorizer or op.drop_vectorizer, "
        "but pgai is not installed; run `poetry install --with pgai`"
    )
    engine = create_engine(fresh_database_url, poolclass=NullPool)
    assert inspect(engine).get_table_names() == []  # refused before anything ran
    engine.dispose()
