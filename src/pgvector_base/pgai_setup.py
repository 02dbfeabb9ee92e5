"""Install pgai's SQL library (the ``ai`` schema and its functions) into the application database.

Run it once per database, before the first migration that calls ``op.create_vectorizer``; running
it again does nothing (pgai skips a version that is installed). It uses the database that
``pgvector_base.database.resolve_url`` names, so ``DATABASE_URL`` or the embedded server.

It is a command and not a migration: ``pgai.install`` works on a connection of its own, which
inside a migration on a new database waits forever for the migration's uncommitted
``CREATE EXTENSION vector``.
"""

from __future__ import annotations

import sys
from importlib.util import find_spec

from sqlalchemy.engine import URL

from pgvector_base.database import DatabaseConfigError, display, resolve_url
from pgvector_base.migration.pgai import INSTALL_HINT


def libpq_url(url: URL) -> str:
    """``url`` as the plain ``postgresql://`` string that ``pgai.install`` (psycopg 3) accepts."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def main() -> None:
    """Install pgai into the database; expected failures exit with one line on stderr."""
    if find_spec("pgai") is None:
        sys.exit(f"pgai is not installed; run `{INSTALL_HINT}`")
    try:
        url = resolve_url()
    except DatabaseConfigError as error:
        sys.exit(str(error))

    import psycopg
    from pgai import install

    try:
        install(libpq_url(url))
    except (psycopg.Error, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        sys.exit(f"cannot install pgai into {display(url)}: {reason}")
    print(f"pgai is installed in {display(url)}")


if __name__ == "__main__":
    main()
