"""Enum values added to or removed from a model migrate with no hand edit (alembic-postgresql-enum).

The files are written with the post-write hooks and must pass ruff and mypy as they are.
"""

from __future__ import annotations

import enum
from pathlib import Path

from sqlalchemy import BigInteger, Column, Enum, MetaData, Table
from sqlalchemy.engine import Engine

from ..revisions import passes_lint_and_types
from .project import Project


def ticket(*states: str) -> MetaData:
    """Table ``ticket`` whose ``state`` is an enum type with ``states``."""
    metadata = MetaData()
    State = enum.Enum("State", {name: name for name in states})  # type: ignore[misc]
    Table(
        "ticket",
        metadata,
        Column("id", BigInteger, primary_key=True),
        Column("state", Enum(State, name="ticket_state")),
    )
    return metadata


def labels(project: Project) -> list[str]:
    """The labels of ``ticket_state`` in the database, in order."""
    return [
        str(label)
        for (label,) in project.fetch(
            "SELECT enumlabel FROM pg_enum WHERE enumtypid = to_regtype('ticket_state') "
            "ORDER BY enumsortorder"
        )
    ]


def test_values_added_and_removed_are_migrated(module_engine: Engine, tmp_path: Path) -> None:
    project = Project(module_engine, tmp_path / "migrations" / "versions", hooks=True)
    try:
        project.revise(ticket("open", "closed"))
        project.upgrade()
        project.execute("INSERT INTO ticket VALUES (1, 'open'), (2, 'closed')")
        assert labels(project) == ["open", "closed"]

        generated = project.revise(ticket("open", "closed", "waiting"))
        upgrade, downgrade = generated.split("def downgrade")
        assert "op.add_enum_value(" in upgrade  # ALTER TYPE ... ADD VALUE: no rebuild of the type
        assert "op.sync_enum_values(" in downgrade
        project.upgrade()
        assert labels(project) == ["open", "closed", "waiting"]
        project.settled(ticket("open", "closed", "waiting"))

        project.execute("DELETE FROM ticket WHERE state = 'closed'")
        project.revise(ticket("open", "waiting"))
        project.upgrade()
        assert labels(project) == ["open", "waiting"]
        assert project.fetch("SELECT id, state::text FROM ticket") == [(1, "open")]
        project.settled(ticket("open", "waiting"))

        files = sorted(map(str, project.versions.glob("*.py")))
        passes_lint_and_types(*files)

        project.downgrade("base")
        assert project.fetch("SELECT to_regtype('ticket_state')") == [(None,)]
    finally:
        project.drop_all_tables()
