"""Models in a schema of their own: the schema created with them, compared, and dropped after them.

Comparison covers the default schema and the models' schemas only: another tool's schema, with
tables in it, is neither compared nor touched.
"""

from __future__ import annotations

from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, Column, Index, MetaData, Table

from .project import Project


def rag(*, schema: str = "rag", index: bool = True) -> MetaData:
    """``passage`` in ``schema``, with an HNSW index, and ``note`` in the default schema."""
    metadata = MetaData()
    passage = Table(
        "passage",
        metadata,
        Column("id", BigInteger, primary_key=True),
        Column("embedding", VECTOR(3)),
        schema=schema,
    )
    if index:
        Index(
            "ix_passage_embedding",
            passage.c.embedding,
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
        )
    Table("note", metadata, Column("id", BigInteger, primary_key=True))
    return metadata


def schemas(project: Project) -> list[str]:
    """The schemas of the database, but the system's and the default one."""
    return [
        str(name)
        for (name,) in project.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
            "AND nspname NOT IN ('information_schema', current_schema()) ORDER BY 1"
        )
    ]


def test_the_schema_is_created_first_and_dropped_last(project: Project) -> None:
    generated = project.revise(rag())
    upgrade = generated[generated.index("def upgrade") : generated.index("def downgrade")]
    downgrade = generated[generated.index("def downgrade") :]
    assert upgrade.index("op.execute('CREATE SCHEMA IF NOT EXISTS rag')") < upgrade.index(
        "op.create_table"
    )
    assert downgrade.rindex("op.execute('DROP SCHEMA rag')") > downgrade.rindex("op.drop_table")

    project.upgrade()
    assert schemas(project) == ["rag"]
    assert "rag.passage" in project.tables()
    assert project.index("rag.ix_passage_embedding") is not None
    project.settled(rag())

    # A change inside the schema is seen, as one in the default schema is.
    project.revise(rag(index=False))
    project.upgrade()
    assert project.index("rag.ix_passage_embedding") is None
    project.settled(rag(index=False))

    project.downgrade("base")
    assert schemas(project) == []
    assert project.tables() == ["public.alembic_version"]


def test_an_existing_schema_is_used_as_it_is(project: Project) -> None:
    project.execute("CREATE SCHEMA rag")
    generated = project.revise(rag())
    assert "SCHEMA" not in generated
    project.upgrade()
    project.settled(rag())


def test_schemas_the_models_do_not_name_are_not_compared(project: Project) -> None:
    project.execute("CREATE EXTENSION IF NOT EXISTS vector")
    project.execute("CREATE SCHEMA othertool")
    project.execute("CREATE TABLE othertool.memory (id bigint PRIMARY KEY, embedding vector(3))")
    project.execute("CREATE SCHEMA ai")
    project.execute("CREATE TABLE ai.vectorizer_like (id int PRIMARY KEY)")

    generated = project.revise(rag())
    assert "othertool" not in generated
    assert "'ai'" not in generated
    project.upgrade()
    project.settled(rag())
    project.downgrade("base")
    assert schemas(project) == ["ai", "othertool"]
    assert project.tables() == [
        "ai.vectorizer_like",
        "othertool.memory",
        "public.alembic_version",
    ]
