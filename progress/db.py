"""Database access from long-lived async connections (SSE streams, WebSockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from functools import wraps
from typing import Any, Generic, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import connection

P = ParamSpec("P")
R = TypeVar("R")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


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


class BatchedLookup(Generic[K, V]):
    """One database read for the keys many streams of this process ask for within `window` seconds.

    Each open stream re-checks its reader every keep-alive; done one by one, every check costs a
    connection of its own (`released`), and a few thousand device streams then open more
    connections a second than PostgreSQL allows. Asked here, the checks of a window share one read.
    `lookup_many(keys)` answers the keys it knows; a key missing from its answer reads as None.
    """

    def __init__(self, lookup_many: Callable[[set[K]], dict[K, V]], window: float) -> None:
        self._lookup_many = lookup_many
        self._window = window
        self._loop: asyncio.AbstractEventLoop | None = None
        self._asked: dict[K, list[asyncio.Future[V | None]]] = {}

    async def get(self, key: K) -> V | None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests start one per test): nothing carries over
            self._loop, self._asked = loop, {}
        answer: asyncio.Future[V | None] = loop.create_future()
        if not self._asked:
            loop.call_later(self._window, lambda: asyncio.ensure_future(self._answer(loop)))
        self._asked.setdefault(key, []).append(answer)
        return await answer

    async def _answer(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:
            return
        asked, self._asked = self._asked, {}
        try:
            found = await db_call(self._lookup_many)(set(asked))
        except Exception as exc:  # every stream that asked learns of it, as it would have alone
            for waiting in asked.values():
                for answer in waiting:
                    if not answer.done():
                        answer.set_exception(exc)
            return
        for key, waiting in asked.items():
            for answer in waiting:
                if not answer.done():
                    answer.set_result(found.get(key))
