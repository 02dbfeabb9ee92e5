"""One runner on a direct connection: what it fills, what it leaves, and how it refuses.

The oracle is the embed function itself: every stored vector must equal, exactly, the embedding of
the row's source as it is now (``conftest.wrong_rows``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError

from pgvector_base.backfill import BackfillError, backfill, main
from pgvector_base.database import DATABASE_URL_ENV

from ..reliability.servers import free_port
from .conftest import REPOSITORY_ROOT, fill, stored, wrong_rows
from .embedder import NEW_DIM, Doc, Note, Passage, embed, vectors


def null_count(engine: Engine) -> int:
    """Rows whose new embedding is NULL."""
    with engine.connect() as connection:
        return int(
            connection.scalar(text("SELECT count(*) FROM backfill_doc WHERE embedding_v2 IS NULL"))
        )


def test_every_row_is_embedded_once_and_a_rerun_finds_nothing(doc_engine: Engine) -> None:
    fill(doc_engine, 1, 3000)
    result = backfill(doc_engine, Doc.embedding_v2, ["body"], embed, batch_size=500)
    assert (result.rows, result.calls, result.passes, result.remaining) == (3000, 6, 1, 0)
    assert wrong_rows(doc_engine) == []
    again = backfill(doc_engine, Doc.embedding_v2, ["body"], embed, batch_size=500)
    assert (again.rows, again.calls) == (0, 0)


def test_a_changed_source_is_embedded_again_unless_its_writer_embedded_it(
    doc_engine: Engine,
) -> None:
    fill(doc_engine, 1, 100)
    backfill(doc_engine, Doc.embedding_v2, ["body"], embed)
    with doc_engine.begin() as connection:
        # Old code: changes the source only. The trigger clears the stale embedding.
        connection.execute(text("UPDATE backfill_doc SET body = body || ' changed' WHERE id <= 10"))
        # New code: writes the source and its new embedding together, which the trigger keeps.
        connection.execute(
            text("UPDATE backfill_doc SET body = 'doc 11 new', embedding_v2 = :v WHERE id = 11"),
            {"v": str(vectors(["doc 11 new"])[0].tolist())},
        )
        # Not the source: nothing to redo.
        connection.execute(text("UPDATE backfill_doc SET embedding = NULL WHERE id = 12"))
    assert null_count(doc_engine) == 10
    assert backfill(doc_engine, Doc.embedding_v2, ["body"], embed).rows == 10
    assert wrong_rows(doc_engine) == []


def test_text_keys_several_sources_and_halfvec(doc_engine: Engine) -> None:
    keys = [f"note-{n:03}" for n in range(250)]
    with doc_engine.begin() as connection:
        connection.execute(
            insert(Note), [{"key": key, "title": key.upper(), "body": key} for key in keys]
        )
    calls: list[list[Any]] = []

    def embed_pairs(pairs: list[Any]) -> npt.NDArray[np.float32]:
        calls.append(pairs)
        return vectors([f"{title}|{body}" for title, body in pairs])

    result = backfill(doc_engine, Note.embedding_v2, ["title", "body"], embed_pairs, batch_size=100)
    assert result.rows == 250
    assert calls[0][:2] == [("NOTE-000", "note-000"), ("NOTE-001", "note-001")]
    with doc_engine.connect() as connection:
        stored_notes = connection.execute(select(Note.key, Note.embedding_v2)).all()
    assert len(stored_notes) == 250
    for key, found in stored_notes:
        expected = vectors([f"{key.upper()}|{key}"])[0].astype(np.float16)
        assert np.array_equal(np.asarray(found, np.float16), expected), key


def test_uuid_keys(doc_engine: Engine) -> None:
    # PostgreSQL has no max(uuid): a pass's bound must not depend on it.
    bodies = {uuid.uuid4(): f"passage {n}" for n in range(250)}
    with doc_engine.begin() as connection:
        connection.execute(insert(Passage), [{"id": k, "body": b} for k, b in bodies.items()])
    result = backfill(doc_engine, Passage.embedding_v2, ["body"], embed, batch_size=100)
    assert (result.rows, result.calls, result.remaining) == (250, 3, 0)
    with doc_engine.connect() as connection:
        stored_passages = connection.execute(select(Passage.id, Passage.embedding_v2)).all()
    assert len(stored_passages) == 250
    for key, found in stored_passages:
        assert np.array_equal(np.asarray(found, np.float32), vectors([bodies[key]])[0]), key


def test_a_table_without_the_trigger_is_warned_about(
    doc_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    fill(doc_engine, 1, 10)
    backfill(doc_engine, Doc.embedding_v2, ["body"], embed)
    assert [r for r in caplog.records if r.name == "pgvector_base.backfill"] == []
    with doc_engine.begin() as connection:
        connection.execute(text("DROP TRIGGER reembed_embedding_v2 ON backfill_doc"))
    backfill(doc_engine, Doc.embedding_v2, ["body"], embed)
    assert [r.getMessage() for r in caplog.records if r.name == "pgvector_base.backfill"] == [
        "backfill_doc has no trigger reembed_embedding_v2: a row whose source changes after it "
        "is embedded keeps its old embedding; add track_source_changes to the expand migration "
        "(docs/embedding-models.md)"
    ]


def test_rows_without_a_source_are_left_empty(doc_engine: Engine) -> None:
    fill(doc_engine, 1, 20)
    with doc_engine.begin() as connection:
        connection.execute(text("UPDATE backfill_doc SET body = NULL WHERE id > 15"))
    result = backfill(doc_engine, Doc.embedding_v2, ["body"], embed)
    assert (result.rows, result.remaining) == (15, 0)
    assert [key for key, (_, found) in stored(doc_engine).items() if found is None] == [
        16,
        17,
        18,
        19,
        20,
    ]


def broken(at: str, change: str) -> Any:
    """An embed function whose vector for source ``at`` is broken as ``change`` says."""

    def embed_broken(sources: list[Any]) -> npt.NDArray[np.float32] | list[list[float]]:
        result = vectors(sources)
        if at not in sources:
            return result
        index = sources.index(at)
        if change == "dimensions":
            rows: list[list[float]] = result.tolist()
            rows[index] = rows[index][:-1]
            return rows
        result[index, 3] = np.nan
        return result

    return embed_broken


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ("dimensions", f"returned {NEW_DIM - 1} dimensions; backfill_doc.embedding_v2 holds 16"),
        ("nan", "returned a vector holding NaN or infinity"),
    ],
)
def test_a_vector_that_cannot_be_stored_names_its_row_and_writes_nothing_of_its_batch(
    doc_engine: Engine, change: str, what: str
) -> None:
    fill(doc_engine, 1, 20)
    with pytest.raises(BackfillError) as raised:
        backfill(doc_engine, Doc.embedding_v2, ["body"], broken("doc 7 v0", change), batch_size=5)
    assert str(raised.value) == (
        f"backfill_doc.embedding_v2: for row id=7, the embed function {what}; nothing of its "
        "batch of 5 rows was written; fix the embed function (or the column) and run again"
    )
    filled = sorted(key for key, (_, found) in stored(doc_engine).items() if found is not None)
    assert filled == [1, 2, 3, 4, 5]


def flaky(failures: int) -> tuple[Any, list[int]]:
    """An embed function that raises ConnectionError ``failures`` times first; and its calls."""
    calls: list[int] = []

    def embed_flaky(sources: list[Any]) -> npt.NDArray[np.float32]:
        calls.append(len(sources))
        if len(calls) <= failures:
            raise ConnectionError("the embedding API is busy")
        return vectors(sources)

    return embed_flaky, calls


def test_transient_failures_are_retried_and_the_run_completes(doc_engine: Engine) -> None:
    fill(doc_engine, 1, 30)
    embed_flaky, calls = flaky(2)
    result = backfill(
        doc_engine,
        Doc.embedding_v2,
        ["body"],
        embed_flaky,
        batch_size=10,
        transient=(ConnectionError,),
        backoff=0.001,
    )
    assert (result.rows, result.calls, calls) == (30, 5, [10, 10, 10, 10, 10])
    assert wrong_rows(doc_engine) == []


def test_a_failure_past_the_retries_stops_in_one_line(doc_engine: Engine) -> None:
    fill(doc_engine, 1, 30)
    embed_flaky, calls = flaky(10)
    with pytest.raises(BackfillError) as raised:
        backfill(
            doc_engine,
            Doc.embedding_v2,
            ["body"],
            embed_flaky,
            batch_size=10,
            transient=(ConnectionError,),
            retries=2,
            backoff=0.001,
        )
    assert str(raised.value) == (
        "backfill_doc.embedding_v2: a batch failed 3 times in a row (ConnectionError: the "
        "embedding API is busy); nothing of it was written; run again to go on from there"
    )
    assert len(calls) == 3
    assert null_count(doc_engine) == 30


def test_a_lost_connection_named_transient_is_retried(doc_engine: Engine) -> None:
    fill(doc_engine, 1, 30)
    killed: list[int] = []

    def embed_and_lose_the_connection(sources: list[Any]) -> npt.NDArray[np.float32]:
        if not killed:
            # The runner's backend is the one holding its batch's transaction open.
            with doc_engine.connect() as connection:
                killed.extend(
                    connection.scalars(
                        text(
                            "SELECT pg_terminate_backend(pid), pid FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                            "AND state = 'idle in transaction'"
                        )
                    )
                )
        return vectors(sources)

    result = backfill(
        doc_engine,
        Doc.embedding_v2,
        ["body"],
        embed_and_lose_the_connection,
        batch_size=10,
        transient=(OperationalError,),
        backoff=0.001,
    )
    assert killed == [True]
    assert (result.rows, result.calls) == (30, 4)
    assert wrong_rows(doc_engine) == []


def test_an_exception_not_named_transient_is_not_retried(doc_engine: Engine) -> None:
    fill(doc_engine, 1, 30)
    embed_flaky, calls = flaky(1)
    with pytest.raises(ConnectionError):
        backfill(doc_engine, Doc.embedding_v2, ["body"], embed_flaky, batch_size=10)
    assert len(calls) == 1


def test_the_rate_limit_spaces_the_batches(doc_engine: Engine) -> None:
    fill(doc_engine, 1, 200)
    result = backfill(
        doc_engine, Doc.embedding_v2, ["body"], embed, batch_size=50, rows_per_second=400
    )
    # Three batches after the first wait 50/400 s each: a lower bound, whatever the machine.
    assert result.rows == 200
    assert result.seconds >= 3 * 50 / 400


def run_command(url: URL, *arguments: str) -> subprocess.CompletedProcess[str]:
    """``pgvector-backfill`` as a user runs it, on ``url``."""
    return subprocess.run(
        [sys.executable, "-m", "pgvector_base.backfill", *arguments],
        cwd=REPOSITORY_ROOT,
        env={**os.environ, DATABASE_URL_ENV: url.render_as_string(hide_password=False)},
        capture_output=True,
        text=True,
        check=False,
    )


TARGET = "tests.pgvector_base.backfill.embedder:Doc.embedding_v2"
EMBED = "tests.pgvector_base.backfill.embedder:embed"


def test_the_command_fills_the_column_and_says_what_it_did(
    doc_url: URL, doc_engine: Engine
) -> None:
    fill(doc_engine, 1, 1200)
    done = run_command(doc_url, TARGET, "--source", "body", "--embed", EMBED, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1].startswith(
        "pgvector-backfill: 1200 rows embedded in 3 calls over 1 pass, "
    )
    assert done.stderr.splitlines()[-1].endswith("; 0 rows still need work")
    assert wrong_rows(doc_engine) == []


def test_the_command_runs_an_async_embed_function_on_the_async_engine(
    doc_url: URL,
    doc_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fill(doc_engine, 1, 700)
    monkeypatch.setenv(DATABASE_URL_ENV, doc_url.render_as_string(hide_password=False))
    embed_async = "tests.pgvector_base.backfill.embedder:embed_async"
    assert main([TARGET, "--source", "body", "--embed", embed_async, "--no-progress"]) == 0
    assert "700 rows embedded in 2 calls over 1 pass" in capsys.readouterr().err
    assert wrong_rows(doc_engine) == []


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (
            [TARGET, "--source", "title", "--embed", EMBED],
            "--source title is not a column of backfill_doc; it has id, body, embedding, "
            "embedding_v2",
        ),
        (
            [TARGET, "--source", "body", "--embed", "tests.pgvector_base.backfill.embedder:nope"],
            "--embed 'tests.pgvector_base.backfill.embedder:nope': "
            "tests.pgvector_base.backfill.embedder has no nope",
        ),
        (
            [
                "tests.pgvector_base.backfill.embedder:Doc.body",
                "--source",
                "id",
                "--embed",
                EMBED,
            ],
            "backfill_doc.body must be a VECTOR(n) or HALFVEC(n) column to backfill, not TEXT",
        ),
        (
            ["tests.pgvector_base.backfill.embedder:Doc", "--source", "body", "--embed", EMBED],
            "<class 'tests.pgvector_base.backfill.embedder.Doc'> is not a column of a table; "
            "name one: Model.column",
        ),
        (
            [
                TARGET,
                "--source",
                "body",
                "--embed",
                "tests.pgvector_base.backfill.embedder:NEW_DIM",
            ],
            "--embed 'tests.pgvector_base.backfill.embedder:NEW_DIM' names a int, not a function",
        ),
    ],
    ids=["unknown source", "unknown function", "not a vector", "a model", "not callable"],
)
def test_the_command_refuses_bad_arguments_in_one_line(
    doc_url: URL,
    arguments: Sequence[str],
    error: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV, doc_url.render_as_string(hide_password=False))
    assert main(arguments) == 1
    refused = capsys.readouterr()
    assert refused.out == ""
    assert refused.err.splitlines() == [f"pgvector-backfill: error: {error}"]


def test_an_unreachable_server_is_one_line_without_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    monkeypatch.setenv(DATABASE_URL_ENV, f"postgresql://app:Secret-pw-42@127.0.0.1:{port}/app")
    target = "tests.pgvector_base.backfill.embedder:Doc.embedding_v2"
    embed_name = "tests.pgvector_base.backfill.embedder:embed"
    assert main([target, "--source", "body", "--embed", embed_name, "--no-progress"]) == 1
    refused = capsys.readouterr()
    assert "Secret-pw-42" not in refused.out + refused.err
    assert refused.err.splitlines() == [
        f"pgvector-backfill: error: cannot connect to PostgreSQL at 127.0.0.1:{port} "
        "(database 'app'): Connection refused; is the server running? (docker compose up -d db, "
        "or unset DATABASE_URL for the embedded server)"
    ]


def test_a_missing_column_points_at_the_expand_migration(
    doc_url: URL,
    doc_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with doc_engine.begin() as connection:
        connection.execute(text("ALTER TABLE backfill_doc DROP COLUMN embedding_v2"))
    monkeypatch.setenv(DATABASE_URL_ENV, doc_url.render_as_string(hide_password=False))
    assert main([TARGET, "--source", "body", "--embed", EMBED]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "pgvector-backfill: error: backfill_doc has no column embedding_v2 in the database; run "
        "the expand migration first (alembic upgrade head; docs/embedding-models.md)"
    ]
