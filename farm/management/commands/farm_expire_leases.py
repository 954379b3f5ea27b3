"""`manage.py farm_expire_leases`: return tasks of silent workers to waiting (cron or a schedule)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from farm.services import leases_expire


class Command(BaseCommand):
    help = "Put computing tasks whose worker sent nothing for FARM_LEASE_SECONDS back to waiting."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"{leases_expire()} tasks returned to waiting.")
