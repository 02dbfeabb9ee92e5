"""Vector search and bulk loading for asyncio: :class:`AsyncVectorSearch`,
:class:`AsyncHybridSearch` and :func:`load`.

Each call runs the sync API (:mod:`pgvector_base.search.nearest`,
:mod:`pgvector_base.search.hybrid`, :mod:`pgvector_base.loading`) in SQLAlchemy's greenlet
(``AsyncSession.run_sync``, ``AsyncConnection.run_sync``), where every round trip
is awaited on psycopg 3's async connection while other tasks run. So the async API
has the sync one's statements, checks and one-line errors, its query vector in binary, its
settings set locally in a savepoint (never left on a pooled connection), its replica routing,
and its load order, by the same code: what the sync tests prove holds here too, and
``tests/pgvector_base/test_async_search.py`` and ``test_async_loading.py`` check it again on the
async driver, under concurrent tasks. One greenlet switch per search also costs less than the
several awaits of a savepoint, the settings, the query and the rollback issued one by one.

A load encodes its rows on the event loop, between the COPY's writes: other tasks of the process
wait while a batch is encoded. Run large loads in a worker, not in a request handler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic

from sqlalchemy import ColumnElement, Select, Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from pgvector_base import loading
from pgvector_base.loading import DEFAULT_BATCH_SIZE, BuildSettings, LoadResult, Rows
from pgvector_base.search import (
    Distance,
    HybridHit,
    HybridSearch,
    ModelT,
    Neighbor,
    QueryVector,
    SearchSettings,
    VectorIndex,
    VectorSearch,
)
from pgvector_base.search.hybrid import DEFAULT_K_RRF, QuerySyntax

__all__ = ["AsyncHybridSearch", "AsyncVectorSearch", "copy_rows", "load"]


class AsyncVectorSearch(Generic[ModelT]):
    """:class:`~pgvector_base.search.VectorSearch` on an :class:`AsyncSession`: the same
    constructor, checks and results, with each method awaited.

    Marked as replica reads, searches on a session from
    :func:`~pgvector_base.session.async_session_factory` with replicas are served by one, with
    their settings applied on the same connection.
    """

    def __init__(
        self,
        model: type[ModelT],
        attribute: InstrumentedAttribute[Any],
        distance: Distance | None = None,
        *,
        index: str | None = None,
    ) -> None:
        self.search = VectorSearch(model, attribute, distance, index=index)
        """The sync search, for sync sessions and for :meth:`VectorSearch.statement`."""

    @property
    def index(self) -> VectorIndex:
        """The index that serves the searches."""
        return self.search.index

    @property
    def distance(self) -> Distance:
        """The distance of :attr:`index`."""
        return self.search.distance

    def statement(self, where: Iterable[ColumnElement[bool]] = ()) -> Select[Any]:
        """:meth:`VectorSearch.statement`."""
        return self.search.statement(where)

    async def nearest(
        self,
        session: AsyncSession,
        query: QueryVector,
        k: int = 10,
        *,
        where: Iterable[ColumnElement[bool]] = (),
        settings: SearchSettings | None = None,
    ) -> list[Neighbor[ModelT]]:
        """:meth:`VectorSearch.nearest`: the ``k`` rows nearest to ``query``, nearest first."""
        return await session.run_sync(self.search.nearest, query, k, where=where, settings=settings)

    async def nearest_keys(
        self,
        session: AsyncSession,
        query: QueryVector,
        k: int = 10,
        *,
        where: Iterable[ColumnElement[bool]] = (),
        settings: SearchSettings | None = None,
    ) -> list[tuple[Any, float]]:
        """:meth:`VectorSearch.nearest_keys`: ``(primary key, distance)`` of the ``k`` nearest
        rows, nearest first, without ORM objects."""
        return await session.run_sync(
            self.search.nearest_keys, query, k, where=where, settings=settings
        )

    async def neighbors_of(
        self,
        session: AsyncSession,
        key: object,
        k: int = 10,
        *,
        where: Iterable[ColumnElement[bool]] = (),
        settings: SearchSettings | None = None,
    ) -> list[Neighbor[ModelT]]:
        """:meth:`VectorSearch.neighbors_of`: the ``k`` rows nearest to the row ``key``,
        excluding it."""
        return await session.run_sync(
            self.search.neighbors_of, key, k, where=where, settings=settings
        )

    async def configure(self, session: AsyncSession, settings: SearchSettings) -> None:
        """:meth:`VectorSearch.configure`: ``settings`` for the rest of the transaction."""
        await session.run_sync(self.search.configure, settings)


class AsyncHybridSearch(Generic[ModelT]):
    """:class:`~pgvector_base.search.HybridSearch` on an :class:`AsyncSession`: the same
    constructor, checks, statement and results, with :meth:`search` awaited; replica-routed
    like :class:`AsyncVectorSearch`."""

    def __init__(
        self,
        model: type[ModelT],
        attribute: InstrumentedAttribute[Any],
        distance: Distance | None = None,
        *,
        text_index: str | None = None,
        syntax: QuerySyntax = "websearch",
    ) -> None:
        self.hybrid = HybridSearch(model, attribute, distance, text_index=text_index, syntax=syntax)
        """The sync search, for sync sessions and for :meth:`HybridSearch.statement`."""

    def statement(self, where: Iterable[ColumnElement[bool]] = ()) -> Select[Any]:
        """:meth:`HybridSearch.statement`."""
        return self.hybrid.statement(where)

    async def search(
        self,
        session: AsyncSession,
        query: QueryVector,
        text: str,
        k: int = 10,
        *,
        depth: int | None = None,
        vector_weight: float = 1.0,
        text_weight: float = 1.0,
        k_rrf: float = DEFAULT_K_RRF,
        where: Iterable[ColumnElement[bool]] = (),
        settings: SearchSettings | None = None,
    ) -> list[HybridHit[ModelT]]:
        """:meth:`HybridSearch.search`: the ``k`` best rows for ``query`` and ``text``."""
        return await session.run_sync(
            self.hybrid.search,
            query,
            text,
            k,
            depth=depth,
            vector_weight=vector_weight,
            text_weight=text_weight,
            k_rrf=k_rrf,
            where=where,
            settings=settings,
        )


async def load(
    connection: AsyncConnection,
    table: Table,
    rows: Rows,
    *,
    columns: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    build: BuildSettings | None = None,
    progress: Callable[[int], object] | None = None,
) -> LoadResult:
    """:func:`pgvector_base.loading.load` on an async connection (``await session.connection()``
    gives the primary's): binary COPY through psycopg's async ``copy``, in the first-load order,
    in the connection's transaction, which a failure leaves able only to roll back."""
    return await connection.run_sync(
        loading.load,
        table,
        rows,
        columns=columns,
        batch_size=batch_size,
        build=build,
        progress=progress,
    )


async def copy_rows(
    connection: AsyncConnection,
    table: Table,
    rows: Rows,
    *,
    columns: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[int], object] | None = None,
) -> int:
    """:func:`pgvector_base.loading.copy_rows` on an async connection; how many rows were sent."""
    return await connection.run_sync(
        loading.copy_rows,
        table,
        rows,
        columns=columns,
        batch_size=batch_size,
        progress=progress,
    )
