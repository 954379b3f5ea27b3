"""Staff admin for jobs and their files: live progress, retry/cancel, submit from the signature."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django_q import admin as q_admin
from django_q.models import Failure, Schedule, Success

from coordinator.admin_display import duration, relative_time, shortened
from coordinator.admin_site import SafeSelectionMixin, ServiceActionsAdmin, is_admin_request
from coordinator.errors import ApplicationError
from coordinator.models import User
from jobs.bulk import bulk_submit
from jobs.forms import JobSubmitForm, ScheduleForm
from jobs.models import Job, JobFile, JobSchedule
from jobs.registry import all_specs, get_spec
from jobs.retention import file_open_for_download, job_prune_at, retention_summary
from jobs.schedules import schedule_create, schedule_delete, schedule_next_runs, schedule_update
from jobs.selectors import jobs_heartbeat_stale, queue_summary, schedule_last_runs
from jobs.services import job_cancel, job_create, job_retry, user_may_run


def progress_widget(job: Job) -> str:
    """A live fragment for contract 2: updated in place by progress/live.js."""
    return format_html(
        '<div class="job-progress" data-progress-topic="job:{}">'
        '<progress max="100" value="{}" data-progress-field="percent"></progress> '
        '<small data-progress-field="message">{}</small></div>',
        job.pk,
        job.progress,
        job.progress_message,
    )


def status_widget(job: Job) -> str:
    """The job's status in colour, kept live like its bar."""
    return format_html(
        '<span data-progress-topic="job:{}"><span class="job-status" data-state="{}" data-progress-field="label" '
        'data-progress-state="label">{}</span></span>',
        job.pk,
        job.status_label,
        job.status_label,
    )


class StuckJobFilter(admin.SimpleListFilter):
    title = "stuck"
    parameter_name = "stuck"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("stale", "heartbeat stale")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        if self.value() == "stale":
            return queryset.filter(pk__in=jobs_heartbeat_stale().values("pk"))
        return queryset


