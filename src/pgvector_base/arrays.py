"""numpy encodings for the loader: a batch of rows in one pass, and one vector per call.

:mod:`pgvector_base.loading` imports this module only when its input holds numpy arrays or column
batches, so numpy stays optional for callers who load lists.

A batch whose columns all have a fixed width (integers, booleans, vectors and halfvecs with
dimensions) is one structured array in the binary COPY layout, filled column by column and
turned into bytes by one ``tobytes()``. Validation is vectorised too, but only answers "is every
row good?": when one is not, the loader encodes that batch row by row to name the bad row, so
the messages are those of the row path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from pgvector.sqlalchemy import HALFVEC, VECTOR
from sqlalchemy import BigInteger, Boolean, Column, Integer, SmallInteger

# Big-endian float4 and float2: pgvector's vector_recv and halfvec_recv layouts.
FLOAT_TYPES: dict[type, np.dtype[Any]] = {VECTOR: np.dtype(">f4"), HALFVEC: np.dtype(">f2")}
INTEGER_TYPES: tuple[tuple[type, np.dtype[Any]], ...] = (
    (BigInteger, np.dtype(">i8")),
    (SmallInteger, np.dtype(">i2")),
    (Integer, np.dtype(">i4")),
)


def vector_bytes(value: npt.NDArray[Any], type_: VECTOR | HALFVEC, range_: str) -> bytes:
    """The values of one vector or halfvec field from a 1-D array, checked as the server would.

    Raises ``ValueError`` or ``TypeError`` with the row path's messages.
    """
    if value.ndim != 1:
        raise ValueError(f"expected a 1-D array, got {value.ndim} dimensions")
    if value.dtype.kind not in "fiu":
        raise TypeError(f"expected an array of numbers, got dtype {value.dtype}")
    name = "vector" if isinstance(type_, VECTOR) else "halfvec"
    with np.errstate(all="ignore"):
        converted = value.astype(FLOAT_TYPES[type(type_)])
    if not np.isfinite(converted).all():
        if np.isnan(value).any():
            raise ValueError(f"NaN not allowed in {name}")
        if np.isinf(value).any():
            raise ValueError(f"infinite value not allowed in {name}")
        raise ValueError(f"a value is outside the range of {range_}")
    return bytes(converted.tobytes())


class Layout:
    """The binary COPY layout of a row of fixed-width columns, as a numpy structured type."""

    def __init__(self, columns: Sequence[Column[Any]]) -> None:
        fields: list[tuple[str, Any]] = [("count", ">i2")]
        self._columns: list[tuple[str, np.dtype[Any], int | None]] = []
        for position, column in enumerate(columns):
            name = f"f{position}"
            dtype, dim = _value_type(column)
            if dim is None:
                fields.append((name, [("size", ">i4"), ("value", dtype)]))
            else:
                header = [("size", ">i4"), ("dim", ">u2"), ("unused", ">u2")]
                fields.append((name, [*header, ("value", dtype, (dim,))]))
            self._columns.append((name, dtype, dim))
        self.dtype = np.dtype(fields)

    def encode(self, values: Sequence[Any]) -> memoryview | None:
        """Rows given as one array-like per column, encoded; ``None`` when some value is not
        exactly what the column stores (a NULL, a wrong type, size or range, NaN, infinity).

        The encoding is a view of a new array, not a copy of it: a slice is megabytes, and each
        copy of it costs a fresh allocation's page faults as well as the copying.
        """
        try:
            arrays = [np.asarray(column) for column in values]
        except (ValueError, TypeError, OverflowError):
            return None  # ragged vectors or integers beyond int64
        count = len(arrays[0])
        rows = np.empty(count, self.dtype)
        rows["count"] = len(arrays)
        for (name, dtype, dim), array in zip(self._columns, arrays, strict=True):
            field = rows[name]
            if dim is None:
                if not _fits(array, dtype):
                    return None
                field["size"] = dtype.itemsize
                field["value"] = array
                continue
            if array.shape != (count, dim) or array.dtype.kind not in "fiu":
                return None
            # Values of the column's own type, in either byte order, are stored exactly as they
            # are: checked where they are and swapped as they are copied into the rows.
            exact = array.dtype.kind == "f" and array.dtype.itemsize == dtype.itemsize
            with np.errstate(all="ignore"):
                converted = array if exact else array.astype(dtype)
            if not np.isfinite(converted).all():
                return None
            field["size"] = 4 + dtype.itemsize * dim
            field["dim"] = dim
            field["unused"] = 0
            field["value"] = converted
        return rows.data.cast("B")


def _value_type(column: Column[Any]) -> tuple[np.dtype[Any], int | None]:
    """The numpy type of a column's values and, for a vector, its dimensions."""
    type_ = column.type
    if isinstance(type_, VECTOR | HALFVEC):
        return FLOAT_TYPES[type(type_)], type_.dim
    if isinstance(type_, Boolean):
        return np.dtype("?"), None
    for kind, dtype in INTEGER_TYPES:
        if isinstance(type_, kind):
            return dtype, None
    raise TypeError(f"column {column.name} has no fixed-width binary layout")


def _fits(array: npt.NDArray[Any], dtype: np.dtype[Any]) -> bool:
    """Whether every value of a 1-D ``array`` is of ``dtype``'s kind and within its range."""
    if array.ndim != 1:
        return False
    if dtype.kind == "b":
        return array.dtype.kind == "b"
    if array.dtype.kind not in "iu":
        return False
    limits = np.iinfo(dtype)
    return array.size == 0 or bool(array.min() >= limits.min and array.max() <= limits.max)
