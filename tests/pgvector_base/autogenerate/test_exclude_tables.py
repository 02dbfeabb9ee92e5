"""Tables that another tool owns, named in ``exclude_tables``, are never compared or touched.

The tables are created as LangChain's PGVector store and LlamaIndex's PGVectorStore create them
(by raw SQL here, with their sequences, indexes and a view), beside the project's own models.
"""

from __future__ import annotations

import pytest
from alembic.util import CommandError
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, Column, MetaData, Table, Text

from .project import Project

OTHER_TOOLS = [
    "CREATE EXTENSION IF NOT EXISTS vector",
    # LangChain's langchain_postgres.PGVector (its SQLAlchemy models, as created).
    "CREATE TABLE langchain_pg_collection (uuid uuid PRIMARY KEY, name varchar NOT NULL UNIQUE, "
    "cmetadata json)",
    "CREATE TABLE langchain_pg_embedding (id varchar PRIMARY KEY, collection_id uuid "
    "REFERENCES langchain_pg_collection (uuid) ON DELETE CASCADE, embedding vector(3), "
    "document varchar, cmetadata jsonb)",
    "CREATE INDEX ix_cmetadata_gin ON langchain_pg_embedding USING gin (cmetadata jsonb_path_ops)",
    # LlamaIndex's PGVectorStore with table_name="docs": the table is data_docs.
    "CREATE TABLE data_docs (id bigserial PRIMARY KEY, text varchar NOT NULL, "
    "metadata_ json, node_id varchar, embedding vector(3))",
    "CREATE INDEX data_docs_idx_1 ON data_docs ((metadata_ ->> 'ref_doc_id'))",
    "CREATE INDEX data_docs_embedding_idx ON data_docs USING hnsw (embedding vector_cosine_ops)",
    "CREATE VIEW data_docs_nodes AS SELECT node_id, text FROM data_docs",
    "INSERT INTO data_docs (text, embedding) VALUES ('kept', '[1,2,3]')",
]
PATTERNS = "langchain_pg_*, data_*"


def own_models(*, with_langchain_model: bool = False) -> MetaData:
    """The project's own table, and, if asked, a model of LangChain's table (for the ORM)."""
    metadata = MetaData()
    Table(
        "article",
        metadata,
        Column("id", BigInteger, primary_key=True),
        Column("body", Text),
        Column("embedding", VECTOR(3)),
    )
    if with_langchain_model:
        Table(
            "langchain_pg_embedding",
            metadata,
            Column("id", Text, primary_key=True),
            Column("embedding", VECTOR(3)),
        )
    return metadata


def catalog(project: Project) -> list[tuple[str, str, int]]:
    """Every relation (table, index, sequence, view) of the other tools, with kind and oid.

    The same oid afterwards means the relation was never dropped and created again.
    """
    return [
        (str(name), str(kind), int(oid))
        for name, kind, oid in project.fetch(
            "SELECT relname, relkind, oid::int FROM pg_class "
            "WHERE relnamespace = current_schema()::regnamespace "
            "AND relname NOT LIKE 'alembic\\_%' AND relname NOT LIKE 'article%' ORDER BY relname"
        )
    ]


@pytest.fixture
def other_tools(project: Project) -> Project:
    """The project's database with the other tools' tables in it."""
    for statement in OTHER_TOOLS:
        project.execute(statement)
    return project


def test_without_the_setting_autogenerate_refuses_to_drop_their_vectors(
    other_tools: Project,
) -> None:
    with pytest.raises(CommandError) as refused:
        other_tools.check(MetaData())
    message = str(refused.value)
    assert "drop table data_docs and the vectors stored in embedding (vector(3))" in message
    assert "drop table langchain_pg_embedding" in message
    assert "add it to exclude_tables in alembic.ini" in message


@pytest.mark.parametrize("with_langchain_model", [False, True], ids=["absent", "in-the-models"])
def test_matching_tables_are_never_touched(
    other_tools: Project, with_langchain_model: bool
) -> None:
    other_tools.config.set_main_option("exclude_tables", PATTERNS)
    before = catalog(other_tools)
    models = own_models(with_langchain_model=with_langchain_model)

    generated = other_tools.revise(models)
    assert "langchain" not in generated
    assert "data_" not in generated
    other_tools.upgrade()
    other_tools.settled(models)
    other_tools.downgrade("base")

    assert catalog(other_tools) == before
    assert {kind for _, kind, _ in before} == {"r", "i", "S", "v"}
    assert other_tools.fetch("SELECT text, embedding::text FROM data_docs") == [("kept", "[1,2,3]")]


def test_a_pattern_with_a_dot_matches_schema_and_name(other_tools: Project) -> None:
    other_tools.config.set_main_option("exclude_tables", "public.langchain_pg_*,\n other.data_*")
    with pytest.raises(CommandError) as refused:
        other_tools.check(MetaData())
    assert "langchain_pg" not in str(refused.value)
    assert "drop table data_docs" in str(refused.value)
