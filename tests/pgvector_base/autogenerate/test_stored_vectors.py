"""No migration that loses stored vectors, or that a table's rows would stop, unless asked for.

Each case runs on a table that holds rows, as production's would.
"""

from __future__ import annotations

from typing import Any

import pytest
from alembic.util import CommandError
from pgvector.sqlalchemy import HALFVEC, VECTOR
from sqlalchemy import BigInteger, Column, MetaData, Table
from sqlalchemy.types import TypeEngine

from .project import Project


def passage(*vectors: Column[Any], table: bool = True) -> MetaData:
    """Table ``passage`` with ``vectors`` (or no table at all)."""
    metadata = MetaData()
    if table:
        Table("passage", metadata, Column("id", BigInteger, primary_key=True), *vectors)
    return metadata


def embedding(
    name: str = "embedding", type_: TypeEngine[Any] | None = None, nullable: bool = True
) -> Column[Any]:
    """A vector column, ``VECTOR(3)`` unless said otherwise."""
    return Column(name, type_ or VECTOR(3), nullable=nullable)


@pytest.fixture
def stored(project: Project) -> Project:
    """``passage.embedding`` created by a migration and holding two vectors."""
    project.revise(passage(embedding()))
    project.upgrade()
    project.execute("INSERT INTO passage VALUES (1, '[1,2,3]'), (2, '[4,5,6]')")
    return project


def vectors(project: Project, column: str) -> list[tuple[object, ...]]:
    """The rows of ``passage`` with ``column`` as text."""
    return project.fetch(f"SELECT id, {column}::text FROM passage ORDER BY id")


def test_a_renamed_vector_column_is_renamed_with_its_vectors(stored: Project) -> None:
    generated = " ".join(stored.revise(passage(embedding("vec"))).split())
    rename = "op.alter_column('passage', '{}', existing_type=VECTOR(dim=3), new_column_name='{}'"
    assert rename.format("embedding", "vec") in generated
    assert rename.format("vec", "embedding") in generated
    assert "drop_column" not in generated

    stored.upgrade()
    assert vectors(stored, "vec") == [(1, "[1,2,3]"), (2, "[4,5,6]")]
    stored.settled(passage(embedding("vec")))
    stored.downgrade()
    assert vectors(stored, "embedding") == [(1, "[1,2,3]"), (2, "[4,5,6]")]


def test_dropping_a_vector_column_needs_the_run_to_name_it(stored: Project) -> None:
    assert stored.refused(passage()) == (
        "autogenerate would drop column passage.embedding (vector(3)) and every vector stored in "
        "it; to rename it, rename the column in the model and change nothing else about it in "
        "the same revision; to drop it, autogenerate again as alembic -x "
        "allow_drop=passage.embedding revision --autogenerate"
    )

    stored.revise(passage(), allow_drop="passage.embedding")
    stored.upgrade()
    stored.settled(passage())
    assert stored.fetch("SELECT count(*) FROM passage") == [(2,)]
    stored.downgrade()
    assert vectors(stored, "embedding") == [(1, None), (2, None)]


def test_the_downgrade_of_a_dropped_not_null_column_stops_in_one_line(project: Project) -> None:
    # The generated downgrade adds the column back NOT NULL, which rows without it refuse.
    project.revise(passage(embedding(nullable=False)))
    project.upgrade()
    project.execute("INSERT INTO passage VALUES (1, '[1,2,3]')")
    project.revise(passage(), allow_drop="passage.embedding")
    project.upgrade()
    head = project.fetch("SELECT version_num FROM alembic_version")
    with pytest.raises(CommandError) as failure:
        project.downgrade()
    assert str(failure.value) == (
        "cannot make passage.embedding NOT NULL: rows already stored have no value in it; the "
        "migration was rolled back. Add the column nullable, fill it, then declare it NOT NULL; "
        "a downgrade that adds back a dropped column cannot bring its values back: make that "
        "add_column nullable=True"
    )
    assert project.fetch("SELECT version_num FROM alembic_version") == head
    assert project.fetch("SELECT count(*) FROM passage") == [(1,)]


