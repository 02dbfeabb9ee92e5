"""Nearest-neighbour search through the ORM, always in the one shape a vector index can serve.

Anything but ``ORDER BY column <op> :query LIMIT k`` in ascending order (ordering by
``1 - distance`` or ``DESC``, or by a different distance) is still valid SQL, so PostgreSQL
answers it with an exact scan of the whole table instead. :class:`VectorSearch` therefore takes
the operator from the index declared on the model (:mod:`pgvector_base.search.indexes`) and
refuses a distance that no index serves; similarity is computed in the select list only. Searches
through a quantized index take another shape, built in :mod:`pgvector_base.search.quantized`.

Nothing is prepared on the server (see :class:`~pgvector_base.session.EngineSettings`), so
searches are correct through a transaction-mode pooler. Settings passed to one search are set
inside a savepoint that is rolled back as soon as the rows are read, so they reach no later
statement; :meth:`VectorSearch.configure` sets them for the rest of the transaction instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    SQLColumnExpression,
    bindparam,
    inspect,
    select,
)
from sqlalchemy.orm import InstrumentedAttribute, Session

from pgvector_base.search import quantized
from pgvector_base.search.indexes import Distance, QuantizedIndex, search_index
from pgvector_base.search.quantized import QuantizedStatements
from pgvector_base.search.query import (
    QueryEncoder,
    QueryVector,
    QueryVectorType,
    checked_k,
    query_type,
)
from pgvector_base.search.ranking import ranked_keys, ranked_rows
from pgvector_base.search.settings import SearchSettings
from pgvector_base.session import READ_REPLICA, set_local

ModelT = TypeVar("ModelT")


@dataclass(frozen=True)
class Neighbor(Generic[ModelT]):
    """One search result: the row, its distance to the query, and its similarity.

    ``similarity`` is ``1 - distance`` for cosine and the inner product itself for inner product;
    the other distances define none, and it is ``None``.
    """

    item: ModelT
    distance: float
    similarity: float | None


class VectorSearch(Generic[ModelT]):
    """k-nearest-neighbour queries on one vector column of one model, served by its index.

    ``VectorSearch(Product, Product.embedding)`` uses the index declared on ``Product.embedding``;
    pass ``distance`` to pick among several indexes, or ``index`` to name one. A quantized index
    (a ``halfvec`` cast or a binary quantization of the column) serves its searches when the
    column has no index of its own, re-ranked by ``distance`` on the full vector
    (:mod:`~pgvector_base.search.quantized`). Construction fails with :class:`NoIndexError` when no
    declared index serves the distance, rather than letting every query scan the table.
    """

    def __init__(
        self,
        model: type[ModelT],
        attribute: InstrumentedAttribute[Any],
        distance: Distance | None = None,
        *,
        index: str | None = None,
    ) -> None:
        if attribute.class_ is not model:
            raise ValueError(f"{attribute} is not a column of {model.__name__}")
        self.model = model
        self.attribute = attribute
        # The column's type is checked first: no index makes another type searchable.
        query_type(attribute.type, self._where)
        self.index, self.distance = search_index(attribute, distance, index, self._where)
        self.encoder = QueryEncoder(attribute.type, self.distance, self._where)
        """Checks and encodes this column's query vectors."""
        self.dimensions = self.encoder.dimensions
        mapper = inspect(model)
        self._composite = len(mapper.primary_key) > 1
        self._quantized = (
            QuantizedStatements(model, attribute, self.index, self.distance)
            if isinstance(self.index, QuantizedIndex)
            else None
        )
        if self._quantized is not None:
            self._select = self._quantized.rows([])
            self._keys_select = self._quantized.keys([])
            return
        # Built once, so SQLAlchemy reuses its cache key and compiled SQL for every search.
        self._select = ranked_rows(model, self._to_query(attribute), self.distance, attribute)
        # The same query shape for keys and distances only, on the table's columns (see
        # nearest_keys).
        column = mapper.columns[attribute.key]
        self._keys_select = ranked_keys(mapper.primary_key, self._to_query(column))

    def _to_query(self, column: SQLColumnExpression[Any]) -> ColumnElement[float]:
        """``column <op> :query``, the distance operator the index serves."""
        return column.op(self.distance.value, return_type=Float)(
            bindparam("query", type_=QueryVectorType(self.attribute.type))
        )

    @property
    def _where(self) -> str:
        return f"{self.model.__name__}.{self.attribute.key}"

    def statement(self, where: Iterable[ColumnElement[bool]] = ()) -> Select[Any]:
        """``SELECT row, distance, similarity ... WHERE ... ORDER BY distance LIMIT :k``.

        Execute it with the parameters ``query`` (the vector) and ``k``. The vector column itself
        is deferred: results rarely need it, and it is the largest value of the row. It is marked
        with :data:`~pgvector_base.session.READ_REPLICA`, so a routing session may send it to a
        replica. Through a quantized index, it ranks the index's ``candidates`` nearest rows
        (another parameter) by the exact distance (:mod:`~pgvector_base.search.quantized`).
        """
        if self._quantized is not None:
            return self._quantized.rows(list(where))
        return _filtered(self._select, where)

    def nearest(
        self,
        session: Session,
        query: QueryVector,
        k: int = 10,
        *,
        where: Iterable[ColumnElement[bool]] = (),
        settings: SearchSettings | None = None,
    ) -> list[Neighbor[ModelT]]:
        """The ``k`` rows nearest to ``query`` that match every ``where`` condition, nearest
        first."""
        parameters = self._parameters(query, k, settings)
        return self._run(session, self.statement(where), parameters, settings)

    def nearest_keys(
        self,
        session: Session,
        query: QueryVector,
        k: int = 10,
        *,
        where: Iterable[ColumnElement[bool]] = (),
        settings: SearchSettings | None = None,
    ) -> list[tuple[Any, float]]:
        """``(primary key, distance)`` of the ``k`` nearest rows, nearest first: :meth:`nearest`
        without loading ORM objects, which costs a service less CPU per query.

        The key is a tuple for a composite primary key.
        """
        if self._quantized is not None:
            statement = self._quantized.keys(list(where))
        else:
            statement = _filtered(self._keys_select, where)
        parameters = self._parameters(query, k, settings)
        rows = self._rows(session, statement, parameters, settings, core=True)
        if self._composite:
            found = [(tuple(row[:-1]), row[-1]) for row in rows]
        else:
            found = [(key, distance) for key, distance in rows]
        # relaxed_order iterative scans may return rows slightly out of order (pgvector README).
        found.sort(key=_second)
        return found

    def neighbors_of(
        self,
        session: Session,
        key: object,
        k: int = 10,
        *,
        where: Iterable[ColumnElement[bool]] = (),
        settings: SearchSettings | None = None,
    ) -> list[Neighbor[ModelT]]:
        """The ``k`` rows nearest to the row whose primary key is ``key``, excluding that row.

        Raises :class:`LookupError` when there is no such row or its vector is ``NULL``.
        """
        primary_keys = inspect(self.model).primary_key
        if len(primary_keys) != 1:
            raise ValueError(f"{self.model.__name__} has a composite primary key; use nearest()")
        primary_key = primary_keys[0]
        # From the server the search will run on, which may be a replica.
        query = session.scalar(
            select(self.attribute).where(primary_key == key).execution_options(**READ_REPLICA)
        )
        if query is None:
            raise LookupError(
                f"no {self.model.__name__} with {primary_key.key}={key!r} and a vector"
            )
        return self.nearest(
            session, query, k, where=[primary_key != key, *where], settings=settings
        )

    def configure(self, session: Session, settings: SearchSettings) -> None:
        """Apply ``settings`` to every search in the session's current transaction.

        For a batch of queries, this saves the savepoint that ``settings=`` costs each one. Like
        ``SET LOCAL``, they end with the transaction, and never reach another user of the
        pooled connection. They are set on the server the session's searches go to, which may be
        a replica.
        """
        parameters = settings.parameters(self.index)
        # Flushed first, as a search would be: otherwise the settings could go to a replica that
        # the next search, reading its pending changes from the primary, never reaches.
        if session.autoflush:
            session.flush()
        set_local(session.connection(bind_arguments={"clause": self._select}), parameters)

    def execute(
        self,
        session: Session,
        statement: Select[Any],
        parameters: dict[str, Any],
        settings: SearchSettings | None = None,
    ) -> Sequence[Any]:
        """The rows of ``statement``, another search built on this one's index (a
        :class:`~pgvector_base.search.hybrid.HybridSearch`'s), run as this search runs its own:
        pending changes flushed, on the connection the session's routing picks, ``settings``
        for that statement alone."""
        return self._rows(session, statement, parameters, settings, core=False)

    def _run(
        self,
        session: Session,
        statement: Select[Any],
        parameters: dict[str, Any],
        settings: SearchSettings | None,
    ) -> list[Neighbor[ModelT]]:
        rows = self._rows(session, statement, parameters, settings, core=False)
        typed = cast("Sequence[tuple[ModelT, float, float | None]]", rows)
        found = [Neighbor(item, distance, similarity) for item, distance, similarity in typed]
        # relaxed_order iterative scans may return rows slightly out of order (pgvector README).
        found.sort(key=_distance_of)
        return found

    def _rows(
        self,
        session: Session,
        statement: Select[Any],
        parameters: dict[str, Any],
        settings: SearchSettings | None,
        *,
        core: bool,
    ) -> Sequence[Any]:
        """The statement's rows, with ``settings`` for it alone; ``core`` runs it on the
        session's connection, bypassing the ORM. Pending changes are flushed first when the
        session autoflushes, as ``session.execute`` would.

        The settings and the statement go to the connection that the session's routing picks for
        the statement (a replica's, for a :class:`~pgvector_base.session.RoutingSession`), so
        that the settings reach the server that runs it.
        """
        index_settings = settings.parameters(self.index) if settings else {}
        # Before the connection is picked, as session.execute does: a routing session with
        # pending changes then counts as having written, and reads from the primary.
        if session.autoflush:
            session.flush()
        connection = session.connection(bind_arguments={"clause": statement})
        if isinstance(self.index, QuantizedIndex):
            index_settings = quantized.raised_ef_search(
                self.index, index_settings, parameters["candidates"], connection
            )
        if not index_settings:
            if core:
                return connection.execute(statement, parameters).all()
            return session.execute(statement, parameters).all()
        # The connection's savepoint, not session.begin_nested(), which would flush even a
        # session that does not autoflush; nothing is left to flush inside it, so rolling it
        # back undoes nothing but the settings. set_local, so that they reach a Citus
        # cluster's shards too.
        savepoint = connection.begin_nested()
        try:
            set_local(connection, index_settings)
            if core:
                return connection.execute(statement, parameters).all()
            with session.no_autoflush:
                return session.execute(statement, parameters).all()
        finally:
            savepoint.rollback()

    def _parameters(
        self, query: QueryVector, k: int, settings: SearchSettings | None
    ) -> dict[str, Any]:
        """The statement's parameters, once ``k`` and the query vector are checked."""
        k = checked_k(k)
        parameters: dict[str, Any] = {"query": self.encoder.parameter(query), "k": k}
        if isinstance(self.index, QuantizedIndex):
            parameters["candidates"] = quantized.candidates(k, settings, self.index)
        return parameters


def _second(pair: tuple[Any, float]) -> float:
    return pair[1]


def _distance_of(neighbor: Neighbor[Any]) -> float:
    return neighbor.distance


def _filtered(statement: Select[Any], where: Iterable[ColumnElement[bool]]) -> Select[Any]:
    """``statement`` with every condition of ``where`` added."""
    conditions = list(where)
    return statement.where(*conditions) if conditions else statement
