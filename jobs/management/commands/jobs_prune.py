from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from jobs.retention import PRUNE_BATCH, jobs_prune


class Command(BaseCommand):
    help = "Delete finished jobs and files past JOBS_KEEP_DAYS / JOBS_FILES_KEEP_DAYS, in batches, until none is left."

    def handle(self, *args: Any, **options: Any) -> None:
        totals = {"jobs": 0, "files": 0}
        while True:
            result = jobs_prune(max_batches=1)
            for kind, count in result.items():
                totals[kind] += count
            self.stdout.write(f"deleted so far: {totals['jobs']} job(s), {totals['files']} file(s)")
            if all(count < PRUNE_BATCH for count in result.values()):
                break
        self.stdout.write(f"Pruned {totals['jobs']} job(s) and {totals['files']} file(s).")
