"""Fixtures for tests through a real PgBouncer (see ``tests/pgvector_base/pgbouncer.py``).

``pgbouncer(...)`` starts one in front of the test server, with :func:`pgbouncer.start`'s keyword
arguments, and stops it at the end of the test. Without a ``pgbouncer`` binary the tests skip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from sqlalchemy.engine import URL

from tests.pgvector_base import pgbouncer as harness

StartPgBouncer = Callable[..., harness.PgBouncer]


@pytest.fixture
def pgbouncer(server_url: URL) -> Iterator[StartPgBouncer]:
    """A factory: ``pgbouncer(pool_mode="session", pool_size=4)`` runs one for this test."""
    if harness.binary() is None:
        pytest.skip(harness.SKIP_REASON)
    with ExitStack() as stack:

        def start(**options: Any) -> harness.PgBouncer:
            return stack.enter_context(harness.start(server_url, **options))

        yield start
