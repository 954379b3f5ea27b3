"""The "Live" admin page: every stream with its name, latest message and age, updated in place."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from coordinator.admin_display import relative_time
from coordinator.admin_site import ReadOnlyAdmin, SafeSelectionMixin
from progress import conf
from progress.auth import viewer_for
from progress.models import Alert, ProgressTopic, WatchRule
from progress.selectors import topic_list
from progress.watchdog import alert_resolve, watch_conditions

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
class ProgressTopicAdmin(ReadOnlyAdmin):
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


class WatchRuleForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = WatchRule
        fields = ("name", "kind", "pattern", "minutes", "value_field", "busy_field", "only_if", "enabled")

    def clean_pattern(self) -> str:
        pattern = str(self.cleaned_data["pattern"]).strip()
        if not pattern or pattern == "*" or "*" in pattern[:-1] or "\x00" in pattern:
            raise forms.ValidationError("A topic, or a prefix ending in one `*` (`job:*`, `pooldevice:*`).")
        return pattern

    def clean_minutes(self) -> int:
        minutes = int(self.cleaned_data["minutes"])
        if not 1 <= minutes <= 60 * 24 * 30:
            raise forms.ValidationError("Between 1 minute and 30 days.")
        return minutes

    def clean_only_if(self) -> str:
        name = str(self.cleaned_data.get("only_if") or "")
        known = watch_conditions()
        if name and name not in known:
            raise forms.ValidationError(f"Unknown condition; use one of: {', '.join(sorted(known)) or 'none'}.")
        return name


@admin.register(WatchRule)
class WatchRuleAdmin(SafeSelectionMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    """Silence rules, edited here; the jobs cluster evaluates them every 30 s."""

    form = WatchRuleForm
    list_display = ("name", "kind", "pattern", "minutes", "only_if", "enabled", "open_alerts", "swept")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "pattern")
    readonly_fields = ("last_swept_at",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[WatchRule]:
        return (
            super()
            .get_queryset(request)
            .annotate(open_count=Count("alerts", filter=Q(alerts__resolved_at__isnull=True)))
        )

    @admin.display(description="open alerts", ordering="open_count")
    def open_alerts(self, obj: WatchRule) -> Any:
        url = reverse("admin:progress_alert_changelist") + f"?rule__id__exact={obj.pk}&open=yes"
        return format_html('<a href="{}">{}</a>', url, getattr(obj, "open_count", 0))

    @admin.display(description="last sweep", ordering="last_swept_at")
    def swept(self, obj: WatchRule) -> Any:
        return relative_time(obj.last_swept_at)


class OpenFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "open"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Open"), ("no", "Resolved")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Alert]) -> QuerySet[Alert]:
        if self.value() == "yes":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "no":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    """Alerts raised by the watchdog's rules (resolved by themselves) and by apps."""

    list_display = ("message", "rule", "topic", "raised", "resolved")
    list_filter = (OpenFilter, "rule")
    search_fields = ("message", "topic", "key")
    list_select_related = ("rule",)
    fields = ("message", "rule", "key", "topic", "owner_id", "raised_at", "resolved_at")
    readonly_fields = fields
    actions = ["resolve"]

    @admin.display(description="raised", ordering="raised_at")
    def raised(self, obj: Alert) -> Any:
        return relative_time(obj.raised_at)

    @admin.display(description="resolved", ordering="resolved_at")
    def resolved(self, obj: Alert) -> Any:
        return relative_time(obj.resolved_at)

    def has_resolve_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("progress.change_alert"))

    @admin.action(description="Resolve (a rule raises it again while its condition holds)", permissions=["resolve"])
    def resolve(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        done = sum(alert_resolve(key=alert.key) for alert in queryset.filter(resolved_at__isnull=True)[:500])
        self.message_user(request, f"{done} alert(s) resolved.")