@admin.register(Job)
class JobAdmin(ServiceActionsAdmin):
    list_display = [
        "id",
        "type",
        "status_badge",
        "live_progress",
        "created",
        "took",
        "attempts",
        "owner",
        "worker_short",
    ]
    list_filter = ["status", StuckJobFilter, "queue", "type", "created_at"]
    search_fields = ["=id", "type", "worker", "created_by__email", "error"]
    list_select_related = ["created_by"]
    date_hierarchy = "created_at"
    actions = ["retry_jobs", "cancel_jobs"]
    change_form_template = "admin/jobs/job/change_form.html"
    change_list_template = "admin/jobs/job/change_list.html"
    # What a job keeps from its submission; everything that changes while it runs is in the
    # page's one live panel (change_form.html), so the page never shows two states at once.
    readonly_fields = [
        "id",
        "uuid",
        "type",
        "data",
        "created_by",
        "created_at",
        "run_after",
        "unique_key",
        "rerun_of",
        "queue",
        "max_attempts",
        "files_list",
        "pruned",
    ]
    fields = tuple(readonly_fields)

    class Media:
        js = ["progress/live.js"]
        css = {"all": ["jobs/admin.css"]}

    @admin.display(description="status", ordering="status")
    def status_badge(self, job: Job) -> str:
        return status_widget(job)

    @admin.display(description="created", ordering="created_at")
    def created(self, job: Job) -> str:
        return relative_time(job.created_at)

    @admin.display(description="duration")
    def took(self, job: Job) -> str:
        # Running work counts up on the open page (its age); finished work shows how long it took.
        return duration(job.started_at, job.finished_at if job.status != Job.Status.STARTED else None)

    @admin.display(description="worker", ordering="worker")
    def worker_short(self, job: Job) -> str:
        return shortened(job.worker, 18)

    @admin.display(description="owner", ordering="created_by__email")
    def owner(self, job: Job) -> str:
        return job.created_by.email if job.created_by else "-"

    @admin.display(description="progress")
    def live_progress(self, job: Job) -> str:
        return progress_widget(job)

    @admin.display(description="pruned")
    def pruned(self, job: Job) -> str:
        moment = job_prune_at(job)
        if moment is None:
            return "kept while it waits or runs"
        return f"{moment:%Y-%m-%d %H:%M} UTC ({relative_time(moment)}), after JOBS_KEEP_DAYS"

    @admin.display(description="files")
    def files_list(self, job: Job) -> str:
        links = [
            format_html('<a href="{}">{}</a>', reverse("admin:jobs_jobfile_download", args=[f.pk]), f.filename)
            for f in job.files.all()
        ]
        return format_html(", ".join(["{}"] * len(links)), *links) if links else "-"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    # Bulk actions run as a background job (jobs.bulk): the page answers at once.
    @admin.action(description="Retry selected failed jobs", permissions=["operate"])
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        bulk_submit(request, self, queryset, "admin.jobs_retry")

    @admin.action(
        description="Cancel selected jobs (fresh: now; started: at the next progress report)", permissions=["operate"]
    )
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        bulk_submit(request, self, queryset, "admin.jobs_cancel")

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        job = self.get_object(request, object_id)
        context = {
            "can_operate": self.has_operate_permission(request),
            "attempt_history": list(job.attempt_history.all()) if job else [],
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, extra_context=context)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        context = {"queues": queue_summary(), "retention": retention_summary(), **(extra_context or {})}
        return super().changelist_view(request, extra_context=context)

    def get_urls(self) -> list[URLPattern]:
        custom = [
            path("submit/", self.admin_site.admin_view(self.submit_view), name="jobs_job_submit"),
            path("<int:job_id>/retry/", self.admin_site.admin_view(self.retry_view), name="jobs_job_retry"),
            path("<int:job_id>/cancel/", self.admin_site.admin_view(self.cancel_view), name="jobs_job_cancel"),
        ]
        return custom + super().get_urls()

    def _job_action(self, request: HttpRequest, job_id: int, action: str) -> HttpResponse:
        if request.method != "POST":
            raise Http404
        if not self.has_operate_permission(request):
            raise PermissionDenied
        job = Job.objects.filter(pk=job_id).first() if job_id < 2**63 else None
        if job is None:
            raise Http404
        try:
            job_retry(job=job) if action == "retry" else job_cancel(job=job)
        except ApplicationError as exc:
            self.message_user(request, f"Job {job_id}: {exc.message}", messages.ERROR)
        else:
            self.log_change(request, job, "Retried" if action == "retry" else "Cancelled")
            self.message_user(request, f"Job {job_id}: {action} done.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:jobs_job_change", args=[job_id]))

    def retry_view(self, request: HttpRequest, job_id: int) -> HttpResponse:
        return self._job_action(request, job_id, "retry")

    def cancel_view(self, request: HttpRequest, job_id: int) -> HttpResponse:
        return self._job_action(request, job_id, "cancel")

    def submit_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm("jobs.add_job"):
            raise PermissionDenied
        user = request.user if isinstance(request.user, User) else None
        specs = [spec for spec in all_specs() if user_may_run(user, spec)]
        type_name = request.POST.get("type") or request.GET.get("type") or ""
        spec = get_spec(type_name) if type_name in {s.name for s in specs} else None
        form = None
        if spec is not None:
            form = JobSubmitForm(spec, request.POST if request.method == "POST" else None)
            if request.method == "POST" and form.is_valid():
                try:
                    job = job_create(type=spec.name, data=form.job_data(), user=user)
                except ApplicationError as exc:
                    form.add_error(None, exc.message)
                else:
                    self.message_user(request, f"Job {job.pk} ({job.type}) submitted.", messages.SUCCESS)
                    return HttpResponseRedirect(reverse("admin:jobs_job_change", args=[job.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Submit a job",
            "specs": specs,
            "spec": spec,
            "form": form,
            "media": self.media + (form.media if form else self.media),
        }
        return TemplateResponse(request, "admin/jobs/job/submit.html", context)


@admin.register(JobFile)
class JobFileAdmin(SafeSelectionMixin, admin.ModelAdmin):
    list_display = [
        "filename",
        "download",
        "human_size",
        "rows",
        "format",
        "job_link",
        "owner",
        "uploaded",
        "created",
    ]
    list_filter = ["format", "uploaded", "created_at"]
    search_fields = ["filename", "owner__email"]
    list_select_related = ["owner", "job"]
    readonly_fields = ["filename", "owner", "format", "size", "rows", "job", "uploaded", "created_at", "download"]
    fields = tuple(readonly_fields)

    @admin.display(description="created", ordering="created_at")
    def created(self, row: JobFile) -> str:
        return relative_time(row.created_at)

    @admin.display(description="size", ordering="size")
    def human_size(self, row: JobFile) -> str:
        return filesizeformat(row.size)

    @admin.display(description="job")
    def job_link(self, row: JobFile) -> str:
        if row.job_id is None:
            return "-"
        return format_html('<a href="{}">#{}</a>', reverse("admin:jobs_job_change", args=[row.job_id]), row.job_id)

    @admin.display(description="download")
    def download(self, row: JobFile) -> str:
        return format_html('<a href="{}">download</a>', reverse("admin:jobs_jobfile_download", args=[row.pk]))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<int:file_id>/download/", self.admin_site.admin_view(self.download_view), name="jobs_jobfile_download"
            ),
            *super().get_urls(),
        ]

    def download_view(self, request: HttpRequest, file_id: int) -> FileResponse:
        if not self.has_view_permission(request):
            raise Http404
        row = JobFile.objects.filter(pk=file_id).first() if file_id < 2**63 else None
        if row is None:
            raise Http404
        try:
            handle = file_open_for_download(row)
        except OSError as exc:
            raise Http404 from exc
        return FileResponse(handle, as_attachment=True, filename=row.filename)


