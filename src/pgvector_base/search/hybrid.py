"""Hybrid search: nearest by vector and best by full text, fused by reciprocal rank fusion.

One statement, one round trip, as pgvector-python's ``examples/hybrid_search`` writes it: two CTEs,
each ``LIMIT depth``, each in the one shape its index serves (``ORDER BY column <op> :query`` for
the HNSW or IVFFlat index, ``tsvector @@ tsquery`` for the GIN index, ranked by ``ts_rank_cd``),
then ``FULL OUTER JOIN`` on the primary key and ordered by the fused score

    score = vector_weight / (k_rrf + vector rank) + text_weight / (k_rrf + text rank)

where a row absent from a leg adds nothing for it. Ranks are SQL's ``rank()`` (rows that tie share
one); the text leg's cut at ``depth`` and the final order break ties by primary key, so that one
query always gives one answer. The ``where`` conditions filter both legs.

An HNSW scan returns at most ``hnsw.ef_search`` rows (40 by default), which would silently cut the
vector leg short of ``depth`` (gbrain#3613): ``ef_search`` is raised to ``depth`` for the statement
through :class:`~pgvector_base.search.settings.SearchSettings`, in a savepoint as
:meth:`VectorSearch.nearest` sets its settings, whenever it is below it. A depth of 40 or less
with no settings needs none, and the search is then one round trip.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, cast

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    Select,
    Table,
    Text,
    and_,
    bindparam,
    func,
    inspect,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.exc import CompileError
from sqlalchemy.orm import InstrumentedAttribute, Session, defer
from sqlalchemy.schema import Column, Index

from pgvector_base.search.indexes import Distance, NoIndexError, QuantizedIndex
from pgvector_base.search.nearest import ModelT, VectorSearch
from pgvector_base.search.query import DIALECT, INT4_MAX, QueryVector, QueryVectorType, checked_k
from pgvector_base.search.settings import SETTING_RANGES, SearchSettings
from pgvector_base.session import READ_REPLICA

# The access methods that serve tsvector @@ tsquery.
TEXT_INDEX_METHODS = ("gin", "gist")
# pgvector's default hnsw.ef_search: a depth up to it needs no setting.
DEFAULT_EF_SEARCH = 40
DEFAULT_DEPTH = DEFAULT_EF_SEARCH
# Cormack, Clarke and Büttcher's constant, as in pgvector-python's example.
DEFAULT_K_RRF = 60.0
QuerySyntax = Literal["websearch", "plain"]
# websearch_to_tsquery reads quotes, "or" and "-"; plainto_tsquery ANDs every word.
QUERY_FUNCTIONS = {"websearch": func.websearch_to_tsquery, "plain": func.plainto_tsquery}
_CONFIG = re.compile(r"to_tsvector\s*\(\s*'([^']+)'", re.IGNORECASE)
_CONFIG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?")


@dataclass(frozen=True)
class TextIndex:
    """A full-text index declared on a model: its name, the indexed ``tsvector`` as SQL, and the
    text search configuration it was built with (``'english'``)."""

    name: str
    expression: str
    config: str
    column: str | None = None
    """The indexed ``tsvector`` column's name, for an index on one."""


@dataclass(frozen=True)
class HybridHit(Generic[ModelT]):
    """One hybrid result: the row, its fused score, and what each leg made of it.

    ``vector_rank`` and ``distance`` are ``None`` when the row was not among the vector leg's
    ``depth`` nearest; ``text_rank`` and ``text_score`` (``ts_rank_cd``) when it was not among the
    text leg's ``depth`` best matches.
    """

    item: ModelT
    score: float
    vector_rank: int | None
    text_rank: int | None
    distance: float | None
    text_score: float | None


