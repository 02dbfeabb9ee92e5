"""Models pgvector would refuse are refused at autogenerate, and old pgvector before migrating.

``model_problems`` is checked against the server itself: for each vector type, index method and
number of dimensions, it reports a problem exactly when PostgreSQL refuses to create the index.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.util import CommandError
from pgvector.sqlalchemy import BIT, HALFVEC, SPARSEVEC, VECTOR
from sqlalchemy import BigInteger, Column, Engine, Index, MetaData, Table, cast
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from pgvector_base.migration.validation import check_pgvector_version, model_problems

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


def test_autogenerate_refuses_an_index_pgvector_cannot_build(
    fresh_database_url: URL, tmp_path: Path
) -> None:
    config = Migrations(tmp_path).config()
    config.attributes["target_metadata"] = column_index("vector", 3072, "hnsw")
    message = (
        "the models need a fix before autogenerate: index ix_item_embedding on item (embedding): "
        "hnsw indexes vector values of up to 2,000 dimensions, not 3,072; "
        "declare it HALFVEC (up to 4,000) or index a halfvec cast of it"
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
