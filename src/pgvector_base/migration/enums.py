"""PostgreSQL enum types in autogenerate, left to alembic-postgresql-enum.

Alembic creates an enum type with the first table that uses it and never looks at it again: a
value added to or removed from a model's ``Enum`` goes unnoticed. alembic-postgresql-enum compares
the enum types of the compared schemas with the models' and writes ``op.sync_enum_values`` (which
also converts the columns and defaults that use the type), creates new types and drops unused
ones. It registers its comparator when imported, on Alembic's global registry, which every
autogenerate run starts from whatever ``autogenerate_plugins`` lists.
"""

from __future__ import annotations

import alembic_postgresql_enum


def configure() -> None:
    """Set up alembic-postgresql-enum for generated files that pass ``mypy --strict``.

    Its operations are registered on ``op`` at run time, which Alembic's type stubs cannot know,
    so each call it writes carries ``# type: ignore[attr-defined]``.
    """
    alembic_postgresql_enum.set_configuration(alembic_postgresql_enum.Config(add_type_ignore=True))
