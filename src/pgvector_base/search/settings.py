"""Index settings for one search or one transaction, checked against pgvector's ranges.

Index settings (``hnsw.ef_search``, ``ivfflat.probes`` and pgvector 0.8's iterative scans) are
set transaction-locally by :func:`~pgvector_base.session.set_local` (on a Citus coordinator, on
its workers too), so they never reach another user of a pooled connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from pgvector_base.search.indexes import QuantizedIndex, VectorIndex
from pgvector_base.search.query import INT4_MAX

IterativeScan = Literal["off", "relaxed_order", "strict_order"]
# The ranges pgvector gives its settings (pg_settings.min_val and max_val). Checked here, because
# before pgvector's library is loaded in a session the server takes any value as a placeholder and
# then ignores it, while a session that has loaded it refuses the same value.
SETTING_RANGES = {
    "ef_search": ("hnsw.ef_search", 1, 1000),
    "max_scan_tuples": ("hnsw.max_scan_tuples", 1, INT4_MAX),
    "probes": ("ivfflat.probes", 1, 32768),
    "max_probes": ("ivfflat.max_probes", 1, 32768),
    # Not pgvector's: candidates per result through a quantized index (see quantized.py).
    "oversampling": ("candidates per result", 1, 1000),
}


@dataclass(frozen=True)
class SearchSettings:
    """Per-query index settings; ``None`` leaves the server's value (pgvector README, "Query
    Options" and "Iterative Index Scans").

    HNSW returns at most ``ef_search`` rows (40 by default) unless iterative scans are on, so
    raise it for ``k`` above 40. With a ``WHERE`` filter, rows are filtered *after* the index scan:
    turn on ``iterative_scan`` to keep scanning until ``k`` rows pass (up to ``max_scan_tuples``
    for HNSW, ``max_probes`` for IVFFlat, which knows only ``relaxed_order``).

    ``oversampling`` applies to quantized indexes only: a search takes ``k * oversampling``
    candidates from the index, then ranks them by the exact distance on the full vector
    (default: :data:`~pgvector_base.search.quantized.DEFAULT_OVERSAMPLING`).
    """

    ef_search: int | None = None
    max_scan_tuples: int | None = None
    probes: int | None = None
    max_probes: int | None = None
    iterative_scan: IterativeScan | None = None
    oversampling: int | None = None

    def __post_init__(self) -> None:
        for field, (setting, low, high) in SETTING_RANGES.items():
            value = getattr(self, field)
            if value is not None and not (
                isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
            ):
                what = setting if field == "oversampling" else f"pgvector's {setting}"
                raise ValueError(
                    f"{field} must be a whole number from {low} to {high} ({what}), not {value!r}"
                )
        # An unknown value would only draw a server WARNING and silently turn iterative scans off.
        if self.iterative_scan is not None and self.iterative_scan not in get_args(IterativeScan):
            raise ValueError(
                f"iterative_scan must be one of {', '.join(get_args(IterativeScan))}, "
                f"not {self.iterative_scan!r}"
            )

    def parameters(self, index: VectorIndex) -> dict[str, str]:
        """The settings to apply for a scan of ``index``, as ``set_config`` names and values.

        Raises :class:`ValueError` for a setting that the index's access method would ignore.
        """
        own = {
            "hnsw": {
                "hnsw.ef_search": self.ef_search,
                "hnsw.max_scan_tuples": self.max_scan_tuples,
                "hnsw.iterative_scan": self.iterative_scan,
            },
            "ivfflat": {
                "ivfflat.probes": self.probes,
                "ivfflat.max_probes": self.max_probes,
                "ivfflat.iterative_scan": self.iterative_scan,
            },
        }
        other = {"hnsw": ("probes", "max_probes"), "ivfflat": ("ef_search", "max_scan_tuples")}
        ignored = [name for name in other[index.method] if getattr(self, name) is not None]
        if self.oversampling is not None and not isinstance(index, QuantizedIndex):
            ignored.append("oversampling")
        if ignored:
            whole = " of the whole column" if "oversampling" in ignored else ""
            raise ValueError(
                f"{', '.join(ignored)} do not apply to {index.name}, an {index.method} index{whole}"
            )
        if index.method == "ivfflat" and self.iterative_scan == "strict_order":
            raise ValueError(
                f"{index.name} is an ivfflat index, whose iterative scans are relaxed_order only"
            )
        return {name: str(value) for name, value in own[index.method].items() if value is not None}