def text_indexes(model: type[Any]) -> list[TextIndex]:
    """The GIN and GiST indexes on the table of ``model`` that serve full-text search, by name:
    on a ``tsvector`` column, whose configuration comes from its generated expression
    (``Computed("to_tsvector('english', body)")``), or on a ``to_tsvector('<config>', ...)``
    expression.

    Only whole-table indexes count, as for vector indexes; an index whose configuration cannot be
    read (a ``tsvector`` kept by a trigger) is listed with an empty ``config``.
    """
    table = inspect(model).local_table
    if not isinstance(table, Table):
        raise NoIndexError(f"{model.__name__} is not mapped to a table, which alone has indexes")
    found = []
    for index in table.indexes:
        options = index.dialect_options["postgresql"]
        if (
            options["using"] not in TEXT_INDEX_METHODS
            or options["where"] is not None
            or len(index.expressions) != 1
        ):
            continue
        described = _text_index(index, index.expressions[0])
        if described is not None:
            found.append(described)
    return sorted(found, key=lambda index: index.name)


def _text_index(index: Index, expression: Any) -> TextIndex | None:
    if isinstance(expression, Column):
        if not isinstance(expression.type, TSVECTOR):
            return None
        computed = expression.computed
        generated = "" if computed is None else str(computed.sqltext)
        quoted = '"' + expression.name.replace('"', '""') + '"'
        return TextIndex(str(index.name), quoted, _config(generated), expression.name)
    try:
        # As CREATE INDEX renders it, so that the planner matches the query's to the index's.
        sql = str(
            expression.compile(
                dialect=DIALECT, compile_kwargs={"literal_binds": True, "include_table": False}
            )
        )
    except CompileError:
        return None
    config = _config(sql)
    return TextIndex(str(index.name), sql, config) if config else None


def _config(sql: str) -> str:
    """The one text search configuration named by the ``to_tsvector`` calls of ``sql``, or
    ``""`` when there is none or several."""
    configs = set(_CONFIG.findall(sql))
    return configs.pop() if len(configs) == 1 else ""


