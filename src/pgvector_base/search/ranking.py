"""The one statement shape of a k-NN search, which a vector index serves: ``ORDER BY distance
LIMIT :k`` on the select list's distance, ascending. :mod:`~pgvector_base.search.nearest` builds
it on the table, :mod:`~pgvector_base.search.quantized` on a quantized index's candidates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import ColumnElement, Integer, Select, bindparam, select
from sqlalchemy.orm import defer

from pgvector_base.search.indexes import Distance, similarity
from pgvector_base.session import READ_REPLICA


def ranked_rows(
    entity: Any, measured: ColumnElement[float], distance: Distance, vector: Any
) -> Select[Any]:
    """``SELECT entity, measured AS distance, similarity ... ORDER BY distance LIMIT :k``, the
    ``vector`` attribute deferred, marked with :data:`~pgvector_base.session.READ_REPLICA`."""
    # The ORDER BY names the select list's distance, as pgvector's README writes it: the planner
    # sees the operator expression there, and the query vector is sent once less.
    # (SQLAlchemy 2.0 and 2.1 spell a Select's column types differently, hence Select[Any].)
    ordering = measured.label("distance")
    return cast(
        "Select[Any]",
        select(entity, ordering, similarity(distance, measured))
        .order_by(ordering)
        .limit(bindparam("k", type_=Integer))
        .options(defer(vector))
        .execution_options(**READ_REPLICA),
    )


def ranked_keys(keys: Sequence[Any], measured: ColumnElement[float]) -> Select[Any]:
    """``SELECT key..., measured AS distance ... ORDER BY distance LIMIT :k``, marked with
    :data:`~pgvector_base.session.READ_REPLICA`: no ORM entities to load."""
    ordering = measured.label("distance")
    return cast(
        "Select[Any]",
        select(*keys, ordering)
        .order_by(ordering)
        .limit(bindparam("k", type_=Integer))
        .execution_options(**READ_REPLICA),
    )
