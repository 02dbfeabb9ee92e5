"""pgvector base: an application on PostgreSQL + pgvector with SQLAlchemy 2 models and Alembic."""
