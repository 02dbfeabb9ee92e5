"""Start-up: ``alembic current`` in the template against stock Alembic's, on the same database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench.common import REPOSITORY_ROOT, Spread, Startup, in_turn, ratios
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from pgvector_base.database import DATABASE_URL_ENV

TEMPLATE = "alembic current: the template (migrations/env.py, its models)"
STOCK = "alembic current: stock Alembic (alembic init's generic env.py)"


def measure_startup(url: URL, repeats: int) -> list[Startup]:
    """Wall time of ``alembic current`` as a new process, in the template and in a directory that
    ``alembic init`` made, taking turns: what a developer waits for at every command."""
    # The build part's migration left its revision, which the template's history does not know.
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()
    rendered = url.render_as_string(hide_password=False)
    environment = {**os.environ, DATABASE_URL_ENV: rendered}
    with tempfile.TemporaryDirectory(prefix="pgvector-bench-stock-") as stock:
        alembic = [sys.executable, "-m", "alembic"]
        subprocess.run([*alembic, "init", "migrations"], cwd=stock, check=True, capture_output=True)
        ini = Path(stock) / "alembic.ini"
        # The URL replaces alembic init's placeholder; configparser reads % as interpolation.
        setting = f"sqlalchemy.url = {rendered.replace('%', '%%')}"
        ini.write_text(
            re.sub(r"^sqlalchemy\.url = .*$", lambda _: setting, ini.read_text(), flags=re.M)
        )
        commands = {TEMPLATE: (REPOSITORY_ROOT, alembic), STOCK: (Path(stock), alembic)}
        seconds: dict[str, list[float]] = {name: [] for name in commands}
        for directory, command in commands.values():
            run([*command, "current"], directory, environment)  # warm the OS's file cache
        for repeat in range(repeats):
            for name, (directory, command) in in_turn(commands, repeat):
                seconds[name].append(run([*command, "current"], directory, environment))
    return [
        Startup(name, Spread.of(seconds[name]), ratios(seconds[name], seconds[STOCK]))
        for name in commands
    ]


def run(command: list[str], directory: Path, environment: dict[str, str]) -> float:
    """Seconds ``command`` takes as a new process, which must succeed."""
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=directory, env=environment, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} in {directory} failed:\n{done.stderr[-2000:]}")
    return seconds
