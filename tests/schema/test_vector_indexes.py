"""Every vector index the models declare builds on the server in use, as declared.

The models' tables are created in a fresh database (their schemas, then ``metadata.create_all``,
in a transaction that is rolled back), and the server's catalogs say how each HNSW or IVFFlat
index came out: valid, with the declared access method, operator classes and build parameters.
pgvector refuses some declarations only when the index is built (too many dimensions for the
method, an operator class of another type), so this finds them before a migration does.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, Index

from app.models import Base

from .vector_index_builds import assert_built_as_declared, index_id, vector_indexes


def parameters() -> list[Any]:
    """One parameter per HNSW or IVFFlat index of the models, or one skip when there is none."""
    found = [pytest.param(index, id=index_id(index)) for index in vector_indexes(Base.metadata)]
    return found or [pytest.param(None, marks=pytest.mark.skip(reason="no vector index declared"))]


@pytest.mark.parametrize("index", parameters())
def test_vector_index_builds_as_declared(vector_engine: Engine, index: Index) -> None:
    with vector_engine.connect() as connection:
        assert_built_as_declared(connection, Base.metadata, index)
