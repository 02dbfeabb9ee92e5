"""The plan of a statement that a search sent: how the search tests see the server use an index."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event


def plan(engine: Engine, run: Callable[[], object], *setup: str, marker: str = "ORDER BY") -> str:
    """EXPLAIN of the one statement with ``marker`` in it that ``run`` sends through ``engine``,
    with the parameters it sent, after the ``setup`` statements in the same transaction."""
    sent: list[tuple[str, Any]] = []

    def capture(*args: Any) -> None:
        if marker in args[2]:
            sent.append((args[2], args[3]))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    ((statement, parameters),) = sent
    with engine.begin() as connection:
        for line in setup:
            connection.exec_driver_sql(line)
        return "\n".join(connection.exec_driver_sql(f"EXPLAIN {statement}", parameters).scalars())
