"""`manage.py ensureadmin`: make sure at least one admin account exists (used by the quick start)."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from coordinator.models import Role, User
from coordinator.services import user_create_or_update


class Command(BaseCommand):
    help = (
        "Create an admin from COORDINATOR_ADMIN_EMAIL / COORDINATOR_ADMIN_PASSWORD when no admin "
        "exists; without a password one is generated and printed once."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        email = settings.COORDINATOR_ADMIN_EMAIL.strip()
        password = settings.COORDINATOR_ADMIN_PASSWORD
        if User.objects.filter(role=Role.ADMIN, is_active=True).exists():
            if password and User.objects.filter(email=email).exists():
                user_create_or_update(email=email, role=Role.ADMIN, password=password, check_password=False)
                self.stdout.write(f"Admin {email}: password set from COORDINATOR_ADMIN_PASSWORD.")
            else:
                self.stdout.write("An admin account exists already; nothing to do.")
            return
        generated = not password
        if generated:
            password = secrets.token_urlsafe(12)
        user_create_or_update(email=email, role=Role.ADMIN, password=password, check_password=False)
        self.stdout.write(self.style.SUCCESS(f"Created admin {email}."))
        if generated:
            self.stdout.write(self.style.WARNING(f"Generated password (shown once): {password}"))
