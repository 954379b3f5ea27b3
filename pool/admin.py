"""The staff UI of the task pool: devices, tasks (compose, follow live, cancel), the message log."""

from __future__ import annotations

import json
import re
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminSplitDateTime, AutocompleteSelectMultiple
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from rest_framework import serializers

from coordinator.admin_display import relative_time, shortened
from coordinator.admin_site import ReadOnlyAdmin, SafeSelectionMixin, ServiceActionsAdmin
from coordinator.api.envelope import error_response
from coordinator.api.parsers import loads_strict
from coordinator.errors import ApplicationError, ValidationFailedError
from coordinator.models import User
from jobs.bulk import bulk_submit
from pool import selectors, services
from pool.api.serializers import JsonObjectField
from pool.errors import InvalidTargetError, NotARolloutError, TaskNotOpenError, UnknownGroupError
from pool.models import SLUG_PATTERN, Delivery, Device, DeviceGroup, DeviceTag, Message, MessageType, Task
from pool.policy import RETRY_ON, rollout_policy_parse
from pool.selectors import device_is_online, device_online_until
from pool.wire import format_ts, parse_target

LIVE_JS = ["progress/live.js"]


TAG_HELP = "Space- or comma-separated slugs (a-z, 0-9, -); tasks address them as device:tag:<slug>."


def _parse_tags(raw: str) -> list[str]:
    tags = sorted({part for part in re.split(r"[\s,]+", raw.strip()) if part})
    bad = [tag for tag in tags if not re.fullmatch(SLUG_PATTERN, tag)]
    if bad:
        raise forms.ValidationError(f"Not a tag: {', '.join(bad[:5])} (1 to 64 of a-z, 0-9 and -).")
    if len(tags) > 100:
        raise forms.ValidationError("At most 100 tags.")
    return tags


class DeviceTagsMixin(forms.ModelForm):
    tags_text = forms.CharField(label="Tags", required=False, help_text=TAG_HELP, max_length=7000)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["tags_text"].initial = " ".join(self.instance.tags.values_list("slug", flat=True))

    def clean_tags_text(self) -> list[str]:
        return _parse_tags(self.cleaned_data.get("tags_text") or "")


class DeviceAddForm(DeviceTagsMixin):
    class Meta:
        model = Device
        fields = ("name", "kind", "validated")


class DeviceChangeForm(DeviceTagsMixin):
    class Meta:
        model = Device
        fields = ("name", "kind")


class TagFilter(admin.SimpleListFilter):
    title = "tag"
    parameter_name = "tag"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        slugs = DeviceTag.objects.order_by("slug").values_list("slug", flat=True).distinct()[:200]
        return [(slug, slug) for slug in slugs]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value and re.fullmatch(SLUG_PATTERN, value):
            return queryset.filter(pk__in=DeviceTag.objects.filter(slug=value).values("device_id"))
        return queryset


class GroupFilter(admin.SimpleListFilter):
    title = "group"
    parameter_name = "group"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(g.slug, str(g)) for g in DeviceGroup.objects.order_by("slug")[:200]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value and re.fullmatch(SLUG_PATTERN, value):
            return queryset.filter(groups__slug=value)
        return queryset


class MessageColumns:
    """List columns the device tasks and the message log share."""

    @admin.display(description="sent", ordering="ts")
    def sent(self, obj: Message) -> str:
        return relative_time(obj.ts)

    @admin.display(description="to", ordering="to")
    def to_short(self, obj: Message) -> str:
        return shortened(obj.to, 24)

    @admin.display(description="id", ordering="msg_id")
    def msg_short(self, obj: Message) -> str:
        return shortened(obj.msg_id, 8)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any], search_term: str) -> Any:
        # A message id (what operators paste from a device's log) is found through its unique
        # index, with the answers to it; only free text reads every row's title and body.
        term = search_term.strip()
        if term and not any(char.isspace() for char in term):
            exact = queryset.filter(Q(msg_id=term) | Q(parent_id=term))
            if exact.exists():
                return exact, False
        return super().get_search_results(request, queryset, search_term)  # type: ignore[misc]


