"""Tests of the team's models and migrations that hold for any models."""
