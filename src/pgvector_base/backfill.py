"""Filling a new embedding column of a live table, batch by batch: :func:`backfill`, the
``pgvector-backfill`` command, and :func:`abackfill` for the async engine.

The sequence around it (expand migration, this backfill, index, recall check, cut-over, contract)
is in docs/embedding-models.md. A row needs embedding when its target column is ``NULL`` and one of
its sources is not; the expand migration's trigger
(:func:`pgvector_base.migration.reembed.track_source_changes`) sets the target back to ``NULL``
whenever its source changes, so "needs work" is one condition on the row itself, found through the
primary key, and nothing else records progress: a run killed at any moment leaves every finished
batch filled and the rest ``NULL``, and the next run goes on from there.

Each batch is one transaction: claim up to ``batch_size`` rows in key order with ``FOR NO KEY
UPDATE SKIP LOCKED`` (several runners skip each other's batches instead of embedding them twice),
call the embed function, check every vector (count, dimensions, NaN, range) before anything is sent,
copy them by binary COPY (:func:`pgvector_base.loading.copy_rows`) into a temporary table dropped at
commit, and ``UPDATE ... FROM`` it. Nothing outlives the transaction (no session state, no prepared
statement), so it works through a transaction-mode pooler. The row locks block only an ``UPDATE`` of
those rows, for one batch; readers never wait. Rate limiting and the backoff after a transient
failure sleep between transactions, never inside one.

A run makes passes: each walks the keys up to the highest one present when it starts, so a pass
ends however fast rows are inserted (pgroll#583), and the run ends after a pass that found nothing
to do. Rows written while it runs are thereby caught by the next pass; under writes that never
pause the run ends once the application embeds its own writes (the guide's dual-write step).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import itertools
import logging
import math
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from pgvector.sqlalchemy import HALFVEC, VECTOR
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    Select,
    Table,
    Text,
    Update,
    bindparam,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import InstrumentedAttribute
from tqdm import tqdm

from pgvector_base.database import DatabaseConfigError
from pgvector_base.loading import copy_rows
from pgvector_base.migration.errors import describe
from pgvector_base.migration.reembed import trigger_name

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "BackfillError",
    "BackfillResult",
    "abackfill",
    "backfill",
    "main",
]

logger = logging.getLogger(__name__)

# Small enough that a batch's row locks (held while the embed function runs) delay an application
# UPDATE of one of its rows by one embed call at most; large enough for embedding APIs' batches.
DEFAULT_BATCH_SIZE = 500
DEFAULT_RETRIES = 5
DEFAULT_BACKOFF = 1.0
MAX_BACKOFF = 60.0
HALFVEC_MAX = 65504.0
BATCH_TABLE = "pgvector_backfill_batch"
PROG = "pgvector-backfill"

Column_ = Column[Any] | InstrumentedAttribute[Any]
Vectors = Sequence[Sequence[float]] | npt.NDArray[Any]
EmbedFunction = Callable[[list[Any]], Vectors | Awaitable[Vectors]]


class BackfillError(Exception):
    """An expected failure of a backfill, as one line: what, which row, what to do."""


@dataclass
class BackfillResult:
    """What a run did: rows it embedded, embed calls (retries included), passes, seconds, and
    rows that still needed work when it ended (another runner's, or written during its last
    pass)."""

    rows: int = 0
    calls: int = 0
    passes: int = 0
    seconds: float = 0.0
    remaining: int = 0

    @property
    def rows_per_second(self) -> float:
        """Rows embedded and written per second of the run."""
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass
class _Run:
    """A run: its plan, embed function and settings, pace and result."""

    plan: _Plan
    embed: EmbedFunction
    batch_size: int
    rows_per_second: float | None
    transient: tuple[type[BaseException], ...]
    retries: int
    backoff: float
    progress: bool
    result: BackfillResult = field(default_factory=BackfillResult)
    started: float = field(default_factory=time.monotonic)
    next_start: float = 0.0

    def __post_init__(self) -> None:
        """Refuse settings that cannot work, before anything runs."""
        if self.batch_size < 1:
            raise BackfillError(f"the batch size must be at least 1, not {self.batch_size}")
        rate = self.rows_per_second
        if rate is not None and not (rate > 0 and math.isfinite(rate)):
            raise BackfillError(f"the rate limit must be a positive number, not {rate}")

    def finish(self) -> BackfillResult:
        """The result, with the run's duration."""
        self.result.seconds = time.monotonic() - self.started
        return self.result

    def bar(self, number: int, total: int) -> tqdm[Any]:
        """Rows done of ``total`` (the rows that needed work when the pass began), rate and
        time left, on stderr; the total counts other runners' rows too."""
        return tqdm(
            total=total,
            desc=f"{self.plan.name} pass {number}",
            unit="row",
            disable=not self.progress,
            file=sys.stderr,
        )

    def pace(self, rows: int) -> None:
        """Record a batch of ``rows`` for the rate limit."""
        if self.rows_per_second:
            self.next_start = max(time.monotonic(), self.next_start) + rows / self.rows_per_second

    def delay(self) -> float:
        """Seconds to wait before the next batch, for the rate limit."""
        return max(0.0, self.next_start - time.monotonic())

    def backoff_after(self, attempt: int, error: BaseException) -> float:
        """Seconds to wait after the ``attempt``-th transient failure, or the final error."""
        if attempt >= self.retries:
            raise BackfillError(
                f"{self.plan.name}: a batch failed {attempt + 1} times in a row "
                f"({type(error).__name__}: {first_line(error)}); nothing of it was written; "
                "run again to go on from there"
            ) from error
        seconds: float = min(MAX_BACKOFF, self.backoff * 2**attempt)
        logger.warning("%s: %s; retrying in %.1fs", self.plan.name, first_line(error), seconds)
        return seconds


