"""The project's tests, by owner (see docs/testing.md)."""
