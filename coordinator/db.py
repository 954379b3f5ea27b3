"""Database helpers shared by the apps."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.utils import CursorDebugWrapper


def _prepared_cursor_class() -> type[Any]:
    from django.db.backends.postgresql.base import ServerBindingCursor

    class PreparedCursor(ServerBindingCursor):  # type: ignore[misc,valid-type]
        """Server-side binding, and every statement prepared on first use (psycopg keeps the 100
        most recent per connection): PostgreSQL plans each statement once per connection."""

        def execute(
            self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: bool | None = None
        ) -> Any:
            return super().execute(query, params, prepare=True, binary=binary)  # type: ignore[misc]

    return PreparedCursor


_cursor_class: type[Any] | None = None


class _PreparedDebugWrapper(CursorDebugWrapper):
    """The query log (DEBUG, tests) shows the statement with its values, as for Django's own
    cursors: psycopg keeps no query text for a prepared statement to read it back from."""

    def execute(self, sql: Any, params: Any = None) -> Any:
        with self.debug_sql(self.db.ops.compose_sql(sql, params)):
            return super(CursorDebugWrapper, self).execute(sql, params)


@contextmanager
def prepared_cursor() -> Iterator[Any]:
    """A cursor for hot statements run thousands of times with other values (hand-out, updates).

    On PostgreSQL, planning such a statement can cost as much as running it (a CTE of several
    parts: about 1 ms, against 0.1 ms to execute), so these are bound server side and prepared;
    Django itself binds client side and never prepares (`prepare_threshold` None, for connection
    poolers in transaction mode). `DATABASE_PREPARED_STATEMENTS=0` turns this off behind such a
    pooler. Parameters then travel untyped where a string is sent, so a parameter in a select
    list needs a cast in the SQL. Elsewhere (SQLite, which caches statements itself), or when
    turned off, this is `connection.cursor()`. Queries still show in Django's query log.
    """
    global _cursor_class
    # The wrapper itself, not the `connection` proxy: each attribute read through the proxy is a
    # context-local lookup, and this runs on every hot request.
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "postgresql" or not settings.DATABASE_PREPARED_STATEMENTS:
        with db.cursor() as cursor:
            yield cursor
        return
    db.close_if_health_check_failed()
    db.ensure_connection()
    if _cursor_class is None:
        _cursor_class = _prepared_cursor_class()
    pg = db.connection
    if pg.prepare_threshold is None:
        # Django's None turns preparing off for the whole connection, `prepare=True` included; its own
        # (client-side binding) cursors never prepare whatever this says.
        pg.prepare_threshold = 5
    with db.wrap_database_errors:
        raw = _cursor_class(pg)
    cursor = _PreparedDebugWrapper(raw, db) if db.queries_logged else db.make_cursor(raw)
    try:
        yield cursor
    finally:
        cursor.close()
