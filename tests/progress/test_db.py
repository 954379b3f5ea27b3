"""Database reads from long-lived streams: the checks many streams ask for share one read."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import async_to_sync

from progress.db import BatchedLookup

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_checks_of_many_streams_in_one_window_share_one_read() -> None:
    reads: list[set[int]] = []

    def stamps(keys: set[int]) -> dict[int, str]:
        reads.append(set(keys))
        return {key: f"stamp-{key}" for key in keys if key % 2 == 0}

    lookup = BatchedLookup(stamps, window=0.05)

    async def streams() -> list[str | None]:
        return await asyncio.gather(*(lookup.get(key % 300) for key in range(2000)))

    answers = async_to_sync(streams)()
    assert reads == [set(range(300))]  # 2,000 checks of 300 streams: one read
    assert answers[:4] == ["stamp-0", None, "stamp-2", None]  # a key the read did not find is None
    assert async_to_sync(streams)() == answers and len(reads) == 2  # the next window: one more read


def test_a_failed_read_reaches_every_stream_that_asked() -> None:
    def unreachable(keys: set[int]) -> dict[int, str]:
        raise ConnectionError("database unreachable")

    lookup = BatchedLookup(unreachable, window=0.01)

    async def streams() -> list[object]:
        return await asyncio.gather(*(lookup.get(key) for key in range(5)), return_exceptions=True)

    assert all(isinstance(answer, ConnectionError) for answer in async_to_sync(streams)())
