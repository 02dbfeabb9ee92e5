"""``pgvector-app load`` and ``query`` end to end, and their one-line errors."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

from app.cli import main
from app.models import EMBEDDING_DIM
from pgvector_base.database import DATABASE_URL_ENV

VECTORS = np.random.default_rng(6).standard_normal((20, EMBEDDING_DIM)).tolist()


@pytest.fixture(scope="module")
def engine(migrated_database_url: URL) -> Iterator[Engine]:
    """The module's database, with the product table from the migrations."""
    engine = create_engine(migrated_database_url)
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def database(engine: Engine, migrated_database_url: URL, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line uses the module's database, with an empty product table."""
    monkeypatch.setenv(DATABASE_URL_ENV, migrated_database_url.render_as_string(False))
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE product"))


def write_products(path: Path, *lines: str) -> Path:
    """A JSON Lines file of the 20 test products, followed by ``lines``."""
    records = (
        json.dumps({"id": i, "name": f"lamp {i}", "description": "", "embedding": vector})
        for i, vector in enumerate(VECTORS, 1)
    )
    path.write_text("".join(f"{line}\n" for line in (*records, *lines)))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], list[str]]:
    """Exit status, stdout lines and stderr lines of ``pgvector-app argv``."""
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out.splitlines(), err.splitlines()


def count(engine: Engine) -> Any:
    """How many products there are."""
    with engine.connect() as connection:
        return connection.scalar(text("SELECT count(*) FROM product"))


def test_load_then_query(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    engine: Engine,
) -> None:
    status, out, err = run(capsys, "load", str(write_products(tmp_path / "p.jsonl")))
    assert (status, err) == (0, [])
    assert out[0].startswith("Loaded 20 rows into product in ")
    assert out[1].startswith("Rebuilt ix_product_embedding_hnsw in ")
    assert count(engine) == 20

    status, out, err = run(capsys, "query", "--like", "3", "-k", "5")
    rows = [line.split("\t") for line in out]
    assert (status, err, len(rows)) == (0, [], 5)
    assert "3" not in [row[0] for row in rows]
    assert [float(row[1]) for row in rows] == sorted(float(row[1]) for row in rows)

    status, out, err = run(capsys, "query", "--vector", json.dumps(VECTORS[4]), "-k", "1")
    assert (status, err) == (0, [])
    assert out[0].split("\t")[::2] == ["5", "lamp 5"]
    assert float(out[0].split("\t")[1]) == pytest.approx(0, abs=1e-6)

    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(VECTORS[4])))
    filtered = ["--name-contains", "LAMP 1", "--iterative-scan", "relaxed_order", "-k", "20"]
    status, out, err = run(capsys, "query", "--vector", "-", "--ef-search", "100", *filtered)
    assert (status, err) == (0, [])
    assert {line.split("\t")[2] for line in out} == {
        "lamp 1",
        *(f"lamp {i}" for i in range(10, 20)),
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not JSON (Expecting property name enclosed in double quotes, column 2)"),
        (
            '{"id": 21, "name": "x"}',
            "expected an object with the keys id, name, description, embedding",
        ),
        (
            json.dumps({"id": 21, "name": "x", "description": "", "embedding": [0.5] * 3}),
            "embedding: expected 1536 dimensions, got 3",
        ),
        (
            json.dumps({"id": 2, "name": "x", "description": "", "embedding": VECTORS[0]}),
            'duplicate key value violates unique constraint "pk_product": '
            "Key (id)=(2) already exists.",
        ),
    ],
)
def test_a_bad_line_fails_in_one_line_and_loads_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], engine: Engine, line: str, message: str
) -> None:
    path = write_products(tmp_path / "p.jsonl", line)
    status, out, err = run(capsys, "load", str(path), "--batch-size", "8")
    assert (status, out, err) == (1, [], [f"pgvector-app: error: {path}, line 21: {message}"])
    assert count(engine) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["load", "missing.jsonl"], "cannot read missing.jsonl: No such file or directory"),
        (["query", "--like", "1"], "no Product with id=1 and a vector"),
        (["query", "--vector", "[1, 2]"], "the query vector has 2 dimensions; Product.embedding"),
        (["query", "--vector", '["a"]'], "--vector must be a JSON array of numbers"),
        (
            ["query", "--like", "1", "--ef-search", "5000"],
            "--ef-search: ef_search must be a whole number from 1 to 1000 (pgvector's "
            "hnsw.ef_search), not 5000",
        ),
    ],
)
def test_expected_failures_are_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, out, err = run(capsys, *argv)
    assert (status, out, len(err)) == (1, [], 1)
    assert err[0].startswith(f"pgvector-app: error: {message}")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            ["--maintenance-work-mem", "lots"],
            '--maintenance-work-mem: invalid value for parameter "maintenance_work_mem": "lots"',
        ),
        (
            ["--parallel-workers", "-1"],
            "--parallel-workers: -1 is outside the valid range for parameter "
            '"max_parallel_maintenance_workers"',
        ),
    ],
)
def test_a_build_setting_the_server_refuses_is_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    engine: Engine,
    setting: list[str],
    message: str,
) -> None:
    path = write_products(tmp_path / "p.jsonl")
    status, out, err = run(capsys, "load", str(path), *setting)
    assert (status, out, len(err)) == (1, [], 1)
    assert err[0].startswith(f"pgvector-app: error: {message}")
    assert count(engine) == 0


