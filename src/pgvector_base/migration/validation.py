"""Checks of the models against what pgvector can do, so a bad model fails before a migration does.

* Before autogenerate compares anything (``alembic revision --autogenerate``, ``alembic check``),
  :func:`check_models` rejects a vector index that pgvector would refuse: an HNSW or IVFFlat index
  on a ``vector``, ``halfvec`` or ``sparsevec`` without dimensions, or on more dimensions than the
  index supports (``vector`` 2,000; ``halfvec`` 4,000; ``bit`` 64,000). Caught there, the mistake
  never reaches a migration file; PostgreSQL would only refuse it at ``alembic upgrade``.
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
from sqlalchemy import Index, MetaData
from sqlalchemy.dialects.postgresql import BIT

PLUGIN_NAME = "pgvector_base.validation"
"""The name ``env.py`` lists in ``autogenerate_plugins``."""

VECTOR_INDEX_METHODS = ("hnsw", "ivfflat")
# pgvector's HNSW_MAX_DIM/IVFFLAT_MAX_DIM and their halfvec and bit counterparts, the same for both
# methods. sparsevec has none: HNSW limits its non-zero elements (1,000), row by row.
INDEX_MAX_DIMENSIONS = {"vector": 2_000, "halfvec": 4_000, "bit": 64_000}
TOO_MANY_DIMENSIONS_ADVICE = {
    "vector": "declare it HALFVEC (up to 4,000) or index a halfvec cast of it",
    "halfvec": "index a binary quantization of it (bit, up to 64,000) or use fewer dimensions",
    "bit": "use fewer dimensions",
}

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


def model_problems(metadata: MetaData) -> list[str]:
    """What pgvector would refuse in the vector indexes of ``metadata``, one sentence each."""
    problems = []
    for table in metadata.tables.values():
        for index in sorted(table.indexes, key=index_name):
            for method, element, type_name, dimensions in indexed_vectors(index):
                where = f"index {index.name} on {table.name} ({element})"
                limit = INDEX_MAX_DIMENSIONS.get(type_name)
                if dimensions is None:
                    problems.append(
                        f"{where}: {method} needs {type_name} values of known dimensions; "
                        f"declare the column {type_name.upper()}(n)"
                    )
                elif limit is not None and dimensions > limit:
                    problems.append(
                        f"{where}: {method} indexes {type_name} values of up to {limit:,} "
                        f"dimensions, not {dimensions:,}; {TOO_MANY_DIMENSIONS_ADVICE[type_name]}"
                    )
    return problems


def check_models(metadata: MetaData) -> None:
    """Raise a one-line ``CommandError`` naming every vector index pgvector would refuse."""
    problems = model_problems(metadata)
    if problems:
        raise CommandError("the models need a fix before autogenerate: " + "; ".join(problems))


def check_before_compare(
    autogen_context: AutogenContext, upgrade_ops: UpgradeOps
) -> PriorityDispatchResult:
    """Alembic comparator that runs first and stops autogenerate on a model pgvector refuses."""
    metadata = autogen_context.metadata
    for each in [metadata] if isinstance(metadata, MetaData) else list(metadata or ()):
        check_models(each)
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
