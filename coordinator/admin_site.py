"""The platform's admin site: branding, and an index page that is the operations dashboard.

One panel per app (coordinator.selectors.operations_overview). Its current counts are the cards
the app returns from `AppConfig.admin_dashboard(request)` (`{"title", "value", "url", "note"}`
dicts, each linking the filtered list behind it). Its charts and "needs attention" items come from
the module its `AppConfig.operations()` returns (coordinator.selectors.operations_parts): charts
read the minute values `coordinator.services.operations_record` stores each minute, never the
tables they were counted from. Everything follows the progress channel live: new minutes, and the
counts and attention items the same selector computes again every OPERATIONS_LIVE_SECONDS while
the page is open (coordinator.services.operations_overview_publish).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ERROR_FLAG
from django.contrib.auth import get_permission_codename
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from coordinator.permissions import sees_operations
from coordinator.selectors import operations_overview, operations_points
from coordinator.services import audit_record
from coordinator.throttling import first_refusal

logger = logging.getLogger(__name__)


# The 24-hour charts show 5-minute means: 288 points a series instead of 1,440.
DAY_BUCKET_SECONDS = 300


class CoordinatorAdminSite(admin.AdminSite):
    site_header = "Coordinator"
    site_title = "Coordinator admin"
    index_title = "Operations"
    index_template = "admin/coordinator_index.html"

    def operations_panels(self, request: HttpRequest) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The dashboard's panels (coordinator.selectors.operations_overview, the one the live
        channel refreshes too) and the chart data (the last 24 h of minutes)."""
        if not sees_operations(request.user):
            return [], {}
        now = timezone.now()
        panels = operations_overview(request, now=now)
        drawn = {chart["id"]: chart["series"] for panel in panels for chart in panel["charts"]}
        names = [series["name"] for chart in drawn.values() for series in chart]
        data = {
            "now": now.timestamp(),
            "charts": drawn,
            # The hour minute by minute; the day in buckets of DAY_BUCKET_SECONDS (means).
            "hour": operations_points(series=names, since=now - timedelta(hours=1)),
            "day": operations_points(series=names, since=now - timedelta(hours=24), bucket_seconds=DAY_BUCKET_SECONDS),
            "day_bucket": DAY_BUCKET_SECONDS,
        }
        return panels, data

    def platform_links(self) -> list[dict[str, str]]:
        links = []
        for title, name in (("API documentation", "docs"), ("OpenAPI schema", "schema"), ("Health", "healthz")):
            try:
                links.append({"title": title, "url": reverse(name)})
            except NoReverseMatch:
                continue
        return links

    @staticmethod
    def credential_account(request: HttpRequest) -> object:
        return request.POST.get("username")

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        """The admin's sign-in, under the same credential limits as the API's token endpoints."""
        if request.method == "POST":
            wait = first_refusal(request, self)
            if wait is not None:
                response = HttpResponse(
                    f"Too many sign-in attempts. Try again in {int(wait) + 1} seconds.",
                    status=429,
                    content_type="text/plain; charset=utf-8",
                )
                response["Retry-After"] = str(int(wait) + 1)
                return response
        return super().login(request, extra_context)

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        panels, chart_data = self.operations_panels(request)
        context = {
            "panels": panels,
            "chart_data": chart_data,
            "platform_links": self.platform_links(),
            **(extra_context or {}),
        }
        return super().index(request, context)


def is_admin_request(request: HttpRequest) -> bool:
    """Whether the admin page is used by an active user with the admin role (not merely staff)."""
    user = request.user
    return bool(user.is_active and getattr(user, "is_admin", False))


