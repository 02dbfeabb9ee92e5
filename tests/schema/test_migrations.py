"""The team's migrations on a real database: pytest-alembic's built-in checks.

pytest-alembic runs each built-in test on a fresh database (the ``alembic_engine`` fixture) and
hands its connection to ``env.py`` through ``config.attributes["connection"]``. They hold for any
models, and for none: an empty ``models.py`` with no migrations upgrades, and checks, clean.
"""

from __future__ import annotations

import pytest
from pytest_alembic import MigrationContext
from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_up_down_consistency,
    test_upgrade,
)
from pytest_alembic.tests import test_single_head_revision as single_head_revision

__all__ = [
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]


@pytest.mark.alembic
def test_single_head_revision(alembic_runner: MigrationContext) -> None:
    """pytest-alembic's test, once there is a migration: a history of none has no head at all."""
    if not alembic_runner.heads:
        pytest.skip("no migrations yet: migrations/versions is empty")
    single_head_revision(alembic_runner)
