"""Row-level security by tenant, declared on the model, in autogenerate.

A model names the column that holds its tenant and the role the application connects as::

    class Document(Base):
        __tablename__ = "document"
        __table_args__ = (tenancy.isolated_by("tenant_id", role="app"),)

and this plugin makes the database hold the table to it, after Alembic's comparison of tables:

* ``ENABLE`` and ``FORCE ROW LEVEL SECURITY``: the policy binds the table's owner too, so an
  application that connects as the owner by mistake is isolated all the same;
* one policy, ``tenant_isolation``, for every command: a row is visible, and may be written, only
  when its tenant column equals the transaction's ``app.tenant_id`` setting, which
  :func:`pgvector_base.session.tenant_session` sets per transaction. With no tenant set the
  setting is ``NULL`` (or ``''`` on a connection where one was set before), which equals nothing:
  no rows, never all of them;
* ``SELECT, INSERT, UPDATE, DELETE`` on the table to ``role``.

Each is compared with the database (the policy as the server deparses it, on an empty copy of the
table in a savepoint that is rolled back, as :mod:`~pgvector_base.migration.comparison` does for
indexes), so a changed column or role is migrated and a second autogenerate is empty. A table that
drops its declaration gets its policy dropped and row-level security disabled; grants stay. The
role must exist and must be able to neither own the table nor bypass row-level security:
autogenerate stops with one line otherwise (docs/multitenancy.md, "Roles").

Why not alembic_utils' ``PGPolicy``: it creates and drops policies only, leaving ``ENABLE`` and
``FORCE`` to hand-written migrations (forgetting them leaves every row visible); its policies are
registered in ``env.py`` rather than declared on the model; and it writes ``op.create_entity``,
an operation registered at run time that ``mypy --strict`` rejects in every generated file.

This module is an Alembic plugin (``alembic.runtime.plugins``): importing it registers the plugin,
and ``env.py`` enables it by name in ``autogenerate_plugins``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from alembic.runtime.plugins import Plugin
from alembic.util import CommandError, DispatchPriority, PriorityDispatchResult
from sqlalchemy import Table, text
from sqlalchemy.engine import Connection, Dialect

from pgvector_base.session import TENANT_SETTING

PLUGIN_NAME = "pgvector_base.tenancy"
"""The name ``env.py`` lists in ``autogenerate_plugins``."""

INFO_KEY = "pgvector_base.tenancy"
"""The key of ``Table.info`` that holds a table's :class:`Isolation`."""

POLICY = "tenant_isolation"
"""The name of the policy, on each table that declares one."""

PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")

# Row-level security flags and owner of a table (`:table`, qualified); no row if it is missing.
TABLE_QUERY = text(
    "SELECT relrowsecurity, relforcerowsecurity, pg_get_userbyid(relowner) AS owner "
    "FROM pg_class WHERE oid = to_regclass(CAST(:table AS text))"
)
# The policy `:policy` of a table, as the server deparses it.
POLICY_QUERY = text(
    """
    SELECT polpermissive AS permissive, polcmd AS command,
           array(SELECT CASE WHEN role = 0 THEN 'public' ELSE pg_get_userbyid(role) END
                 FROM unnest(polroles) AS role ORDER BY 1) AS roles,
           pg_get_expr(polqual, polrelid) AS using,
           pg_get_expr(polwithcheck, polrelid) AS with_check
    FROM pg_policy
    WHERE polrelid = to_regclass(CAST(:table AS text)) AND polname = :policy
    """
)
ROLE_QUERY = text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = :role")
PRIVILEGE_QUERY = text("SELECT has_table_privilege(:role, CAST(:table AS text), :privilege)")


@dataclass(frozen=True)
class Isolation:
    """Rows of a table isolated by tenant: ``column`` holds it, ``role`` is the application's."""

    column: str
    role: str


