"""Admin bulk actions as background jobs: the page answers at once, the job page shows progress.

An app declares a bulk action once (`bulk_action`): the job type, the model, the permission it
needs and the service call for one row. The admin action submits the selected ids
(`bulk_submit`); a job worker applies the service to each row, re-checking the submitter's
permission, reporting running counts, writing each change to the object's admin History, and
ending with a summary as its result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.contrib.admin import ModelAdmin
from django.contrib.admin.models import CHANGE, LogEntry
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from coordinator.errors import ApplicationError
from coordinator.models import User
from jobs.context import JobContext
from jobs.registry import register

# One bulk job holds at most this many ids (about 8 bytes each in its data); a larger selection
# is refused with a message asking to narrow it with the list's filters.
MAX_ROWS = 20_000
# Rows are read in chunks of this many ids (SQLite's bound on query parameters is far above).
CHUNK = 500


@dataclass(frozen=True)
class BulkAction:
    name: str
    model: type[Model]
    permission: str
    apply: Callable[[Any], bool]
    done_as: str  # what the History page says, e.g. "Retried"
    verb: str  # past participle for the counts, e.g. "retried"


_ACTIONS: dict[str, BulkAction] = {}


def bulk_action(
    *, name: str, model: type[Model], permission: str, done_as: str, verb: str
) -> Callable[[Callable[[Any], bool]], Callable[[Any], bool]]:
    """Register `apply(row) -> bool` (False: the row was refused or had nothing to do) as the
    job type `name`, for users holding `permission` (`app_label.codename`)."""

    def decorate(apply: Callable[[Any], bool]) -> Callable[[Any], bool]:
        action = BulkAction(name=name, model=model, permission=permission, apply=apply, done_as=done_as, verb=verb)
        _ACTIONS[name] = action

        def run(ctx: JobContext, ids: list[int]) -> dict[str, int]:
            return _run(action, ctx, ids)

        run.__doc__ = f"Admin bulk action: {verb} each selected {model._meta.verbose_name}."
        # Protected: only admins (and holders of its run permission) may submit it by hand.
        register(run, name=name, protected=True, permission=permission, timeout=3600)
        return apply

    return decorate


def _run(action: BulkAction, ctx: JobContext, ids: list[int]) -> dict[str, int]:
    user = ctx.user
    if user is None or not user.is_active or not user.has_perm(action.permission):
        raise PermissionError(f"{user or 'nobody'} may not do this (needs {action.permission}).")
    total, done, refused = len(ids), 0, 0
    ctx.report(0, f"0 of {total}", force=True)
    position = 0
    for row in _rows(action, ids):
        position += 1
        try:
            changed = action.apply(row)
        except ApplicationError:
            changed = False
        if changed:
            done += 1
            LogEntry.objects.log_actions(
                user_id=user.pk, queryset=[row], action_flag=CHANGE, change_message=action.done_as, single_object=True
            )
        else:
            refused += 1
        ctx.report(100 * position / total, f"{position} of {total}: {done} {action.verb}, {refused} refused")
    missing = total - done - refused  # deleted since they were selected
    ctx.report(100, f"{done} {action.verb}, {refused} refused, {missing} gone", force=True)
    return {"selected": total, action.verb: done, "refused": refused, "gone": missing}


def _rows(action: BulkAction, ids: list[int]) -> Any:
    manager = action.model._default_manager
    for start in range(0, len(ids), CHUNK):
        yield from manager.filter(pk__in=ids[start : start + CHUNK]).order_by("pk")


def bulk_submit(request: HttpRequest, model_admin: ModelAdmin[Any], queryset: QuerySet[Any], name: str) -> None:
    """Submit the selected rows to the bulk job `name` and say where its progress is shown."""
    from jobs.services import job_create

    action = _ACTIONS[name]
    user = request.user if isinstance(request.user, User) else None
    # (a forged selection, ids that are not ids, is refused before: SafeSelectionMixin)
    ids = list(queryset.order_by().values_list("pk", flat=True)[: MAX_ROWS + 1])
    if not ids:
        model_admin.message_user(request, "Nothing matched the selection: no job was started.", messages.WARNING)
        return
    if len(ids) > MAX_ROWS:
        model_admin.message_user(
            request,
            f"More than {MAX_ROWS:,} rows selected: narrow the selection with the filters (one job per "
            f"{MAX_ROWS:,} rows at most).",
            messages.ERROR,
        )
        return
    job = job_create(type=name, data={"ids": ids}, user=user)
    model_admin.message_user(
        request,
        format_html(
            '{} {} selected: they are being {} in the background by <a href="{}">job {}</a>, '
            "whose page shows the progress.",
            len(ids),
            action.model._meta.verbose_name_plural,
            action.verb,
            reverse("admin:jobs_job_change", args=[job.pk]),
            job.pk,
        ),
        messages.SUCCESS,
    )
