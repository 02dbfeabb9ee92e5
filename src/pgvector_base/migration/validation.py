"""Checks of the models against what PostgreSQL and pgvector accept, so a bad model fails before a
migration does.

* Before autogenerate compares anything (``alembic revision --autogenerate``, ``alembic check``),
  :func:`check_models` rejects, in one line naming each object:

  - a name PostgreSQL would not store as written: a schema, table, column, index or constraint
    name over 63 bytes of UTF-8 (PostgreSQL cuts it, and every later comparison sees a name the
    model does not have), including one a naming convention makes;
  - a pgvector column of more dimensions than its type holds (``vector`` and ``halfvec`` 16,000,
    ``sparsevec`` 1,000,000,000, ``bit`` 83,886,080) or of none;
  - an HNSW or IVFFlat index that pgvector would refuse: on a ``vector``, ``halfvec`` or
    ``sparsevec`` without dimensions, on more dimensions than the index supports (``vector``
    2,000; ``halfvec`` 4,000; ``bit`` 64,000), IVFFlat on ``sparsevec``, or with a ``WITH``
    parameter pgvector does not have or takes in another range (HNSW ``m`` 2 to 100,
    ``ef_construction`` 4 to 1,000 and at least ``2 * m``; IVFFlat ``lists`` 1 to 32,768).

  Caught there, the mistake never reaches a migration file; PostgreSQL would only refuse it at
  ``alembic upgrade``. The limits are pgvector 0.8's (``src/*.h``); the tests check each one
  against the server.
* Before migrations run, :func:`check_pgvector_version` compares the database's pgvector with the
  oldest release that has every type and index method the models use.

This module is an Alembic plugin (``alembic.runtime.plugins``): importing it registers the
plugin, and ``env.py`` enables it by name in ``autogenerate_plugins``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from alembic.autogenerate.api import AutogenContext
from alembic.operations.ops import UpgradeOps
from alembic.runtime.plugins import Plugin
from alembic.util import CommandError, DispatchPriority, PriorityDispatchResult
from pgvector.sqlalchemy import HALFVEC, SPARSEVEC, VECTOR
from sqlalchemy import Constraint, Index, MetaData, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import BIT
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IdentifierError
from sqlalchemy.sql.naming import conv

PLUGIN_NAME = "pgvector_base.validation"
"""The name ``env.py`` lists in ``autogenerate_plugins``."""

VECTOR_INDEX_METHODS = ("hnsw", "ivfflat")
# pgvector's HNSW_MAX_DIM/IVFFLAT_MAX_DIM and their halfvec and bit counterparts, the same for both
# methods. sparsevec has none: HNSW limits its non-zero elements (1,000), row by row.
INDEX_MAX_DIMENSIONS = {"vector": 2_000, "halfvec": 4_000, "bit": 64_000}
# What each type holds at most: pgvector's VECTOR_MAX_DIM, HALFVEC_MAX_DIM, SPARSEVEC_MAX_DIM and
# PostgreSQL's longest bit string.
COLUMN_MAX_DIMENSIONS = {
    "vector": 16_000,
    "halfvec": 16_000,
    "sparsevec": 1_000_000_000,
    "bit": 83_886_080,
}
# The WITH parameters of each method, with the range pgvector accepts (HNSW_MIN_M and so on),
# and the defaults that count when the other parameter is given alone (ef_construction >= 2 * m).
INDEX_PARAMETERS = {
    "hnsw": {"m": (2, 100), "ef_construction": (4, 1_000)},
    "ivfflat": {"lists": (1, 32_768)},
}
HNSW_DEFAULTS = {"m": 16, "ef_construction": 64}
# NAMEDATALEN - 1: PostgreSQL keeps the first 63 bytes of a longer name.
MAX_NAME_BYTES = 63
DIALECT: Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]


def too_many_dimensions_advice(type_name: str, dimensions: int) -> str:
    """What indexes a ``type_name`` of ``dimensions`` dimensions, for the refusal's last words."""
    if type_name == "vector" and dimensions <= INDEX_MAX_DIMENSIONS["halfvec"]:
        return (
            "declare it HALFVEC (up to 4,000), or index a halfvec cast of it, which VectorSearch "
            "searches and re-ranks on the full vector (docs/search.md#quantized-indexes)"
        )
    if type_name in {"vector", "halfvec"}:
        return (
            f"index its binary quantization (binary_quantize(...)::bit({dimensions}) with "
            "bit_hamming_ops, up to 64,000), or reduce it to 4,000 dimensions or fewer "
            "(a smaller embedding or subvector) and index it as halfvec"
        )
    return "use fewer dimensions"


Version = tuple[int, ...]
# The pgvector releases that brought what models may need (pgvector's CHANGELOG.md).
TYPES_SINCE: dict[str, Version] = {"halfvec": (0, 7, 0), "sparsevec": (0, 7, 0)}
BIT_INDEXES_SINCE: Version = (0, 7, 0)
HNSW_SINCE: Version = (0, 5, 0)


