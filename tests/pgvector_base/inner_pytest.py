"""Running pytest again, in a copy of a project, from inside a test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_pytest(
    project: Path, *arguments: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m pytest ARGUMENTS`` in ``project``, to completion, with ``env`` added.

    The outer run's ``PYTEST_ADDOPTS`` stays out: the template's generation tests set a
    ``--basetemp`` there that lies above the copy, which pytest refuses.
    """
    environment = {name: value for name, value in os.environ.items() if name != "PYTEST_ADDOPTS"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *arguments],
        cwd=project,
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
