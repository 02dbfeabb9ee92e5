"""Recall: how many of the exact nearest rows an index search finds, measured on stored rows.

pgvector's README ("Monitoring") says to compare approximate results with exact ones; this does
it for any :class:`~pgvector_base.search.VectorSearch` and :class:`SearchSettings`. The queries
are the vectors of ``sample`` stored rows, picked on the server by ``ORDER BY random()`` after
``setseed``, so a seed picks the same rows again. Each is searched twice on the one connection:
through the index, then with index scans turned off (``enable_indexscan``, set transaction-local
in a savepoint that is rolled back), which leaves PostgreSQL only the exact scan of the table.

A row found at the same distance as the k-th exact neighbour counts as found: which of several
rows at one distance an exact scan returns is arbitrary, so keys alone would call a tie a miss.

From the command line, on the database :func:`~pgvector_base.database.resolve_url` picks::

    pgvector-recall app.models:Product.embedding --k 10 --sample 100 --ef-search 40
    pgvector-recall app.models:Item.embedding --index ix_bits --distance cosine --oversampling 8
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Float, Integer, Select, bindparam, func, inspect, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import InstrumentedAttribute, Session

from pgvector_base.database import DatabaseConfigError, sqlstate
from pgvector_base.migration.errors import describe
from pgvector_base.search.indexes import Distance
from pgvector_base.search.nearest import VectorSearch
from pgvector_base.search.query import QueryVectorType, checked_k
from pgvector_base.search.settings import SearchSettings
from pgvector_base.session import READ_REPLICA, create_app_engine, session_factory, set_local

PROG = "pgvector-recall"
# What leaves the planner only an exact scan for ORDER BY distance LIMIT k.
EXACT_SCAN = {"enable_indexscan": "off", "enable_bitmapscan": "off"}
UNDEFINED_TABLE = "42P01"
INTERRUPTED = 130  # what a shell reports for a command that SIGINT ended: 128 + 2


@dataclass(frozen=True)
class RecallReport:
    """Approximate against exact recall@k over sampled stored rows."""

    k: int
    queries: int
    """How many sampled rows were searched (those with a vector)."""
    recall: float
    """The mean over queries of the share of the exact k nearest that the index search found."""
    minimum: float
    """The lowest recall of one query."""
    exact_ms: float
    """The median milliseconds of an exact search."""
    approximate_ms: float
    """The median milliseconds of an index search."""
    keys: tuple[Any, ...] = ()
    """The sampled rows' primary keys, in the order searched (a tuple each for a composite key)."""

    def __str__(self) -> str:
        return (
            f"recall@{self.k} {self.recall:.3f} over {self.queries} queries "
            f"(min {round(self.minimum, 3):g})"
        )


def measure_recall(
    session: Session,
    search: VectorSearch[Any],
    *,
    k: int = 10,
    sample: int = 100,
    settings: SearchSettings | None = None,
    where: Iterable[ColumnElement[bool]] = (),
    seed: int = 0,
) -> RecallReport:
    """Recall@``k`` of ``search`` with ``settings``, over the vectors of ``sample`` stored rows.

    ``where`` filters the searches, not the sample. Runs in the session's transaction, on the
    server its searches go to (a replica, for a routing session), and leaves no setting behind.
    Raises :class:`ValueError` for a bad ``sample`` or when no row has a vector.
    """
    if type(sample) is not int or sample < 1:
        raise ValueError(f"sample must be a whole number of rows from 1, not {sample!r}")
    k = checked_k(k)
    conditions = list(where)
    if session.autoflush:  # as a search would, and before the savepoints below
        session.flush()
    keys, vectors = _sample(session, search, sample, seed)
    if not vectors:
        raise ValueError(f"no {search.model.__name__} row has a vector to search with")
    approximate, approximate_ms = _approximate(
        session, search, vectors, k=k, settings=settings, where=conditions
    )
    exact, exact_ms = _exact(session, search, vectors, k=k, where=conditions)
    recalls = [found_share(found, wanted) for found, wanted in zip(approximate, exact, strict=True)]
    return RecallReport(
        k=k,
        queries=len(recalls),
        recall=statistics.fmean(recalls),
        minimum=min(recalls),
        exact_ms=exact_ms,
        approximate_ms=approximate_ms,
        keys=tuple(keys),
    )


def found_share(found: Sequence[tuple[Any, float]], exact: Sequence[tuple[Any, float]]) -> float:
    """The share of ``exact``'s rows that ``found`` found, a row as far as the farthest exact one
    counting as found; 1.0 when there is nothing to find."""
    if not exact:
        return 1.0
    farthest = exact[-1][1]
    hits = sum(1 for _, distance in found[: len(exact)] if distance <= farthest)
    return hits / len(exact)


def _sample(
    session: Session, search: VectorSearch[Any], sample: int, seed: int
) -> tuple[list[Any], list[Any]]:
    """The keys and vectors of ``sample`` rows with a vector, picked by the server's
    ``random()`` after ``setseed``, on the server the searches go to."""
    mapper = inspect(search.model)
    column = mapper.columns[search.attribute.key]
    marked = search.statement()
    connection = session.connection(bind_arguments={"clause": marked})
    # setseed takes -1 to 1; any whole number maps into it.
    connection.execute(select(func.setseed((seed % 2_000_001 - 1_000_000) / 1_000_000)))
    rows = connection.execute(
        select(*mapper.primary_key, column)
        .where(column.is_not(None))
        .order_by(func.random())
        .limit(sample)
        .execution_options(**READ_REPLICA)
    ).all()
    composite = len(mapper.primary_key) > 1
    keys = [tuple(row[:-1]) if composite else row[0] for row in rows]
    return keys, [row[-1] for row in rows]