@admin.register(Device)
class DeviceAdmin(SafeSelectionMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "name",
        "online_badge",
        "pending",
        "kind",
        "tag_list",
        "group_list",
        "active",
        "last_activity_type",
        "validated",
        "enabled",
    )
    list_filter = ("validated", "enabled", "kind", TagFilter, GroupFilter)
    search_fields = ("name", "kind", "=id", "=tags__slug")
    readonly_fields = (
        "validated",
        "enabled",
        "created_at",
        "last_activity_at",
        "last_activity_type",
        "last_heartbeat_at",
        "broadcasts_seen_until",
    )
    actions = ["validate", "disable", "enable", "issue_secret"]

    class Media:
        js = LIVE_JS
        css = {"all": ["pool/admin.css"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Device]:
        return selectors.device_list()

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        kwargs["form"] = DeviceAddForm if obj is None else DeviceChangeForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ("name", "kind", "validated", "tags_text")
        return ("name", "kind", "tags_text", "group_list", "open_deliveries", *self.readonly_fields)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ("group_list", "open_deliveries", *self.readonly_fields) if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: Device, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            services.device_set_tags(device=obj, tags=form.cleaned_data["tags_text"])
            return
        device, secret = services.device_create(
            name=obj.name, kind=obj.kind, validated=obj.validated, tags=form.cleaned_data["tags_text"]
        )
        obj.pk = device.pk
        obj.secret_hash = device.secret_hash
        obj.created_at = device.created_at
        obj._state.adding = False
        self.message_user(
            request, f"Device {device.pk} created. Its secret, shown only now: {secret}", messages.WARNING
        )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Online")
    def online_badge(self, obj: Device) -> str:
        until = device_online_until(obj)
        online = device_is_online(obj)
        # Live: a heartbeat event on pooldevice:<id> sets the text, the time and the moment the
        # badge turns offline by itself (progress/live.js), so an open page never shows a stale
        # "online".
        return format_html(
            '<span class="pool-badge" data-progress-topic="pooldevice:{}" data-live-until="{}" '
            'data-live-until-field="online_until"{}>'
            '<span data-progress-field="badge" data-live-expired-text="offline" title="last heartbeat: {}">{}</span>'
            "</span>",
            obj.pk,
            until.timestamp() if until else 0,
            "" if online else mark_safe(" data-live-expired"),
            obj.last_heartbeat_at.isoformat() if obj.last_heartbeat_at else "never",
            "online" if online else "offline",
        )

    @admin.display(description="tags")
    def tag_list(self, obj: Device) -> str:
        return " ".join(t.slug for t in obj.tags.all()) or "-"

    @admin.display(description="groups")
    def group_list(self, obj: Device) -> str:
        return ", ".join(g.slug for g in obj.groups.all()) or "-"

    @admin.display(description="open deliveries")
    def open_deliveries(self, obj: Device) -> str:
        rows = selectors.device_open_deliveries(device=obj, limit=50)
        if not rows:
            return "none"
        return format_html_join(
            mark_safe("<br>"),
            '<a href="{}">{}</a> {}',
            (
                (reverse("admin:pool_task_change", args=[d.task_id]), d.task.title or d.task.msg_id, d.state)
                for d in rows
            ),
        )

    @admin.display(description="last activity", ordering="last_activity_at")
    def active(self, obj: Device) -> str:
        return relative_time(obj.last_activity_at)

    @admin.display(description="Pending", ordering="pending_count")
    def pending(self, obj: Device) -> int:
        return int(getattr(obj, "pending_count", 0))

    @admin.action(description="Validate the selected devices", permissions=["change"])
    def validate(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        count = services.device_set_flags(devices=queryset, validated=True)
        self.message_user(request, f"{count} device(s) validated.")

    @admin.action(description="Disable the selected devices", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        count = services.device_set_flags(devices=queryset, enabled=False)
        self.message_user(request, f"{count} device(s) disabled: their tokens stop working now.")

    @admin.action(description="Enable the selected devices", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        count = services.device_set_flags(devices=queryset, enabled=True)
        self.message_user(request, f"{count} device(s) enabled.")

    @admin.action(description="Issue a new secret (shown once)", permissions=["change"])
    def issue_secret(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        for device in queryset:
            secret = services.device_issue_secret(device=device)
            self.message_user(
                request,
                f"New secret for device {device.pk} ({device.name}), shown only now: {secret}",
                messages.WARNING,
            )


class DevicePicker(forms.SelectMultiple):
    """The device list with each device's kind and online state on its option, for
    pool/composer.js (search, pick by kind, online only, a live count)."""

    def __init__(self) -> None:
        super().__init__(attrs={"data-device-picker": "", "size": 14, "class": "pool-picker"})

    def create_option(
        self,
        name: str,
        value: Any,
        label: int | str,
        selected: bool,
        index: int,
        subindex: int | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        device = getattr(value, "instance", None)
        if isinstance(device, Device):
            option["attrs"]["data-kind"] = device.kind
            option["attrs"]["data-online"] = "1" if device_is_online(device) else "0"
        return option


class DeviceChoiceField(forms.ModelMultipleChoiceField):
    def _check_values(self, value: Any) -> Any:
        try:
            return super()._check_values(value)  # type: ignore[misc]  # private in the stubs
        except OverflowError as exc:  # an id past the database's integers names no device
            raise forms.ValidationError(self.error_messages["invalid_pk_value"] % {"pk": "…"}) from exc

    def label_from_instance(self, device: Device) -> str:
        state = "● online" if device_is_online(device) else "○ offline"
        flags = "" if device.validated and device.enabled else (" — not validated" if device.enabled else " — disabled")
        return f"#{device.pk} {device.name} ({device.kind or 'no kind'}) {state}{flags}"


class TickBox(forms.CheckboxInput):
    """A checkbox ticked only by what a browser sends for a ticked box (`on`), or `true`/`1`."""

    def value_from_datadict(self, data: Any, files: Any, name: str) -> bool:
        value = data.get(name)
        return isinstance(value, str) and value.strip().lower() in ("on", "true", "1")


class TaskComposeForm(forms.ModelForm):
    """Compose a task: a target picker (one device, several, all, with search and a count), an
    expiry picked on a calendar, and a confirmation before a task goes to the whole fleet."""

    TARGETS = (
        ("one", "One device"),
        ("several", "Several devices"),
        ("tag", "Devices with a tag (device:tag:<slug>)"),
        ("group", "A device group (device:group:<slug>)"),
        ("all", "All devices (device:*)"),
    )
    target = forms.ChoiceField(choices=TARGETS, widget=forms.RadioSelect, initial="one")
    devices = DeviceChoiceField(
        queryset=Device.objects.order_by("id"),
        required=False,
        widget=DevicePicker(),
        help_text="For one or several devices. Unvalidated devices receive the task once validated.",
    )
    tag = forms.RegexField(
        regex=rf"^{SLUG_PATTERN}\Z",
        required=False,
        max_length=64,
        error_messages={"invalid": "A tag is 1 to 64 of a-z, 0-9 and -."},
        widget=forms.TextInput(attrs={"list": "pool-tag-list", "data-tag-picker": ""}),
        help_text="For “Devices with a tag”.",
    )
    group = forms.ModelChoiceField(
        queryset=DeviceGroup.objects.order_by("slug"),
        required=False,
        to_field_name="slug",
        help_text="For “A device group”.",
    )
    continuous = forms.BooleanField(
        required=False,
        help_text="Tag or group: devices that gain the tag or join the group while the task is open receive it too.",
    )
    title = forms.CharField(required=False, widget=forms.TextInput(attrs={"class": "vTextField"}))
    meta_json = forms.CharField(label="Meta (JSON object)", required=False, widget=forms.Textarea(attrs={"rows": 3}))
    expires_at = forms.SplitDateTimeField(
        required=False, widget=AdminSplitDateTime(), help_text="Optional; after it no device receives the task."
    )
    # Ticked only by what a browser sends for a ticked box: Django's checkbox reads any other
    # string (`off`, `0`, `no`) as ticked, and a scripted post must not reach the whole fleet by it.
    confirm_all = forms.BooleanField(required=False, widget=TickBox())
    # The rollout section: filled in, it becomes `meta.rollout` (checked by the API's own parser).
    rollout_per_minute = forms.IntegerField(
        label="Release per minute", required=False, min_value=1, help_text="Set to make this a staged rollout."
    )
    ramp_factor = forms.FloatField(label="Ramp: multiply the rate by", required=False)
    ramp_every = forms.IntegerField(label="Ramp: every N successes", required=False)
    ramp_max = forms.IntegerField(label="Ramp: at most per minute", required=False)
    abort_percent = forms.FloatField(label="Abort when failed % reaches", required=False)
    abort_min = forms.IntegerField(label="Abort: after at least N finished", required=False)
    timeout_seconds = forms.IntegerField(label="In-progress timeout (seconds)", required=False)
    retries_max = forms.IntegerField(label="Retries", required=False)
    retries_on = forms.MultipleChoiceField(
        label="Retry on",
        required=False,
        choices=[("failed", "failed"), ("timed_out", "timed out")],
        widget=forms.CheckboxSelectMultiple,
    )
    window_start = forms.SplitDateTimeField(label="Window start", required=False, widget=AdminSplitDateTime())
    window_end = forms.SplitDateTimeField(label="Window end", required=False, widget=AdminSplitDateTime())

    class Meta:
        model = Task
        fields = ("title", "body")

    class Media:
        js = ["pool/composer.js"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fleet_size = selectors.devices_receiving_broadcasts().count()
        self.fields["confirm_all"].label = f"Yes, send it to all {self.fleet_size} devices"
        self.fields["confirm_all"].help_text = "Needed for “All devices”: every validated, enabled device gets it."
        # The matching devices of every tag and group, counted once, shown beside the choices.
        self.tag_counts = dict(
            DeviceTag.objects.order_by("slug")
            .values_list("slug")
            .annotate(n=Count("id"))
            .values_list("slug", "n")[:500]
        )
        groups = DeviceGroup.objects.order_by("slug").annotate(n=Count("devices"))
        self.fields["group"].label_from_instance = lambda g: f"{g.slug} ({g.n} devices)"  # type: ignore[attr-defined]
        self.fields["group"].queryset = groups  # type: ignore[attr-defined]
        # The composer's live count of matching devices asks this (pool/static/pool/composer.js).
        self.fields["target"].widget.attrs["data-count-url"] = reverse("admin:pool_task_target_count")
        self.fields["tag"].help_text = "For “Devices with a tag”. Tags now: " + (
            ", ".join(f"{slug} ({n})" for slug, n in self.tag_counts.items()) or "none"
        )

    def clean_meta_json(self) -> dict[str, Any]:
        raw = (self.cleaned_data.get("meta_json") or "").strip()
        if not raw:
            return {}
        try:
            value = loads_strict(raw)
        except ValueError as exc:
            raise forms.ValidationError(f"Not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise forms.ValidationError("Meta must be a JSON object.")
        try:  # the API's own check of `meta` (NUL characters, depth), so both refuse the same
            return dict(JsonObjectField().run_validation(value))
        except serializers.ValidationError as exc:
            raise forms.ValidationError(" ".join(str(item) for item in exc.detail)) from exc

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        chosen = list(data.get("devices") or [])
        if data.get("target") == "one" and len(chosen) != 1:
            self.add_error("devices", "Pick exactly one device.")
        if data.get("target") == "several" and not chosen:
            self.add_error("devices", "Pick at least one device.")
        if data.get("target") == "tag" and not data.get("tag") and "tag" not in self.errors:
            self.add_error("tag", "Name a tag.")
        if data.get("target") == "group" and not data.get("group") and "group" not in self.errors:
            self.add_error("group", "Pick a group.")
        if data.get("target") == "all" and not data.get("confirm_all"):
            self.add_error("confirm_all", f"This goes to all {self.fleet_size} devices: tick the box to confirm.")
        if "expires_at" not in self.errors and data.get("meta_json") is not None:
            try:  # the service's own check: in the future, agreeing with a `meta.expires_at`
                services.task_expiry_check(
                    meta=data["meta_json"], expires_at=data.get("expires_at"), now=timezone.now()
                )
            except ValidationFailedError as exc:
                for name in exc.extra.get("fields", {}):
                    self.add_error("expires_at" if name == "expires_at" else "meta_json", exc.message)
        if not self.errors and data.get("target") and data.get("meta_json") is not None:
            try:
                policy = self.rollout_policy()
                if policy is not None:
                    rollout_policy_parse(policy)
            except ValidationFailedError as exc:
                for name, problems in exc.extra.get("fields", {}).items():
                    self.add_error(None, f"{name}: {' '.join(problems)}")
        limit = Message._meta.get_field("to").max_length or 0
        listed = "device:" + json.dumps(sorted(d.pk for d in chosen), separators=(",", ":"))
        if data.get("target") == "several" and len(listed) > limit:
            self.add_error("devices", f"{len(chosen)} devices are too many for one list (at most {limit} characters).")
        return data

    def rollout_policy(self) -> dict[str, Any] | None:
        """The rollout section as a `meta.rollout` object, or None when it is left empty."""
        data = self.cleaned_data
        if data.get("rollout_per_minute") is None:
            return None
        policy: dict[str, Any] = {"per_minute": data["rollout_per_minute"]}
        if any(data.get(k) is not None for k in ("ramp_factor", "ramp_every", "ramp_max")):
            policy["ramp"] = {
                "factor": data.get("ramp_factor"),
                "every_succeeded": data.get("ramp_every"),
                "max_per_minute": data.get("ramp_max"),
            }
        if data.get("abort_percent") is not None:
            policy["abort"] = {"failed_percent": data["abort_percent"], "min_finished": data.get("abort_min") or 1}
        if data.get("timeout_seconds") is not None:
            policy["in_progress_timeout_seconds"] = data["timeout_seconds"]
        if data.get("retries_max"):
            policy["retries"] = {"max": data["retries_max"], "on": list(data.get("retries_on") or RETRY_ON)}
        if data.get("window_start") or data.get("window_end"):
            policy["window"] = {
                key: format_ts(data[f"window_{key}"]) for key in ("start", "end") if data.get(f"window_{key}")
            }
        return policy

    def task_meta(self) -> dict[str, Any]:
        meta = dict(self.cleaned_data["meta_json"])
        if self.cleaned_data["target"] in ("tag", "group") and self.cleaned_data.get("continuous"):
            meta["continuous"] = True
        policy = self.rollout_policy()
        if policy is not None:
            meta["rollout"] = policy
        return meta

    def target_string(self) -> str:
        if self.cleaned_data["target"] == "all":
            return "device:*"
        if self.cleaned_data["target"] == "tag":
            return f"device:tag:{self.cleaned_data['tag']}"
        if self.cleaned_data["target"] == "group":
            return f"device:group:{self.cleaned_data['group'].slug}"
        ids = sorted(d.pk for d in self.cleaned_data["devices"])
        return f"device:{ids[0]}" if self.cleaned_data["target"] == "one" else f"device:{json.dumps(ids)}"


class TargetKindFilter(admin.SimpleListFilter):
    title = "target"
    parameter_name = "target"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("one", "One device"), ("list", "Device list"), ("all", "All devices")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "all":
            return queryset.filter(target_all=True)
        if self.value() == "list":
            return queryset.filter(to__startswith="device:[")
        if self.value() == "one":
            return queryset.filter(target_all=False).exclude(to__startswith="device:[")
        return queryset


class DeviceFilter(admin.SimpleListFilter):
    title = "device"
    parameter_name = "device"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(d.pk), f"{d.pk} {d.name}") for d in Device.objects.order_by("id")[:200]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value and value.isdigit():
            return queryset.filter(pk__in=Delivery.objects.filter(device_id=int(value)).values("task_id"))
        return queryset


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("open", "Open (someone still pending)"),
            ("progress", "Has progress"),
            ("done", "Has done"),
            ("failed", "Has failures"),
            ("expired", "Expired"),
            ("cancelled", "Cancelled"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        value = self.value()
        if value == "cancelled":
            return queryset.exclude(cancelled_at=None)
        if value == "expired":
            return queryset.filter(expires_at__lte=now)
        if value == "open":
            open_rows = Delivery.objects.filter(state__in=["pending", "progress"]).values("task_id")
            return queryset.filter(cancelled_at=None, pk__in=open_rows)
        if value in ("progress", "done", "failed"):
            return queryset.filter(pk__in=Delivery.objects.filter(state=value).values("task_id"))
        return queryset


@admin.register(Task)
class TaskAdmin(MessageColumns, ServiceActionsAdmin):
    form = TaskComposeForm
    change_form_template = "admin/pool/task/change_form.html"
    list_display = (
        "title_shown",
        "state",
        "state_summary",
        "sent",
        "to_short",
        "sender",
        "expires",
        "cancelled",
        "msg_short",
    )
    list_display_links = ("title_shown", "msg_short")
    list_filter = ("state", TargetKindFilter, StatusFilter, DeviceFilter, "ts")
    # No date hierarchy: its year/month links read the distinct dates of every message, and the
    # `ts` filter (today, past 7 days, this month, this year) answers the same question cheaply.
    show_full_result_count = False  # the log holds millions of rows
    search_fields = ("title", "body", "=msg_id")
    actions = ["cancel", "pause", "resume"]
    list_per_page = 50
    ordering = ("-seq",)  # newest first: the primary key is the log's order

    class Media:
        js = LIVE_JS
        css = {"all": ["pool/admin.css"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return Task.objects.filter(type=MessageType.TASK)

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        # The delivery counts of the tasks on this page only, in one grouped query: annotating the
        # queryset made PostgreSQL aggregate every delivery of every task before paginating (2.2 s
        # with 1,000,000 messages).
        changelist = super().get_changelist_instance(request)
        tasks = list(changelist.result_list)
        counts = selectors.tasks_state_counts(task_ids=[task.pk for task in tasks])
        for task in tasks:
            task.delivery_counts = counts[task.pk]
        changelist.result_list = tasks
        return changelist

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return [
                (
                    None,
                    {
                        "fields": (
                            "target",
                            "devices",
                            "tag",
                            "group",
                            "continuous",
                            "confirm_all",
                            "title",
                            "body",
                            "meta_json",
                            "expires_at",
                        )
                    },
                ),
                (
                    "Staged rollout (optional)",
                    {
                        "classes": ("collapse",),
                        "description": "Release the task gradually; fill in “Release per minute” to use it.",
                        "fields": (
                            "rollout_per_minute",
                            ("ramp_factor", "ramp_every", "ramp_max"),
                            ("abort_percent", "abort_min"),
                            "timeout_seconds",
                            ("retries_max", "retries_on"),
                            "window_start",
                            "window_end",
                        ),
                    },
                ),
            ]
        return [
            (
                None,
                {
                    "fields": (
                        "msg_id",
                        "ts",
                        "sender",
                        "to",
                        "state",
                        "title",
                        "body",
                        "meta",
                        "expires_at",
                        "cancelled_at",
                        "paused_at",
                        "abort_reason",
                    )
                },
            )
        ]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        count = path("target-count/", self.admin_site.admin_view(self.target_count_view), name="pool_task_target_count")
        return [count, *super().get_urls()]

    def target_count_view(self, request: HttpRequest) -> HttpResponse:
        """JSON for the composer's live count: `{"to", "count"}`, the devices `?to=` reaches now,
        resolved by the selector that resolves a task's target when it is sent. Staff who may
        compose tasks only; a bad target is 400 in the envelope."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        raw = request.GET.get("to", "")[:4000]
        try:
            target = parse_target(raw)
        except InvalidTargetError as exc:
            return error_response(400, exc.code, exc.message)
        if not target.is_devices:
            return error_response(400, InvalidTargetError.code, "A task is addressed to devices.")
        if target.group is not None and not DeviceGroup.objects.filter(slug=target.group).exists():
            return error_response(400, UnknownGroupError.code, f"No device group is named {target.group!r}.")
        return JsonResponse({"to": target.canonical(), "count": selectors.target_devices(target=target).count()})

    def response_post_save_add(self, request: HttpRequest, obj: Any) -> HttpResponseRedirect:
        # Saving a task lands on it: its deliveries are what the operator wants to see next.
        return HttpResponseRedirect(reverse("admin:pool_task_change", args=[obj.pk]))

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # The service has the last word on a task (a `rollout` or `continuous` written by hand in
        # the meta JSON, a device deleted meanwhile): its refusal is a message, never a 500. The
        # admin's transaction was rolled back when the error left it: nothing was sent.
        try:
            return super().add_view(request, form_url, extra_context)
        except ApplicationError as exc:
            self.message_user(request, f"The task was not sent: {exc.message}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        user = request.user if isinstance(request.user, User) else None
        task = services.task_create(
            user=user,
            to=form.target_string(),
            title=form.cleaned_data["title"],
            body=form.cleaned_data["body"],
            meta=form.task_meta(),
            expires_at=form.cleaned_data["expires_at"],
        )
        for field in task._meta.concrete_fields:
            setattr(obj, field.attname, getattr(task, field.attname))
        obj._state.adding = False

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        task = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if task is not None:
            counts = selectors.task_state_counts(task=task)
            total = sum(counts.values()) + selectors.task_unfetched_devices(task=task)
            context["state_counts"] = [
                {"state": state, "count": n, "percent": 100 * n / total if total else 0} for state, n in counts.items()
            ]
            context["threads"] = selectors.task_threads(task=task)
            context["unfetched"] = selectors.task_unfetched_devices(task=task)
            context["task_topic"] = f"pooltask:{task.msg_id}"
            context["rollout"] = task.meta.get("rollout") if isinstance(task.meta, dict) else None
            context["released"] = selectors.task_released_count(task=task) if context["rollout"] else None
        return super().change_view(request, object_id, form_url, extra_context=context)

    @admin.display(description="title", ordering="title")
    def title_shown(self, obj: Message) -> str:
        return obj.title or "(no title)"

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, obj: Message) -> str:
        return relative_time(obj.expires_at)

    @admin.display(description="cancelled", ordering="cancelled_at")
    def cancelled(self, obj: Message) -> str:
        return relative_time(obj.cancelled_at)

    @admin.display(description="Deliveries")
    def state_summary(self, obj: Message) -> str:
        counts = getattr(obj, "delivery_counts", None) or selectors.task_state_counts(task=obj)
        parts = [f"{n} {state}" for state, n in counts.items() if n]
        return ", ".join(parts) or ("broadcast, not fetched yet" if obj.target_all else "-")

    @admin.action(description="Cancel the selected tasks (in the background)", permissions=["operate"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        bulk_submit(request, self, queryset, "admin.pool_tasks_cancel")

    def _pause_or_resume(self, request: HttpRequest, queryset: QuerySet[Any], pause: bool) -> None:
        changed, refused = 0, []
        for task in queryset[:500]:
            try:
                changed += int(services.task_pause(task=task) if pause else services.task_resume(task=task))
            except (NotARolloutError, TaskNotOpenError) as exc:
                refused.append(f"{task.title or task.msg_id}: {exc.message}")
        verb = "paused" if pause else "resumed"
        self.message_user(request, f"{changed} rollout(s) {verb}.")
        if refused:
            self.message_user(request, "Not changed: " + "; ".join(refused[:10]), messages.WARNING)

    @admin.action(description="Pause the selected rollouts", permissions=["operate"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self._pause_or_resume(request, queryset, True)

    @admin.action(description="Resume the selected rollouts", permissions=["operate"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self._pause_or_resume(request, queryset, False)


@admin.register(Message)
class MessageAdmin(MessageColumns, ReadOnlyAdmin):
    """The full log, read-only."""

    list_display = ("type", "title", "sent", "sender", "to_short", "parent_short", "msg_short")
    list_display_links = ("type", "msg_short")
    list_filter = ("type", "ts")
    show_full_result_count = False  # millions of rows; no date hierarchy for the same reason as tasks
    search_fields = ("=msg_id", "title", "body", "sender", "=parent_id")
    list_per_page = 100
    ordering = ("-seq",)  # newest first: the primary key is the log's order
    fields = ("msg_id", "ts", "sender", "to", "type", "title", "body", "parent_id", "meta")

    @admin.display(description="in reply to", ordering="parent_id")
    def parent_short(self, obj: Message) -> str:
        return shortened(obj.parent_id, 8)


class DevicesAutocomplete(AutocompleteSelectMultiple):
    """The group's device picker. Django's widget looks up the posted values to show them again,
    so a value that is not a device id (`abc`, NUL, 30 digits) answered 500 instead of the form's
    own "not a valid value"; those values are not shown again (ids have at most 18 digits here)."""

    def optgroups(self, name: str, value: Any, attr: Any = None) -> Any:
        ids = [v for v in value if str(v).isascii() and str(v).isdigit() and len(str(v)) < 19]
        return super().optgroups(name, ids, attr)


class DeviceGroupForm(forms.ModelForm):
    class Meta:
        model = DeviceGroup
        fields = ("slug", "name", "devices")


@admin.register(DeviceGroup)
class DeviceGroupAdmin(SafeSelectionMixin, admin.ModelAdmin):
    """Static groups: a slug (`device:group:<slug>`), a name and its devices."""

    form = DeviceGroupForm
    list_display = ("slug", "name", "size", "created_at")
    search_fields = ("slug", "name")
    autocomplete_fields = ("devices",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[DeviceGroup]:
        return super().get_queryset(request).annotate(device_count=Count("devices"))

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "devices":
            kwargs["widget"] = DevicesAutocomplete(db_field, self.admin_site)
            kwargs["form_class"] = DeviceChoiceField  # an id past the database's integers: a form error
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    @admin.display(description="devices", ordering="device_count")
    def size(self, obj: DeviceGroup) -> int:
        return int(getattr(obj, "device_count", 0))

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        # Membership goes through the service: open continuous tasks reach devices that join.
        services.group_set_devices(group=form.instance, devices=form.cleaned_data["devices"])
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)
