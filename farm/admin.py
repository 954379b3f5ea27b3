"""Staff UI for the task farm: runs with live progress, their tasks, and the workers."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from coordinator.admin_display import duration, relative_time, shortened
from coordinator.admin_site import SafeSelectionMixin
from farm import services
from farm.conf import lease_seconds
from farm.models import Run, Task, Worker
from farm.selectors import (
    RunCounts,
    run_counts,
    runs_counts,
    tasks_past_lease,
    tasks_unclaimed,
    with_computing_counts,
    workers_alive,
    workers_lost,
)

TASKS_PER_PAGE = 50


def progress_widget(run: Run, counts: RunCounts) -> SafeString:
    """A progress bar and the counts, kept live by progress/live.js (contract 2)."""
    state = counts.as_state()
    return format_html(
        '<div id="farm-run-progress-{uuid}" class="farm-progress" data-progress-topic="run:{uuid}">'
        '<div style="background:#e5e5e5;width:12em;height:0.9em;border-radius:3px;overflow:hidden">'
        '<div data-progress-width="percentDone" style="background:#417690;height:100%;width:{pct}%"></div></div>'
        '<small><span data-progress-field="numDone">{done}</span> done · '
        '<span data-progress-field="numComputing">{computing}</span> computing · '
        '<span data-progress-field="numWaiting">{waiting}</span> waiting · '
        '<span data-progress-field="numNotStarted">{not_started}</span> not started · '
        '<span data-progress-field="numFailed">{failed}</span> failed</small></div>',
        uuid=run.uuid,
        pct=f"{state['percentDone']:.2f}",
        done=counts.num_done,
        computing=counts.num_computing,
        waiting=counts.num_waiting,
        not_started=counts.num_not_started,
        failed=counts.num_failed,
    )


def _counts_of(run: Any) -> RunCounts:
    # The run list sets `farm_counts` for its page (`get_changelist_instance`); a single run counts itself.
    counts = getattr(run, "farm_counts", None)
    return counts if counts is not None else run_counts(run=run)


@admin.register(Run)
class RunAdmin(SafeSelectionMixin, admin.ModelAdmin):
    list_display = ("name", "progress", "num_tasks", "controls", "created", "owner", "labels_shown", "uuid_short")
    list_display_links = ("name", "uuid_short")
    list_filter = ("paused", "created_at")
    search_fields = ("uuid", "name", "labels", "owner__email")
    list_select_related = ("owner",)
    date_hierarchy = "created_at"
    ordering = ("-id",)  # newest first
    actions = ("restart_incomplete", "restart_failed", "restart_all", "pause", "resume")
    change_form_template = "farm/admin/run_change_form.html"
    fields = ("owner", "num_tasks", "name", "labels", "max_computing")
    CREATE_FIELDS = ("owner", "num_tasks", "name", "labels", "max_computing")
    CONTROL_FIELDS = ("name", "labels", "max_computing")
    SHOWN_FIELDS = ("uuid", "owner", "num_tasks", "next_task", "paused", "created_at", "progress")

    class Media:
        js = ["progress/live.js"]

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        # The counts of the runs on this page only, in one grouped query: annotating the queryset
        # made PostgreSQL join and aggregate every task row of every run before paginating (1.1 s
        # with 1.6 million task rows, growing with all the farm's history).
        changelist = super().get_changelist_instance(request)
        runs = list(changelist.result_list)
        counts = runs_counts(runs=runs)
        for run in runs:
            run.farm_counts = counts[run.pk]
        changelist.result_list = runs
        return changelist

    def get_fields(self, request: HttpRequest, obj: Run | None = None) -> Any:
        if obj is None:
            return self.CREATE_FIELDS
        return (*self.SHOWN_FIELDS[:3], *self.CONTROL_FIELDS, *self.SHOWN_FIELDS[3:])

    def get_readonly_fields(self, request: HttpRequest, obj: Run | None = None) -> Any:
        return () if obj is None else self.SHOWN_FIELDS

    @admin.display(description="labels")
    def labels_shown(self, run: Run) -> str:
        return ", ".join(str(label) for label in run.labels or [])

    @admin.display(description="created", ordering="created_at")
    def created(self, run: Run) -> SafeString:
        return relative_time(run.created_at)

    @admin.display(description="uuid", ordering="uuid")
    def uuid_short(self, run: Run) -> SafeString:
        return shortened(run.uuid, 8)

    @admin.display(description="controls")
    def controls(self, run: Run) -> SafeString:
        limit = f"at most {run.max_computing} computing" if run.max_computing else "no limit"
        if run.paused:
            return format_html('<span style="color:#ba2121;font-weight:bold">paused</span> · {}', limit)
        return format_html("{}", limit)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        return {"owner": request.user.pk}

    @admin.display(description="progress")
    def progress(self, run: Run) -> SafeString:
        return progress_widget(run, _counts_of(run))

    def save_model(self, request: HttpRequest, obj: Run, form: Any, change: bool) -> None:
        if change:  # only the controls change; tasks change through the actions
            controls = services.RunControls(
                name=obj.name,
                labels=obj.labels,
                max_computing=obj.max_computing,
                clear_max_computing=obj.max_computing is None,
            )
            services.run_control(run=obj, controls=controls)
            return
        created = services.run_create(
            owner=obj.owner,
            num_tasks=obj.num_tasks,
            name=obj.name,
            labels=obj.labels,
            max_computing=obj.max_computing,
        )
        obj.pk, obj.uuid, obj.created_at, obj.next_task = created.pk, created.uuid, created.created_at, 0

    def delete_model(self, request: HttpRequest, obj: Run) -> None:
        services.run_delete(run=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        for run in queryset:
            services.run_delete(run=run)

    def _restart(self, request: HttpRequest, queryset: QuerySet[Run], what: str) -> None:
        changed = sum(services.run_restart(run=run, what=what) for run in queryset)
        self.message_user(request, f"{changed} tasks put back to waiting.", messages.SUCCESS)

    @admin.action(
        description="Restart incomplete tasks (started, or with a lapsed lease; live work is spared)",
        permissions=["change"],
    )
    def restart_incomplete(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        self._restart(request, queryset, services.Restart.INCOMPLETE)

    @admin.action(description="Restart failed tasks", permissions=["change"])
    def restart_failed(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        self._restart(request, queryset, services.Restart.FAILED)

    @admin.action(description="Restart all tasks (back to 0%%)", permissions=["change"])
    def restart_all(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        self._restart(request, queryset, services.Restart.ALL)

    def _pause(self, request: HttpRequest, queryset: QuerySet[Run], paused: bool) -> None:
        for run in queryset:
            services.run_control(run=run, controls=services.RunControls(paused=paused))
        verb = "paused" if paused else "resumed"
        self.message_user(request, f"{queryset.count()} runs {verb}.", messages.SUCCESS)

    @admin.action(description="Pause (hand out no task)", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        self._pause(request, queryset, True)

    @admin.action(description="Resume", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        self._pause(request, queryset, False)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        run = Run.objects.filter(pk=object_id).first() if object_id.isdigit() else None
        context = dict(extra_context or {})
        if run is not None:
            status = request.GET.get("task_status", "")
            tasks = Task.objects.filter(run=run).select_related("worker").order_by("task")
            if status in Task.Status.values:
                tasks = tasks.filter(status=status)
            page = Paginator(tasks, TASKS_PER_PAGE).get_page(request.GET.get("task_page"))
            context.update(
                {
                    "farm_run": run,
                    "farm_tasks_page": page,
                    "farm_task_status": status,
                    "farm_statuses": Task.Status.values,
                    "farm_all_tasks_url": reverse("admin:farm_task_changelist") + f"?run__id__exact={run.pk}",
                }
            )
        return super().change_view(request, object_id, form_url, context)


class StuckTaskFilter(admin.SimpleListFilter):
    """Work that is not moving: a lease held by a silent worker, or waiting with nobody to claim it."""

    title = "stuck"
    parameter_name = "stuck"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("past_lease", "held past its lease"), ("unclaimed", "waiting, no live worker will claim it")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Task]) -> QuerySet[Task]:
        if self.value() == "past_lease":
            return queryset.filter(pk__in=tasks_past_lease().values("pk"))
        if self.value() == "unclaimed":
            return queryset.filter(pk__in=tasks_unclaimed().values("pk"))
        return queryset


class WorkerStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("alive", "alive"), ("lost", "lost (stopped reporting)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Worker]) -> QuerySet[Worker]:
        if self.value() == "alive":
            return queryset.filter(pk__in=workers_alive().values("pk"))
        if self.value() == "lost":
            return queryset.filter(pk__in=workers_lost().values("pk"))
        return queryset


def live_state(alive_until: float, alive: str, expired: str) -> SafeString:
    """A state that turns to `expired` by itself on an open page once `alive_until` passes."""
    is_alive = alive_until > timezone.now().timestamp()
    return format_html(
        '<span class="farm-state" data-live-until="{}"{}><span data-state="{}" data-live-expired-text="{}">{}</span></span>',
        alive_until,
        "" if is_alive else mark_safe(" data-live-expired"),
        alive if is_alive else expired,
        expired,
        alive if is_alive else expired,
    )


@admin.register(Task)
class TaskAdmin(SafeSelectionMixin, admin.ModelAdmin):
    list_display = (
        "task",
        "status_shown",
        "percent_completed",
        "run",
        "worker_short",
        "started_ago",
        "took",
        "attempts",
    )
    list_filter = ("status", StuckTaskFilter, "started", "updated")
    search_fields = ("run__uuid", "run__name", "worker__hostname", "worker__uuid")
    list_select_related = ("run", "worker")
    readonly_fields = (
        "run",
        "task",
        "status",
        "percent_completed",
        "attempts",
        "failure",
        "worker",
        "started",
        "updated",
    )
    show_full_result_count = False  # runs can hold millions of rows

    class Media:
        js = ["progress/live.js"]
        css = {"all": ["farm/admin.css"]}

    @admin.display(description="started", ordering="started")
    def started_ago(self, task: Task) -> SafeString:
        return relative_time(task.started)

    @admin.display(description="duration")
    def took(self, task: Task) -> SafeString:
        # Computing: its age, counting up; finished: how long it took.
        running = task.status == Task.Status.COMPUTING
        return duration(task.started, None if running else task.updated)

    @admin.display(description="worker", ordering="worker__hostname")
    def worker_short(self, task: Task) -> SafeString:
        return shortened(task.worker.hostname if task.worker else None, 16)

    @admin.display(description="status", ordering="status")
    def status_shown(self, task: Task) -> SafeString:
        if task.status == Task.Status.COMPUTING and task.updated is not None:
            until = task.updated.timestamp() + lease_seconds()
            return live_state(until, "computing", "past lease")
        return format_html('<span data-state="{}">{}</span>', task.status, task.status)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Task | None = None) -> bool:
        return False


@admin.register(Worker)
class WorkerAdmin(SafeSelectionMixin, admin.ModelAdmin):
    list_display = ("hostname", "state", "seen", "tasks_computing", "tasks_done", "pid", "uuid_short", "owner", "up")
    list_filter = (WorkerStateFilter, "last_seen", "start")
    search_fields = ("hostname", "uuid", "owner__email")
    list_select_related = ("owner",)
    readonly_fields = ("uuid", "owner", "hostname", "pid", "start", "last_seen", "tasks_done")

    class Media:
        js = ["progress/live.js"]
        css = {"all": ["farm/admin.css"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Worker]:
        return with_computing_counts(super().get_queryset(request))

    @admin.display(description="last seen", ordering="last_seen")
    def seen(self, worker: Worker) -> SafeString:
        return relative_time(worker.last_seen)

    @admin.display(description="started", ordering="start")
    def up(self, worker: Worker) -> SafeString:
        return relative_time(worker.start)

    @admin.display(description="uuid", ordering="uuid")
    def uuid_short(self, worker: Worker) -> SafeString:
        return shortened(worker.uuid, 8)

    @admin.display(description="state")
    def state(self, worker: Worker) -> SafeString:
        # Alive while it reported within the lease; the open page turns it to lost by itself.
        return live_state(worker.last_seen.timestamp() + lease_seconds(), "alive", "lost")

    @admin.display(description="computing", ordering="n_computing")
    def tasks_computing(self, worker: Any) -> int:
        return int(worker.n_computing)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Worker | None = None) -> bool:
        return False
