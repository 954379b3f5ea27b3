"""`manage.py createdevice NAME --kind KIND`: a validated device; prints its id and secret once."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from pool.services import device_create


class Command(BaseCommand):
    help = "Create a (validated) device and print its id and secret. The secret is shown only once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--kind", default="")
        parser.add_argument("--unvalidated", action="store_true", help="Leave it for staff to validate.")

    def handle(self, *args: Any, **options: Any) -> None:
        device, secret = device_create(name=options["name"], kind=options["kind"], validated=not options["unvalidated"])
        self.stdout.write(f"device_id: {device.pk}\nsecret: {secret}\n")
        self.stderr.write("Store the secret now: it is not shown again (issue a new one in the admin if lost).")
