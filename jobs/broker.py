"""A django-q2 ORM broker that sleeps on PostgreSQL LISTEN instead of polling.

Stock `django_q.brokers.orm.ORM` polls `OrmQ` every `poll` seconds and calls
`close_old_connections()` on every call (a reconnect per call when `CONN_MAX_AGE` is 0). This
broker keeps its connection, claims queue rows with one `UPDATE … FOR UPDATE SKIP LOCKED …
RETURNING` on PostgreSQL, and when the queue is empty waits on a dedicated autocommit connection
that LISTENs to `task_created` (jobs) and `django_q` (any other `async_task`), with a slow poll
(`jobs.conf.LISTEN_TIMEOUT_SECONDS`) as the fallback so nothing is missed. On SQLite it is the stock ORM broker.
The broker loop also runs the jobs sweep (lost-worker recovery, backlog) every `JOBS_SWEEP_SECONDS`,
and queues delayed jobs at their time: it knows when the earliest one is due, learns of new ones
from their `NOTIFY task_created, 'due <epoch>'`, and sleeps until then (never longer than the
fallback poll).
"""

from __future__ import annotations

import logging
import math
import time
from datetime import timedelta
from typing import Any

from django.db import InterfaceError, OperationalError, connections
from django.db.models import Case, When
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ

from jobs import conf
from jobs.registry import HIGH_BAND, LOW_BAND, queue_band, queue_list_key

logger = logging.getLogger("jobs.broker")

QUEUE_CHANNEL = "django_q"
CHANNELS = ("task_created", QUEUE_CHANNEL)


def served_keys(list_key: str) -> list[str] | None:
    """The list keys a cluster named `list_key` takes from: the site's own name serves every
    queue (None); `exports,default` (what `qcluster --queue exports --queue default` sets) serves
    those queues and their priority bands (`exports-high`, `default-low`, …) only."""
    if list_key == Conf.PREFIX:
        return None
    names = [name.strip() for name in list_key.split(",") if name.strip()]
    bands = [queue_band(name, priority) for name in names for priority in (-1, 0, 1)]
    return sorted({list_key, *(queue_list_key(name) for name in bands)})


# The claim's order on PostgreSQL, exactly as the expression index `jobs_ormq_claim_order`
# (migration jobs 0006) has it, so a claim reads one index entry however long the queue is.
CLAIM_RANK_SQL = f"CASE WHEN key LIKE '%{HIGH_BAND}' THEN 0 WHEN key LIKE '%{LOW_BAND}' THEN 2 ELSE 1 END"


def _rank_of(key: str) -> int:
    return 0 if key.endswith(HIGH_BAND) else 2 if key.endswith(LOW_BAND) else 1


def _band_rank() -> Case:
    """Claim order across the served keys: a queue's `-high` band first, its `-low` band last."""
    return Case(When(key__endswith=HIGH_BAND, then=0), When(key__endswith=LOW_BAND, then=2), default=1)


