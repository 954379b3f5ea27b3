from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from jobs.services import jobs_delete_fresh


class Command(BaseCommand):
    help = "Delete every fresh job (BookLogr's worker manager `clear`)."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"Deleted {jobs_delete_fresh()} fresh job(s).")
