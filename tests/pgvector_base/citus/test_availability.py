"""Without the tarballs' build and without ``CITUS_TEST_URL``, the Citus tests skip and say why."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import cluster as harness


def test_without_a_build_or_a_url_the_reason_names_both_fixes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(harness.URL_ENV, raising=False)
    # .ci/citus finds no tarballs here, so it has no build to offer.
    monkeypatch.setenv("CITUS_VENDOR", str(tmp_path))
    assert harness.unavailable() == (
        "no Citus cluster: set CITUS_TEST_URL to a coordinator's database, or build Citus with "
        ".ci/citus (it needs the tarballs in ../shared/vendor/)"
    )
    monkeypatch.setenv(harness.URL_ENV, "postgresql://postgres@localhost:9700/postgres")
    assert harness.unavailable() is None