def vector_type(type_: Any) -> tuple[str, int | None] | None:
    """``(pgvector type name, dimensions)`` of a SQLAlchemy type, or ``None`` for other types."""
    if isinstance(type_, VECTOR):
        return "vector", type_.dim
    if isinstance(type_, HALFVEC):
        return "halfvec", type_.dim
    if isinstance(type_, SPARSEVEC):
        return "sparsevec", type_.dim
    # pgvector.sqlalchemy.BIT is a TypeDecorator around this type; BIT() means bit(1).
    bit = getattr(type_, "impl", type_)
    if isinstance(bit, BIT) and not bit.varying:
        return "bit", bit.length
    return None


def indexed_vectors(index: Index) -> Iterator[tuple[str, str, str, int | None]]:
    """``(method, indexed element, type, dimensions)`` of each vector that ``index`` indexes."""
    method = index.dialect_options["postgresql"]["using"]
    if method not in VECTOR_INDEX_METHODS:
        return
    for expression in index.expressions:
        found = vector_type(getattr(expression, "type", None))
        if found is not None:
            element = getattr(expression, "name", None) or str(expression)
            yield method, element, *found


def index_name(index: Index) -> str:
    """Sort key: ``Table.indexes`` is a set, and messages should not change from run to run."""
    return str(index.name)


def stored_name(item: Index | Constraint, dialect: Dialect) -> str | None:
    """The name SQLAlchemy gives ``item`` in DDL, unquoted; ``None`` if PostgreSQL picks it.

    A naming convention's name (``conv``) longer than the dialect allows is shortened with a hash,
    as SQLAlchemy does when it creates the object. An explicit name that is too long is returned
    as it is (SQLAlchemy would refuse it), and so is a convention's name that cannot be made yet.
    """
    if not isinstance(item.name, str):
        return None
    try:
        return dialect.identifier_preparer.format_constraint(item, _alembic_quote=False)
    except IdentifierError:
        return item.name


def model_problems(metadata: MetaData, dialect: Dialect = DIALECT) -> list[str]:
    """What PostgreSQL or pgvector would refuse or change in ``metadata``, one sentence each."""
    problems = []
    for schema in sorted({table.schema for table in metadata.tables.values() if table.schema}):
        problems += name_problems("schema", schema, schema)
    for table in metadata.tables.values():
        problems += table_problems(table, dialect)
        for index in sorted(table.indexes, key=index_name):
            problems += index_problems(table, index)
    return problems


def name_problems(what: str, where: str, name: str, *, convention: bool = False) -> list[str]:
    """The problem with ``name``, the name of ``what`` ``where``, if PostgreSQL would cut it."""
    length = len(name.encode())
    if length <= MAX_NAME_BYTES:
        return []
    made = " (made by the naming convention)" if convention else ""
    fix = "name it explicitly, shorter" if convention else "shorten it"
    return [
        f"{what} {where}{made} is {length} bytes long in UTF-8; PostgreSQL keeps the first "
        f"{MAX_NAME_BYTES} bytes of a name, so the database would not have the model's name; {fix}"
    ]


def table_problems(table: Table, dialect: Dialect) -> list[str]:
    """Names PostgreSQL would cut, and pgvector columns of dimensions their type cannot hold."""
    problems = name_problems("table", table.fullname, table.name)
    for column in table.columns:
        where = f"{table.name}.{column.name}"
        problems += name_problems("column", where, column.name)
        type_name, dimensions = vector_type(column.type) or ("", None)
        if dimensions is not None:
            limit = COLUMN_MAX_DIMENSIONS[type_name]
            if not 1 <= dimensions <= limit:
                problems.append(
                    f"column {where}: {type_name} holds 1 to {limit:,} dimensions, "
                    f"not {dimensions:,}"
                )
    named: list[Index | Constraint] = [*sorted(table.indexes, key=index_name)]
    named += sorted(table.constraints, key=lambda constraint: str(constraint.name))
    for item in named:
        name = stored_name(item, dialect)
        if name is not None:
            what = "index" if isinstance(item, Index) else "constraint"
            problems += name_problems(
                what, f"{name} on {table.name}", name, convention=isinstance(item.name, conv)
            )
    return problems


