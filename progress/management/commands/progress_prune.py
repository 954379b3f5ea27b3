"""Delete progress events and ended streams older than PROGRESS_RETENTION_SECONDS."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from progress.services import progress_prune


class Command(BaseCommand):
    help = "Delete progress events and ended streams older than the retention window."

    def handle(self, *args: Any, **options: Any) -> None:
        events, topics = progress_prune()
        self.stdout.write(f"Deleted {events} events and {topics} streams.")
