"""A runner killed with SIGKILL at several points, then run again: the run completes, every row
holds the embedding of its source, and no finished batch was embedded again.

The runner is the command line, in a process of its own; its embed function appends each call's
sources to a file. The test waits until the file shows that the run has gone a given way (an
observable state), then kills it. A kill loses at most the batch it interrupted, so the embed
function sees at most ``ROWS + kills * BATCH`` sources, and no source more than twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from pgvector_base.database import DATABASE_URL_ENV

from .conftest import REPOSITORY_ROOT, fill, wrong_rows
from .embedder import CALLS_ENV, recorded

ROWS = 4000
BATCH = 200
# Slow enough that each run is still going when the test sees its progress and kills it: a run
# takes seconds, the test reacts in milliseconds.
RATE = 4000
# How far each run gets, in sources embedded, before it is killed.
KILL_AFTER = [1, 2 * BATCH + 1, 5 * BATCH + 1]
DEADLINE = 60.0


def start(url: URL, calls: Path) -> subprocess.Popen[bytes]:
    """The runner, as a user starts it."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgvector_base.backfill",
            "tests.pgvector_base.backfill.embedder:Doc.embedding_v2",
            "--source",
            "body",
            "--embed",
            "tests.pgvector_base.backfill.embedder:embed",
            "--batch-size",
            str(BATCH),
            "--rows-per-second",
            str(RATE),
            "--no-progress",
        ],
        cwd=REPOSITORY_ROOT,
        env={
            **os.environ,
            DATABASE_URL_ENV: url.render_as_string(hide_password=False),
            CALLS_ENV: str(calls),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_for_calls(process: subprocess.Popen[bytes], calls: Path, count: int) -> None:
    """Wait until ``calls`` records ``count`` sources, while ``process`` runs."""
    deadline = time.monotonic() + DEADLINE
    while len(recorded(str(calls))) < count:
        assert process.poll() is None, "the runner ended before it could be killed"
        assert time.monotonic() < deadline, "the runner made no progress"
        time.sleep(0.002)


@pytest.mark.timeout(120)
def test_killed_runs_resume_without_embedding_a_finished_batch_again(
    doc_url: URL, doc_engine: Engine, tmp_path: Path
) -> None:
    fill(doc_engine, 1, ROWS)
    calls = tmp_path / "calls"
    for after in KILL_AFTER:
        runner = start(doc_url, calls)
        wait_for_calls(runner, calls, len(recorded(str(calls))) + after)
        runner.send_signal(signal.SIGKILL)
        assert runner.wait() == -signal.SIGKILL
        runner.stderr.close()  # type: ignore[union-attr]

    final = start(doc_url, calls)
    _, errors = final.communicate(timeout=DEADLINE)
    assert final.returncode == 0, errors.decode()

    assert wrong_rows(doc_engine) == []
    embedded = recorded(str(calls))
    assert set(embedded) == {f"doc {key} v0" for key in range(1, ROWS + 1)}
    assert len(embedded) <= ROWS + len(KILL_AFTER) * BATCH
    assert max(Counter(embedded).values()) <= 2
