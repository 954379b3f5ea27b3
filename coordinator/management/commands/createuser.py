"""`manage.py createuser EMAIL --role ROLE [--password PW]`: create or update a platform user."""

from __future__ import annotations

import getpass
import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from coordinator.errors import ApplicationError
from coordinator.models import Role
from coordinator.services import user_create_or_update


class Command(BaseCommand):
    help = (
        "Create a user, or update an existing one's role and password (also the way to reset a lost "
        "admin password). Without --password the password is read from COORDINATOR_PASSWORD, or prompted for."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        parser.add_argument(
            "--role",
            choices=Role.values,
            default=None,
            help="A new user gets `user` without it; an existing user keeps its role.",
        )
        parser.add_argument("--password", default=None)
        parser.add_argument("--name", default=None)
        parser.add_argument("--keep-password", action="store_true", help="Only change the role of an existing user.")

    def handle(self, *args: Any, **options: Any) -> None:
        password: str | None = options["password"]
        if password is None and not options["keep_password"]:
            password = settings.COORDINATOR_PASSWORD or None
        if password is None and not options["keep_password"]:
            if not os.isatty(0):
                raise CommandError("No password: pass --password, set COORDINATOR_PASSWORD, or run interactively.")
            password = getpass.getpass("Password: ")
            if password != getpass.getpass("Password (again): "):
                raise CommandError("The passwords do not match.")
        try:
            user, created = user_create_or_update(
                email=options["email"], role=options["role"], password=password, name=options["name"]
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        verb = "Created" if created else "Updated"
        self.stdout.write(self.style.SUCCESS(f"{verb} {user.role} {user.email} (id {user.pk})."))
