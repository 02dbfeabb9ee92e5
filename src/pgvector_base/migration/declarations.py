"""What the deployment-shape declarations share: :mod:`~pgvector_base.migration.distribution`'s
``distributed()``/``reference()``, :mod:`~pgvector_base.migration.partitions`' ``by_list()``/
``by_hash()`` and :mod:`~pgvector_base.migration.tenancy`'s ``isolated_by()``.

Each is table arguments that keep their declaration in the table's ``info`` under a key of their
own, so several combine in one ``__table_args__`` through :func:`combined`; and each is read back,
left out of the generated ``op.create_table(...)``, and named in SQL the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from alembic.operations import ops
from sqlalchemy import Table
from sqlalchemy.engine import Dialect

DeclarationT = TypeVar("DeclarationT")


def combined(*arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Several declarations' table arguments as one, their ``info`` merged: put the result last
    in ``__table_args__``, or pass it as ``**`` to ``Table``.

    ``combined(distributed("tenant_id"), isolated_by("tenant_id", role="app"))``. Raises
    :class:`ValueError` when two of them set the same argument or ``info`` key differently.
    """
    merged: dict[str, Any] = {}
    info: dict[str, Any] = {}
    for each in arguments:
        for key, value in each.items():
            if key == "info":
                for info_key, declaration in value.items():
                    _add(info, info_key, declaration, "info key ")
            else:
                _add(merged, key, value, "")
    if info:
        merged["info"] = info
    return merged


def _add(into: dict[str, Any], key: str, value: object, what: str) -> None:
    if key in into and into[key] != value:
        raise ValueError(
            f"combined(): two declarations set the {what}{key!r} ({into[key]!r} and {value!r}); "
            "keep one of them"
        )
    into[key] = value


def declaration(
    info_key: str, value: object, *others: Mapping[str, Any], **arguments: Any
) -> dict[str, Any]:
    """Table arguments that keep ``value`` in the table's ``info`` under ``info_key``, with
    ``arguments`` beside it, combined with ``others`` (:func:`combined`)."""
    return combined(*others, {**arguments, "info": {info_key: value}})


def declared(table: Table, info_key: str, kind: type[DeclarationT]) -> DeclarationT | None:
    """The ``kind`` that ``table`` keeps under ``info_key``, if any."""
    found = table.info.get(info_key)
    return found if isinstance(found, kind) else None


def strip_declaration(
    operations: Iterable[ops.MigrateOperation], table: Table, info_key: str
) -> None:
    """Leave the declaration under ``info_key`` out of ``table``'s ``op.create_table(...)``: it
    becomes operations of its own, and a migration imports nothing of the template's models."""
    for op in operations:
        if (
            isinstance(op, ops.CreateTableOp)
            and op.table_name == table.name
            and op.schema == table.schema
        ):
            op.info = {key: value for key, value in op.info.items() if key != info_key}


def string_literal(value: str) -> str:
    """``value`` as an SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def identifier(dialect: Dialect, schema: str | None, name: str) -> str:
    """``name`` (in ``schema``, if given) as an identifier in SQL, quoted only where needed."""
    preparer = dialect.identifier_preparer
    quoted = str(preparer.quote(name))
    return f"{preparer.quote_schema(schema)}.{quoted}" if schema else quoted
