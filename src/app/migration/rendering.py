"""pgvector types in reflection and in the Python that autogenerate writes."""

from __future__ import annotations

from typing import Any, Literal

from alembic.autogenerate.api import AutogenContext
from pgvector.sqlalchemy import HALFVEC, SPARSEVEC, VECTOR
from sqlalchemy.engine import Dialect

PGVECTOR_MODULE = "pgvector.sqlalchemy"

# Type names as reflection reports them; `bit` is PostgreSQL's own type and needs no entry.
REFLECTED_TYPES: dict[str, type[Any]] = {
    "vector": VECTOR,
    "halfvec": HALFVEC,
    "sparsevec": SPARSEVEC,
}


def register_vector_types(dialect: Dialect) -> None:
    """Let ``dialect`` reflect pgvector columns as pgvector types, not as ``NullType``.

    Without this, ``alembic check`` and type comparison cannot see a vector column's dimensions.
    pgvector-python registers the same names when imported; doing it here does not depend on that.
    """
    dialect.ischema_names.update(REFLECTED_TYPES)  # type: ignore[attr-defined]


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render pgvector types as ``VECTOR(dim=1536)`` and import them in the generated migration.

    Alembic's default writes ``pgvector.sqlalchemy.vector.VECTOR(dim=1536)`` without importing
    ``pgvector``, so the generated file fails with ``NameError``. Everything else renders as usual.
    """
    if type_ == "type" and type(obj).__module__.startswith(PGVECTOR_MODULE + "."):
        name = type(obj).__name__
        autogen_context.imports.add(f"from {PGVECTOR_MODULE} import {name}")
        return repr(obj)
    return False
