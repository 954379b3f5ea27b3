from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from jobs.models import Job


class Command(BaseCommand):
    help = "List fresh jobs (BookLogr's worker manager `queue`)."

    def handle(self, *args: Any, **options: Any) -> None:
        rows = Job.objects.filter(status=Job.Status.FRESH).select_related("created_by").order_by("pk")
        count = 0
        for job in rows:
            count += 1
            queued = "queued" if job.queued_at else "never queued"
            owner = job.created_by.email if job.created_by else "-"
            self.stdout.write(f"{job.pk}\t{job.type}\t{owner}\t{job.created_at.isoformat()}\t{queued}")
        self.stdout.write(f"{count} fresh job(s).")