def isolated_by(
    column: str, *, role: str, partitions: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Table arguments that isolate a table's rows by the tenant in ``column``, for ``role``.

    ``partitions`` takes :func:`pgvector_base.migration.partitions.by_list` (or ``by_hash``)'s
    table arguments when the table is partitioned too. Put the result last in
    ``__table_args__``, or pass it as ``**`` to ``Table``.
    """
    if not column or not role:
        raise ValueError("isolated_by(column, role=...): name the tenant column and the role")
    arguments = dict(partitions or {})
    arguments["info"] = {**arguments.get("info", {}), INFO_KEY: Isolation(column, role)}
    return arguments


def declared(table: Table) -> Isolation | None:
    """The isolation ``table`` declares, if any."""
    found = table.info.get(INFO_KEY)
    return found if isinstance(found, Isolation) else None


@dataclass(frozen=True)
class Policy:
    """A policy as the server deparses it, and the SQL that creates it."""

    permissive: bool
    command: str
    roles: tuple[str, ...]
    using: str | None
    with_check: str | None


class TableStatementsOp(ops.MigrateOperation):
    """Statements on one table, undone by ``undo``: row-level security, a policy, a grant."""

    def __init__(
        self,
        kind: str,
        schema: str | None,
        table: str,
        statements: tuple[str, ...],
        undo: tuple[str, ...],
    ) -> None:
        self.kind = kind
        self.schema = schema
        self.table = table
        self.statements = statements
        self.undo = undo

    def reverse(self) -> TableStatementsOp:
        """Its downgrade: the ``undo`` statements."""
        return TableStatementsOp(
            reversed_kind(self.kind), self.schema, self.table, self.undo, self.statements
        )

    def to_diff_tuple(self) -> tuple[str, str | None, str, tuple[str, ...]]:
        """How ``alembic check`` reports it."""
        return (self.kind, self.schema, self.table, self.statements)


def reversed_kind(kind: str) -> str:
    """``add_x`` for ``remove_x`` and the other way round."""
    verb, _, what = kind.partition("_")
    return f"{'remove' if verb == 'add' else 'add'}_{what}"


@renderers.dispatch_for(TableStatementsOp)
def render_statements(autogen_context: AutogenContext, op: TableStatementsOp) -> list[str]:
    """``op.execute("...")``, one a statement."""
    return [f"op.execute({statement!r})" for statement in op.statements]


def compare_isolation(
    autogen_context: AutogenContext, upgrade_ops: ops.UpgradeOps, schemas: set[str | None]
) -> PriorityDispatchResult:
    """Row-level security, policy and grants of each table of ``schemas``, as the models say."""
    connection = autogen_context.connection
    assert connection is not None
    problems: list[str] = []
    for table in autogen_context.sorted_tables:
        if table.schema not in schemas | {connection.dialect.default_schema_name}:
            continue
        isolation = declared(table)
        if isolation is not None:
            strip_declaration(upgrade_ops.ops, table)
            problems += role_problems(connection, table, isolation)
            if problems:
                continue
        upgrade_ops.ops += changes(connection, table, isolation)
    if problems:
        raise CommandError("; ".join(problems))
    return PriorityDispatchResult.CONTINUE


def strip_declaration(operations: list[ops.MigrateOperation], table: Table) -> None:
    """Leave the declaration out of ``table``'s ``op.create_table(...)``: it becomes statements
    of its own, and a migration imports nothing of the template's models."""
    for op in operations:
        if (
            isinstance(op, ops.CreateTableOp)
            and op.table_name == table.name
            and op.schema == table.schema
        ):
            op.info = {key: value for key, value in op.info.items() if key != INFO_KEY}


def role_problems(connection: Connection, table: Table, isolation: Isolation) -> list[str]:
    """Why ``isolation.role`` could not be held to the policy, a line each."""
    role = isolation.role
    if isolation.column not in table.c:
        return [
            f"table {table.fullname} is isolated by {isolation.column}, which it does not have; "
            "name one of its columns"
        ]
    found = connection.execute(ROLE_QUERY, {"role": role}).first()
    advice = "(docs/multitenancy.md, 'Roles')"
    if found is None:
        return [
            f"role {role} of table {table.fullname} does not exist; create it as the server's "
            f"administrator, without BYPASSRLS, before migrating {advice}"
        ]
    if found.rolsuper or found.rolbypassrls:
        return [
            f"role {role} of table {table.fullname} bypasses row-level security (SUPERUSER or "
            f"BYPASSRLS); the application needs a role that does not {advice}"
        ]
    row = connection.execute(TABLE_QUERY, {"table": qualified(connection, table)}).first()
    owner = row.owner if row is not None else connection.scalar(text("SELECT current_user"))
    if owner == role:
        return [
            f"role {role} owns table {table.fullname} (the migrations' role); the application "
            f"needs a role of its own, or it could disable the policy {advice}"
        ]
    return []


def changes(
    connection: Connection, table: Table, isolation: Isolation | None
) -> list[TableStatementsOp]:
    """What brings ``table``'s row-level security, policy and grants to ``isolation``."""
    name = qualified(connection, table)
    flags = connection.execute(TABLE_QUERY, {"table": name}).first()
    secured = flags is not None and flags.relrowsecurity and flags.relforcerowsecurity
    existing = existing_policy(connection, name) if flags is not None else None
    found: list[TableStatementsOp] = []

    def add(kind: str, statements: tuple[str, ...], undo: tuple[str, ...]) -> None:
        found.append(TableStatementsOp(kind, table.schema, table.name, statements, undo))

    enable = (
        f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY",
    )
    disable = (
        f"ALTER TABLE {name} NO FORCE ROW LEVEL SECURITY",
        f"ALTER TABLE {name} DISABLE ROW LEVEL SECURITY",
    )
    if isolation is None:
        if existing is not None:
            add("remove_policy", (drop_policy(name),), (create_policy(name, existing),))
        if secured:
            add("remove_row_security", disable, enable)
        return found
    if not secured:
        add("add_row_security", enable, disable)
    wanted = policy_sql(connection, table, isolation)
    if existing is None:
        add("add_policy", (wanted,), (drop_policy(name),))
    elif declared_policy(connection, table, isolation) != existing:
        add(
            "change_policy",
            (drop_policy(name), wanted),
            (drop_policy(name), create_policy(name, existing)),
        )
    missing = [
        privilege
        for privilege in PRIVILEGES
        if flags is None
        or not connection.scalar(
            PRIVILEGE_QUERY, {"role": isolation.role, "table": name, "privilege": privilege}
        )
    ]
    if missing:
        role = quote(connection.dialect, isolation.role)
        add(
            "add_grant",
            (f"GRANT {', '.join(missing)} ON {name} TO {role}",),
            (f"REVOKE {', '.join(missing)} ON {name} FROM {role}",),
        )
    return found


def policy_sql(
    connection: Connection, table: Table, isolation: Isolation, target: str | None = None
) -> str:
    """``CREATE POLICY tenant_isolation ON table ...`` for ``isolation``, on ``target`` if given
    (a table of the same columns)."""
    dialect = connection.dialect
    column = table.c[isolation.column]
    # The setting cast to the column's type, not the column to text: the comparison then uses the
    # column's indexes and prunes partitions. A length (varchar(40)) would truncate, not compare.
    cast = re.sub(r"\(.*\)$", "", column.type.compile(dialect=dialect))
    tenant = f"NULLIF(current_setting('{TENANT_SETTING}', true), '')::{cast}"
    condition = f"{quote(dialect, column.name)} = {tenant}"
    return (
        f"CREATE POLICY {POLICY} ON {target or qualified(connection, table)} AS PERMISSIVE FOR ALL "
        f"TO {quote(dialect, isolation.role)} USING ({condition}) WITH CHECK ({condition})"
    )


def create_policy(table: str, policy: Policy) -> str:
    """The ``CREATE POLICY`` that makes ``policy`` again, from its deparsed parts."""
    kinds = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}
    sql = (
        f"CREATE POLICY {POLICY} ON {table} AS "
        f"{'PERMISSIVE' if policy.permissive else 'RESTRICTIVE'} FOR {kinds[policy.command]} "
        f"TO {', '.join(policy.roles)}"
    )
    if policy.using is not None:
        sql += f" USING ({policy.using})"
    if policy.with_check is not None:
        sql += f" WITH CHECK ({policy.with_check})"
    return sql


