"""Primary keys compare as PostgreSQL stores them: NOT NULL, with no UNIQUE constraint of their own.

PostgreSQL makes every primary key column NOT NULL and refuses ``DROP NOT NULL`` on one, so
Alembic's own comparison reported such a column in every ``alembic check`` and wrote an
``alter_column(nullable=True)`` that ``upgrade`` could not run.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import BigInteger, Column, MetaData, Table, Text

from .project import Project


def single() -> MetaData:
    """``item`` whose primary key ``id`` is declared nullable."""
    metadata = MetaData()
    Table(
        "item",
        metadata,
        Column("id", BigInteger, primary_key=True, nullable=True),
        Column("body", Text),
    )
    return metadata


def composite() -> MetaData:
    """``item`` with a two-column primary key, one of its columns declared nullable."""
    metadata = MetaData()
    Table(
        "item",
        metadata,
        Column("tenant", Text, primary_key=True),
        Column("id", BigInteger, primary_key=True, nullable=True),
        Column("body", Text),
    )
    return metadata


@pytest.mark.parametrize("models", [single, composite])
def test_a_nullable_primary_key_is_compared_as_stored(
    project: Project, models: Callable[[], MetaData]
) -> None:
    project.revise(models())
    project.upgrade()
    assert project.fetch(
        "SELECT attname, attnotnull FROM pg_attribute WHERE attrelid = 'item'::regclass "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
    ) == [(column.name, column.primary_key) for column in models().tables["item"].columns]
    project.settled(models())
    project.downgrade()
    assert project.tables() == ["public.alembic_version"]


def test_a_unique_primary_key_is_compared_as_stored(project: Project) -> None:
    # PostgreSQL creates no UNIQUE constraint on a primary key's own columns; Alembic used to find
    # it missing in every `alembic check`.
    metadata = MetaData()
    Table("chat", metadata, Column("id", Text, primary_key=True, unique=True))
    project.revise(metadata)
    project.upgrade()
    assert project.fetch(
        "SELECT contype FROM pg_constraint WHERE conrelid = 'chat'::regclass AND contype <> 'n'"
    ) == [("p",)]
    project.settled(metadata)