def index_problems(table: Table, index: Index) -> list[str]:
    """What pgvector would refuse in ``index``: the vectors it indexes, its ``WITH`` parameters."""
    problems = []
    for method, element, type_name, dimensions in indexed_vectors(index):
        where = f"index {index.name} on {table.name} ({element})"
        limit = INDEX_MAX_DIMENSIONS.get(type_name)
        if dimensions is None:
            problems.append(
                f"{where}: {method} needs {type_name} values of known dimensions; "
                f"declare the column {type_name.upper()}(n)"
            )
        elif method == "ivfflat" and type_name == "sparsevec":
            problems.append(f"{where}: ivfflat does not index sparsevec; use hnsw")
        elif limit is not None and dimensions > limit:
            problems.append(
                f"{where}: {method} indexes {type_name} values of up to {limit:,} "
                f"dimensions, not {dimensions:,}; "
                + too_many_dimensions_advice(type_name, dimensions)
            )
    method = index.dialect_options["postgresql"]["using"]
    if method in INDEX_PARAMETERS:
        where = f"index {index.name} on {table.name}"
        problems += parameter_problems(where, method, index.dialect_options["postgresql"]["with"])
    return problems


def parameter_problems(where: str, method: str, given: dict[str, Any] | None) -> list[str]:
    """What pgvector would refuse in the ``WITH`` parameters ``given`` to a ``method`` index."""
    ranges = INDEX_PARAMETERS[method]
    problems = []
    values: dict[str, int] = {}
    for key, value in (given or {}).items():
        if key not in ranges:
            problems.append(
                f"{where}: {method} has no parameter {key!r}; it takes {', '.join(ranges)}"
            )
        elif isinstance(value, bool) or not re.fullmatch(r"\s*[+-]?\d+\s*", str(value)):
            problems.append(f"{where}: {method} takes an integer {key}, not {value!r}")
        else:
            low, high = ranges[key]
            values[key] = int(value)
            if not low <= values[key] <= high:
                problems.append(
                    f"{where}: {method} takes {key} from {low:,} to {high:,}, not {values[key]:,}"
                )
    if method == "hnsw" and not problems:
        m, ef_construction = ({**HNSW_DEFAULTS, **values}[key] for key in HNSW_DEFAULTS)
        if ef_construction < 2 * m:
            problems.append(
                f"{where}: hnsw needs ef_construction of at least 2 * m = {2 * m}, not "
                f"{ef_construction}{'' if 'ef_construction' in values else ' (its default)'}"
            )
    return problems


def check_models(metadata: MetaData, dialect: Dialect = DIALECT) -> None:
    """Raise a one-line ``CommandError`` naming everything in ``metadata`` the server would refuse.

    ``dialect`` (the connection's) decides how long a name SQLAlchemy lets through unshortened.
    """
    problems = model_problems(metadata, dialect)
    if problems:
        raise CommandError("the models need a fix before autogenerate: " + "; ".join(problems))


def check_before_compare(
    autogen_context: AutogenContext, upgrade_ops: UpgradeOps
) -> PriorityDispatchResult:
    """Alembic comparator that runs first and stops autogenerate on a model the server refuses."""
    metadata = autogen_context.metadata
    dialect = autogen_context.dialect or DIALECT
    for each in [metadata] if isinstance(metadata, MetaData) else list(metadata or ()):
        check_models(each, dialect)
    return PriorityDispatchResult.CONTINUE


def required_pgvector(metadata: MetaData) -> tuple[Version, str] | None:
    """The oldest pgvector with every type and index method of ``metadata``, and what needs it."""
    needs: list[tuple[Version, str]] = []
    for table in metadata.tables.values():
        for column in table.columns:
            found = vector_type(column.type)
            if found is not None and found[0] in TYPES_SINCE:
                what = f"column {table.name}.{column.name} ({found[0]})"
                needs.append((TYPES_SINCE[found[0]], what))
        for index in sorted(table.indexes, key=index_name):
            for method, _element, type_name, _dimensions in indexed_vectors(index):
                if type_name == "bit":
                    needs.append((BIT_INDEXES_SINCE, f"{method} index {index.name} on bit"))
                elif method == "hnsw":
                    needs.append((HNSW_SINCE, f"hnsw index {index.name}"))
    return max(needs, default=None)


def check_pgvector_version(installed: str, metadata: MetaData) -> None:
    """Raise a one-line ``CommandError`` if pgvector ``installed`` is older than the models need."""
    required = required_pgvector(metadata)
    if required is None or parse_version(installed) >= required[0]:
        return
    needed, user = ".".join(map(str, required[0])), required[1]
    raise CommandError(
        f"this database has pgvector {installed}, but {user} needs pgvector {needed} or later; "
        "run ALTER EXTENSION vector UPDATE (if no newer version is available, install a newer "
        "pgvector on the server first)"
    )


def parse_version(version: str) -> Version:
    """``(0, 8, 1)`` for ``0.8.1``: pgvector's ``extversion`` as a comparable tuple."""
    return tuple(int(part) for part in re.findall(r"\d+", version))


def setup(plugin: Plugin) -> None:
    """Register :func:`check_before_compare` on ``plugin``; Alembic's plugin entry point."""
    plugin.add_autogenerate_comparator(
        check_before_compare, "autogenerate", priority=DispatchPriority.FIRST
    )


setup(Plugin(PLUGIN_NAME))
