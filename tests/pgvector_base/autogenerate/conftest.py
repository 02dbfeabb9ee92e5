"""Fixtures: a :class:`Project` on a database that the tests of a module share, one at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL

from .project import Project


@pytest.fixture(scope="module")
def module_engine(create_database: Callable[[], URL]) -> Iterator[Engine]:
    """An engine on a database for the tests of one module; each test leaves it empty."""
    engine = create_engine(create_database())
    yield engine
    engine.dispose()


@pytest.fixture
def project(module_engine: Engine, tmp_path: Path) -> Iterator[Project]:
    """A project with no migrations yet on the module's database, whose tables go afterwards."""
    project = Project(module_engine, tmp_path / "versions")
    yield project
    project.drop_all_tables()
