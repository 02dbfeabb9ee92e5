"""Tables that another tool owns, named in ``exclude_tables``, are never compared or touched.

The tables are created as LangChain's PGVector store and LlamaIndex's PGVectorStore create them
(by raw SQL here, with their sequences, indexes and a view), beside the project's own models; the
libraries themselves write theirs in ``tests/pgvector_base/libraries/``. No table of the models
is ever skipped silently: not one a pattern matches, not one in a schema named ``ai``.
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


def own_models(*names: str, schema: str | None = None) -> MetaData:
    """The project's own tables (``article`` unless ``names`` says otherwise), with vectors."""
    metadata = MetaData()
    for name in names or ("article",):
        Table(
            name,
            metadata,
            Column("id", BigInteger, primary_key=True),
            Column("body", Text),
            Column("embedding", VECTOR(3)),
            schema=schema,
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


def test_matching_tables_are_never_touched(other_tools: Project) -> None:
    other_tools.config.set_main_option("exclude_tables", PATTERNS)
    before = catalog(other_tools)
    models = own_models()

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


@pytest.mark.parametrize(
    ("patterns", "models", "matches"),
    [
        # The docs' old advice: LlamaIndex's data_* hid the team's own data_source, never created.
        (
            "langchain_pg_*, data_*",
            ("article", "data_source"),
            "data_source of the models matches 'data_*'",
        ),
        # A model of another tool's table, declared to query it: not the models' to migrate.
        (
            PATTERNS,
            ("article", "langchain_pg_embedding"),
            "langchain_pg_embedding of the models matches 'langchain_pg_*'",
        ),
    ],
    ids=["team-table", "other-tools-table"],
)
def test_a_pattern_that_matches_a_model_table_stops_autogenerate(
    other_tools: Project, patterns: str, models: tuple[str, ...], matches: str
) -> None:
    other_tools.config.set_main_option("exclude_tables", patterns)
    before = catalog(other_tools)
    with pytest.raises(CommandError) as refused:
        other_tools.revise(own_models(*models))
    assert str(refused.value) == (
        f"exclude_tables in alembic.ini hides tables of the models from autogenerate: table "
        f"{matches}; narrow the pattern to the other tool's exact table names, or, for another "
        "tool's table the models only read, declare it on a MetaData that env.py does not compare"
    )
    with pytest.raises(CommandError, match="hides tables of the models"):
        other_tools.check(own_models(*models))
    assert list(other_tools.versions.glob("*.py")) == []
    assert catalog(other_tools) == before


@pytest.mark.parametrize("pattern", ["data_[docs", "data_[!]", "public.[x"])
def test_a_malformed_pattern_is_refused_not_taken_literally(
    other_tools: Project, pattern: str
) -> None:
    # fnmatch reads an unclosed [ as a literal character: the pattern would silently match nothing.
    other_tools.config.set_main_option("exclude_tables", f"langchain_pg_*, {pattern}")
    with pytest.raises(CommandError) as refused:
        other_tools.check(own_models())
    assert str(refused.value) == (
        f"exclude_tables in alembic.ini: pattern {pattern!r} opens a [...] set that it never "
        "closes; close it with ], or write a literal [ as [[]"
    )
    # Closed sets, a ] right after [ and a literal [ written [[] are patterns like any other.
    other_tools.config.set_main_option("exclude_tables", "langchain_pg_[ce]*, data_[]d]ocs, x[[]")
    other_tools.revise(own_models())
    other_tools.upgrade()
    other_tools.settled(own_models())


def test_a_model_in_schema_ai_migrates_like_any_other(project: Project) -> None:
    # No pgai in this database: `ai` is the schema an agent framework chose for its tables.
    models = own_models("agent_memory", schema="ai")
    generated = project.revise(models)
    assert "CREATE SCHEMA IF NOT EXISTS ai" in generated
    assert "schema='ai'" in generated
    project.upgrade()
    assert project.tables() == ["ai.agent_memory", "public.alembic_version"]
    project.settled(models)
    project.downgrade("base")
    assert project.tables() == ["public.alembic_version"]