class ListenNotifyBroker(ORM):
    def __init__(self, list_key: str | None = None) -> None:
        super().__init__(list_key=list_key)  # type: ignore[arg-type]
        self.keys = served_keys(self.list_key)
        self._listen_conn: Any = None
        self._next_sweep = 0.0
        # Since when (monotonic) this broker has reached the database without a break; None while
        # it cannot. Heartbeats missed during an outage say nothing about their workers.
        self._database_since: float | None = -math.inf
        # Epoch seconds when the earliest delayed job is due (inf: none; None: not read yet).
        self._next_due: float | None = None

    @property
    def _db(self) -> Any:
        return connections[Conf.ORM]

    @property
    def is_postgres(self) -> bool:
        return bool(self._db.vendor == "postgresql")

    def get_connection(self, list_key: str | None = None) -> Any:
        # Keep the connection between calls; only drop it when it is broken.
        conn = self._db
        if conn.connection is not None and conn.get_autocommit() and conn.errors_occurred and not conn.is_usable():
            conn.close()
        return OrmQ.objects.using(Conf.ORM)

    def enqueue(self, task: Any) -> Any:
        pk = super().enqueue(task)
        if self.is_postgres:  # jobs are queued by jobs_enqueue, with their own NOTIFY
            with self._db.cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, %s)", [QUEUE_CHANNEL, self.list_key])
        return pk

    def _take(self) -> list[tuple[Any, Any]]:
        if not self.is_postgres:
            return list(super_dequeue_without_sleep(self))
        table = OrmQ._meta.db_table
        now = timezone.now()
        self.get_connection()
        served, params = ("", []) if self.keys is None else ("key = ANY(%s) AND ", [self.keys])
        with self._db.cursor() as cursor:
            # SKIP LOCKED: two clusters never wait on, or both take, the same queue row. The
            # priority bands first (`_band_rank`), then the order they were queued in.
            cursor.execute(
                f"UPDATE {table} SET lock = %s WHERE id IN (SELECT id FROM {table} WHERE {served}lock < %s "
                f"ORDER BY {CLAIM_RANK_SQL.replace('%', '%%')}, id LIMIT %s FOR UPDATE SKIP LOCKED) "
                f"RETURNING id, payload, key",
                [now + timedelta(seconds=Conf.RETRY), *params, now, Conf.BULK],
            )
            rows = sorted(cursor.fetchall(), key=lambda row: (_rank_of(row[2]), row[0]))
            return [(row[0], row[1]) for row in rows]

    def close(self) -> None:
        if self._listen_conn is not None:
            self._listen_conn.close()
            self._listen_conn = None

    def _listen(self) -> Any:
        if self._listen_conn is None or self._listen_conn.closed:
            import psycopg

            settings = self._db.settings_dict
            params = {
                "dbname": settings["NAME"],
                "user": settings.get("USER") or None,
                "password": settings.get("PASSWORD") or None,
                "host": settings.get("HOST") or None,
                "port": settings.get("PORT") or None,
            }
            self._listen_conn = psycopg.connect(**{k: v for k, v in params.items() if v}, autocommit=True)
            for channel in CHANNELS:
                self._listen_conn.execute(f"LISTEN {channel}")
        return self._listen_conn

    def _wait(self, timeout: float) -> bool:
        """Sleep until a NOTIFY arrives or `timeout` passes; True when woken by a notification."""
        from jobs.services import DUE_PREFIX

        try:
            conn = self._listen()
            for notify in conn.notifies(timeout=timeout, stop_after=1):
                if notify.payload.startswith(DUE_PREFIX):
                    # A delayed job: wake up at its time (if earlier than the one known).
                    try:
                        due = float(notify.payload[len(DUE_PREFIX) :])
                    except ValueError:
                        due = 0.0
                    self._next_due = min(self._next_due if self._next_due is not None else math.inf, due)
                return True
            return False
        except Exception:
            logger.exception("LISTEN connection failed; falling back to polling")
            if self._listen_conn is not None:
                self._listen_conn.close()
            self._listen_conn = None
            time.sleep(min(timeout, Conf.POLL))
            return False

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + conf.sweep_seconds()
        try:
            from jobs.services import jobs_sweep

            # Back from an outage, live workers need one stale period to beat again before a
            # silent job may be taken for a lost one and run a second time.
            back_for = now - self._database_since if self._database_since is not None else 0.0
            jobs_sweep(recover=back_for >= conf.stale_seconds())
            if self._database_since is None:
                self._database_since = now
        except (OperationalError, InterfaceError):
            self._database_since = None
            logger.warning("jobs sweep: the database is unreachable")
        except Exception:
            logger.exception("jobs sweep failed")

    def _queue_due(self) -> None:
        """Queue the delayed jobs and fire the schedules whose time has come, then note when the
        next one is due."""
        if self._next_due is not None and self._next_due > time.time():
            return
        try:
            from jobs.schedules import FIRE_BATCH, schedules_fire_due
            from jobs.selectors import job_next_due, schedule_next_due
            from jobs.services import jobs_queue_due

            jobs_queue_due()
            if schedules_fire_due() >= FIRE_BATCH:
                self._next_due = time.time()  # more are due: fire the next batch after this take
                return
            due = [moment.timestamp() for moment in (job_next_due(), schedule_next_due()) if moment is not None]
            # Without notifications (SQLite) every poll looks again.
            self._next_due = None if not self.is_postgres else min(due, default=math.inf)
        except Exception:
            logger.exception("queueing due jobs failed")
            self._next_due = time.time() + conf.listen_timeout()

    def _sleep_seconds(self) -> float:
        """Until the fallback poll, the next sweep or the next delayed job, whichever is first."""
        until_sweep = self._next_sweep - time.monotonic()
        until_due = (self._next_due if self._next_due is not None else 0.0) - time.time()
        return max(0.0, min(conf.listen_timeout(), max(0.05, until_sweep), until_due))

    def dequeue(self) -> list[tuple[Any, Any]] | None:
        self._maybe_sweep()
        self._queue_due()
        tasks = self._take()
        if tasks:
            return tasks
        if not self.is_postgres:
            time.sleep(Conf.POLL)
            return None
        # LISTEN is established before the next take, so a NOTIFY sent in between is not lost:
        # it is waiting in the connection and ends the wait at once.
        self._listen()
        tasks = self._take()
        if tasks:
            return tasks
        self._wait(self._sleep_seconds())
        self._queue_due()
        return self._take() or None


def super_dequeue_without_sleep(broker: ListenNotifyBroker) -> list[tuple[Any, Any]]:
    """The stock ORM claim (select, then a guarded update per row), without its idle sleep."""
    rows = broker.get_connection().filter(lock__lt=timezone.now())
    if broker.keys is not None:
        rows = rows.filter(key__in=broker.keys)
    tasks = rows.order_by(_band_rank(), "id")[0 : Conf.BULK]
    taken = []
    for task in tasks:
        if broker.get_connection().filter(id=task.id, lock=task.lock).update(lock=broker.timeout(task)):
            taken.append((task.pk, task.payload))
    return taken
