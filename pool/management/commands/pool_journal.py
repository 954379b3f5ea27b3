"""`manage.py pool_journal`: append the messages of the day log from the database, as they come.

`serve` runs it when POOL_JOURNAL_DIR is set. It catches up with what is pending when it starts
(without writing twice what a writer that was stopped had written) and then every
POLL_SECONDS; on a full disk it says so once, waits, and catches up when space returns. It says
how far it is behind while it catches up, and what it wrote when it stops.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, close_old_connections

from pool import conf
from pool.models import Message
from pool.services import journal_reconcile, journal_write_pending

POLL_SECONDS = 0.5
RETRY_SECONDS = 5.0


class Command(BaseCommand):
    help = "Write the pool's JSONL day log from the database (run by `serve` when POOL_JOURNAL_DIR is set)."

    def handle(self, *args: Any, **options: Any) -> None:
        directory = conf.journal_dir()
        if directory is None:
            raise CommandError("POOL_JOURNAL_DIR is not set: there is no day log to write.")
        stop = threading.Event()

        def request_stop(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        self.stdout.write(f"day log writer: {directory}", ending="\n")
        total, failing = 0, False
        reconciled = False
        while not stop.is_set():
            close_old_connections()
            try:
                if not reconciled:
                    marked = journal_reconcile()
                    reconciled = True
                    if marked:
                        self.stdout.write(f"{marked} pending message(s) were already in the day log")
                written = journal_write_pending()
            except OSError as exc:
                if not failing:
                    self.stderr.write(f"day log: cannot write ({exc}); messages stay pending until it can")
                failing = True
                stop.wait(RETRY_SECONDS)
                continue
            except DatabaseError as exc:
                self.stderr.write(f"day log: database unavailable ({exc}); trying again")
                stop.wait(RETRY_SECONDS)
                continue
            if failing:
                self.stdout.write("day log: writing again")
                failing = False
            total += written
            if written:
                behind = Message.objects.filter(journal_pending=True).count()
                if behind:
                    self.stdout.write(f"day log: {written} written, {behind} still pending")
                    continue
            stop.wait(POLL_SECONDS)
        self.stdout.write(f"day log writer stopped: {total} message(s) written")
