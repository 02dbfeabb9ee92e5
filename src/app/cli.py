"""``pgvector-app``: load products from a JSON Lines file, and find the nearest ones.

    pgvector-app load products.jsonl
    pgvector-app query --like 42 -k 5
    pgvector-app query --vector - --name-contains lamp --iterative-scan relaxed_order < query.json

The file has one product per line, as a JSON object with exactly the keys of the model:
``{"id": 1, "name": "Desk lamp", "description": "...", "embedding": [0.12, -0.03, ...]}``, the
embedding with as many numbers as ``Product.embedding`` has dimensions. The database is the one
:func:`pgvector_base.database.resolve_url` picks (``DATABASE_URL``, else the embedded server).

Expected failures (a bad line, a wrong dimension, an unreachable database) end the command with one
line on stderr and exit status 1; Ctrl-C ends it with one line and exit status 130, having changed
nothing (a load is one transaction).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import IO, Any

from sqlalchemy import ColumnElement, Engine
from sqlalchemy.exc import DBAPIError
from tqdm import tqdm

from app.models import Base, Product
from pgvector_base.database import DatabaseConfigError, sqlstate
from pgvector_base.loading import (
    DEFAULT_BATCH_SIZE,
    BuildSettings,
    LoadError,
    SettingError,
    UnloadableError,
    load,
)
from pgvector_base.migration.errors import describe
from pgvector_base.search import SearchSettings, VectorSearch
from pgvector_base.session import create_app_engine, session_factory

PROG = "pgvector-app"
FIELDS = ("id", "name", "description", "embedding")
UNDEFINED_TABLE = "42P01"
# What a shell reports for a command that SIGINT ended: 128 + 2.
INTERRUPTED = 130
BUILD_OPTIONS = {
    "maintenance_work_mem": "--maintenance-work-mem",
    "max_parallel_maintenance_workers": "--parallel-workers",
}


class CommandError(Exception):
    """An expected failure, reported as one line."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = parser().parse_args(argv)
    # Errors stay one line; the loader's messages say what a minutes-long index build is doing.
    logging.basicConfig(format="%(message)s")
    logging.getLogger("pgvector_base.loading").setLevel(logging.INFO)
    try:
        run(args)
    except CommandError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # psycopg has cancelled the statement; the transaction rolled back with the engine.
        print(f"{PROG}: interrupted; nothing was changed", file=sys.stderr)
        return INTERRUPTED
    return 0


