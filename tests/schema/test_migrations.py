"""The shipped migrations on a real database: pytest-alembic's built-in checks and the example.

pytest-alembic runs each built-in test on a fresh database (the ``alembic_engine`` fixture) and
hands its connection to ``env.py`` through ``config.attributes["connection"]``.
"""

from __future__ import annotations

from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)

__all__ = [
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]