@admin.register(JobSchedule)
class JobScheduleAdmin(SafeSelectionMixin, admin.ModelAdmin):
    """Schedules are written through their services, with *Submit a job*'s generated form."""

    list_display = ["id", "type", "when", "owner_email", "enabled", "next_run", "missed"]
    list_filter = ["enabled", "type", "missed"]
    search_fields = ["=id", "type", "owner__email"]
    list_select_related = ["owner"]
    actions = ["pause", "resume"]

    @admin.display(description="owner", ordering="owner__email")
    def owner_email(self, schedule: JobSchedule) -> str:
        return schedule.owner.email

    @admin.display(description="next run", ordering="next_run_at")
    def next_run(self, schedule: JobSchedule) -> str:
        return relative_time(schedule.next_run_at) if schedule.enabled and schedule.next_run_at else "-"

    @admin.action(description="Pause selected schedules", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[JobSchedule]) -> None:
        self._set_enabled(request, queryset, False)

    @admin.action(description="Resume selected schedules", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[JobSchedule]) -> None:
        self._set_enabled(request, queryset, True)

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet[JobSchedule], enabled: bool) -> None:
        changed = 0
        for schedule in queryset.select_related("owner")[:500]:
            if schedule.enabled != enabled:
                schedule_update(schedule=schedule, enabled=enabled)
                changed += 1
        self.message_user(request, f"{changed} schedule(s) {'resumed' if enabled else 'paused'}.", messages.SUCCESS)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A schedule runs with its owner's rights: staff change only one they could have written
        # themselves, never an admin's (unless they are admins) nor one of a type they may not run.
        if isinstance(obj, JobSchedule) and not is_admin_request(request):
            spec = get_spec(obj.type)
            editor = request.user if isinstance(request.user, User) else None
            if obj.owner.is_admin or spec is None or not user_may_run(editor, spec):
                return False
        return super().has_change_permission(request, obj)

    def delete_model(self, request: HttpRequest, obj: JobSchedule) -> None:
        schedule_delete(schedule=obj)

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        return self._form_view(request, None)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        schedule = self.get_object(request, object_id)
        if schedule is None:
            raise Http404
        if not self.has_view_or_change_permission(request, schedule):
            raise PermissionDenied
        return self._form_view(request, schedule)

    def _form_view(self, request: HttpRequest, schedule: JobSchedule | None) -> HttpResponse:
        user = request.user if isinstance(request.user, User) else None
        if schedule is not None:
            spec = get_spec(schedule.type)
            specs = [spec] if spec else []
        else:
            specs = [spec for spec in all_specs() if user_may_run(user, spec)]
            type_name = request.POST.get("type") or request.GET.get("type") or ""
            spec = get_spec(type_name) if type_name in {s.name for s in specs} else None
        may_write = self.has_change_permission(request, schedule) if schedule else self.has_add_permission(request)
        form = None
        if spec is not None:
            posted = request.POST if request.method == "POST" and may_write else None
            form = ScheduleForm(spec, posted, instance=schedule)
            if posted is not None and form.is_valid() and user is not None:
                try:
                    if schedule is None:
                        schedule = schedule_create(
                            owner=user, type=spec.name, data=form.job_data(), **form.schedule_fields()
                        )
                    else:
                        schedule = schedule_update(schedule=schedule, data=form.job_data(), **form.schedule_fields())
                except ApplicationError as exc:
                    form.add_error(None, exc.message)
                else:
                    self.log_change(request, schedule, "Saved")
                    self.message_user(request, f"Schedule {schedule.pk} saved.", messages.SUCCESS)
                    return HttpResponseRedirect(reverse("admin:jobs_jobschedule_change", args=[schedule.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Schedule {schedule.pk}: {schedule.type}" if schedule else "Add a schedule",
            "specs": specs,
            "spec": spec if may_write else None,
            "form": form if may_write else None,
            "submit_label": "Save schedule",
            "schedule": schedule,
            "next_runs": schedule_next_runs(schedule) if schedule else [],
            "last_runs": schedule_last_runs(schedule_ids=[schedule.pk])[schedule.pk] if schedule else [],
            "media": self.media + (form.media if form else self.media),
        }
        return TemplateResponse(request, "admin/jobs/jobschedule/form.html", context)


# django-q2's own pages (the cluster's periodic tasks, their successes and failures). Registered
# here again because its "Resubmit selected tasks to queue" declares no permission: staff who may
# only view ran it, re-running any recorded queue task and deleting failure rows. And a django-q2
# schedule names any importable function for the cluster to call, so writing one is running code
# as the service: only admins write them. (`django_q.admin` is imported first: its app comes after
# jobs in INSTALLED_APPS, so autodiscovery has not registered it yet.)


@admin.action(description="Resubmit selected tasks to queue", permissions=["change"])
def resubmit_queue_tasks(model_admin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Any]) -> None:
    q_admin.resubmit_task(model_admin, request, queryset)


class QueueSuccessAdmin(q_admin.TaskAdmin):  # type: ignore[misc]
    actions = [resubmit_queue_tasks]


class QueueFailureAdmin(q_admin.FailAdmin):  # type: ignore[misc]
    actions = [resubmit_queue_tasks]


class QueueScheduleAdmin(q_admin.ScheduleAdmin):  # type: ignore[misc]
    def has_add_permission(self, request: HttpRequest) -> bool:
        return is_admin_request(request) and bool(super().has_add_permission(request))

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_admin_request(request) and bool(super().has_change_permission(request, obj))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_admin_request(request) and bool(super().has_delete_permission(request, obj))


for _model, _model_admin in (
    (Success, QueueSuccessAdmin),
    (Failure, QueueFailureAdmin),
    (Schedule, QueueScheduleAdmin),
):
    admin.site.unregister(_model)
    admin.site.register(_model, _model_admin)
