"""A library that creates the ``vector`` extension while the first migration runs.

LangChain's and LlamaIndex's stores run ``CREATE EXTENSION IF NOT EXISTS vector`` when they start,
often at the same moment as the first deploy's ``alembic upgrade head``. The migration creates the
extension, commits it, and only then starts its own transaction: the library's statement finds it
there at once instead of waiting for the whole migration and then failing on the catalog's unique
index. The migration is held at a gate (see ``gates.py``) inside its transaction while
the library's statement runs; the test waits on what ``pg_stat_activity`` shows, never on time.
"""

from __future__ import annotations

import threading

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from ..revisions import ALEMBIC_TIMEOUT, Migrations
from .gates import (
    CREATE_WIDGET,
    SLOW_MIGRATION,
    first_value,
    gate_closed,
    poll,
    wait_at_the_gate,
)

LIBRARY_STATEMENT = "CREATE EXTENSION IF NOT EXISTS vector"


class Library(threading.Thread):
    """A library starting up: creates the extension on a connection of its own, and commits."""

    def __init__(self, url: URL) -> None:
        super().__init__(daemon=True)
        self.engine = create_engine(url, poolclass=NullPool)
        self.pid: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.engine.connect() as connection:
                self.pid = connection.scalar(text("SELECT pg_backend_pid()"))
                connection.execute(text(LIBRARY_STATEMENT))
                connection.commit()
        except BaseException as error:  # reported by the test's assertion
            self.error = error

    def state(self, url: URL) -> str | None:
        """``"done"`` once the statement ended, ``"waiting"`` while it waits for a lock."""
        if not self.is_alive():
            return "done"
        if self.pid is None:
            return None
        waiting = first_value(
            url,
            f"SELECT wait_event_type FROM pg_stat_activity WHERE pid = {self.pid} "
            "AND state = 'active' AND wait_event_type = 'Lock'",
        )
        return "waiting" if waiting else None


def test_library_creating_the_extension_meanwhile_neither_waits_nor_fails(
    migrations: Migrations, fresh_database_url: URL
) -> None:
    migrations.add("widget", CREATE_WIDGET)
    migrations.add("slow", SLOW_MIGRATION)
    with gate_closed(fresh_database_url):
        upgrade = migrations.start("upgrade", "head")
        wait_at_the_gate(fresh_database_url, "the migration at the gate")
        library = Library(fresh_database_url)
        library.start()
        state = poll(lambda: library.state(fresh_database_url), "the library's statement")
    stdout, stderr = upgrade.communicate(timeout=ALEMBIC_TIMEOUT)
    library.join(timeout=ALEMBIC_TIMEOUT)
    library.engine.dispose()
    assert state == "done", "the library waited for the migration's transaction"
    assert library.error is None, library.error
    assert upgrade.returncode == 0, stdout + stderr
    assert first_value(fresh_database_url, "SELECT version_num FROM alembic_version") == (
        migrations.head
    )