def test_an_unreachable_database_is_one_line_without_the_password() -> None:
    environment = {**os.environ, DATABASE_URL_ENV: "postgresql://app:s3cret@127.0.0.1:9/app"}
    finished = subprocess.run(
        [sys.executable, "-m", "app.cli", "query", "--like", "1"],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert finished.returncode == 1
    assert finished.stdout == ""
    assert finished.stderr.startswith(
        "pgvector-app: error: cannot connect to PostgreSQL at 127.0.0.1:9 (database 'app')"
    )
    assert finished.stderr.count("\n") == 1
    assert "s3cret" not in finished.stderr


def index_definitions(engine: Engine) -> list[tuple[str, str]]:
    """The product table's indexes, as pg_indexes shows them."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'product'")
        ).all()
    return sorted((name, definition) for name, definition in rows)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "café".encode("latin-1"),
            "not UTF-8 text (byte 0xe9 at byte 4); JSON Lines files are UTF-8",
        ),
        (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
            "not UTF-8 text (byte 0x89 at byte 1); JSON Lines files are UTF-8",
        ),
    ],
    ids=["latin-1", "binary"],
)
def test_a_file_that_is_not_utf8_fails_in_one_line_and_loads_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    engine: Engine,
    content: bytes,
    message: str,
) -> None:
    """Line 21, after the 20 good products."""
    path = write_products(tmp_path / "p.jsonl")
    path.write_bytes(path.read_bytes() + content + b"\n")
    before = index_definitions(engine)
    status, out, err = run(capsys, "load", str(path), "--batch-size", "8")
    assert (status, out, err) == (1, [], [f"pgvector-app: error: {path}, line 21: {message}"])
    assert count(engine) == 0
    assert index_definitions(engine) == before


WAIT_LIMIT = 30.0
WAITING_FOR_THE_TABLE = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
)


def first_value(engine: Engine, sql: str) -> Any:
    """The first column of the first row of ``sql``, or ``None`` when it has no row."""
    with engine.connect() as connection:
        return connection.scalar(text(sql))


def poll(engine: Engine, sql: str, what: str) -> Any:
    """Run ``sql`` until it returns a row; fail after ``WAIT_LIMIT`` seconds."""
    deadline = time.monotonic() + WAIT_LIMIT
    while (value := first_value(engine, sql)) is None:
        assert time.monotonic() < deadline, f"waited {WAIT_LIMIT:.0f}s for {what}"
        time.sleep(0.05)
    return value


@contextmanager
def load_waiting_for_the_table(engine: Engine, path: Path) -> Iterator[tuple[Any, int]]:
    """``pgvector-app load path`` started while the test holds the product table locked, once
    its server process waits for the lock (what pg_stat_activity shows): the process and its
    server process. The lock is held until the block ends."""
    with engine.connect() as holder:
        holder.execute(text("LOCK TABLE product IN ACCESS EXCLUSIVE MODE"))
        loader = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "load", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            backend = poll(engine, WAITING_FOR_THE_TABLE, "the load to wait for the table")
            yield loader, backend
        finally:
            loader.kill()
            loader.communicate(timeout=WAIT_LIMIT)
            holder.rollback()


def test_ctrl_c_ends_a_load_in_one_line_and_changes_nothing(tmp_path: Path, engine: Engine) -> None:
    before = index_definitions(engine)
    with load_waiting_for_the_table(engine, write_products(tmp_path / "p.jsonl")) as (loader, _):
        loader.send_signal(signal.SIGINT)
        out, err = loader.communicate(timeout=WAIT_LIMIT)
    assert (loader.returncode, out) == (130, "")
    assert err == "pgvector-app: interrupted; nothing was changed\n"
    assert count(engine) == 0
    assert index_definitions(engine) == before


def test_a_killed_load_ends_its_server_work(tmp_path: Path, engine: Engine) -> None:
    """SIGKILL leaves no one to cancel the statement: the server notices the closed connection
    itself (client_connection_check_interval) while the test still holds the lock the statement
    waits for, as it would in the middle of an index build holding the table's lock."""
    before = index_definitions(engine)
    with load_waiting_for_the_table(engine, write_products(tmp_path / "p.jsonl")) as (
        loader,
        backend,
    ):
        loader.kill()
        loader.communicate(timeout=WAIT_LIMIT)
        gone = f"SELECT true WHERE NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = {backend})"
        poll(engine, gone, f"server process {backend} to end")
    assert count(engine) == 0
    assert index_definitions(engine) == before