def drop_policy(table: str) -> str:
    """``DROP POLICY tenant_isolation ON table``."""
    return f"DROP POLICY {POLICY} ON {table}"


def existing_policy(connection: Connection, table: str) -> Policy | None:
    """The policy of ``table`` (qualified), as the server deparses it, if there is one."""
    found = connection.execute(POLICY_QUERY, {"table": table, "policy": POLICY}).first()
    if found is None:
        return None
    return Policy(
        permissive=found.permissive,
        command=found.command,
        roles=tuple(found.roles),
        using=found.using,
        with_check=found.with_check,
    )


def declared_policy(connection: Connection, table: Table, isolation: Isolation) -> Policy | None:
    """The policy of ``isolation`` on ``table``, as the server deparses it.

    It is created on an empty temporary copy of the table in a savepoint that is rolled back, so
    nothing is left behind.
    """
    scratch = f"pg_temp.{quote(connection.dialect, table.name)}"
    savepoint = connection.begin_nested()
    try:
        connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {scratch} (LIKE {qualified(connection, table)})"
        )
        connection.exec_driver_sql(policy_sql(connection, table, isolation, scratch))
        return existing_policy(connection, scratch)
    finally:
        savepoint.rollback()


def qualified(connection: Connection, table: Table) -> str:
    """``table``'s name, schema-qualified if the model names a schema, and quoted."""
    dialect = connection.dialect
    name = quote(dialect, table.name)
    return (
        f"{dialect.identifier_preparer.quote_schema(table.schema)}.{name}" if table.schema else name
    )


def quote(dialect: Dialect, name: str) -> str:
    """``name`` as an identifier in SQL, quoted only if it needs to be."""
    return str(dialect.identifier_preparer.quote(name))


def setup(plugin: Plugin) -> None:
    """Register :func:`compare_isolation`; Alembic's plugin entry point."""
    # Last among the comparisons of a run's schemas: after Alembic's, whose new tables the
    # statements come after.
    plugin.add_autogenerate_comparator(
        compare_isolation, "schema", qualifier="postgresql", priority=DispatchPriority.LAST
    )


setup(Plugin(PLUGIN_NAME))
