from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from jobs.services import jobs_sweep


class Command(BaseCommand):
    help = (
        "Recover jobs of lost workers (stale heartbeat), queue again jobs no cluster started, queue the "
        "backlog and remove what killed exports left; clusters also do this."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        result = jobs_sweep()
        self.stdout.write(
            f"Recovered {len(result['recovered'])} job(s), queued again {len(result['requeued'])}, "
            f"queued {len(result['queued'])}, removed {len(result['removed_parts'])} unfinished export file(s)."
        )
