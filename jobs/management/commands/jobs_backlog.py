from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from jobs.services import jobs_queue_backlog


class Command(BaseCommand):
    help = "Queue fresh jobs that were never handed to django-q2 (BookLogr's worker manager `backlog`)."

    def handle(self, *args: Any, **options: Any) -> None:
        queued = jobs_queue_backlog(grace_seconds=0)
        self.stdout.write(f"Queued {len(queued)} job(s): {', '.join(map(str, queued)) or '-'}")
