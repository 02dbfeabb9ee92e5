"""Keeping tables that pgai manages out of autogenerate, without importing pgai."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import MetaData

PGAI_MANAGED_TABLES = "pgai_managed_tables"

IncludeObject = Callable[[Any, str | None, str, bool, Any], bool]


def include_object_for(metadata: MetaData) -> IncludeObject:
    """Build Alembic's ``include_object`` hook that skips tables pgai records in ``metadata``.

    ``pgai.sqlalchemy.vectorizer_relationship`` lists the tables it generates in
    ``metadata.info["pgai_managed_tables"]``; autogenerate must neither create nor drop them.
    """

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        if type_ != "table":
            return True
        managed = metadata.info.get(PGAI_MANAGED_TABLES) or ()
        return name not in managed

    return include_object
