"""Recall (``pgvector_base.search.recall``): the figure equals the one computed here by brute force
with numpy, on the same sampled rows, for an index built poorly enough to miss some neighbours.

The approximate answers are the server's index scans, run again here; the exact answers, ties
and the mean are computed here from every stored vector.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pytest
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, Engine, Index, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pgvector_base.database import DATABASE_URL_ENV
from pgvector_base.loading import load
from pgvector_base.search import SearchSettings, VectorSearch, measure_recall
from pgvector_base.search.recall import main
from pgvector_base.session import create_app_engine
from tests.conftest import CreateDatabase

ROWS = 3000
TWINS = 300  # rows 1..TWINS have a twin at the same vector: ties an exact scan breaks arbitrarily
DIM = 32
K = 10
# A sparse graph searched narrowly: some true neighbours are missed.
LOW = SearchSettings(ef_search=10)


class Base(DeclarativeBase):
    pass


class Doc(Base):
    __tablename__ = "recall_doc"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    embedding: Mapped[list[float] | None] = mapped_column(VECTOR(DIM))
    __table_args__ = (
        Index(
            "ix_recall_doc_embedding",
            "embedding",
            postgresql_using="hnsw",
            postgresql_with={"m": 4, "ef_construction": 10},
            postgresql_ops={"embedding": "vector_l2_ops"},
        ),
    )


VECTORS = np.random.default_rng(27).standard_normal((ROWS, DIM), dtype=np.float32)
VECTORS[ROWS - TWINS :] = VECTORS[:TWINS]


@pytest.fixture(scope="module")
def url(create_database: CreateDatabase) -> URL:
    """A database of the module's own with the rows (ids 0 to ROWS - 1) and a row without a
    vector, which the sample must skip."""
    url = create_database()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        Base.metadata.create_all(connection)
        load(connection, Doc.__table__, ((n, v) for n, v in enumerate(VECTORS)))  # type: ignore[arg-type]
        connection.execute(text("INSERT INTO recall_doc VALUES (:id, NULL)"), {"id": ROWS})
        connection.execute(text("ANALYZE recall_doc"))
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def engine(url: URL) -> Iterator[Engine]:
    engine = create_app_engine(url)
    yield engine
    engine.dispose()


def brute_force_recall(
    session: Session, search: VectorSearch[Doc], keys: tuple[int, ...]
) -> list[float]:
    """Each sampled row's recall@K: the index's answers (asked again) against the exact K nearest
    by numpy, a row as far as the K-th exact one counting as found."""
    stored = VECTORS.astype(np.float64)
    recalls = []
    for key in keys:
        distances = np.linalg.norm(stored - stored[key], axis=1)
        farthest = np.sort(distances)[K - 1]
        found = [
            found_key
            for found_key, _ in search.nearest_keys(session, VECTORS[key], K, settings=LOW)
        ]
        hits = sum(1 for found_key in found if distances[found_key] <= farthest * (1 + 1e-5))
        recalls.append(hits / K)
    return recalls


def test_recall_equals_the_brute_force_figure_on_the_same_sample(engine: Engine) -> None:
    search = VectorSearch(Doc, Doc.embedding)
    with Session(engine) as session:
        report = measure_recall(session, search, k=K, sample=60, settings=LOW, seed=3)
        expected = brute_force_recall(session, search, report.keys)
    assert report.queries == len(report.keys) == len(set(report.keys)) == 60
    assert ROWS not in report.keys  # the row without a vector
    assert 0.3 < report.recall < 1.0  # the index misses some: a figure that can be wrong
    assert report.recall == pytest.approx(float(np.mean(expected)), abs=1e-12)
    assert report.minimum == pytest.approx(min(expected), abs=1e-12)
    assert report.exact_ms > 0
    assert report.approximate_ms > 0
    assert re.fullmatch(
        rf"recall@10 {report.recall:.3f} over 60 queries \(min [0-9.]+\)", str(report)
    )


def test_a_seed_picks_the_same_rows_again_and_another_seed_others(engine: Engine) -> None:
    search = VectorSearch(Doc, Doc.embedding)
    with Session(engine) as session:
        first = measure_recall(session, search, k=K, sample=20, seed=5)
        again = measure_recall(session, search, k=K, sample=20, seed=5)
        other = measure_recall(session, search, k=K, sample=20, seed=6)
    assert first.keys == again.keys
    assert first.keys != other.keys


def test_the_settings_stay_inside_the_measurement(engine: Engine) -> None:
    search = VectorSearch(Doc, Doc.embedding)
    show = text("SELECT current_setting('hnsw.ef_search'), current_setting('enable_indexscan')")
    with Session(engine) as session:
        measure_recall(session, search, k=K, sample=5, settings=LOW)
        assert session.execute(show).one() == ("40", "on")


def test_the_command_prints_one_line(
    url: URL, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV, url.render_as_string(hide_password=False))
    column = f"{__name__}:Doc.embedding"
    assert main([column, "--sample", "30", "--ef-search", "10"]) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(r"recall@10 0\.\d{3} over 30 queries \(min [0-9.]+\)\n", out), out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["nowhere:Doc.embedding"], "cannot import nowhere"),
        ([f"{__name__}:Doc.missing"], f"{__name__} has no mapped column Doc.missing"),
        ([f"{__name__}.Doc"], "is not MODULE:MODEL.COLUMN"),
        ([f"{__name__}:Doc.embedding", "--probes", "3"], "probes do not apply"),
        ([f"{__name__}:Doc.embedding", "--ef-search", "0"], "ef_search must be a whole number"),
        ([f"{__name__}:Doc.embedding", "--sample", "0"], "sample must be a whole number"),
        ([f"{__name__}:Doc.embedding", "--k", "0"], "k must be a whole number"),
    ],
)
def test_bad_input_is_one_line(
    url: URL,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    message: str,
) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV, url.render_as_string(hide_password=False))
    assert main(arguments) == 1
    err = capsys.readouterr().err
    assert re.fullmatch(r"pgvector-recall: error: [^\n]+\n", err), err
    assert message in err


def test_an_unreachable_database_is_one_line_without_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV, "postgresql://app:s3cret-pw@127.0.0.1:9/app")
    assert main([f"{__name__}:Doc.embedding"]) == 1
    err = capsys.readouterr().err
    assert re.fullmatch(r"pgvector-recall: error: [^\n]+\n", err), err
    assert "s3cret" not in err
