"""`manage.py import_pool_jsonl FILE...`: load task-pool-backend day files (idempotent by id)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from pool.services import ImportReport, pool_import_jsonl


class Command(BaseCommand):
    help = "Import task-pool-backend JSONL day files; existing ids are skipped, bad lines are reported."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", type=Path)

    def handle(self, *args: Any, **options: Any) -> None:
        totals = ImportReport()
        for path in options["files"]:

            def show(report: ImportReport, path: Path = path) -> None:
                self.stdout.write(
                    f"\r{path}: {report.lines} lines, {report.created} created, {report.skipped} skipped, "
                    f"{len(report.errors)} bad",
                    ending="",
                )
                self.stdout.flush()

            report = pool_import_jsonl(path=path, on_progress=show)
            self.stdout.write("")
            for error in report.errors:
                self.stderr.write(f"{error['file']}:{error['line']}: {error['error']}")
            totals.created += report.created
            totals.skipped += report.skipped
            totals.lines += report.lines
            totals.errors.extend(report.errors)
        self.stdout.write(
            f"Imported {len(options['files'])} file(s): {totals.lines} lines, {totals.created} created, "
            f"{totals.skipped} already present, {len(totals.errors)} bad lines."
        )
        if totals.errors:
            raise SystemExit(1)
