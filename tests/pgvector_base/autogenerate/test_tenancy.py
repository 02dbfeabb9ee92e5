"""Row-level security declared on the model: rendered, compared and migrated by autogenerate.

The oracle is the server's catalog (``pg_class``'s flags, ``pg_policies``, ``has_table_privilege``)
and what the server lets a role see.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, Column, Engine, Index, Integer, MetaData, String, Table, text

from pgvector_base.migration import partitions, tenancy

from .project import REPOSITORY_ROOT, Project

MakeRole = Callable[..., str]


@pytest.fixture
def make_role(module_engine: Engine) -> Iterator[MakeRole]:
    """A factory of roles of the server (``options``: ``BYPASSRLS``...), dropped afterwards."""
    made: list[str] = []

    def make(options: str = "") -> str:
        name = f"app_{uuid.uuid4().hex[:8]}"
        with module_engine.begin() as connection:
            connection.execute(text(f"CREATE ROLE {name} LOGIN {options}"))
        made.append(name)
        return name

    yield make
    with module_engine.begin() as connection:
        for name in made:
            connection.execute(text(f"DROP OWNED BY {name}"))
            connection.execute(text(f"DROP ROLE {name}"))


def documents(role: str, *, column: str = "tenant_id", isolated: bool = True) -> MetaData:
    """``document``, partitioned by tenant, its rows isolated by ``column`` for ``role``."""
    metadata = MetaData()
    declaration = partitions.by_list("tenant_id", {"acme": ["acme"], "globex": ["globex"]})
    document = Table(
        "document",
        metadata,
        Column("tenant_id", String(40), primary_key=True),
        Column("id", BigInteger, primary_key=True),
        Column("owner_tenant", String(40)),
        Column("embedding", VECTOR(3)),
        **(
            tenancy.isolated_by(column, role=role, partitions=declaration)
            if isolated
            else declaration
        ),
    )
    Index(
        "ix_document_embedding",
        document.c.embedding,
        postgresql_using="hnsw",
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )
    return metadata


def security(project: Project, table: str = "document") -> tuple[bool, bool]:
    """Whether ``table`` has row-level security enabled, and forced."""
    ((enabled, forced),) = project.fetch(
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = to_regclass(:t)",
        t=table,
    )
    return bool(enabled), bool(forced)


def policies(project: Project) -> list[tuple[str, list[str], str, str]]:
    """Name, roles, command and ``USING`` of each policy of ``document``."""
    return [
        (str(name), list(roles), str(command), str(qual))
        for name, roles, command, qual in project.fetch(
            "SELECT policyname, roles, cmd, qual FROM pg_policies WHERE tablename = 'document'"
        )
    ]


def privileges(project: Project, role: str) -> list[str]:
    """The privileges of ``role`` on ``document``, of those the declaration grants."""
    return [
        privilege
        for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")
        if project.fetch(
            "SELECT has_table_privilege(:role, 'document', :privilege)",
            role=role,
            privilege=privilege,
        )[0][0]
    ]


def visible(project: Project, role: str, tenant: str | None) -> list[tuple[str, int]]:
    """The rows of ``document`` that ``role`` sees with ``tenant`` set (or none)."""
    with project.engine.connect() as connection:
        connection.execute(text(f"SET LOCAL ROLE {role}"))
        if tenant is not None:
            connection.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": tenant})
        return [
            (str(tenant_id), int(id_))
            for tenant_id, id_ in connection.execute(
                text("SELECT tenant_id, id FROM document ORDER BY id")
            )
        ]


def test_isolation_round_trip(project: Project, make_role: MakeRole) -> None:
    role = make_role()
    generated = project.revise(documents(role))
    assert "ENABLE ROW LEVEL SECURITY" in generated
    assert "FORCE ROW LEVEL SECURITY" in generated
    assert "pgvector_base" not in generated  # the declaration is not written into create_table
    project.upgrade()
    assert security(project) == (True, True)
    assert [(name, roles, command) for name, roles, command, _ in policies(project)] == [
        ("tenant_isolation", [role], "ALL")
    ]
    assert privileges(project, role) == ["SELECT", "INSERT", "UPDATE", "DELETE"]
    project.settled(documents(role))

    project.execute(
        "INSERT INTO document VALUES ('acme', 1, 'acme', '[1,0,0]'), "
        "('globex', 2, 'globex', '[0,1,0]'), ('acme', 3, 'globex', '[0,0,1]')"
    )
    assert visible(project, role, "acme") == [("acme", 1), ("acme", 3)]
    assert visible(project, role, "globex") == [("globex", 2)]
    assert visible(project, role, None) == []
    assert visible(project, role, "") == []

    # Another column: the policy is dropped and created again, and the downgrade restores it.
    project.revise(documents(role, column="owner_tenant"))
    project.upgrade()
    assert visible(project, role, "globex") == [("globex", 2), ("acme", 3)]
    project.settled(documents(role, column="owner_tenant"))
    project.downgrade()
    assert visible(project, role, "globex") == [("globex", 2)]
    project.upgrade()

    # No declaration: no policy, no row-level security (the grants stay).
    project.revise(documents(role, isolated=False))
    project.upgrade()
    assert security(project) == (False, False)
    assert policies(project) == []
    project.settled(documents(role, isolated=False))

    project.downgrade("base")
    assert project.tables() == ["public.alembic_version"]
    project.upgrade()
    assert security(project) == (False, False)
    project.downgrade("-1")
    assert security(project) == (True, True)
    assert visible(project, role, "globex") == []  # the rows went with the downgrade to base


def test_roles_that_would_escape_the_policy_are_refused(
    project: Project, make_role: MakeRole
) -> None:
    assert "does not exist" in project.refused(documents("nobody_of_this_name"))
    bypassing = make_role("BYPASSRLS")
    assert "bypasses row-level security" in project.refused(documents(bypassing))
    ((superuser,),) = project.fetch("SELECT current_user")
    assert "bypasses row-level security" in project.refused(documents(str(superuser)))


def test_an_integer_tenant_casts_the_setting_not_the_column(
    project: Project, make_role: MakeRole
) -> None:
    role = make_role()
    metadata = MetaData()
    Table(
        "account_note",
        metadata,
        Column("account_id", Integer, primary_key=True),
        Column("id", BigInteger, primary_key=True),
        **tenancy.isolated_by("account_id", role=role),
    )
    project.revise(metadata)
    project.upgrade()
    ((qual,),) = project.fetch("SELECT qual FROM pg_policies WHERE tablename = 'account_note'")
    assert str(qual).startswith("(account_id = (NULLIF(current_setting(")
    project.execute("INSERT INTO account_note VALUES (7, 1), (8, 2)")
    with project.engine.connect() as connection:
        connection.execute(text(f"SET LOCAL ROLE {role}"))
        assert connection.execute(text("SELECT id FROM account_note")).all() == []
        connection.execute(text("SELECT set_config('app.tenant_id', '7', true)"))
        assert connection.execute(text("SELECT id FROM account_note")).all() == [(1,)]
    project.settled(metadata)


def test_the_generated_file_passes_ruff_and_mypy(
    module_engine: Engine, tmp_path: Path, make_role: MakeRole
) -> None:
    role = make_role()
    project = Project(module_engine, tmp_path / "migrations" / "versions", hooks=True)
    try:
        project.revise(documents(role))
        (script,) = project.versions.glob("*.py")
        for tool in (["ruff", "check"], ["ruff", "format", "--check"], ["mypy"]):
            result = subprocess.run(
                [sys.executable, "-m", *tool, str(script)],
                cwd=REPOSITORY_ROOT,
                capture_output=True,
                text=True,
                check=False,
                timeout=300,
            )
            assert result.returncode == 0, result.stdout + result.stderr
    finally:
        project.drop_all_tables()