class HybridSearch(Generic[ModelT]):
    """Vector and full-text search on one model, fused by reciprocal rank fusion in one statement.

    ``HybridSearch(Doc, Doc.embedding)`` uses the vector index declared on ``Doc.embedding`` (as
    :class:`VectorSearch` does; ``distance`` picks among several) and the model's full-text index
    (``text_index`` names one among several). Construction fails with :class:`NoIndexError`,
    in one line, when either leg would have to scan the whole table.
    """

    def __init__(
        self,
        model: type[ModelT],
        attribute: InstrumentedAttribute[Any],
        distance: Distance | None = None,
        *,
        text_index: str | None = None,
        syntax: QuerySyntax = "websearch",
    ) -> None:
        self.vector = VectorSearch(model, attribute, distance)
        """The vector leg's search: its index, distance and query checks."""
        self.model = model
        self.index = self.vector.index
        if isinstance(self.index, QuantizedIndex):
            # The vector leg orders by the whole column, which only a whole-column index serves.
            raise NoIndexError(
                f"{model.__name__}.{attribute.key} has only a quantized index ({self.index.name}); "
                "hybrid search needs an HNSW or IVFFlat index on the column itself"
            )
        self.text_index = _choose_text_index(model, text_index)
        if syntax not in QUERY_FUNCTIONS:
            raise ValueError(f"syntax must be websearch or plain, not {syntax!r}")
        self.syntax = syntax
        self._statement = self._build(())

    @property
    def distance(self) -> Distance:
        """The vector leg's distance."""
        return self.vector.distance

    def statement(self, where: Iterable[ColumnElement[bool]] = ()) -> Select[Any]:
        """``SELECT row, score, vector_rank, text_rank, distance, text_score`` of the fused
        search, best first, every ``where`` condition on both legs.

        Execute it with the parameters ``query`` (the vector), ``text``, ``k``, ``depth``,
        ``vector_weight``, ``text_weight`` and ``k_rrf``. Marked with
        :data:`~pgvector_base.session.READ_REPLICA`, like :meth:`VectorSearch.statement`.
        """
        conditions = tuple(where)
        return self._build(conditions) if conditions else self._statement

    def search(
        self,
        session: Session,
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
        """The ``k`` best rows for the vector ``query`` and the words ``text``, best first.

        Each leg takes its ``depth`` best candidates (default: ``k``, at least 40) that match
        every ``where`` condition. ``settings`` apply to the vector leg's index, with
        ``ef_search`` raised to ``depth``.
        """
        k = checked_k(k)
        depth = checked_depth(max(k, DEFAULT_DEPTH) if depth is None else depth, self.index.method)
        parameters = {
            "query": self.vector.encoder.parameter(query),
            "text": checked_text(text),
            "k": k,
            "depth": depth,
            "vector_weight": checked_number("vector_weight", vector_weight),
            "text_weight": checked_number("text_weight", text_weight),
            "k_rrf": checked_number("k_rrf", k_rrf),
        }
        rows = self.vector.execute(
            session, self.statement(where), parameters, self.leg_settings(depth, settings)
        )
        typed = cast(
            "Sequence[tuple[ModelT, float, int | None, int | None, float | None, float | None]]",
            rows,
        )
        return [HybridHit(*row) for row in typed]

    def leg_settings(self, depth: int, settings: SearchSettings | None) -> SearchSettings | None:
        """``settings`` for the vector leg, with an HNSW index's ``ef_search`` raised to
        ``depth`` if it would return fewer rows."""
        if self.index.method != "hnsw":
            return settings
        ef_search = settings.ef_search if settings and settings.ef_search else DEFAULT_EF_SEARCH
        if depth <= ef_search:
            return settings
        return dataclasses.replace(settings or SearchSettings(), ef_search=depth)

    def _build(self, where: tuple[ColumnElement[bool], ...]) -> Select[Any]:
        mapper = inspect(self.model)
        keys = list(mapper.primary_key)
        names = [f"key_{n}" for n in range(len(keys))]
        column = mapper.columns[self.vector.attribute.key]
        depth = bindparam("depth", type_=Integer)
        distance = (
            column.op(self.distance.value, return_type=Float)(
                bindparam("query", type_=QueryVectorType(column.type))
            )
        ).label("distance")
        vector_hits = (
            select(*(key.label(name) for key, name in zip(keys, names, strict=True)), distance)
            .where(*where)
            .order_by(distance)
            .limit(depth)
            .cte("vector_hits")
        )
        index = self.text_index
        document = literal_column(index.expression, type_=TSVECTOR)
        config: ColumnElement[Any] = literal_column(f"'{index.config}'::regconfig")
        tsquery = QUERY_FUNCTIONS[self.syntax](config, bindparam("text", type_=Text))
        text_score = func.ts_rank_cd(document, tsquery, type_=Float).label("text_score")
        text_hits = (
            select(*(key.label(name) for key, name in zip(keys, names, strict=True)), text_score)
            .where(document.bool_op("@@")(tsquery), *where)
            .order_by(text_score.desc(), *keys)
            .limit(depth)
            .cte("text_hits")
        )
        # Ranked apart from the scans: a relaxed_order iterative scan returns rows slightly out
        # of order, and rank() over the index scan itself would number them as they came.
        vector = select(
            vector_hits, func.rank().over(order_by=vector_hits.c.distance).label("vector_rank")
        ).cte("vector_ranked")
        text = select(
            text_hits, func.rank().over(order_by=text_hits.c.text_score.desc()).label("text_rank")
        ).cte("text_ranked")
        k_rrf = bindparam("k_rrf", type_=Float)
        score = (
            func.coalesce(
                bindparam("vector_weight", type_=Float) / (k_rrf + vector.c.vector_rank), 0.0
            )
            + func.coalesce(bindparam("text_weight", type_=Float) / (k_rrf + text.c.text_rank), 0.0)
        ).label("score")
        fused_keys = [func.coalesce(vector.c[name], text.c[name]).label(name) for name in names]
        fused = (
            select(
                *fused_keys,
                score,
                vector.c.vector_rank,
                text.c.text_rank,
                vector.c.distance,
                text.c.text_score,
            )
            .select_from(
                vector.join(
                    text, and_(*(vector.c[name] == text.c[name] for name in names)), full=True
                )
            )
            .order_by(score.desc(), *fused_keys)
            .limit(bindparam("k", type_=Integer))
            .cte("fused")
        )
        deferred = [defer(self.vector.attribute)]
        if index.column is not None:  # the tsvector column: only the search reads it
            mapped = mapper.get_property_by_column(mapper.local_table.c[index.column])
            deferred.append(defer(getattr(self.model, mapped.key)))
        return cast(
            "Select[Any]",
            select(
                self.model,
                fused.c.score,
                fused.c.vector_rank,
                fused.c.text_rank,
                fused.c.distance,
                fused.c.text_score,
            )
            .join(
                fused, and_(*(key == fused.c[name] for key, name in zip(keys, names, strict=True)))
            )
            .order_by(fused.c.score.desc(), *(fused.c[name] for name in names))
            .options(*deferred)
            .execution_options(**READ_REPLICA),
        )


def _choose_text_index(model: type[Any], name: str | None) -> TextIndex:
    """The model's full-text index (``name`` among several), or a one-line
    :class:`NoIndexError` saying what to declare."""
    indexes = text_indexes(model)
    where = model.__name__
    if not indexes:
        raise NoIndexError(
            f"{where} has no full-text index, so every text search would scan the whole table; "
            "declare a GIN index on a tsvector column generated by to_tsvector('english', ...) or "
            "on to_tsvector('english', <column>) in the model's __table_args__"
        )
    if name is None:
        if len(indexes) > 1:
            raise NoIndexError(
                f"{where} has several full-text indexes "
                f"({', '.join(index.name for index in indexes)}); pass text_index= to choose one"
            )
        chosen = indexes[0]
    else:
        found = [index for index in indexes if index.name == name]
        if not found:
            raise NoIndexError(
                f"{where} has no full-text index {name}; its full-text indexes: "
                + ", ".join(index.name for index in indexes)
            )
        chosen = found[0]
    if not _CONFIG_NAME.fullmatch(chosen.config):
        raise NoIndexError(
            f"index {chosen.name} of {where} names no text search configuration; generate its "
            "tsvector column with Computed(\"to_tsvector('english', ...)\") (or the one you use)"
        )
    return chosen


def checked_depth(depth: Any, method: str) -> int:
    """``depth`` as a whole number of candidates per leg, or a one-line :class:`ValueError`;
    an HNSW index returns at most ``ef_search`` rows, whose limit bounds it."""
    high = SETTING_RANGES["ef_search"][2] if method == "hnsw" else INT4_MAX
    if type(depth) is not int or not 1 <= depth <= high:
        raise ValueError(
            f"depth must be a whole number from 1 to {high}"
            + (
                " (the largest hnsw.ef_search, which bounds an HNSW scan)"
                if method == "hnsw"
                else ""
            )
            + f", not {depth!r}"
        )
    return depth


def checked_text(text: Any) -> str:
    """``text`` as the query's words, or a one-line :class:`ValueError`."""
    if not isinstance(text, str):
        raise ValueError(f"the query text must be a str, not {type(text).__name__}")
    if "\x00" in text:
        raise ValueError("the query text contains a NUL character, which PostgreSQL cannot store")
    return text


def checked_number(name: str, value: Any) -> float:
    """A weight or ``k_rrf`` as a finite float of at least 0, or a one-line :class:`ValueError`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of at least 0, not {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be a finite number of at least 0, not {value!r}")
    return float(value)
