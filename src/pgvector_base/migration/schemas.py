"""``CREATE SCHEMA`` for the schemas a generated migration creates something in.

Alembic creates tables in the schema the model names but never the schema itself, so the
migration of a model with ``__table_args__ = {"schema": "rag"}`` fails on a database without
``rag``. After the comparison, this plugin puts ``CREATE SCHEMA IF NOT EXISTS`` first in the
upgrade for each schema that an operation creates something in and the database lacks; the
downgrade drops it last, with ``DROP SCHEMA`` and no ``CASCADE``, so it removes the schema only if
nothing else is left in it.

This module is an Alembic plugin (``alembic.runtime.plugins``): importing it registers the plugin,
and ``env.py`` enables it by name in ``autogenerate_plugins``.
"""

from __future__ import annotations

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from alembic.runtime.plugins import Plugin
from alembic.util import DispatchPriority, PriorityDispatchResult
from sqlalchemy import inspect

PLUGIN_NAME = "pgvector_base.schemas"
"""The name ``env.py`` lists in ``autogenerate_plugins``."""


class CreateSchemaOp(ops.MigrateOperation):
    """``CREATE SCHEMA IF NOT EXISTS name``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def reverse(self) -> DropSchemaOp:
        """Its downgrade: the schema dropped, if empty."""
        return DropSchemaOp(self.name)

    def to_diff_tuple(self) -> tuple[str, str]:
        """How ``alembic check`` reports it."""
        return ("add_schema", self.name)


class DropSchemaOp(ops.MigrateOperation):
    """``DROP SCHEMA name``: fails, rather than drop anything, if the schema is not empty."""

    def __init__(self, name: str) -> None:
        self.name = name

    def reverse(self) -> CreateSchemaOp:
        """Its upgrade: the schema created again."""
        return CreateSchemaOp(self.name)

    def to_diff_tuple(self) -> tuple[str, str]:
        """How ``alembic check`` reports it."""
        return ("remove_schema", self.name)


def create_missing_schemas(
    autogen_context: AutogenContext, upgrade_ops: ops.UpgradeOps
) -> PriorityDispatchResult:
    """Put a :class:`CreateSchemaOp` first for each schema the upgrade needs and the database lacks.

    Runs after every other comparison, so it sees all the operations, including other plugins'
    (an enum type created in a new schema).
    """
    assert autogen_context.connection is not None
    existing = set(inspect(autogen_context.connection).get_schema_names())
    used = {getattr(op, "schema", None) for op in upgrade_ops.ops}
    needed = {str(schema) for schema in used if schema is not None} - existing
    upgrade_ops.ops[:0] = [CreateSchemaOp(name) for name in sorted(needed)]
    return PriorityDispatchResult.CONTINUE


@renderers.dispatch_for(CreateSchemaOp)
def render_create_schema(autogen_context: AutogenContext, op: CreateSchemaOp) -> str:
    """``op.execute('CREATE SCHEMA IF NOT EXISTS rag')``."""
    return f"op.execute({f'CREATE SCHEMA IF NOT EXISTS {quoted(autogen_context, op.name)}'!r})"


@renderers.dispatch_for(DropSchemaOp)
def render_drop_schema(autogen_context: AutogenContext, op: DropSchemaOp) -> str:
    """``op.execute('DROP SCHEMA rag')``."""
    return f"op.execute({f'DROP SCHEMA {quoted(autogen_context, op.name)}'!r})"


def quoted(autogen_context: AutogenContext, name: str) -> str:
    """``name`` as an identifier in SQL, quoted only if it needs to be."""
    assert autogen_context.dialect is not None
    return str(autogen_context.dialect.identifier_preparer.quote_schema(name))


def setup(plugin: Plugin) -> None:
    """Register :func:`create_missing_schemas`; Alembic's plugin entry point."""
    plugin.add_autogenerate_comparator(
        create_missing_schemas, "autogenerate", priority=DispatchPriority.LAST
    )


setup(Plugin(PLUGIN_NAME))
