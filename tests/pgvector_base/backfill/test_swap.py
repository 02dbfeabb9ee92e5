"""``reembed.swap_columns``: two columns' names exchanged in one transaction, or not at all when
another session holds the table longer than the swap's ``lock_timeout``."""

from __future__ import annotations

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from pgvector_base.migration import reembed


def column_types(engine: Engine) -> dict[str, str]:
    """``backfill_doc``'s vector columns and their types."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'backfill_doc'::regclass AND attname LIKE 'embedding%'"
            )
        )
        return {str(name): str(type_) for name, type_ in rows}


def swap(engine: Engine, lock_timeout: str = "2s") -> None:
    """What a migration runs."""
    with (
        engine.begin() as connection,
        Operations.context(MigrationContext.configure(connection)),
    ):
        reembed.swap_columns("backfill_doc", "embedding", "embedding_v2", lock_timeout=lock_timeout)


def test_the_swap_exchanges_the_names_and_undoes_itself(doc_engine: Engine) -> None:
    before = {"embedding": "vector(8)", "embedding_v2": "vector(16)"}
    assert column_types(doc_engine) == before
    swap(doc_engine)
    assert column_types(doc_engine) == {"embedding": "vector(16)", "embedding_v2": "vector(8)"}
    swap(doc_engine)
    assert column_types(doc_engine) == before


def test_a_held_table_makes_the_swap_give_up_and_change_nothing(doc_engine: Engine) -> None:
    with doc_engine.connect() as holder:
        holder.execute(text("LOCK TABLE backfill_doc IN ACCESS SHARE MODE"))
        with pytest.raises(OperationalError, match="lock timeout"):
            swap(doc_engine, lock_timeout="50ms")
        holder.rollback()
    assert column_types(doc_engine) == {"embedding": "vector(8)", "embedding_v2": "vector(16)"}
