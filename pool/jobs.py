"""The pool's part in background jobs: its export dataset and the JSONL day-file import."""

from __future__ import annotations

from typing import Any

from jobs.bulk import bulk_action
from jobs.context import JobContext
from jobs.exports import dataset_register, uploaded_file
from jobs.registry import job
from pool.models import Task
from pool.selectors import POOL_EXPORT_COLUMNS, pool_export_rows
from pool.services import ImportReport, pool_import_jsonl, task_cancel

dataset_register(name="pool", title="Pool tasks and responses", columns=POOL_EXPORT_COLUMNS, rows=pool_export_rows)


@bulk_action(
    name="admin.pool_tasks_cancel", model=Task, permission="pool.change_task", done_as="Cancelled", verb="cancelled"
)
def cancel_one(task: Task) -> bool:
    return task_cancel(task=task)  # False: already cancelled


# The import reports its progress by lines read against the upload's size: an estimate of about
# this many bytes a line.
BYTES_PER_LINE = 200


@job(name="jsonl_import", protected=True, roles=("master",), timeout=3600)
def jsonl_import(ctx: JobContext, filename: str) -> dict[str, Any]:
    """Import an uploaded task-pool JSONL day file into the pool (idempotent)."""
    path = uploaded_file(user=ctx.user, filename=filename)
    ctx.report(0, f"importing {filename}", force=True)
    expected_lines = max(1, path.stat().st_size // BYTES_PER_LINE)

    def on_progress(partial: ImportReport) -> None:
        done = min(99.0, 100.0 * partial.lines / expected_lines)
        ctx.report(done, f"{partial.created} created, {partial.skipped} skipped, {len(partial.errors)} errors")

    report = pool_import_jsonl(path=path, on_progress=on_progress)
    ctx.report(100, f"{report.created} created, {report.skipped} skipped, {len(report.errors)} errors", force=True)
    # Errors name the upload as its owner knows it, never the server's path.
    errors = [{**error, "file": filename} for error in report.errors]
    return {"filename": filename, "created": report.created, "skipped": report.skipped, "errors": errors}
