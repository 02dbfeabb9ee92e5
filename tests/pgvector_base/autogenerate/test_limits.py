"""Names and pgvector limits the server would refuse or change, refused before anything is written.

A table name over 63 bytes used to migrate cut short, and ``alembic check`` then proposed dropping
the cut table; a unicode name whose convention-made index name is over 63 bytes rebuilt its HNSW
index in every autogenerate; ``VECTOR(16001)`` and HNSW ``m=1`` were written into a migration
that ``alembic upgrade`` could not run. Each is now one ``FAILED:`` line from autogenerate and
``alembic check``, with no file written and nothing changed in the database. A convention-made
ASCII name over 63 characters, which SQLAlchemy shortens with a hash, is compared under that name.
"""

from __future__ import annotations

from typing import Any

import pytest
from alembic.util import CommandError
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, Column, Index, MetaData, Table

from .project import Project

CONVENTION = {"ix": "ix_%(column_0_N_label)s", "pk": "pk_%(table_name)s"}


def item(
    table: str = "item", column: str = "embedding", dimensions: int = 3, **with_: Any
) -> MetaData:
    """``table`` with a ``VECTOR(dimensions)`` ``column`` and an HNSW index named by convention."""
    metadata = MetaData(naming_convention=CONVENTION)
    Index(
        None,
        Table(
            table,
            metadata,
            Column("id", BigInteger, primary_key=True),
            Column(column, VECTOR(dimensions)),
        ).c[column],
        postgresql_using="hnsw",
        postgresql_ops={column: "vector_cosine_ops"},
        postgresql_with=with_,
    )
    return metadata


LIMIT = "PostgreSQL keeps the first 63 bytes of a name, so the database would not have the model's"
REFUSED = [
    pytest.param(
        item(table="t" * 64),
        f"table {'t' * 64} is 64 bytes long in UTF-8; {LIMIT} name; shorten it",
        id="table name",
    ),
    pytest.param(
        item(column="é" * 28),
        f"index ix_item_{'é' * 28} on item (made by the naming convention) is 64 bytes long in "
        f"UTF-8; {LIMIT} name; name it explicitly, shorter",
        id="convention-made unicode index name",
    ),
    pytest.param(
        item(dimensions=16_001),
        "column item.embedding: vector holds 1 to 16,000 dimensions, not 16,001; ",
        id="dimensions of a column",
    ),
    pytest.param(
        item(m=1),
        "index ix_item_embedding on item: hnsw takes m from 2 to 100, not 1",
        id="hnsw m",
    ),
    pytest.param(
        item(dimensions=16_000),
        "index ix_item_embedding on item (embedding): hnsw indexes vector values of up to 2,000 "
        "dimensions, not 16,000; index its binary quantization (binary_quantize(...)::bit(16000) "
        "with bit_hamming_ops, up to 64,000), or reduce it to 4,000 dimensions or fewer "
        "(a smaller embedding or subvector) and index it as halfvec",
        id="16,000 dimensions indexed",
    ),
]


@pytest.mark.parametrize(("metadata", "problem"), REFUSED)
def test_refused_in_one_line_before_anything_is_written(
    project: Project, metadata: MetaData, problem: str
) -> None:
    message = f"the models need a fix before autogenerate: {problem}"
    with pytest.raises(CommandError) as raised:
        project.revise(metadata)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)
    with pytest.raises(CommandError, match=r"^the models need a fix before autogenerate: "):
        project.check(metadata)
    assert list(project.versions.iterdir()) == []
    assert project.tables() == []


def test_a_long_convention_made_name_is_compared_under_the_name_stored(project: Project) -> None:
    column = "embedding_" + "e" * 50
    project.revise(item(column=column))
    project.upgrade()
    ((name,),) = project.fetch("SELECT indexname FROM pg_indexes WHERE indexname LIKE 'ix_item_%'")
    # SQLAlchemy cut the 68 characters of ix_item_embedding_eee... to 55, and added a hash.
    assert len(name) == 60
    assert name.startswith(f"ix_item_{column}"[:55] + "_")
    project.settled(item(column=column))

    generated = project.revise(item(column=column, m=8))
    assert f"op.drop_index(op.f('{name}')" in generated
    project.upgrade()
    index = project.index(name)
    assert index is not None
    assert index[2] == {"m": "8"}
    project.settled(item(column=column, m=8))