def run(args: argparse.Namespace) -> None:
    """Run the chosen command against the application's database."""
    try:
        engine = create_app_engine()
    except DatabaseConfigError as error:
        raise CommandError(str(error)) from None
    try:
        args.run(engine, args)
    except DBAPIError as error:
        raise CommandError(database_error(error, engine)) from None
    finally:
        engine.dispose()


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``pgvector-app`` and its two commands."""
    root = argparse.ArgumentParser(
        prog=PROG, description="Load products from a JSON Lines file, and find the nearest ones."
    )
    commands = root.add_subparsers(required=True, metavar="COMMAND")

    loader = commands.add_parser(
        "load",
        help="load products from a JSON Lines file",
        description="Load products with binary COPY. Into an empty table the vector index is "
        "dropped and rebuilt after the rows (pgvector's advice for a first load); the table is "
        "analyzed at the end. All or nothing: a bad line leaves the table as it was.",
    )
    loader.add_argument("file", help="JSON Lines file, one product per line")
    loader.add_argument(
        "--batch-size",
        type=positive,
        default=DEFAULT_BATCH_SIZE,
        metavar="ROWS",
        help="rows per COPY statement (default: %(default)s)",
    )
    loader.add_argument(
        "--maintenance-work-mem",
        default=BuildSettings.maintenance_work_mem,
        metavar="SIZE",
        help="memory for building the index (default: %(default)s)",
    )
    loader.add_argument(
        "--parallel-workers",
        type=int,
        metavar="N",
        help="max_parallel_maintenance_workers for the index build (default: the server's)",
    )
    loader.set_defaults(run=load_command)

    query = commands.add_parser("query", help="print the products nearest to a vector or product")
    target = query.add_mutually_exclusive_group(required=True)
    target.add_argument("--vector", metavar="JSON", help="a JSON array of numbers, or - for stdin")
    target.add_argument("--like", type=int, metavar="ID", help="the id of a product")
    query.add_argument("-k", type=positive, default=10, help="how many (default: %(default)s)")
    query.add_argument("--name-contains", metavar="TEXT", help="only products whose name has TEXT")
    query.add_argument("--ef-search", type=positive, metavar="N", help="hnsw.ef_search")
    query.add_argument(
        "--iterative-scan",
        choices=["off", "relaxed_order", "strict_order"],
        help="pgvector 0.8 iterative index scans, for filtered queries",
    )
    query.set_defaults(run=query_command)
    return root


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def load_command(engine: Engine, args: argparse.Namespace) -> None:
    """Load ``args.file`` into the product table and print what was done."""
    build = BuildSettings(args.maintenance_work_mem, args.parallel_workers)
    try:
        file = open(args.file, "rb")  # noqa: SIM115 (closed by the with statement below)
    except OSError as error:
        raise CommandError(f"cannot read {args.file}: {error.strerror}") from None
    with (
        file,
        tqdm(total=os.fstat(file.fileno()).st_size, unit="B", unit_scale=True, disable=None) as bar,
        engine.begin() as connection,
    ):
        try:
            result = load(
                connection,
                Base.metadata.tables[Product.__tablename__],
                read_products(file, bar),
                batch_size=args.batch_size,
                build=build,
            )
        except LoadError as error:
            raise CommandError(f"{args.file}, {error}") from None
        except SettingError as error:
            raise CommandError(f"{BUILD_OPTIONS[error.name]}: {error}") from None
        except UnloadableError as error:
            raise CommandError(str(error)) from None
    print(
        f"Loaded {result.rows:,} rows into {Product.__tablename__} in {result.copy_seconds:.1f} s "
        f"({result.rows_per_second:,.0f} rows/s)"
    )
    if result.rebuilt_indexes:
        print(f"Rebuilt {', '.join(result.rebuilt_indexes)} in {result.index_seconds:.1f} s")
    for notice in result.notices:
        print(notice)


def read_products(file: IO[bytes], bar: tqdm[Any]) -> Iterator[tuple[Any, ...]]:
    """The rows of a JSON Lines file of products, in the order of :data:`FIELDS`."""
    for line_number, line in enumerate(file, 1):
        bar.update(len(line))
        try:
            # JSON Lines is UTF-8; a byte-order mark at the start is tolerated.
            record = json.loads(line.decode("utf-8-sig" if line_number == 1 else "utf-8"))
        except UnicodeDecodeError as error:
            raise LoadError(
                line_number,
                f"not UTF-8 text (byte 0x{line[error.start]:02x} at byte {error.start + 1}); "
                "JSON Lines files are UTF-8",
            ) from None
        except json.JSONDecodeError as error:
            raise LoadError(line_number, f"not JSON ({error.msg}, column {error.colno})") from None
        if not isinstance(record, dict) or set(record) != set(FIELDS):
            raise LoadError(line_number, f"expected an object with the keys {', '.join(FIELDS)}")
        yield tuple(record[field] for field in FIELDS)


def query_command(engine: Engine, args: argparse.Namespace) -> None:
    """Print the nearest products, one per line: id, distance, name."""
    try:
        settings = SearchSettings(ef_search=args.ef_search, iterative_scan=args.iterative_scan)
    except ValueError as error:
        raise CommandError(f"--ef-search: {error}") from None
    where: list[ColumnElement[bool]] = []
    if args.name_contains:
        where.append(Product.name.icontains(args.name_contains, autoescape=True))
    with session_factory(engine)() as session:
        try:
            search = VectorSearch(Product, Product.embedding)
            if args.like is not None:
                results = search.neighbors_of(
                    session, args.like, args.k, where=where, settings=settings
                )
            else:
                vector = query_vector(args.vector)
                results = search.nearest(session, vector, args.k, where=where, settings=settings)
        # No index for the distance, no such product, or a vector of the wrong size.
        except (LookupError, ValueError) as error:
            raise CommandError(str(error)) from None
    for neighbor in results:
        print(f"{neighbor.item.id}\t{neighbor.distance:.6f}\t{neighbor.item.name}")


def query_vector(text: str) -> list[float]:
    """The ``--vector`` argument (or stdin, for ``-``) as a list of numbers."""
    try:
        value = json.loads(sys.stdin.read() if text == "-" else text)
    except json.JSONDecodeError as error:
        raise CommandError(f"--vector is not JSON ({error.msg}, column {error.colno})") from None
    if not isinstance(value, list) or not all(
        isinstance(number, int | float) and not isinstance(number, bool) for number in value
    ):
        raise CommandError("--vector must be a JSON array of numbers")
    return value


def database_error(error: DBAPIError, engine: Engine) -> str:
    """One line about an expected database failure; anything else is raised again."""
    if sqlstate(error.orig) == UNDEFINED_TABLE:
        return f"{str(error.orig).splitlines()[0]}; create the tables first: alembic upgrade head"
    message = describe(error, engine.url)
    if message is None:
        raise error
    return message


if __name__ == "__main__":
    sys.exit(main())
