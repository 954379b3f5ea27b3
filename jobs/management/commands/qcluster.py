"""django-q2's `qcluster`, plus `--queue NAME` (repeatable): serve only those job queues."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError
from django_q.conf import Conf
from django_q.management.commands.qcluster import Command as QclusterCommand

from jobs.registry import queue_name_valid


class Command(QclusterCommand):
    help = "Starts a Django Q cluster; with --queue, one that serves only the named job queues."

    def add_arguments(self, parser: ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--queue",
            action="append",
            default=[],
            help="A job queue to serve (repeat for several); default: every queue.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        queues: list[str] = options["queue"]
        bad = [name for name in queues if not queue_name_valid(name)]
        if bad:
            raise CommandError(f"Not a queue name: {', '.join(bad)}")
        if queues:
            # The cluster name is the broker's list key (django-q2); jobs.broker.served_keys reads
            # the queues back from it. Set on the class read when the cluster builds its broker,
            # since django-q2 read Q_CLUSTER_NAME when this module was imported.
            Conf.CLUSTER_NAME = ",".join(sorted(set(queues)))
        super().handle(*args, **options)
