"""Webhooks in the admin: subscriptions (secret shown once), and the delivery log with redelivery."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from coordinator.admin_display import relative_time
from coordinator.admin_site import ReadOnlyAdmin, SafeSelectionMixin, is_admin_request
from coordinator.models import Role, User
from webhooks import net, services
from webhooks.errors import TooManyWebhooksError, WebhookUrlError
from webhooks.models import Delivery, EventType, Subscription


class SubscriptionForm(forms.ModelForm):  # type: ignore[type-arg]
    url = forms.URLField(max_length=2000, assume_scheme="https")
    events = forms.MultipleChoiceField(choices=EventType.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = Subscription
        fields = ("owner", "url", "events", "event_owner", "enabled")

    def clean_url(self) -> str:
        url = str(self.cleaned_data["url"])
        try:
            net.resolve(url)
        except WebhookUrlError as exc:
            raise forms.ValidationError(exc.message) from exc
        return url

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        owner = cleaned.get("owner")
        if self.instance.pk is None and owner is not None:
            try:
                services.subscription_cap_check(owner=owner)
            except TooManyWebhooksError as exc:
                raise forms.ValidationError(exc.message) from exc
        return cleaned


@admin.register(Subscription)
class SubscriptionAdmin(SafeSelectionMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    form = SubscriptionForm
    list_display = ("id", "url", "owner", "event_list", "enabled", "consecutive_failures", "disabled_reason")
    list_filter = ("enabled",)
    search_fields = ("url", "owner__email")
    readonly_fields = ("consecutive_failures", "disabled_reason", "created_at", "updated_at")
    list_select_related = ("owner",)
    actions = ["rotate_secret", "enable"]

    @admin.display(description="events")
    def event_list(self, obj: Subscription) -> str:
        return ", ".join(obj.events)

    def delete_model(self, request: HttpRequest, obj: Subscription) -> None:
        services.subscription_delete(subscription=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        for subscription in queryset:
            services.subscription_delete(subscription=subscription)

    def save_model(self, request: HttpRequest, obj: Subscription, form: Any, change: bool) -> None:
        # Through the services: the URL is checked (scheme, public address) and the change audited.
        data = form.cleaned_data
        if change:
            services.subscription_update(
                subscription=obj, url=data["url"], events=list(data["events"]), enabled=data["enabled"]
            )
            return
        subscription, secret = services.subscription_create(
            owner=data["owner"], url=data["url"], events=list(data["events"]), event_owner=data.get("event_owner")
        )
        obj.pk = subscription.pk
        self.message_user(
            request, f"Webhook {subscription.pk} created. Its secret, shown only now: {secret}", messages.WARNING
        )

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        return None  # no related rows; the service saved everything

    # An admin's webhook carries every user's events: as only admins may add one, only admins
    # change it (its URL, its secret), enable it or delete it.
    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if isinstance(obj, Subscription) and obj.owner.is_admin and not is_admin_request(request):
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if isinstance(obj, Subscription) and obj.owner.is_admin and not is_admin_request(request):
            return False
        return super().has_delete_permission(request, obj)

    def _changeable(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> QuerySet[Subscription]:
        """The selection without the admins' webhooks, unless an admin acts."""
        return queryset if is_admin_request(request) else queryset.exclude(owner__role=Role.ADMIN)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # Whose webhook it is, and whose events it carries, are decided when it is created.
        return (*super().get_readonly_fields(request, obj), *(("owner", "event_owner") if obj else ()))

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        # Whose events a webhook carries follows its owner's role: staff without the admin role may
        # add webhooks only for themselves, never one owned by an admin (everyone's events).
        if db_field.name in ("owner", "event_owner") and not is_admin_request(request):
            kwargs["queryset"] = User.objects.filter(pk=getattr(request.user, "pk", None) or 0)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        return {"owner": request.user.pk, **super().get_changeform_initial_data(request)}

    @admin.action(description="Generate a new secret (shown once)", permissions=["change"])
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        for subscription in self._changeable(request, queryset):
            _, secret = services.subscription_update(subscription=subscription, rotate_secret=True)
            self.message_user(
                request, f"Webhook {subscription.pk}: new secret, shown only now: {secret}", messages.WARNING
            )

    @admin.action(description="Enable again (clears the failure count)", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        changeable = list(self._changeable(request, queryset))
        for subscription in changeable:
            services.subscription_update(subscription=subscription, enabled=True)
        self.message_user(request, f"{len(changeable)} webhook(s) enabled.")


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    """The delivery log: what was sent where, the answer's code and time; staff may redeliver."""

    list_display = ("id", "event_type", "subscription", "status", "attempts", "response_code", "duration", "sent")
    list_filter = ("status", "event_type")
    search_fields = ("=event_id", "subscription__url")
    list_select_related = ("subscription",)
    show_full_result_count = False
    actions = ["redeliver"]
    fields = (
        "subscription",
        "event_id",
        "event_type",
        "status",
        "attempts",
        "response_code",
        "duration_ms",
        "error",
        "job_id",
        "created_at",
        "last_attempt_at",
        "delivered_at",
        "payload",
    )
    readonly_fields = fields

    @admin.display(description="time", ordering="duration_ms")
    def duration(self, obj: Delivery) -> str:
        return "-" if obj.duration_ms is None else f"{obj.duration_ms} ms"

    @admin.display(description="last attempt", ordering="last_attempt_at")
    def sent(self, obj: Delivery) -> str:
        return relative_time(obj.last_attempt_at)

    def has_redeliver_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("webhooks.change_subscription"))

    @admin.action(description="Redeliver", permissions=["redeliver"])
    def redeliver(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        for delivery in queryset[:500]:
            services.delivery_redeliver(delivery=delivery)
        self.message_user(request, f"{min(len(queryset), 500)} delivery(ies) queued again.")
