"""The "Live" admin page: every stream with its name, latest message and age, updated in place."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from coordinator.admin_display import relative_time
from coordinator.admin_site import SafeSelectionMixin
from progress import conf
from progress.auth import viewer_for
from progress.models import ProgressTopic
from progress.selectors import topic_list

LIVE_PAGE_ROWS = 200  # per kind
# The Live page's groups, by topic prefix (progress knows topics, not the apps behind them).
LIVE_KINDS = [
    ("stream", "Socket streams"),
    ("job", "Jobs"),
    ("run", "Farm runs"),
    ("pooltask", "Device tasks"),
    ("pooldevice", "Device heartbeats"),
]


@admin.register(ProgressTopic)
class ProgressTopicAdmin(SafeSelectionMixin, admin.ModelAdmin):
    list_display = ["name", "percent", "text", "topic", "started", "updated", "ended"]
    list_filter = [("ended_at", admin.EmptyFieldListFilter)]
    search_fields = ["topic", "name", "text"]
    readonly_fields = [f.name for f in ProgressTopic._meta.fields]
    change_list_template = "admin/progress/progresstopic/change_list.html"

    class Media:
        js = ["progress/live.js"]

    @admin.display(description="started", ordering="started_at")
    def started(self, obj: ProgressTopic) -> str:
        return relative_time(obj.started_at)

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj: ProgressTopic) -> str:
        return relative_time(obj.updated_at)

    @admin.display(description="ended", ordering="ended_at")
    def ended(self, obj: ProgressTopic) -> str:
        return relative_time(obj.ended_at)

    @admin.display(description="percent")
    def percent(self, obj: ProgressTopic) -> str:
        value = (obj.state or {}).get("percent")
        return "" if value is None else format_html("{}%", value)

    def get_queryset(self, request: HttpRequest) -> QuerySet[ProgressTopic]:
        return topic_list(viewer=viewer_for(request.user))  # type: ignore[arg-type]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        live = path("live/", self.admin_site.admin_view(self.live_view), name="progress_live")
        return [live, *super().get_urls()]

    def live_view(self, request: HttpRequest) -> HttpResponse:
        """Live streams by kind: running ones first, newest first, ended ones below them; device
        heartbeats only on request; filtered by kind and by text. Rows change in place."""
        # The same visibility rule as the API's streams: staff who are not admins see their own.
        visible: QuerySet[ProgressTopic] = topic_list(viewer=viewer_for(request.user))  # type: ignore[arg-type]
        wanted = request.GET.get("kind", "") or ("stream" if request.GET.get("only") == "streams" else "")
        heartbeats = request.GET.get("heartbeats") == "1" or wanted == "pooldevice"
        search = request.GET.get("q", "").strip()[:200]  # (a NUL is refused before: coordinator.middleware)
        if search:
            visible = visible.filter(Q(name__icontains=search) | Q(topic__icontains=search) | Q(text__icontains=search))
        groups: list[dict[str, Any]] = []
        for kind, label in LIVE_KINDS:
            if (wanted and kind != wanted) or (kind == "pooldevice" and not heartbeats):
                continue
            rows = list(visible.filter(topic__startswith=f"{kind}:")[:LIVE_PAGE_ROWS])
            groups.append({"kind": kind, "label": label, "topics": rows})
        shown = " ".join(str(group["kind"]) for group in groups)
        context = {
            **self.admin_site.each_context(request),
            "title": "Live progress",
            "opts": self.model._meta,
            "groups": groups,
            "shown_kinds": shown,
            "kinds": LIVE_KINDS,
            "wanted": wanted,
            "heartbeats": heartbeats,
            "search": search,
            "rows_per_kind": LIVE_PAGE_ROWS,
            "retention_minutes": round(conf.retention_seconds() / 60),
            "changelist_url": reverse("admin:progress_progresstopic_changelist"),
            "media": self.media,
        }
        return TemplateResponse(request, "admin/progress/live.html", context)
