"""Schemas transcribed from public projects' SQLAlchemy models, one module per project.

Each module declares its project's tables as a team would after pasting them into
``src/app/models.py`` below ``Base``: on a declarative base of its own whose metadata has the
template's naming convention, so each module's ``Base.metadata`` is fresh. Each module names its
source (repository, path, commit) and the few adaptations it needed to stand alone.
"""

from __future__ import annotations

import importlib

from sqlalchemy import MetaData

# A copy of src/app/models.py's NAMING_CONVENTION: the template's tests import nothing from app.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SCHEMAS = (
    "pgvector_python",
    "langchain_postgres",
    "llama_index",
    "agno",
    "open_webui",
    "vecs",
    "txtai",
    "memgpt",
)
"""The modules of this package, one per project."""


def metadata(name: str) -> MetaData:
    """The metadata of schema module ``name``, one of :data:`SCHEMAS`."""
    found = importlib.import_module(f"{__name__}.{name}").Base.metadata
    assert isinstance(found, MetaData)
    return found
