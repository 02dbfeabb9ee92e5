"""Autogenerate, upgrade, check and downgrade with pgvector, driven in-process (see ``project``)."""