def test_naming_a_rename_candidate_drops_and_adds_instead(stored: Project) -> None:
    # New embeddings of the same size from another model: the old ones must not be kept.
    generated = stored.revise(passage(embedding("vec")), allow_drop="passage.embedding")
    assert "new_column_name" not in generated
    stored.upgrade()
    assert vectors(stored, "vec") == [(1, None), (2, None)]
    stored.settled(passage(embedding("vec")))


def test_a_drop_and_add_of_another_type_is_not_a_rename(stored: Project) -> None:
    with pytest.raises(
        CommandError, match=r"-x allow_drop=passage\.embedding revision --autogenerate$"
    ):
        stored.revise(passage(embedding("vec", HALFVEC(3))))
    with pytest.raises(
        CommandError, match=r"-x allow_drop=passage\.embedding revision --autogenerate$"
    ):
        stored.revise(passage(embedding("vec", VECTOR(4))))


def test_dropping_a_table_with_vectors_needs_the_run_to_name_it(stored: Project) -> None:
    with pytest.raises(
        CommandError,
        match=r"drop table passage and the vectors stored in "
        r"embedding \(vector\(3\)\); to drop it, autogenerate again as alembic "
        r"-x allow_drop=passage revision --autogenerate;",
    ):
        stored.revise(passage(table=False))
    stored.revise(passage(table=False), allow_drop="passage")
    stored.upgrade()
    assert stored.fetch("SELECT to_regclass('passage')") == [(None,)]
    stored.settled(passage(table=False))
    stored.downgrade()
    assert stored.fetch("SELECT count(*) FROM passage") == [(0,)]


def test_a_not_null_vector_column_is_not_added_to_an_existing_table(stored: Project) -> None:
    required = passage(embedding(), embedding("summary", nullable=False))
    with pytest.raises(CommandError) as refused:
        stored.revise(required)
    assert str(refused.value) == (
        "autogenerate would add column passage.summary (vector(3)) as NOT NULL without a "
        "default, which fails on a table that has rows; declare it nullable, migrate and fill "
        "it, then declare it NOT NULL and autogenerate again"
    )

    # The way through, as the message says, on the table with rows.
    stored.revise(passage(embedding(), embedding("summary")))
    stored.upgrade()
    stored.execute("UPDATE passage SET summary = embedding")
    stored.revise(required)
    stored.upgrade()
    stored.settled(required)
    assert stored.fetch(
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'passage'::regclass "
        "AND attname = 'summary'"
    ) == [(True,)]


# LangChain's PostgresChatMessageHistory.create_tables (langchain-postgres 0.0.19), and its legacy
# PGVector store: a collection table, referenced by the table of vectors.
CHAT_HISTORY = (
    "CREATE TABLE chat_history (id SERIAL PRIMARY KEY, session_id UUID NOT NULL, "
    "message JSONB NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT NOW())"
)
COLLECTION_AND_EMBEDDING = [
    "CREATE TABLE langchain_pg_collection (uuid uuid PRIMARY KEY, name varchar NOT NULL UNIQUE, "
    "cmetadata json)",
    "CREATE TABLE langchain_pg_embedding (id varchar PRIMARY KEY, collection_id uuid "
    "REFERENCES langchain_pg_collection (uuid) ON DELETE CASCADE, embedding vector(3), "
    "document varchar, cmetadata jsonb)",
]
COLLECTION_ROW = (
    "INSERT INTO langchain_pg_collection VALUES ('5a0e4b4e-2f0b-4a53-9d7e-5b8f5c0e4a11', 'docs', "
    "'{}')"
)


def test_a_table_that_holds_rows_is_dropped_only_when_the_run_names_it(project: Project) -> None:
    project.execute("CREATE EXTENSION IF NOT EXISTS vector")
    project.execute(CHAT_HISTORY)
    project.execute(
        "INSERT INTO chat_history (session_id, message) VALUES (gen_random_uuid(), '{}')"
    )
    project.execute("CREATE TABLE scratch (id integer PRIMARY KEY)")
    assert project.refused(MetaData()) == (
        "autogenerate would drop table chat_history, which holds rows; to drop it, autogenerate "
        "again as alembic -x allow_drop=chat_history revision --autogenerate; if another tool "
        "owns the table, add it to "
        "exclude_tables in alembic.ini instead"
    )

    # An empty table is dropped as before; the one with rows once the run names it.
    generated = project.revise(MetaData(), allow_drop="chat_history")
    assert "op.drop_table('chat_history')" in generated
    assert "op.drop_table('scratch')" in generated
    project.upgrade()
    assert project.tables() == ["public.alembic_version"]


