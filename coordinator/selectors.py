"""Reads on users and platform health."""

from __future__ import annotations

from django.db import DatabaseError, connections


def database_is_up(alias: str = "default") -> bool:
    """True when the database answers a trivial query."""
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError:
        return False
    return True
