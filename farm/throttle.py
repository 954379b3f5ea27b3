"""Run progress events, throttled per server process, with the last change always sent.

Hundreds of claims and updates a second would each cost a progress event (database rows and a
channel-layer send) plus a count query; live pages need a few updates a second, not every one. So
a run gets at most one `msg` per `FARM_PROGRESS_INTERVAL` from each server process: the first
change of a window is sent at once (the leading edge), and if more changes fall inside the window,
one more `msg` with the counts as they are then goes out when the window closes (the trailing
edge, from a background thread), so a run page never stays behind a worker that went quiet.

The windows are read from `clock` (monotonic seconds) and the trailing events are sent by
`publish_due()`, which the background thread calls when the next window closes: tests replace the
clock and call `publish_due()` themselves (with `trailing_thread` off), so no test waits on time.

Each `msg` carries the run's counts, and counting costs time in proportion to the run's task rows.
So a run's window is also at least COUNT_COST_FACTOR times what its last count took: counting
stays a small share of the work however large the run.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.db import close_old_connections, connection

from farm.conf import progress_interval, progress_trailing

logger = logging.getLogger(__name__)

# When this server process last published a `msg` for each run (monotonic seconds).
_last_msg: dict[int, float] = {}
# Runs with a change not published yet: run id -> (when the window closes, the latest change's text).
_pending: dict[int, tuple[float, str]] = {}
_queue: list[tuple[float, int]] = []  # (when, run id), a heap; stale entries are skipped
_lock = threading.Lock()
_wake = threading.Condition(_lock)
_thread: threading.Thread | None = None
# How long the last count of each run took in this process (seconds).
_count_seconds: dict[int, float] = {}
COUNT_COST_FACTOR = 20
# Publishes the counts of a run (set by farm.services, which owns what a `msg` says).
_publisher: Callable[[int, str], None] | None = None
# The time the windows are measured in, and whether a background thread sends the trailing events.
clock: Callable[[], float] = time.monotonic
trailing_thread = True


def set_publisher(publish: Callable[[int, str], None]) -> None:
    global _publisher
    _publisher = publish


def msg_due(run_id: int, force: bool, text: str = "") -> bool:
    """Whether a `msg` for the run goes out now; if not, one is scheduled for the end of the window."""
    now = clock()
    with _lock:
        interval = window(run_id)
        last = _last_msg.get(run_id)
        if not force and last is not None and now - last < interval:
            if progress_trailing():
                _schedule(run_id, last + interval, text)
            return False
        if len(_last_msg) > 10_000:
            _last_msg.clear()
        _last_msg[run_id] = now
        _pending.pop(run_id, None)  # this one carries the latest counts
        return True


def window(run_id: int) -> float:
    """The run's least seconds between two `msg` events from this process."""
    return max(progress_interval(), COUNT_COST_FACTOR * _count_seconds.get(run_id, 0.0))


def count_took(run_id: int, seconds: float) -> None:
    """Record how long counting the run's tasks took (it sets the run's window)."""
    with _lock:
        if len(_count_seconds) > 10_000:
            _count_seconds.clear()
        _count_seconds[run_id] = seconds


def _schedule(run_id: int, when: float, text: str) -> None:
    global _thread
    known = _pending.get(run_id)
    _pending[run_id] = (when if known is None else known[0], text)
    if known is None:
        heapq.heappush(_queue, (when, run_id))
        _wake.notify()
    if trailing_thread and (_thread is None or not _thread.is_alive()):
        _thread = threading.Thread(target=_run, name="farm-progress-trailing", daemon=True)
        _thread.start()


@dataclass(frozen=True, slots=True)
class _Due:
    run_id: int
    text: str


def _take_due() -> tuple[list[_Due], float | None]:
    """Under the lock: the trailing events whose window closed, and the seconds until the next one
    closes (None when nothing is pending)."""
    due: list[_Due] = []
    now = clock()
    while _queue:
        when, run_id = _queue[0]
        if when > now:
            return due, when - now
        heapq.heappop(_queue)
        entry = _pending.get(run_id)
        if entry is None or entry[0] != when:
            continue  # published meanwhile (leading edge of a later window), or rescheduled
        del _pending[run_id]
        _last_msg[run_id] = now
        due.append(_Due(run_id, entry[1]))
    return due, None


def publish_due() -> int:
    """Send the trailing events whose window has closed; returns how many went out."""
    with _lock:
        due, _ = _take_due()
    for event in due:
        _publish(event.run_id, event.text)
    return len(due)


def _run() -> None:
    while True:
        with _lock:
            due, delay = _take_due()
            if not due:
                _wake.wait(timeout=delay)
                continue
        close_old_connections()
        try:
            for event in due:
                _publish(event.run_id, event.text)
        finally:
            # This thread's own connection: never left open between windows (a database being
            # dropped, a server restarted, or a test's teardown would otherwise wait on it).
            connection.close()


def _publish(run_id: int, text: str) -> None:
    try:
        if _publisher is not None:
            _publisher(run_id, text)
    except Exception:  # progress is best effort; the next change publishes again
        logger.exception("Trailing progress event for run %s failed", run_id)


def forget(run_id: int) -> None:
    """Drop the run's pending event (it ended: its `end` carries the final counts)."""
    with _lock:
        _pending.pop(run_id, None)
        _count_seconds.pop(run_id, None)


def reset() -> None:
    """Forget every window and pending event of this process (tests start each from a quiet one)."""
    with _lock:
        _last_msg.clear()
        _pending.clear()
        _queue.clear()
        _count_seconds.clear()