class AuditedAdminMixin:
    """Every admin page's changes reach the audit trail through here (every ModelAdmin of the
    platform has it, through SafeSelectionMixin): additions, edits (with the changed fields'
    values before and after), deletions and actions. Services the admin calls record their own
    changes; the request's one entry holds them all (coordinator.services.audit_scope)."""

    # Never copied into the trail, even as "before"/"after": hashes and secrets.
    AUDIT_HIDDEN = frozenset({"password", "secret", "secret_hash", "password1", "password2"})

    def construct_change_message(self, request: HttpRequest, form: Any, formsets: Any, add: bool = False) -> Any:
        changed = [name for name in getattr(form, "changed_data", []) if name not in self.AUDIT_HIDDEN]
        request._audit_change = (  # type: ignore[attr-defined]
            {name: _plain(form.initial.get(name)) for name in changed},
            {name: _plain(form.cleaned_data.get(name)) for name in changed},
        )
        return super().construct_change_message(request, form, formsets, add)  # type: ignore[misc]

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        _, after = getattr(request, "_audit_change", ({}, {}))
        audit_record(action="admin.add", target=obj, after=after)
        return super().log_addition(request, obj, message)  # type: ignore[misc]

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        before, after = getattr(request, "_audit_change", ({}, {}))
        audit_record(action="admin.change", target=obj, before=before, after=after)
        return super().log_change(request, obj, message)  # type: ignore[misc]

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        for obj in queryset:
            audit_record(action="admin.delete", target=obj, before={"label": str(obj)})
        return super().log_deletions(request, queryset)  # type: ignore[misc]

    def response_action(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        response = super().response_action(request, queryset)  # type: ignore[misc]
        # None: no action ran (none chosen, nothing selected); a page to confirm on
        # (delete_selected's first step) is not the action yet. What ran redirects back, or
        # answers with what it made (a file).
        if response is not None and not isinstance(response, TemplateResponse):
            name = str(request.POST.get("action", ""))
            selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)[:1000]
            opts = self.model._meta  # type: ignore[attr-defined]
            audit_record(
                action=f"admin.action.{name}"[:100],
                target=f"{opts.verbose_name_plural}: {len(selected)} selected",
                after={"model": opts.label_lower, "selected": selected},
                lead=True,
            )
        return response


def _plain(value: Any) -> Any:
    """A form value as the trail keeps it (rows by their id, many rows as a list of ids)."""
    if isinstance(value, QuerySet):
        return [obj.pk for obj in value]
    if hasattr(value, "pk"):
        return value.pk
    return value


class SafeSelectionMixin(AuditedAdminMixin):
    """Refuses, with a message, an action on a selection that names no valid row: Django's admin
    filters by the posted ids first, so `abc` or a 40-digit id answered 500 on every list."""

    def response_action(
        self, request: HttpRequest, queryset: QuerySet[Any], *args: Any, **kwargs: Any
    ) -> HttpResponse | None:
        pk = self.model._meta.pk  # type: ignore[attr-defined]
        try:
            for raw in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
                value = pk.to_python(raw)
                if isinstance(value, int):
                    low, high = connection.ops.integer_field_range(pk.get_internal_type())
                    if (low is not None and value < low) or (high is not None and value > high):
                        raise ValidationError("out of range")
                elif isinstance(value, str) and "\x00" in value:
                    raise ValidationError("NUL")
        except (ValidationError, ValueError, TypeError):
            self.message_user(request, "The selection names no valid row.", messages.ERROR)  # type: ignore[attr-defined]
            return None
        return super().response_action(request, queryset, *args, **kwargs)  # type: ignore[misc]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        # A filter the admin accepts but the database cannot hold (`created_at__year=99999`, a
        # 30-digit id) fails only once the list is read, past Django's own check of the lookups:
        # it is answered as Django answers a lookup it refuses (the list without filters, `?e=1`).
        try:
            response = super().changelist_view(request, extra_context)  # type: ignore[misc]
            if isinstance(response, TemplateResponse):
                response.render()  # the rows are read while rendering
        except (ValueError, OverflowError):
            return HttpResponseRedirect(f"{request.path}?{ERROR_FLAG}=1")
        return response


class ServiceActionsAdmin(SafeSelectionMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    """A model whose rows change only through actions that call services: its page is read-only
    for everyone, and its actions (and the buttons' views) need the model's *change* permission,
    declared as `permissions=["operate"]`, so that staff who may only view cannot run them."""

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return bool(request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}"))


class ReadOnlyAdmin(SafeSelectionMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    """A system table staff read and filter and nobody writes through the admin (logs, trails)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
