"""`/webhooks/`: owners and admins subscribe URLs to events (signed deliveries, docs/operations.md)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from coordinator.api.views import ErrorEnvelopeSerializer
from coordinator.errors import ValidationFailedError
from coordinator.models import User
from coordinator.permissions import IsPlatformUser, platform_user
from webhooks import selectors, services
from webhooks.models import EventType, Subscription

E = ErrorEnvelopeSerializer
TAGS = ["webhooks"]
ERRORS = {400: E, 401: E, 403: E}


def _user(request: Request) -> User:
    user = platform_user(request)
    assert user is not None  # IsPlatformUser
    return user


@extend_schema_serializer(component_name="Webhook")
class WebhookOutput(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.URLField()
    events = serializers.ListField(child=serializers.ChoiceField(choices=EventType.choices))
    owner = serializers.EmailField(source="owner.email")
    event_owner = serializers.IntegerField(source="event_owner_id", allow_null=True)
    enabled = serializers.BooleanField()
    consecutive_failures = serializers.IntegerField()
    disabled_reason = serializers.CharField()
    created_at = serializers.DateTimeField()


@extend_schema_serializer(component_name="WebhookWithSecret")
class WebhookWithSecretOutput(WebhookOutput):
    secret = serializers.CharField(help_text="Shown only in this answer: keep it to verify signatures.")


def _with_secret(subscription: Subscription, secret: str | None) -> dict[str, Any]:
    data = dict(WebhookOutput(subscription).data)
    return data if secret is None else {**data, "secret": secret}


class WebhookListApi(APIView):
    """List your webhooks (an admin: every one), or subscribe a URL to events."""

    permission_classes = [IsPlatformUser]

    @extend_schema_serializer(component_name="WebhookCreateInput")
    class InputSerializer(serializers.Serializer):
        url = serializers.URLField(max_length=2000)
        events = serializers.ListField(child=serializers.ChoiceField(choices=EventType.choices), min_length=1)
        secret = serializers.CharField(min_length=16, max_length=200, required=False, help_text="Generated if omitted.")
        event_owner = serializers.IntegerField(
            required=False,
            allow_null=True,
            min_value=1,
            max_value=2**63 - 1,
            help_text="Admins: only this user's events (default: everyone's).",
        )

    @extend_schema(responses={200: WebhookOutput(many=True), **ERRORS}, tags=TAGS)
    def get(self, request: Request) -> Response:
        rows = selectors.subscription_list(user=_user(request)).select_related("owner")
        return Response(WebhookOutput(rows, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: WebhookWithSecretOutput, 409: E, **ERRORS}, tags=TAGS)
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        event_owner = _event_owner(values.get("event_owner"))
        subscription, secret = services.subscription_create(
            owner=_user(request),
            url=values["url"],
            events=values["events"],
            secret=values.get("secret"),
            event_owner=event_owner,
        )
        return Response(_with_secret(subscription, secret), status=201)


def _event_owner(user_id: int | None) -> User | None:
    if user_id is None:
        return None
    found = User.objects.filter(pk=user_id).first()
    if found is None:
        raise ValidationFailedError("No such user.", extra={"fields": {"event_owner": ["unknown"]}})
    return found


class WebhookDetailApi(APIView):
    """Read, change (URL, events, secret, enabled) or delete one of your webhooks."""

    permission_classes = [IsPlatformUser]

    @extend_schema_serializer(component_name="WebhookUpdateInput")
    class InputSerializer(serializers.Serializer):
        url = serializers.URLField(max_length=2000, required=False)
        events = serializers.ListField(
            child=serializers.ChoiceField(choices=EventType.choices), min_length=1, required=False
        )
        secret = serializers.CharField(min_length=16, max_length=200, required=False)
        rotate_secret = serializers.BooleanField(required=False, default=False, help_text="Generate a new secret.")
        enabled = serializers.BooleanField(required=False, help_text="true: enable again (clears the failures).")

    @extend_schema(responses={200: WebhookOutput, 404: E, **ERRORS}, tags=TAGS)
    def get(self, request: Request, webhook_id: int) -> Response:
        subscription = selectors.subscription_get(user=_user(request), subscription_id=webhook_id)
        return Response(WebhookOutput(subscription).data)

    @extend_schema(request=InputSerializer, responses={200: WebhookWithSecretOutput, 404: E, **ERRORS}, tags=TAGS)
    def patch(self, request: Request, webhook_id: int) -> Response:
        subscription = selectors.subscription_get(user=_user(request), subscription_id=webhook_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        subscription, secret = services.subscription_update(subscription=subscription, **data.validated_data)
        return Response(_with_secret(subscription, secret))

    @extend_schema(responses={204: None, 404: E, **ERRORS}, tags=TAGS)
    def delete(self, request: Request, webhook_id: int) -> Response:
        services.subscription_delete(
            subscription=selectors.subscription_get(user=_user(request), subscription_id=webhook_id)
        )
        return Response(status=204)
