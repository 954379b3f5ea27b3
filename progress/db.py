"""Database access from long-lived async connections (SSE streams, WebSockets)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import connection

P = ParamSpec("P")
R = TypeVar("R")


def released(func: Callable[P, R]) -> Callable[P, R]:
    """Run `func`, then close this thread's connection (outside transactions).

    Under ASGI each request or consumer runs its sync code in a thread of its own; a stream stays
    open for hours, so a persistent connection (CONN_MAX_AGE) left in that thread would sit idle
    on the database for as long. Reads here are rare (connect, subscribe), reconnecting is cheap.
    """

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        finally:
            if not connection.in_atomic_block:
                connection.close()

    return wrapper


def db_call(func: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """`sync_to_async(released(func))`: an awaitable DB read that leaves no idle connection behind."""
    return sync_to_async(released(func))
