"""The ``vector`` extension in a schema off the ``search_path`` stops a run with one line, first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.util import CommandError
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, Column, MetaData, Table, create_engine
from sqlalchemy.engine import URL

from .project import Project


def test_the_extension_schema_must_be_on_the_search_path(
    create_database: Callable[[], URL], tmp_path: Path
) -> None:
    url = create_database()
    engine = create_engine(url)
    project = Project(engine, tmp_path / "versions")
    metadata = MetaData()
    Table("item", metadata, Column("id", BigInteger, primary_key=True), Column("e", VECTOR(3)))
    # As managed services do: the extension in a schema of its own.
    project.execute("CREATE SCHEMA extensions")
    project.execute("CREATE EXTENSION vector SCHEMA extensions")

    with pytest.raises(CommandError) as failure:
        project.upgrade()
    assert str(failure.value) == (
        "the vector extension is installed in schema extensions, which is not on the search_path "
        f'("$user", public) of user {url.username} in database {url.database}; add it: ALTER ROLE '
        f'{url.username} SET search_path = "$user", public, extensions (or ALTER DATABASE '
        f"{url.database} SET search_path = ...), then run again"
    )
    assert project.fetch("SELECT to_regclass('alembic_version')") == [(None,)]

    project.execute(
        f'ALTER DATABASE "{url.database}" SET search_path = "$user", public, extensions'
    )
    engine.dispose()
    project.revise(metadata)
    project.upgrade()
    project.settled(metadata)
    assert project.fetch(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'item'::regclass AND attname = 'e'"
    ) == [("vector(3)",)]
    engine.dispose()
