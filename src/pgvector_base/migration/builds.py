"""Index build memory for the migration session: vector indexes built as fast as the server allows.

An HNSW build is several times faster while its graph fits in ``maintenance_work_mem`` (pgvector
README, "Index Build Time"), and the server's default of 64MB holds the graph of only about 30,000
vectors of 384 dimensions. So each migration session raises it, sized for the server it runs on:

* the server's memory is the smallest of its cgroup limit (a container's ``memory:`` limit) and its
  ``MemTotal``, read with ``pg_read_file`` when the migration role may read server files (a
  superuser or ``pg_read_server_files``); otherwise it is taken to be 4 x ``shared_buffers``, the
  usual tuning;
* ``maintenance_work_mem`` gets half of what ``shared_buffers`` leaves of it, at most 1GB, and is
  never lowered below the server's own value;
* a parallel build puts all of ``maintenance_work_mem`` in ``/dev/shm`` (see
  :func:`pgvector_base.migration.errors.shared_memory_exhausted`): when that mount is smaller than
  4/3 of it, as in Docker's default 64MB (assumed when it cannot be read), the build is made
  serial (``max_parallel_maintenance_workers = 0``) instead of failing.

On the compose service (512MB limit, 64MB ``/dev/shm``, 128MB ``shared_buffers``) that is 192MB,
serial: the backend stays well inside the limit. Each can be set per environment:

* ``MIGRATION_MAINTENANCE_WORK_MEM``: a size such as ``2GB``, or ``server`` for the server's value;
* ``MIGRATION_MAX_PARALLEL_MAINTENANCE_WORKERS``: a number, or ``server``.

``alembic upgrade --sql`` cannot look at a server: its script sets only the overrides.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection

from pgvector_base.migration import timeouts

log = logging.getLogger(__name__)

MAINTENANCE_WORK_MEM_ENV = "MIGRATION_MAINTENANCE_WORK_MEM"
PARALLEL_WORKERS_ENV = "MIGRATION_MAX_PARALLEL_MAINTENANCE_WORKERS"
SERVER = "server"
MB = 1 << 20
CEILING = 1024 * MB
DOCKER_SHM = 64 * MB
MEMORY_SIZE = re.compile(r"\d+\s*(?:B|kB|MB|GB|TB)")

SERVER_SETTINGS = text(
    """
    SELECT pg_size_bytes(current_setting('shared_buffers')),
           pg_size_bytes(current_setting('maintenance_work_mem')),
           current_setting('max_parallel_maintenance_workers')::int,
           current_setting('dynamic_shared_memory_type'),
           (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
               OR pg_has_role('pg_read_server_files', 'MEMBER')
    """
)
# Not SET LOCAL: the settings must outlast the migration transaction, as the timeouts do.
SET_SESSION = text("SELECT set_config(:name, :value, false)")
SETTINGS = ("maintenance_work_mem", "max_parallel_maintenance_workers")
READ_FILE = text("SELECT pg_read_file(:path, 0, 1 << 20, true)")
# cgroup v2, then v1; "max" or a huge number means no limit.
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
MEM_TOTAL = re.compile(r"^MemTotal:\s+(\d+) kB", re.MULTILINE)
SHM_SIZE = re.compile(r"^\S+ /dev/shm tmpfs \S*\bsize=(\d+)k", re.MULTILINE)


@dataclass(frozen=True)
class Server:
    """What the sizing needs to know of a server; sizes in bytes, ``None`` when unknown."""

    shared_buffers: int
    maintenance_work_mem: int
    parallel_workers: int
    posix_shared_memory: bool
    memory: int | None
    shm: int | None


def plan(server: Server) -> dict[str, str]:
    """The build settings for ``server`` (see the module's docstring), as ``SET`` values."""
    memory = server.memory or 4 * server.shared_buffers
    budget = min(CEILING, (memory - server.shared_buffers) // 2) // MB * MB
    settings: dict[str, str] = {}
    if budget > server.maintenance_work_mem:
        settings["maintenance_work_mem"] = f"{budget // MB}MB"
    size = max(budget, server.maintenance_work_mem)
    # Unknown, /dev/shm is taken to be Docker's default: a serial build that fits in memory is
    # slower than a parallel one, but a parallel one that does not fit fails.
    shm = server.shm if server.shm is not None else DOCKER_SHM
    if server.posix_shared_memory and server.parallel_workers > 0 and shm * 3 // 4 < size:
        settings["max_parallel_maintenance_workers"] = "0"
    return settings


def describe(connection: Connection) -> Server:
    """Read :class:`Server` from the server ``connection`` is on."""
    shared_buffers, current, workers, shared_memory, can_read = connection.execute(
        SERVER_SETTINGS
    ).one()
    memory = shm = None
    if can_read:

        def read(path: str) -> str:
            return str(connection.scalar(READ_FILE, {"path": path}) or "")

        limits = [int(raw) for raw in map(str.strip, map(read, CGROUP_LIMITS)) if raw.isdigit()]
        total = MEM_TOTAL.search(read("/proc/meminfo"))
        if total:
            limits.append(int(total[1]) * 1024)
        memory = min(limits, default=None)
        mounted = SHM_SIZE.search(read("/proc/self/mounts"))
        shm = int(mounted[1]) * 1024 if mounted else None
    return Server(shared_buffers, current, workers, shared_memory == "posix", memory, shm)


def overrides() -> dict[str, str | None]:
    """The settings given in the environment: a value, or ``None`` for the server's own."""
    found: dict[str, str | None] = {}
    for name, variable, pattern, example in (
        ("maintenance_work_mem", MAINTENANCE_WORK_MEM_ENV, MEMORY_SIZE, "512MB or 2GB"),
        ("max_parallel_maintenance_workers", PARALLEL_WORKERS_ENV, re.compile(r"\d+"), "0 or 2"),
    ):
        raw = (os.environ.get(variable) or "").strip()
        if not raw:
            continue
        if raw != SERVER and not pattern.fullmatch(raw):
            raise CommandError(
                f"{variable}={raw!r} is not valid; use a value such as {example}, or "
                f"'{SERVER}' to keep the server's setting"
            )
        found[name] = None if raw == SERVER else raw
    return found


def statements() -> list[str]:
    """The overrides as ``SET`` statements, for ``alembic upgrade --sql``."""
    return [f"SET {name} = '{value}'" for name, value in overrides().items() if value is not None]


def apply(connection: Connection) -> None:
    """Set the build settings for the rest of ``connection``'s session: the environment's, else
    those :func:`plan` sizes for the server. Call it inside the migration transaction, like
    :func:`pgvector_base.migration.timeouts.apply`: session settings outlast its commit."""
    given = overrides()
    # An override is taken as given; a bigger maintenance_work_mem than /dev/shm holds for a
    # parallel build then fails with the errors module's explanation.
    settings: dict[str, str | None] = {**plan(describe(connection)), **given}
    for name, value in settings.items():
        if value is not None:
            connection.execute(SET_SESSION, {"name": name, "value": value})
    if settings:
        log.info(
            "Index builds: %s",
            ", ".join(
                f"{name} = {value or 'the server setting'}" for name, value in settings.items()
            ),
        )


def reset(connection: Connection) -> None:
    """Set the build settings back to the session's initial values, at the end of the migration
    transaction: a pooler hands the connection to others."""
    timeouts.reset(connection, SETTINGS)
