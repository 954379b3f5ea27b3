"""Checks run before the platform starts, so that a set-up mistake is a sentence, not a traceback.

python -m coordinator.serving.preflight     (run by `./dev up` before migrating; exit 1 on a problem)
"""

from __future__ import annotations

import os
import sys
from typing import Any

from django.db import OperationalError, connection


def _postgres_database_missing(db: dict[str, object]) -> bool:
    """True when the server answers but has no database of that name (asked on its `postgres` database)."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    params: dict[str, Any] = {
        "host": db.get("HOST"),
        "port": db.get("PORT"),
        "user": db.get("USER"),
        "password": db.get("PASSWORD"),
    }
    conninfo = make_conninfo(dbname="postgres", connect_timeout=5, **{k: v for k, v in params.items() if v})
    try:
        with psycopg.connect(conninfo) as maintenance:
            row = maintenance.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]).fetchone()
    except psycopg.Error:
        return False  # not even the server's own database: not a missing-database problem
    return row is None


def database_problem() -> str | None:
    """A message saying what to do when the configured database cannot be used; None when it can."""
    try:
        connection.ensure_connection()
    except OperationalError as exc:
        db = connection.settings_dict
        if connection.vendor == "postgresql" and _postgres_database_missing(db):
            options = [
                f"-h {db['HOST']}" if db.get("HOST") else "",
                f"-p {db['PORT']}" if db.get("PORT") else "",
                f"-U {db['USER']}" if db.get("USER") else "",
            ]
            createdb = " ".join(["createdb", *filter(None, options), str(db["NAME"])])
            return (
                f"The PostgreSQL database {db['NAME']!r} named by DATABASE_URL does not exist.\n"
                f"Create it, then run this again:\n\n    {createdb}\n"
            )
        return f"Cannot connect to the database named by DATABASE_URL: {exc}"
    finally:
        connection.close()
    return None


def data_make_private() -> list[str]:
    """Make the data directory, the SQLite files and the exports the service user's alone, when
    something created them before `serve` set its umask (`migrate` and `createuser` in `./dev up`
    run under the shell's, usually 022); returns the paths it changed."""
    from pathlib import Path

    from django.conf import settings

    paths = [Path(settings.VAR_DIR), Path(settings.EXPORT_ROOT)]
    if connection.vendor == "sqlite":
        database = Path(str(connection.settings_dict["NAME"]))
        # SQLite gives its -wal, -shm and -journal files the mode of the database file.
        paths += [database.with_name(database.name + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    changed = []
    for path in paths:
        try:
            mode = path.stat().st_mode
        except OSError:
            continue  # not there (yet): created later under the umask
        if mode & 0o077:
            path.chmod(0o700 if path.is_dir() else 0o600)
            changed.append(str(path))
    return changed


def main() -> int:
    problem = database_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "coordinator.settings")
    import django

    django.setup()
    sys.exit(main())