class _Plan:
    """The statements and checks of one backfill: ``target`` filled from ``sources``."""

    def __init__(self, target: Column_, sources: Sequence[str | Column_]) -> None:
        self.target = _column(target)
        table = self.target.table
        if not isinstance(table, Table):
            raise BackfillError(f"{self.target} is not a column of a table")
        self.table = table
        self.name = f"{table.name}.{self.target.name}"
        type_ = self.target.type
        if not isinstance(type_, VECTOR | HALFVEC) or type_.dim is None:
            raise BackfillError(
                f"{self.name} must be a VECTOR(n) or HALFVEC(n) column to backfill, not {type_}"
            )
        self.dim: int = type_.dim
        self.half = isinstance(type_, HALFVEC)
        if not sources or isinstance(sources, str):
            raise BackfillError("give the source columns as a list of one or more names")
        self.sources = [self._source(source) for source in sources]
        keys = list(table.primary_key.columns)
        if len(keys) != 1:
            raise BackfillError(
                f"{table.name} needs a primary key of one column to be backfilled in key order"
            )
        self.key = keys[0]
        # An integer key keeps the temporary table's rows of fixed width, which the loader encodes
        # in one numpy pass; other keys travel as text and are cast back by the UPDATE.
        self.text_key = not isinstance(self.key.type, Integer)
        self.batch = Table(
            BATCH_TABLE,
            MetaData(),
            Column("key", Text() if self.text_key else self.key.type),
            Column("vector", type_),
            prefixes=["TEMPORARY"],
            postgresql_on_commit="DROP",
        )
        batch_key: Any = self.batch.c.key
        if self.text_key:
            batch_key = sql_cast(batch_key, self.key.type)
        # The batch's key range lets the planner find its rows by the primary key, where the
        # temporary table's missing statistics would have it hash the whole table.
        self.update: Update = (
            update(table)
            .values({self.target: self.batch.c.vector})
            .where(
                self.key == batch_key,
                self.key.between(
                    bindparam("first", type_=self.key.type), bindparam("last", type_=self.key.type)
                ),
            )
        )
        self.needs_work = [self.target.is_(None), or_(*(s.is_not(None) for s in self.sources))]

    def _source(self, source: str | Column_) -> Column[Any]:
        if isinstance(source, str):
            if source not in self.table.c:
                raise BackfillError(
                    f"--source {source} is not a column of {self.table.name}; it has "
                    f"{', '.join(c.name for c in self.table.columns)}"
                )
            return self.table.c[source]
        return _column(source)

    def bound(self) -> Select[Any]:
        """The highest key now: a pass goes no further, whatever is inserted while it runs."""
        # Not max(): PostgreSQL has no max(uuid), while any key type the primary key's btree
        # orders can be read from its end, as cheaply.
        return select(self.key).order_by(self.key.desc()).limit(1)

    def count(self, bound: Any) -> Select[Any]:
        """How many rows up to ``bound`` need work."""
        return (
            select(func.count()).select_from(self.table).where(*self.needs_work, self.key <= bound)
        )

    def claim(self, after: Any, bound: Any, limit: int) -> Select[Any]:
        """The next rows after key ``after`` that need work and no one else holds, locked."""
        after_clause = [] if after is None else [self.key > after]
        return (
            select(self.key, *self.sources)
            .where(*self.needs_work, self.key <= bound, *after_clause)
            .order_by(self.key)
            .limit(limit)
            .with_for_update(skip_locked=True, key_share=True)
        )

    def values(self, rows: Sequence[Any]) -> list[Any]:
        """What the embed function gets for ``rows``: the source, or a tuple of the sources."""
        if len(self.sources) == 1:
            return [row[1] for row in rows]
        return [tuple(row[1:]) for row in rows]

    def checked(self, rows: Sequence[Any], vectors: Any) -> npt.NDArray[Any]:
        """``vectors`` as an array of one row per row of ``rows``, or a :class:`BackfillError`
        naming the first row whose vector cannot be stored."""
        if isinstance(vectors, np.ndarray) and vectors.ndim == 2:
            array = vectors
        else:
            try:
                count = len(vectors)
            except TypeError:
                raise self._error(
                    rows, None, f"returned {type(vectors).__name__}, not a list of vectors"
                ) from None
            if count != len(rows):
                raise self._error(rows, None, f"returned {count} vectors for {len(rows)} rows")
            for row, vector in zip(rows, vectors, strict=True):
                if len(vector) != self.dim:
                    raise self._error(rows, row, self._dimensions(len(vector)))
            try:
                array = np.asarray(vectors, dtype=np.float64)
            except (TypeError, ValueError) as error:
                raise self._error(
                    rows, None, f"returned values that are not numbers ({error})"
                ) from None
        if len(array) != len(rows):
            raise self._error(rows, None, f"returned {len(array)} vectors for {len(rows)} rows")
        if array.shape[1] != self.dim:
            raise self._error(rows, rows[0], self._dimensions(array.shape[1]))
        finite = np.isfinite(array).all(axis=1)
        if not finite.all():
            bad = int(np.argmin(finite))
            raise self._error(rows, rows[bad], "returned a vector holding NaN or infinity")
        if self.half:
            fits = (np.abs(array) <= HALFVEC_MAX).all(axis=1)
            if not fits.all():
                bad = int(np.argmin(fits))
                raise self._error(rows, rows[bad], "returned a value outside halfvec's ±65504")
        return array.astype(np.float16 if self.half else np.float32, copy=False)

    def _dimensions(self, found: int) -> str:
        return f"returned {found} dimensions; {self.name} holds {self.dim}"

    def _error(self, rows: Sequence[Any], row: Any, what: str) -> BackfillError:
        where = (
            f"row {self.key.name}={row[0]!r}"
            if row is not None
            else f"the batch of rows {self.key.name}={rows[0][0]!r}..{rows[-1][0]!r}"
        )
        return BackfillError(
            f"{self.name}: for {where}, the embed function {what}; nothing of its batch of "
            f"{len(rows)} rows was written; fix the embed function (or the column) and run again"
        )

    def write(self, connection: Connection, rows: Sequence[Any], vectors: Any) -> None:
        """Store ``vectors`` for ``rows``: binary COPY into a temporary table, one UPDATE."""
        keys = [str(row[0]) if self.text_key else row[0] for row in rows]
        self.batch.create(connection)
        copy_rows(connection, self.batch, {"key": keys, "vector": vectors}, batch_size=len(keys))
        connection.execute(self.update, {"first": rows[0][0], "last": rows[-1][0]})

    def check_database(self, connection: Connection) -> None:
        """Refuse a table without the target column; warn when the expand migration's trigger
        is missing (an embedding would then outlive a change of its source)."""
        columns = {
            str(name)
            for (name,) in connection.execute(
                text(
                    "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(:table) "
                    "AND attnum > 0 AND NOT attisdropped"
                ),
                {"table": self._qualified()},
            )
        }
        missing = [c.name for c in (self.key, self.target, *self.sources) if c.name not in columns]
        if missing:
            raise BackfillError(
                f"{self.table.name} has no column {', '.join(missing)} in the database; run the "
                "expand migration first (alembic upgrade head; docs/embedding-models.md)"
            )
        trigger = connection.scalar(
            text("SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(:table) AND tgname = :name"),
            {"table": self._qualified(), "name": trigger_name(self.target.name)},
        )
        if trigger is None:
            logger.warning(
                "%s has no trigger %s: a row whose source changes after it is embedded keeps "
                "its old embedding; add track_source_changes to the expand migration "
                "(docs/embedding-models.md)",
                self.table.name,
                trigger_name(self.target.name),
            )

    def _qualified(self) -> str:
        return ".".join(
            '"' + part.replace('"', '""') + '"'
            for part in (self.table.schema, self.table.name)
            if part
        )


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (a database error's next lines quote the SQL)."""
    return next(iter(str(error).splitlines()), "")


def _column(attribute: Column_) -> Column[Any]:
    """The table column of a model attribute (``Item.embedding_v2``) or of a ``Column``."""
    if isinstance(attribute, Column):
        return attribute
    # Anything else named on the command line (a model, a function) has no .property.
    columns = getattr(getattr(attribute, "property", None), "columns", None)
    if not columns or not isinstance(columns[0], Column):
        raise BackfillError(f"{attribute} is not a column of a table; name one: Model.column")
    return columns[0]


def backfill(
    engine: Engine,
    target: Column_,
    sources: Sequence[str | Column_],
    embed: Callable[[list[Any]], Vectors],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    rows_per_second: float | None = None,
    transient: tuple[type[BaseException], ...] = (),
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
    progress: bool = False,
) -> BackfillResult:
    """Fill ``target`` (``Item.embedding_v2``) with ``embed`` of ``sources`` for every row that
    needs it, one transaction per batch (see the module docstring); return what was done.

    ``embed`` takes a list of source values (tuples of them for several sources) and returns one
    vector per value: lists, or a 2-D numpy array. An exception of a class in ``transient`` is
    retried ``retries`` times after ``backoff`` seconds, doubled each time; any other, and a vector
    that cannot be stored, stops the run before that batch is written (:class:`BackfillError`).
    ``rows_per_second`` bounds the pace for a paid API; ``progress`` shows a tqdm bar on stderr.
    For an async ``embed``, use :func:`abackfill`.
    """
    if inspect.iscoroutinefunction(embed):
        raise BackfillError("the embed function is async; use abackfill with an async engine")
    plan = _Plan(target, sources)
    run = _Run(
        plan, embed, batch_size, rows_per_second, tuple(transient), retries, backoff, progress
    )
    with engine.connect() as connection:
        run.plan.check_database(connection)
    for number in itertools.count(1):
        with engine.begin() as connection:
            bound = connection.scalar(run.plan.bound())
            total = connection.scalar(run.plan.count(bound)) or 0
        if not total:
            break
        run.result.passes = number
        done = 0
        with run.bar(number, total) as bar:
            after = None
            while rows := _sync_batch(engine, run, after, bound):
                after = rows[-1][0]
                done += len(rows)
                bar.update(len(rows))
        if not done:
            break
    with engine.begin() as connection:
        bound = connection.scalar(run.plan.bound())
        run.result.remaining = connection.scalar(run.plan.count(bound)) or 0
    return run.finish()


def _sync_batch(engine: Engine, run: _Run, after: Any, bound: Any) -> list[Any]:
    """One batch, retried after a transient failure; the rows it filled (none at the end)."""
    plan = run.plan
    for attempt in itertools.count():
        time.sleep(run.delay())
        try:
            with engine.begin() as connection:
                rows = list(connection.execute(plan.claim(after, bound, run.batch_size)))
                if not rows:
                    return rows
                run.pace(len(rows))
                run.result.calls += 1
                vectors = plan.checked(rows, run.embed(plan.values(rows)))
                plan.write(connection, rows, vectors)
            run.result.rows += len(rows)
            return rows
        except run.transient as error:
            time.sleep(run.backoff_after(attempt, error))
    raise AssertionError("unreachable")


async def abackfill(
    engine: AsyncEngine,
    target: Column_,
    sources: Sequence[str | Column_],
    embed: EmbedFunction,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    rows_per_second: float | None = None,
    transient: tuple[type[BaseException], ...] = (),
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
    progress: bool = False,
) -> BackfillResult:
    """:func:`backfill` on an async engine (``create_async_app_engine``): the same statements,
    checks and batches; ``embed`` may be sync or async, and is awaited while the batch's
    transaction holds its rows."""
    plan = _Plan(target, sources)
    run = _Run(
        plan, embed, batch_size, rows_per_second, tuple(transient), retries, backoff, progress
    )
    async with engine.connect() as connection:
        await connection.run_sync(run.plan.check_database)
    for number in itertools.count(1):
        async with engine.begin() as connection:
            bound = await connection.scalar(run.plan.bound())
            total = await connection.scalar(run.plan.count(bound)) or 0
        if not total:
            break
        run.result.passes = number
        done = 0
        with run.bar(number, total) as bar:
            after = None
            while rows := await _async_batch(engine, run, after, bound):
                after = rows[-1][0]
                done += len(rows)
                bar.update(len(rows))
        if not done:
            break
    async with engine.begin() as connection:
        bound = await connection.scalar(run.plan.bound())
        run.result.remaining = await connection.scalar(run.plan.count(bound)) or 0
    return run.finish()


async def _async_batch(engine: AsyncEngine, run: _Run, after: Any, bound: Any) -> list[Any]:
    """:func:`_sync_batch` on an async engine."""
    plan = run.plan
    for attempt in itertools.count():
        await asyncio.sleep(run.delay())
        try:
            async with engine.begin() as connection:
                result = await connection.execute(plan.claim(after, bound, run.batch_size))
                rows = list(result)
                if not rows:
                    return rows
                run.pace(len(rows))
                run.result.calls += 1
                vectors = run.embed(plan.values(rows))
                if inspect.isawaitable(vectors):
                    vectors = await vectors
                checked = plan.checked(rows, vectors)
                await connection.run_sync(plan.write, rows, checked)
            run.result.rows += len(rows)
            return rows
        except run.transient as error:
            await asyncio.sleep(run.backoff_after(attempt, error))
    raise AssertionError("unreachable")


def load_object(reference: str, what: str) -> Any:
    """``module:attribute.path`` imported, as console scripts name objects."""
    module_name, _, path = reference.partition(":")
    if not module_name or not path:
        raise BackfillError(f"{what} {reference!r} must look like module:name (app.models:Item.x)")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise BackfillError(
            f"{what} {reference!r}: cannot import {module_name} ({error})"
        ) from None
    for part in path.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise BackfillError(f"{what} {reference!r}: {module_name} has no {path}") from None
    return found


def parser() -> argparse.ArgumentParser:
    """The command line of ``pgvector-backfill``."""
    root = argparse.ArgumentParser(
        prog=PROG,
        description="Fill a new embedding column batch by batch while the application runs "
        "(docs/embedding-models.md). The database is DATABASE_URL's, as for alembic.",
    )
    root.add_argument("target", help="the new column, as module:Model.attribute")
    root.add_argument(
        "--source", required=True, help="the source column(s) the embeddings are made from, a,b"
    )
    root.add_argument(
        "--embed",
        required=True,
        help="module:function taking a list of source values and returning their vectors "
        "(async functions run on the async engine)",
    )
    root.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    root.add_argument("--rows-per-second", type=float, help="rate limit, for a paid API")
    root.add_argument(
        "--transient",
        default="",
        help="exceptions to retry with backoff, as module:Class[,module:Class]",
    )
    root.add_argument("--retries", type=int, default=DEFAULT_RETRIES)
    root.add_argument("--no-progress", action="store_true", help="no progress bar")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pgvector-backfill``; return the exit status."""
    from pgvector_base.session import create_app_engine, create_async_app_engine

    args = parser().parse_args(argv)
    logging.basicConfig(format=f"{PROG}: %(message)s", level=logging.WARNING)
    url: URL | None = None
    try:
        target = load_object(args.target, "the target")
        embed = load_object(args.embed, "--embed")
        if not callable(embed):
            raise BackfillError(
                f"--embed {args.embed!r} names a {type(embed).__name__}, not a function"
            )
        transient = tuple(
            load_object(name.strip(), "--transient")
            for name in args.transient.split(",")
            if name.strip()
        )
        sources = [name.strip() for name in args.source.split(",") if name.strip()]
        arguments: dict[str, Any] = {
            "batch_size": args.batch_size,
            "rows_per_second": args.rows_per_second,
            "transient": transient,
            "retries": args.retries,
            "progress": not args.no_progress,
        }
        if inspect.iscoroutinefunction(embed):
            async_engine = create_async_app_engine()
            url = async_engine.url
            try:
                result = asyncio.run(abackfill(async_engine, target, sources, embed, **arguments))
            finally:
                asyncio.run(async_engine.dispose())
        else:
            engine = create_app_engine()
            url = engine.url
            try:
                result = backfill(engine, target, sources, embed, **arguments)
            finally:
                engine.dispose()
    except (BackfillError, DatabaseConfigError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except DBAPIError as error:
        # A server that cannot be reached, or refuses the login, is said as the migrations say it.
        described = describe(error, url)
        if described is None:
            orig = cast(Any, error.orig)
            primary = getattr(getattr(orig, "diag", None), "message_primary", None)
            described = f"the database refused a batch: {primary or first_line(orig)}"
        print(f"{PROG}: error: {described}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"{PROG}: interrupted; finished batches are kept, run again to go on", file=sys.stderr
        )
        return 130
    print(
        f"{PROG}: {result.rows} rows embedded in {result.calls} calls over {result.passes} "
        f"pass{'' if result.passes == 1 else 'es'}, "
        f"{result.seconds:.1f}s ({result.rows_per_second:.0f} rows/s); "
        f"{result.remaining} rows still need work",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