def test_a_collection_table_names_the_tables_that_reference_it(project: Project) -> None:
    project.execute("CREATE EXTENSION IF NOT EXISTS vector")
    for statement in COLLECTION_AND_EMBEDDING:
        project.execute(statement)
    project.execute(COLLECTION_ROW)
    with pytest.raises(CommandError) as refused:
        project.check(MetaData())
    assert str(refused.value) == (
        "autogenerate would drop table langchain_pg_collection, which holds rows; to drop it, "
        "autogenerate again as alembic -x allow_drop=langchain_pg_collection revision "
        "--autogenerate; if another tool owns the table, add it "
        "to exclude_tables in alembic.ini instead, together with the tables that reference it by "
        "foreign key (langchain_pg_embedding); autogenerate would drop table "
        "langchain_pg_embedding and the vectors stored in embedding (vector(3)); to drop it, "
        "autogenerate again as alembic -x allow_drop=langchain_pg_embedding revision "
        "--autogenerate; if another tool owns the table, add it "
        "to exclude_tables in alembic.ini instead"
    )


@pytest.mark.parametrize("rows", [True, False], ids=["with-rows", "empty"])
@pytest.mark.parametrize("allow", [False, True], ids=["", "allowed"])
def test_excluding_a_table_but_not_the_one_it_references_stops_in_one_line(
    project: Project, rows: bool, allow: bool
) -> None:
    # Following the line above for the vector table alone used to write a DROP TABLE of the
    # collection, which the upgrade then failed on (DependentObjectsStillExist).
    project.execute("CREATE EXTENSION IF NOT EXISTS vector")
    for statement in COLLECTION_AND_EMBEDDING:
        project.execute(statement)
    if rows:
        project.execute(COLLECTION_ROW)
    project.config.set_main_option("exclude_tables", "langchain_pg_embedding")
    allowed = {"allow_drop": "langchain_pg_collection"} if allow else {}
    assert project.refused(MetaData(), **allowed) == (
        f"autogenerate would drop table langchain_pg_collection{', which holds rows' * rows}, "
        "but tables that stay reference it by foreign key (langchain_pg_embedding), so the drop "
        "would fail; if another tool owns them, add langchain_pg_collection to exclude_tables in "
        "alembic.ini beside them; otherwise drop them together"
    )

    project.config.set_main_option(
        "exclude_tables", "langchain_pg_embedding, langchain_pg_collection"
    )
    project.revise(MetaData())
    project.upgrade()
    project.settled(MetaData())
    assert project.fetch("SELECT count(*) FROM langchain_pg_collection") == [(int(rows),)]


def test_the_row_check_reads_the_table_in_its_own_schema(project: Project) -> None:
    """``rag.chat_history`` holds rows and ``public.chat_history`` is empty: a check of the name
    in the default schema would let autogenerate drop ``rag.chat_history`` and its rows."""
    models = MetaData()
    Table("document", models, Column("id", BigInteger, primary_key=True), schema="rag")
    project.revise(models)
    project.upgrade()
    project.execute(CHAT_HISTORY)
    project.execute(CHAT_HISTORY.replace("TABLE chat_history", "TABLE rag.chat_history"))
    project.execute(
        "INSERT INTO rag.chat_history (session_id, message) VALUES (gen_random_uuid(), '{}')"
    )
    assert project.refused(models) == (
        "autogenerate would drop table rag.chat_history, which holds rows; to drop it, "
        "autogenerate again as alembic -x allow_drop=rag.chat_history revision --autogenerate; "
        "if another tool owns the table, add it to "
        "exclude_tables in alembic.ini instead"
    )

    generated = project.revise(models, allow_drop="rag.chat_history")
    assert "op.drop_table('chat_history', schema='rag')" in generated
    assert "op.drop_table('chat_history')" in generated  # the empty one, as before
    project.upgrade()
    assert project.tables() == ["public.alembic_version", "rag.document"]
