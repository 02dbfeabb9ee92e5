"""Tests of the example (``Product`` and ``pgvector-app``); removed with it."""
