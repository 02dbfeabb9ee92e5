"""A real PgBouncer in front of the test server, for tests of what a connection pooler changes.

:func:`start` runs the installed ``pgbouncer`` binary (Debian's package; ``apt-get install
pgbouncer``) as a child process listening on a free port of 127.0.0.1, in ``session`` or
``transaction`` pool mode, and stops it when the block ends. Every database of the server is
reachable through it under its own name (a ``*`` entry), so a test points a pooled URL at the
database it created with ``create_database``.

PgBouncer refuses to run as root, so as root it runs as the owner of the server's unix-socket
directory (the embedded server's socket lives in a directory only that user may enter), or as
``nobody`` for a server on TCP. Everything else is PgBouncer's default, as a team would deploy it:
in particular no ``ignore_startup_parameters`` and no ``max_prepared_statements``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psycopg2
from sqlalchemy.engine import URL

SKIP_REASON = "pgbouncer not installed (apt-get install pgbouncer)"
UNPRIVILEGED_USER = "nobody"
ADMIN_DATABASE = "pgbouncer"
# PgBouncer starts in milliseconds; this bounds a broken start, it is not a wait for readiness.
START_DEADLINE = 30.0

PoolMode = Literal["session", "transaction"]
AuthType = Literal["trust", "md5"]


def binary() -> str | None:
    """The ``pgbouncer`` executable: on ``PATH``, or in ``/usr/sbin`` where Debian puts it."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class PgBouncer:
    """A running PgBouncer: where it listens and who may log in."""

    port: int
    pool_mode: PoolMode
    pool_size: int
    username: str
    password: str | None
    log: Path

    def url(self, database: str | URL) -> URL:
        """A psycopg2 URL for ``database`` (a name, or the direct URL of it) through the pooler."""
        name = database if isinstance(database, str) else database.database
        return URL.create(
            "postgresql+psycopg2",
            username=self.username,
            password=self.password,
            host="127.0.0.1",
            port=self.port,
            database=name,
        )

    def admin(self, command: str) -> list[dict[str, object]]:
        """Run a command of PgBouncer's admin console (``SHOW POOLS``, ...) and return its rows."""
        connection = psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.username,
            password=self.password,
            dbname=ADMIN_DATABASE,
            # Not the environment's PGOPTIONS, which PgBouncer refuses (a test may set it).
            options="",
        )
        try:
            # The admin console accepts only the simple query protocol and no transactions.
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(command)
                if cursor.description is None:
                    return []
                names = [column.name for column in cursor.description]
                return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            connection.close()

    def log_text(self) -> str:
        """PgBouncer's log so far, for assertion messages."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _run_as(server: URL) -> str | None:
    """The user PgBouncer runs as: None unless root (see the module docstring)."""
    if os.geteuid() != 0:
        return None
    socket_dir = str(server.query.get("host") or server.host or "")
    if socket_dir.startswith("/"):
        return pwd.getpwuid(Path(socket_dir).stat().st_uid).pw_name
    return UNPRIVILEGED_USER


def _quote(value: str) -> str:
    """A value of PgBouncer's ``auth_file``: double-quoted, with ``"`` doubled."""
    return '"' + value.replace('"', '""') + '"'


@contextmanager
def start(
    server: URL,
    *,
    pool_mode: PoolMode = "transaction",
    pool_size: int = 20,
    auth_type: AuthType = "trust",
    settings: Mapping[str, str | int] | None = None,
    users: Sequence[str] = (),
) -> Iterator[PgBouncer]:
    """Run PgBouncer in front of ``server`` (any database URL of it) for the block.

    ``pool_size`` is ``default_pool_size``: server connections per database and user.
    ``auth_type="md5"`` makes clients send the password; it is the server URL's, or a made-up
    one when the server trusts local connections. ``settings`` adds or overrides lines of the
    ``[pgbouncer]`` section (e.g. ``query_wait_timeout``). ``users`` are more roles that may log
    in, with the same password (PgBouncer lets in only the users of its ``auth_file``).
    """
    executable = binary()
    if executable is None:
        raise FileNotFoundError(SKIP_REASON)
    username = server.username or "postgres"
    password = server.password or ("pooler-secret" if auth_type == "md5" else None)
    socket_dir = server.query.get("host")
    host = str(socket_dir) if socket_dir else (server.host or "127.0.0.1")
    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="pgvector-base-pgbouncer-"))
    auth_file = root / "userlist.txt"
    # The password in plain text: PgBouncer then answers md5 and SCRAM challenges of the server.
    auth_file.write_text(
        "".join(f"{_quote(user)} {_quote(password or '')}\n" for user in (username, *users))
    )
    config = {
        "listen_addr": "127.0.0.1",
        "listen_port": port,
        "unix_socket_dir": "",
        "auth_type": auth_type,
        "auth_file": str(auth_file),
        "admin_users": username,
        "pool_mode": pool_mode,
        "default_pool_size": pool_size,
        **(settings or {}),
    }
    backend = f"host={host} port={server.port or 5432}"
    (root / "pgbouncer.ini").write_text(
        f"[databases]\n* = {backend}\n\n[pgbouncer]\n"
        + "".join(f"{name} = {value}\n" for name, value in config.items())
    )
    user = _run_as(server)
    if user is not None:
        for path in (root, auth_file, root / "pgbouncer.ini"):
            shutil.chown(path, user=user)
    log = root / "pgbouncer.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [executable, str(root / "pgbouncer.ini")],
            stdout=output,
            stderr=subprocess.STDOUT,
            user=user,
        )
    bouncer = PgBouncer(port, pool_mode, pool_size, username, password, log)
    try:
        _wait_until_ready(process, bouncer)
        yield bouncer
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)


def _wait_until_ready(process: subprocess.Popen[bytes], bouncer: PgBouncer) -> None:
    """Return once the admin console answers; raise with PgBouncer's log if it never does."""
    deadline = time.monotonic() + START_DEADLINE
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with {process.returncode}:\n{bouncer.log_text()}")
        try:
            bouncer.admin("SHOW VERSION")
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer did not start:\n{bouncer.log_text()}") from None
            time.sleep(0.05)
