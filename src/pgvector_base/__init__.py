"""The template's machinery for PostgreSQL + pgvector with SQLAlchemy 2 and Alembic.

Model-agnostic: it imports nothing from the application (``app``). A project started from the
template uses it as it is and receives its fixes through ``copier update``.
"""
