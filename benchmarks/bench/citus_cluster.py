"""A Citus cluster of its own (a coordinator and two workers), or one given by ``CITUS_TEST_URL``.

:func:`start` runs the nodes from the build of ``.ci/citus`` (Citus and pgvector from
``../shared/vendor/``, installed into a copy of the system's PostgreSQL): ``initdb`` per node,
``shared_preload_libraries = 'citus'``, unix sockets only in a temporary folder of its own (so
that several pytest-xdist workers each run a cluster without sharing a port), trusting local
connections, and as ``nobody`` when run as root, which PostgreSQL requires. Citus's metadata is
per database, so :meth:`Cluster.create_database` makes a database on every node, creates the
extension on each before it adds the workers (creating it turns on ``sslmode=require`` for
node connections), and registers the nodes. The Citus tests (``tests/pgvector_base/citus/``)
and the benchmark's Citus part share it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

URL_ENV = "CITUS_TEST_URL"
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "citus"
SUPERUSER = "postgres"
UNPRIVILEGED_USER = "nobody"
COORDINATOR_PORT = 9700
WORKER_PORTS = (9701, 9702)


def build() -> Path | None:
    """The bin folder of the cached build of ``.ci/citus``, or ``None`` when there is none."""
    found = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--path"], capture_output=True, text=True, check=False
    )
    return Path(found.stdout.strip()) if found.returncode == 0 else None


def unavailable() -> str | None:
    """Why no cluster can be had (neither ``CITUS_TEST_URL`` nor a build), or ``None``."""
    if os.environ.get(URL_ENV) or build() is not None:
        return None
    return (
        f"no Citus cluster: set {URL_ENV} to a coordinator's database, or build Citus with "
        ".ci/citus (it needs the tarballs in ../shared/vendor/)"
    )


def node_url(coordinator: URL, host: str, port: int, database: str) -> URL:
    """``coordinator``'s URL (user, password, driver) pointed at the node ``host``:``port``; a
    ``host`` that is a folder is a unix socket's."""
    if host.startswith("/"):
        return coordinator.set(host=None, port=port, database=database).update_query_dict(
            {"host": host}
        )
    query = {name: value for name, value in coordinator.query.items() if name != "host"}
    return coordinator.set(host=host, port=port, database=database, query=query)


def _autocommit(url: URL, *statements: str) -> None:
    engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            for statement in statements:
                connection.execute(text(statement))
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Cluster:
    """A coordinator whose database ``url`` has Citus and its workers registered."""

    url: URL
    temporary: bool = False
    """Started by :func:`start`, and deleted with everything in it afterwards."""

    def nodes(self) -> list[tuple[str, int]]:
        """The coordinator's and the workers' host and port, from Citus's own node table."""
        engine = create_engine(self.url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                rows = connection.execute(
                    text("SELECT nodename, nodeport FROM pg_dist_node ORDER BY groupid")
                ).all()
        finally:
            engine.dispose()
        return [(host, port) for host, port in rows]

    def create_database(self) -> URL:
        """A new database with Citus on every node, the workers registered: its URL on the
        coordinator."""
        name = f"citus_{uuid.uuid4().hex[:12]}"
        nodes = self.nodes()
        # Citus 12.1+ can send CREATE DATABASE to the workers; here each node gets its own.
        no_propagation = (
            "SELECT set_config('citus.enable_create_database_propagation', 'off', false) "
            "WHERE EXISTS (SELECT FROM pg_settings "
            "WHERE name = 'citus.enable_create_database_propagation')"
        )
        for host, port in nodes:
            maintenance = node_url(self.url, host, port, self.url.database or "postgres")
            _autocommit(maintenance, no_propagation, f"CREATE DATABASE {name}")
        for host, port in nodes[1:]:
            _autocommit(node_url(self.url, host, port, name), "CREATE EXTENSION citus")
        coordinator_host, coordinator_port = nodes[0]
        _autocommit(
            node_url(self.url, coordinator_host, coordinator_port, name),
            "CREATE EXTENSION citus",
            f"SELECT citus_set_coordinator_host('{coordinator_host}', {coordinator_port})",
            *(f"SELECT citus_add_node('{host}', {port})" for host, port in nodes[1:]),
        )
        return self.url.set(database=name)

    def drop_database(self, url: URL) -> None:
        """Drop ``url``'s database (made by :meth:`create_database`) on every node."""
        for host, port in self.nodes():
            _autocommit(
                node_url(self.url, host, port, self.url.database or "postgres"),
                f"DROP DATABASE IF EXISTS {url.database} WITH (FORCE)",
            )


class _Nodes:
    """The three servers of :func:`start`, in ``root``."""

    def __init__(self, bindir: Path, root: Path, user: str | None) -> None:
        self.bindir = bindir
        self.root = root
        self.user = user

    def run(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, user=self.user, timeout=120)

    def pg_ctl(self, port: int, *args: str) -> None:
        self.run(
            str(self.bindir / "pg_ctl"),
            f"--pgdata={self.root / str(port)}",
            f"--log={self.root / f'{port}.log'}",
            f"--options=-c listen_addresses='' -p {port} -k {self.root}",
            "--wait",
            *args,
        )

    def url(self, port: int) -> URL:
        return URL.create(
            "postgresql+psycopg2",
            username=SUPERUSER,
            port=port,
            database="postgres",
            query={"host": str(self.root)},
        )


@contextmanager
def start() -> Iterator[Cluster]:
    """The cluster of ``CITUS_TEST_URL``, or a coordinator and two workers of our own for the
    block, stopped and deleted afterwards. Call :func:`unavailable` first."""
    given = os.environ.get(URL_ENV)
    if given:
        yield Cluster(make_url(given))
        return
    bindir = build()
    if bindir is None:
        raise RuntimeError(unavailable())
    root = Path(tempfile.mkdtemp(prefix="pgvector-base-citus-"))
    user = UNPRIVILEGED_USER if os.geteuid() == 0 else None
    if user is not None:
        shutil.chown(root, user=user)
    nodes = _Nodes(bindir, root, user)
    ports = (COORDINATOR_PORT, *WORKER_PORTS)
    started: list[int] = []
    try:
        for port in ports:
            nodes.run(
                str(bindir / "initdb"),
                f"--pgdata={root / str(port)}",
                f"--username={SUPERUSER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            )
            with (root / str(port) / "postgresql.conf").open("a") as conf:
                conf.write(
                    "shared_preload_libraries = 'citus'\n"
                    "fsync = off\n"
                    "max_connections = 200\n"
                    "shared_buffers = 64MB\n"
                )
            nodes.pg_ctl(port, "start")
            started.append(port)
        for port in WORKER_PORTS:
            _autocommit(nodes.url(port), "CREATE EXTENSION citus")
        _autocommit(
            nodes.url(COORDINATOR_PORT),
            "CREATE EXTENSION citus",
            f"SELECT citus_set_coordinator_host('{root}', {COORDINATOR_PORT})",
            *(f"SELECT citus_add_node('{root}', {port})" for port in WORKER_PORTS),
        )
        yield Cluster(nodes.url(COORDINATOR_PORT), temporary=True)
    finally:
        for port in started:
            subprocess.run(
                [str(bindir / "pg_ctl"), f"--pgdata={root / str(port)}", "stop", "-m", "immediate"],
                capture_output=True,
                user=user,
                timeout=60,
                check=False,
            )
        shutil.rmtree(root)
