"""The tests' embed functions: deterministic, so the oracle of every row is exact.

A source's vector comes from a generator seeded with a hash of the text, so any process computes
the same float32 values, and the server stores them exactly. ``embed`` appends each call's sources
to the file named by ``BACKFILL_CALLS`` (one line each, appended whole), so a test can count what
was embedded, and how often, across killed and concurrent runners.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from pgvector.sqlalchemy import HALFVEC, VECTOR
from sqlalchemy import BigInteger, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

OLD_DIM = 8
NEW_DIM = 16
CALLS_ENV = "BACKFILL_CALLS"


def vector(source: str, dim: int = NEW_DIM) -> npt.NDArray[np.float32]:
    """The embedding of ``source``: the same in every process."""
    seed = int.from_bytes(hashlib.blake2b(source.encode(), digest_size=8).digest(), "little")
    return np.random.default_rng(seed).standard_normal(dim, dtype=np.float32)


def vectors(sources: Sequence[str], dim: int = NEW_DIM) -> npt.NDArray[np.float32]:
    """:func:`vector` of each source, one row each."""
    return np.stack([vector(source, dim) for source in sources])


def embed(sources: list[Any]) -> npt.NDArray[np.float32]:
    """The new model: records the call, then embeds."""
    path = os.environ.get(CALLS_ENV)
    if path:
        record(path, sources)
    return vectors(sources)


async def embed_async(sources: list[Any]) -> npt.NDArray[np.float32]:
    """The new model behind an async API: what ``pgvector-backfill`` runs on the async engine."""
    return embed(sources)


def record(path: str, sources: Sequence[str]) -> None:
    """Append ``sources`` to ``path`` in one write, so concurrent writers never interleave."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, "".join(f"{source}\n" for source in sources).encode())
    finally:
        os.close(descriptor)


def recorded(path: str) -> list[str]:
    """Every source ``embed`` was called with, in order (the file may not exist yet)."""
    if not os.path.exists(path):
        return []
    with open(path) as calls:
        return calls.read().splitlines()


class Base(DeclarativeBase):
    """The tests' own table."""


class Doc(Base):
    """A table in the middle of a model change: ``embedding`` (old) and ``embedding_v2`` (new)."""

    __tablename__ = "backfill_doc"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    body: Mapped[str | None] = mapped_column(Text)
    embedding: Mapped[Any] = mapped_column(VECTOR(OLD_DIM), nullable=True)
    embedding_v2: Mapped[Any] = mapped_column(VECTOR(NEW_DIM), nullable=True)


class Note(Base):
    """A table keyed by text, whose new embedding is half precision."""

    __tablename__ = "backfill_note"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    embedding_v2: Mapped[Any] = mapped_column(HALFVEC(NEW_DIM), nullable=True)


class Passage(Base):
    """A table keyed by UUID, as a RAG application's chunks often are."""

    __tablename__ = "backfill_passage"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    embedding_v2: Mapped[Any] = mapped_column(VECTOR(NEW_DIM), nullable=True)