def _approximate(
    session: Session,
    search: VectorSearch[Any],
    vectors: Sequence[Any],
    *,
    k: int,
    settings: SearchSettings | None,
    where: list[ColumnElement[bool]],
) -> tuple[list[list[tuple[Any, float]]], float]:
    """Each vector's ``k`` nearest keys and distances by ``search`` with ``settings``, as a
    service would ask, and the median milliseconds of a search."""
    results, times = [], []
    for vector in vectors:
        start = time.perf_counter()
        results.append(search.nearest_keys(session, vector, k, where=where, settings=settings))
        times.append(time.perf_counter() - start)
    return results, statistics.median(times) * 1000


def _exact(
    session: Session,
    search: VectorSearch[Any],
    vectors: Sequence[Any],
    *,
    k: int,
    where: list[ColumnElement[bool]],
) -> tuple[list[list[tuple[Any, float]]], float]:
    """Each vector's exact ``k`` nearest keys and distances, by the whole column's distance with
    index scans off (in a savepoint rolled back at the end), and the median milliseconds."""
    connection = session.connection(bind_arguments={"clause": search.statement()})
    statement = _exact_keys(search, where)
    results, times = [], []
    savepoint = connection.begin_nested()
    try:
        set_local(connection, EXACT_SCAN)
        for vector in vectors:
            start = time.perf_counter()
            parameters = {"query": search.encoder.parameter(vector), "k": k}
            rows = connection.execute(statement, parameters).all()
            times.append(time.perf_counter() - start)
            results.append([(tuple(row[:-1]) if len(row) > 2 else row[0], row[-1]) for row in rows])
    finally:
        savepoint.rollback()
    return results, statistics.median(times) * 1000


def _exact_keys(search: VectorSearch[Any], where: list[ColumnElement[bool]]) -> Select[Any]:
    """``SELECT key, distance ... ORDER BY distance LIMIT :k`` on the whole column: whatever
    index ``search`` uses, the exact answer it approximates."""
    mapper = inspect(search.model)
    column = mapper.columns[search.attribute.key]
    distance = column.op(search.distance.value, return_type=Float)(
        bindparam("query", type_=QueryVectorType(column.type))
    ).label("distance")
    return (
        select(*mapper.primary_key, distance)
        .where(*where)
        .order_by(distance)
        .limit(bindparam("k", type_=Integer))
    )


class CommandError(Exception):
    """An expected failure of the command, reported as one line."""


def main(argv: Sequence[str] | None = None) -> int:
    """``pgvector-recall``: print one line of recall; expected failures print one line too."""
    args = _parser().parse_args(argv)
    try:
        print(_run(args))
    except CommandError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was changed", file=sys.stderr)
        return INTERRUPTED
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Measure a vector index's recall@k against exact search on stored rows.",
    )
    parser.add_argument(
        "column",
        metavar="MODULE:MODEL.COLUMN",
        help="the searched column, e.g. app.models:Product.embedding",
    )
    parser.add_argument("--k", type=int, default=10, help="neighbours per query (default 10)")
    parser.add_argument("--sample", type=int, default=100, help="rows searched (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="picks the sample (default 0)")
    parser.add_argument("--ef-search", type=int, metavar="N", help="hnsw.ef_search")
    parser.add_argument("--probes", type=int, metavar="N", help="ivfflat.probes")
    parser.add_argument("--index", metavar="NAME", help="the index to search by (default: chosen)")
    parser.add_argument(
        "--distance",
        choices=[distance.name.lower() for distance in Distance],
        help="the distance to rank by (a binary-quantization index needs it)",
    )
    parser.add_argument(
        "--oversampling", type=int, metavar="N", help="candidates per result (quantized indexes)"
    )
    return parser


def _run(args: argparse.Namespace) -> RecallReport:
    attribute = _column(args.column)
    try:
        distance = Distance[args.distance.upper()] if args.distance else None
        search = VectorSearch(
            cast("type[Any]", attribute.class_), attribute, distance, index=args.index
        )
        settings = SearchSettings(
            ef_search=args.ef_search, probes=args.probes, oversampling=args.oversampling
        )
        settings.parameters(search.index)
    except (ValueError, LookupError) as error:
        raise CommandError(str(error)) from None
    try:
        engine = create_app_engine()
    except DatabaseConfigError as error:
        raise CommandError(str(error)) from None
    try:
        with session_factory(engine)() as session:
            return measure_recall(
                session, search, k=args.k, sample=args.sample, settings=settings, seed=args.seed
            )
    except ValueError as error:
        raise CommandError(str(error)) from None
    except DBAPIError as error:
        if sqlstate(error.orig) == UNDEFINED_TABLE:
            first = str(error.orig).splitlines()[0]
            raise CommandError(f"{first}; create the tables first: alembic upgrade head") from None
        message = describe(error, engine.url)
        if message is None:
            raise
        raise CommandError(message) from None
    finally:
        engine.dispose()


def _column(spec: str) -> InstrumentedAttribute[Any]:
    """The mapped column that ``module:Model.column`` names, or a :class:`CommandError`."""
    module_name, _, path = spec.partition(":")
    model_name, _, column_name = path.partition(".")
    if not (module_name and model_name and column_name):
        raise CommandError(
            f"{spec!r} is not MODULE:MODEL.COLUMN, e.g. app.models:Product.embedding"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise CommandError(f"cannot import {module_name}: {error}") from None
    model = getattr(module, model_name, None)
    attribute = getattr(model, column_name, None) if model is not None else None
    if not isinstance(attribute, InstrumentedAttribute):
        raise CommandError(f"{module_name} has no mapped column {model_name}.{column_name}")
    return attribute
