"""Models pgvector would refuse are refused at autogenerate, and old pgvector before migrating.

``model_problems`` is checked against the server itself: for each vector type, index method,
number of dimensions and ``WITH`` parameter, it reports a problem exactly when PostgreSQL refuses
to create the column or the index; for each name, exactly when the catalog ends up with another.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.util import CommandError
from pgvector.sqlalchemy import BIT, HALFVEC, SPARSEVEC, VECTOR
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Constraint,
    Engine,
    ForeignKey,
    Index,
    MetaData,
    Table,
    UniqueConstraint,
    cast,
    text,
)
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IdentifierError
from sqlalchemy.schema import CreateSchema

from pgvector_base.migration.validation import (
    DIALECT,
    check_pgvector_version,
    model_problems,
    stored_name,
)

from ..revisions import Migrations

TYPES: dict[str, tuple[Callable[[int | None], Any], str]] = {
    "vector": (VECTOR, "vector_l2_ops"),
    "halfvec": (HALFVEC, "halfvec_l2_ops"),
    "bit": (BIT, "bit_hamming_ops"),
    "sparsevec": (SPARSEVEC, "sparsevec_l2_ops"),
}


def item_table(metadata: MetaData, type_name: str, dimensions: int | None) -> Table:
    """An ``item`` table whose ``embedding`` is of the given pgvector type."""
    type_, _ = TYPES[type_name]
    return Table(
        "item",
        metadata,
        Column("id", BigInteger, primary_key=True),
        Column("embedding", type_(dimensions)),
    )


def column_index(type_name: str, dimensions: int | None, method: str) -> MetaData:
    """Models with one index of ``method`` on a column of ``type_name(dimensions)``."""
    metadata = MetaData()
    item_table(metadata, type_name, dimensions)
    Index(
        "ix_item_embedding",
        metadata.tables["item"].c.embedding,
        postgresql_using=method,
        postgresql_ops={"embedding": TYPES[type_name][1]},
    )
    return metadata


def cosine_index(dimensions: int) -> MetaData:
    """Models with an HNSW cosine index of explicit build parameters on ``vector(dimensions)``."""
    metadata = MetaData()
    Index(
        "ix_item_embedding_hnsw",
        item_table(metadata, "vector", dimensions).c.embedding,
        postgresql_using="hnsw",
        postgresql_with={"m": 16, "ef_construction": 64},
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )
    return metadata


def column_type(type_: Any) -> MetaData:
    """Models with one column ``embedding`` of ``type_`` and no index."""
    metadata = MetaData()
    Table("item", metadata, Column("id", BigInteger, primary_key=True), Column("embedding", type_))
    return metadata


def parameters(method: str, **with_: Any) -> MetaData:
    """Models with one ``method`` index on ``vector(3)`` built ``WITH`` the parameters given."""
    metadata = MetaData()
    Index(
        "ix_item_embedding",
        item_table(metadata, "vector", 3).c.embedding,
        postgresql_using=method,
        postgresql_ops={"embedding": "vector_l2_ops"},
        postgresql_with=with_,
    )
    return metadata


def halfvec_cast_index(dimensions: int) -> MetaData:
    """Models with an HNSW index on a halfvec cast of a ``vector(dimensions)`` column."""
    metadata = MetaData()
    table = item_table(metadata, "vector", dimensions)
    Index(
        "ix_item_embedding_halfvec",
        cast(table.c.embedding, HALFVEC(dimensions)).label("embedding_halfvec"),
        postgresql_using="hnsw",
        postgresql_ops={"embedding_halfvec": "halfvec_l2_ops"},
    )
    return metadata


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param(
            column_index(type_name, dimensions, method), id=f"{method}-{type_name}-{dimensions}"
        )
        for type_name, dimensions, method in [
            ("vector", None, "hnsw"),
            ("vector", 2000, "hnsw"),
            ("vector", 2001, "hnsw"),
            ("vector", None, "ivfflat"),
            ("vector", 2000, "ivfflat"),
            ("vector", 2001, "ivfflat"),
            ("halfvec", None, "hnsw"),
            ("halfvec", 4000, "hnsw"),
            ("halfvec", 4001, "hnsw"),
            ("halfvec", 4001, "ivfflat"),
            ("bit", 64000, "hnsw"),
            ("bit", 64001, "hnsw"),
            ("bit", 64001, "ivfflat"),
            ("sparsevec", None, "hnsw"),
            ("sparsevec", 100_000, "hnsw"),
        ]
    ]
    + [
        pytest.param(halfvec_cast_index(dimensions), id=f"hnsw-halfvec-cast-{dimensions}")
        for dimensions in (3072, 4001)
    ]
    + [
        pytest.param(column_index(type_name, dimensions, method), id=f"{method}-{type_name}")
        for type_name, dimensions, method in [("sparsevec", 1000, "ivfflat")]
    ]
    + [
        pytest.param(column_type(type_), id=f"column-{type_.compile(dialect=DIALECT)}")
        for type_ in list[Any](
            [
                VECTOR(16_000),
                VECTOR(16_001),
                VECTOR(0),
                HALFVEC(16_000),
                HALFVEC(16_001),
                SPARSEVEC(1_000_000_000),
                SPARSEVEC(1_000_000_001),
                BIT(83_886_080),
                BIT(83_886_081),
            ]
        )
    ]
    + [
        pytest.param(parameters(method, **with_), id=f"{method}-{with_}")
        for method, with_ in list[tuple[str, dict[str, Any]]](
            [
                ("hnsw", {"m": 1}),
                ("hnsw", {"m": 2, "ef_construction": 4}),
                ("hnsw", {"m": 2, "ef_construction": 3}),
                ("hnsw", {"m": 100, "ef_construction": 200}),
                ("hnsw", {"m": 100, "ef_construction": 199}),
                ("hnsw", {"m": 101, "ef_construction": 1000}),
                ("hnsw", {"ef_construction": 1000}),
                ("hnsw", {"ef_construction": 1001}),
                ("hnsw", {"ef_construction": 32}),
                ("hnsw", {"ef_construction": 31}),
                ("hnsw", {"m": 32}),
                ("hnsw", {"m": 33}),
                ("hnsw", {"m": "16"}),
                ("hnsw", {"m": "x"}),
                ("hnsw", {"lists": 10}),
                ("ivfflat", {"lists": 0}),
                ("ivfflat", {"lists": 1}),
                ("ivfflat", {"lists": 32_768}),
                ("ivfflat", {"lists": 32_769}),
                ("ivfflat", {"m": 16}),
            ]
        )
    ],
)
def test_model_problems_are_what_pgvector_refuses(
    vector_engine: Engine, metadata: MetaData
) -> None:
    with vector_engine.connect() as connection:
        try:
            metadata.create_all(connection)
            refused = False
        except DBAPIError:
            refused = True
        connection.rollback()
    assert bool(model_problems(metadata)) == refused


def named(
    *,
    schema: str | None = None,
    table: str = "item",
    column: str = "body",
    index: str | None = None,
    unique: str | None = None,
) -> MetaData:
    """Models with the names given, under the template's convention for unnamed indexes and keys.

    ``item`` (or ``table``) has ``column``, indexed under ``index`` (or the convention's name),
    unique under ``unique`` (if given), and a foreign key named by the convention to ``other``.
    """
    metadata = MetaData(
        schema=schema,
        naming_convention={
            "ix": "ix_%(column_0_N_label)s",
            "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        },
    )
    other = Table("other", metadata, Column("id", BigInteger, primary_key=True))
    item = Table(
        table,
        metadata,
        Column("id", BigInteger, primary_key=True),
        Column(column, BigInteger, ForeignKey(other.c.id)),
    )
    Index(index, item.c[column])
    if unique is not None:
        UniqueConstraint(item.c[column], name=unique)
    return metadata


NAME_CASES = {
    "table of 63 bytes": named(table="t" * 63),
    "table of 64 bytes": named(table="t" * 64),
    "unicode table of 64 bytes": named(table="é" * 32),
    "unicode column of 41 bytes": named(column="c" + "é" * 20),
    "unicode column of 63 bytes": named(column="c" + "é" * 31),
    "unicode column of 64 bytes": named(column="é" * 32),
    "schema of 64 bytes": named(schema="s" * 64),
    "unicode index of 65 bytes": named(index="ix_" + "é" * 31),
    "unique constraint of 70 bytes": named(unique="u" * 70),
    "convention's index of 64 characters, hashed by SQLAlchemy": named(column="c" * 56),
    "convention's unicode index of 36 characters, 64 bytes": named(column="é" * 28),
    "convention's foreign key of 70 characters, hashed": named(table="i" * 30, column="c" * 30),
}


def kept_every_name(connection: Connection, metadata: MetaData) -> bool:
    """Whether the catalog has each name of ``metadata`` as SQLAlchemy sent it, uncut."""
    catalog = set(
        connection.scalars(
            text(
                "SELECT nspname::text FROM pg_namespace UNION ALL "
                "SELECT relname::text FROM pg_class UNION ALL "
                "SELECT attname::text FROM pg_attribute UNION ALL "
                "SELECT conname::text FROM pg_constraint"
            )
        )
    )
    names = {table.schema for table in metadata.tables.values() if table.schema}
    for table in metadata.tables.values():
        names |= {table.name, *table.columns.keys()}
        items: list[Index | Constraint] = [*table.indexes, *table.constraints]
        for item in items:
            name = stored_name(item, connection.dialect)
            names |= {name} if name is not None else set()
    return names <= catalog


@pytest.mark.parametrize("metadata", NAME_CASES.values(), ids=NAME_CASES.keys())
def test_name_problems_are_names_postgresql_would_not_keep(
    vector_engine: Engine, metadata: MetaData
) -> None:
    with vector_engine.connect() as connection:
        for schema in {table.schema for table in metadata.tables.values() if table.schema}:
            connection.execute(CreateSchema(schema))
        try:
            metadata.create_all(connection)
            kept = kept_every_name(connection, metadata)
        except IdentifierError:
            # SQLAlchemy itself refuses an explicit name of over 63 characters.
            kept = False
        connection.rollback()
    assert bool(model_problems(metadata)) == (not kept)


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        (
            named(table="é" * 32),
            f"table {'é' * 32} is 64 bytes long in UTF-8; PostgreSQL keeps "
            "the first 63 bytes of a name, so the database would not have the model's name; "
            "shorten it",
        ),
        (
            named(column="é" * 28),
            f"index ix_item_{'é' * 28} on item (made by the naming convention) is 64 bytes long "
            "in UTF-8; PostgreSQL keeps the first 63 bytes of a name, so the database would not "
            "have the model's name; name it explicitly, shorter",
        ),
        (
            column_type(VECTOR(16_001)),
            "column item.embedding: vector holds 1 to 16,000 dimensions, not 16,001",
        ),
        (
            parameters("hnsw", m=1),
            "index ix_item_embedding on item: hnsw takes m from 2 to 100, not 1",
        ),
        (
            parameters("hnsw", m=40),
            "index ix_item_embedding on item: hnsw needs ef_construction of at least 2 * m = 80, "
            "not 64 (its default)",
        ),
        (
            parameters("ivfflat", lists=0),
            "index ix_item_embedding on item: ivfflat takes lists from 1 to 32,768, not 0",
        ),
        (
            column_index("vector", 16_000, "hnsw"),
            "index ix_item_embedding on item (embedding): hnsw indexes vector values of up to "
            "2,000 dimensions, not 16,000; index its binary quantization "
            "(binary_quantize(...)::bit(16000) with bit_hamming_ops, up to 64,000), or reduce it "
            "to 4,000 dimensions or fewer (a smaller embedding or subvector) and index it as "
            "halfvec",
        ),
    ],
    ids=["table", "convention's index", "column", "m", "ef_construction", "lists", "advice"],
)
def test_each_problem_names_the_object(metadata: MetaData, problem: str) -> None:
    assert any(found.startswith(problem) for found in model_problems(metadata)), model_problems(
        metadata
    )


def test_autogenerate_refuses_an_index_pgvector_cannot_build(
    fresh_database_url: URL, tmp_path: Path
) -> None:
    config = Migrations(tmp_path).config()
    config.attributes["target_metadata"] = column_index("vector", 3072, "hnsw")
    message = (
        "the models need a fix before autogenerate: index ix_item_embedding on item (embedding): "
        "hnsw indexes vector values of up to 2,000 dimensions, not 3,072; "
        "declare it HALFVEC (up to 4,000), or index a halfvec cast of it, which VectorSearch "
        "searches and re-ranks on the full vector (docs/search.md#quantized-indexes)"
    )
    with pytest.raises(CommandError) as raised:
        command.revision(config, "item", autogenerate=True)
    assert str(raised.value) == message
    with pytest.raises(CommandError) as raised:
        command.check(config)
    assert str(raised.value) == message
    assert list((tmp_path / "versions").iterdir()) == []


def test_autogenerate_names_every_index_without_dimensions(
    fresh_database_url: URL, tmp_path: Path
) -> None:
    metadata = column_index("vector", None, "hnsw")
    Index(
        "ix_item_embedding_ivfflat", metadata.tables["item"].c.embedding, postgresql_using="ivfflat"
    )
    config = Migrations(tmp_path).config()
    config.attributes["target_metadata"] = metadata
    with pytest.raises(CommandError) as raised:
        command.revision(config, "item", autogenerate=True)
    assert str(raised.value) == (
        "the models need a fix before autogenerate: "
        "index ix_item_embedding on item (embedding): hnsw needs vector values of known "
        "dimensions; declare the column VECTOR(n); "
        "index ix_item_embedding_ivfflat on item (embedding): ivfflat needs vector values of "
        "known dimensions; declare the column VECTOR(n)"
    )


@pytest.mark.parametrize(
    ("installed", "metadata", "message"),
    [
        (
            "0.6.0",
            column_index("halfvec", 768, "hnsw"),
            "this database has pgvector 0.6.0, but column item.embedding (halfvec) needs "
            "pgvector 0.7.0 or later; run ALTER EXTENSION vector UPDATE (if no newer version "
            "is available, install a newer pgvector on the server first)",
        ),
        (
            "0.6.2",
            column_index("bit", 64, "hnsw"),
            "this database has pgvector 0.6.2, but hnsw index ix_item_embedding on bit needs "
            "pgvector 0.7.0 or later; run ALTER EXTENSION vector UPDATE (if no newer version "
            "is available, install a newer pgvector on the server first)",
        ),
        (
            "0.4.4",
            cosine_index(1536),
            "this database has pgvector 0.4.4, but hnsw index ix_item_embedding_hnsw needs "
            "pgvector 0.5.0 or later; run ALTER EXTENSION vector UPDATE (if no newer version "
            "is available, install a newer pgvector on the server first)",
        ),
    ],
    ids=["halfvec", "bit index", "hnsw"],
)
def test_pgvector_older_than_the_models_need(
    installed: str, metadata: MetaData, message: str
) -> None:
    with pytest.raises(CommandError) as raised:
        check_pgvector_version(installed, metadata)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("installed", "metadata"),
    [
        ("0.7.0", column_index("halfvec", 768, "hnsw")),
        ("0.5.0", cosine_index(1536)),
        ("0.1.0", column_index("vector", 3, "ivfflat")),
        ("0.8.6", cosine_index(1536)),
    ],
)
def test_pgvector_as_new_as_the_models_need(installed: str, metadata: MetaData) -> None:
    check_pgvector_version(installed, metadata)
