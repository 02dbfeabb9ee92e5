"""Fixtures of the example's tests: a database with the example's migrations applied."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def migrated_database_url(create_database: Callable[[], URL]) -> URL:
    """A database for the tests of one module, with the project's migrations applied."""
    url = create_database()
    config = Config(str(REPOSITORY_ROOT / "alembic.ini"))
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    engine.dispose()
    return url
