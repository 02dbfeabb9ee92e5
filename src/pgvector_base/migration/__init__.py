"""Helpers that ``migrations/env.py`` calls, one concern a module.

They teach Alembic about pgvector (types, rendering, index comparison), keep pgai-managed tables
out of autogenerate, serialize migration runs, and turn expected failures into one clear line.
"""
