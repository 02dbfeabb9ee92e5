"""Tests of the machinery (``src/pgvector_base``), with models and databases of their own."""
