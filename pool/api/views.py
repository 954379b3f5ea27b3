"""The seed's `/pool/…` endpoints, plus device enrolment (`/pool/register`, `/pool/token`)."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.authentication import JWTAuthentication

from coordinator.api.idempotency import IdempotentCreateMixin
from coordinator.api.pagination import DefaultPagination, page_of
from coordinator.api.views import ErrorEnvelopeSerializer
from coordinator.errors import ValidationFailedError
from coordinator.permissions import IsAdmin, IsMasterOrAdmin, platform_user
from coordinator.throttling import CREDENTIAL_THROTTLES, CredentialAddressThrottle, body_field
from pool import selectors, services
from pool.api.renderers import NDJSONRenderer
from pool.api.serializers import JsonObjectField, MessageSerializer, ResponseStatusField, text_field
from pool.authentication import DeviceJWTAuthentication, IsDevice
from pool.errors import DeviceNotFoundError, InvalidDateError, TaskNotFoundError, TaskNotOpenError
from pool.models import SLUG_PATTERN, DeliveryState, Device, Message, TaskState
from pool.selectors import device_is_online
from pool.services import RESPONSE_STATUSES
from pool.wire import MAX_DEVICE_ID, format_ts, message_line, message_to_wire

E = ErrorEnvelopeSerializer
DEVICE_AUTH = [DeviceJWTAuthentication, JWTAuthentication]
TAGS = ["pool"]


class DeviceApi(APIView):
    """Base of the device endpoints: device token only; a user token is recognised and refused."""

    authentication_classes = DEVICE_AUTH
    permission_classes = [IsDevice]

    @property
    def device(self) -> Device:
        user = self.request.user
        assert isinstance(user, Device)
        return user


def tags_field(**kwargs: Any) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.RegexField(
            rf"^{SLUG_PATTERN}\Z", max_length=64, error_messages={"invalid": "A tag is 1 to 64 of a-z, 0-9 and -."}
        ),
        max_length=100,
        **kwargs,
    )


def _slug_param(request: Request, name: str) -> str | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not re.fullmatch(SLUG_PATTERN, raw):
        raise ValidationFailedError(
            f"`{name}` must be a slug (1 to 64 of a-z, 0-9 and -).", extra={"fields": {name: ["Not a slug."]}}
        )
    return raw


class DeviceRegisterApi(APIView):
    """A device enrols itself; it stays unvalidated until staff validate it."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes = [CredentialAddressThrottle]  # anyone may enrol: limited per address

    @extend_schema_serializer(component_name="PoolRegisterInput")
    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=200)
        kind = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
        tags = tags_field(required=False, default=list)

    @extend_schema_serializer(component_name="PoolRegister")
    class OutputSerializer(serializers.Serializer):
        device_id = serializers.IntegerField()
        secret = serializers.CharField(help_text="Shown once; exchange it at POST /pool/token.")
        validated = serializers.BooleanField()

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer, 400: E, 429: E}, tags=TAGS, auth=[])
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        device, secret = services.device_create(**data.validated_data)
        return Response({"device_id": device.pk, "secret": secret, "validated": device.validated}, status=201)


class DeviceTokenApi(APIView):
    """Exchange a device id and secret for a device JWT."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes = CREDENTIAL_THROTTLES
    credential_account = staticmethod(body_field("device_id"))

    @extend_schema_serializer(component_name="PoolTokenInput")
    class InputSerializer(serializers.Serializer):
        device_id = serializers.IntegerField(min_value=1, max_value=MAX_DEVICE_ID)
        secret = serializers.CharField(max_length=200, trim_whitespace=False)

    @extend_schema_serializer(component_name="PoolToken")
    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()
        exp = serializers.CharField(help_text="Expiry, UTC, e.g. 2026-06-03T12:34:56Z")

    @extend_schema(
        request=InputSerializer, responses={200: OutputSerializer, 400: E, 401: E, 403: E, 429: E}, tags=TAGS, auth=[]
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        token, exp = services.device_token_issue(**data.validated_data)
        return Response({"token": token, "exp": format_ts(exp)})


class PendingApi(DeviceApi):
    """The caller's pending tasks, oldest first."""

    @extend_schema(responses={200: MessageSerializer(many=True), 401: E, 403: E}, tags=TAGS)
    def get(self, request: Request) -> Response:
        services.broadcasts_materialise(device=self.device)
        return Response([message_to_wire(m) for m in selectors.device_pending(device=self.device)])


class ResponseApi(IdempotentCreateMixin, DeviceApi):
    """Answer a task addressed to the caller: done and failed are final, progress is not."""

    @extend_schema_serializer(component_name="PoolResponseInput")
    class InputSerializer(serializers.Serializer):
        parent_id = serializers.CharField(max_length=40)
        status = ResponseStatusField(required=False)
        title = text_field()
        body = text_field()
        meta = JsonObjectField(required=False, default=dict)

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            in_meta = attrs["meta"].get("status")
            status = attrs.get("status")
            if status is None and in_meta is None:
                raise serializers.ValidationError({"status": ["Give `status` (done, failed or progress)."]})
            if in_meta is not None and in_meta not in RESPONSE_STATUSES:
                raise serializers.ValidationError({"meta": ["`meta.status` must be done, failed or progress."]})
            if status is not None and in_meta is not None and status != in_meta:
                raise serializers.ValidationError({"status": ["`status` and `meta.status` disagree."]})
            attrs["status"] = status or in_meta
            return attrs

    @extend_schema(
        request=InputSerializer, responses={201: MessageSerializer, 400: E, 401: E, 403: E, 404: E, 409: E}, tags=TAGS
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        message = services.response_create(device=self.device, **data.validated_data)
        return Response(message_to_wire(message), status=201)


class HeartbeatApi(IdempotentCreateMixin, DeviceApi):
    """Liveness ping: stores a heartbeat message and updates the device's last activity."""

    @extend_schema_serializer(component_name="PoolHeartbeatInput")
    class InputSerializer(serializers.Serializer):
        title = text_field()
        body = text_field()
        meta = JsonObjectField(required=False, default=dict)

    @extend_schema(request=InputSerializer, responses={201: MessageSerializer, 400: E, 401: E, 403: E}, tags=TAGS)
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        message = services.heartbeat_record(device=self.device, **data.validated_data)
        return Response(message_to_wire(message), status=201)


class TaskCreateApi(IdempotentCreateMixin, APIView):
    """Create a task for one device, several or all (`device:*`)."""

    permission_classes = [IsMasterOrAdmin]

    @extend_schema_serializer(component_name="PoolTaskInput")
    class InputSerializer(serializers.Serializer):
        to = serializers.CharField(max_length=4000)
        title = text_field()
        body = text_field()
        meta = JsonObjectField(required=False, default=dict)
        # In the future, and agreeing with `meta.expires_at` when both are given: task_create checks.
        expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)

    @extend_schema(request=InputSerializer, responses={201: MessageSerializer, 400: E, 401: E, 403: E}, tags=TAGS)
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        task = services.task_create(user=platform_user(request), **data.validated_data)
        return Response(message_to_wire(task), status=201)


class LogApi(APIView):
    """A UTC day's messages: JSONL by default, a JSON array for `Accept: application/json`."""

    permission_classes = [IsAdmin]
    renderer_classes = [NDJSONRenderer, JSONRenderer]

    @extend_schema(
        parameters=[OpenApiParameter("date", str, description="YYYY-MM-DD (UTC); default today")],
        responses={
            (200, "application/x-ndjson"): OpenApiResponse(
                MessageSerializer(many=True), description="One message per line."
            ),
            (200, "application/json"): MessageSerializer(many=True),
            400: E,
            401: E,
            403: E,
        },
        tags=TAGS,
    )
    def get(self, request: Request) -> Response | StreamingHttpResponse:
        raw = request.query_params.get("date")
        day: date | None = timezone.now().date()
        if raw is not None:
            try:
                day = date.fromisoformat(raw) if len(raw) == 10 else None
            except ValueError:
                day = None
        if day is None:
            raise InvalidDateError(extra={"date": (raw or "")[:100]})
        messages = selectors.message_log(day=day).iterator(chunk_size=2000)
        if isinstance(request.accepted_renderer, NDJSONRenderer):
            # Streamed line by line (a day can be large); a direct response also keeps its
            # Content-Type for an empty day, which DRF drops for an empty rendered body.
            return StreamingHttpResponse(
                (message_line(m) for m in messages), content_type="application/x-ndjson; charset=utf-8"
            )
        return Response([message_to_wire(m) for m in messages])


class DeviceOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    kind = serializers.CharField(allow_blank=True)
    validated = serializers.BooleanField()
    enabled = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    last_activity_at = serializers.DateTimeField(allow_null=True)
    last_activity_type = serializers.CharField(allow_blank=True)
    last_heartbeat_at = serializers.DateTimeField(allow_null=True)
    online = serializers.BooleanField()
    pending_count = serializers.IntegerField()
    tags = serializers.ListField(child=serializers.CharField())
    groups = serializers.ListField(child=serializers.CharField())


@extend_schema_serializer(component_name="PoolDeviceOpenDelivery")
class OpenDeliverySerializer(serializers.Serializer):
    task_id = serializers.CharField()
    title = serializers.CharField(allow_blank=True)
    state = serializers.CharField()
    progress = serializers.JSONField(allow_null=True)
    updated_at = serializers.DateTimeField()


def _device_row(device: Device, now: datetime) -> dict[str, Any]:
    return {
        "id": device.pk,
        "name": device.name,
        "kind": device.kind,
        "validated": device.validated,
        "enabled": device.enabled,
        "created_at": device.created_at,
        "last_activity_at": device.last_activity_at,
        "last_activity_type": device.last_activity_type,
        "last_heartbeat_at": device.last_heartbeat_at,
        "online": device_is_online(device, now),
        "pending_count": int(getattr(device, "pending_count", 0)),
        "tags": [t.slug for t in device.tags.all()],
        "groups": [g.slug for g in device.groups.all()],
    }


class DeviceListApi(APIView):
    """Every device with its flags, last activity, pending count, tags and groups; `?tag=`, `?group=` filter."""

    permission_classes = [IsAdmin]

    @extend_schema_serializer(component_name="PoolDevice")
    class OutputSerializer(DeviceOutputSerializer):
        pass

    @extend_schema(
        parameters=[
            OpenApiParameter("tag", str, description="Only devices with this tag."),
            OpenApiParameter("group", str, description="Only members of this group (its slug)."),
        ],
        responses={200: OutputSerializer(many=True), 400: E, 401: E, 403: E},
        tags=TAGS,
    )
    def get(self, request: Request) -> Response:
        now = timezone.now()
        devices = selectors.device_list(tag=_slug_param(request, "tag"), group=_slug_param(request, "group"))
        return Response(self.OutputSerializer([_device_row(d, now) for d in devices], many=True).data)


class DeviceDetailApi(APIView):
    """One device's state (online, last heartbeat, open deliveries, tags, groups); PATCH sets its tags."""

    permission_classes = [IsMasterOrAdmin]

    @extend_schema_serializer(component_name="PoolDeviceDetailInput")
    class InputSerializer(serializers.Serializer):
        tags = tags_field()

    @extend_schema_serializer(component_name="PoolDeviceDetail")
    class OutputSerializer(DeviceOutputSerializer):
        open_deliveries = OpenDeliverySerializer(many=True)

    def _answer(self, device_id: int) -> Response:
        device = selectors.device_get(device_id=device_id)
        if device is None:
            raise DeviceNotFoundError()
        row = _device_row(device, timezone.now())
        row["open_deliveries"] = [
            {
                "task_id": d.task.msg_id,
                "title": d.task.title,
                "state": d.state,
                "progress": d.progress,
                "updated_at": d.updated_at,
            }
            for d in selectors.device_open_deliveries(device=device)
        ]
        return Response(self.OutputSerializer(row).data)

    @extend_schema(responses={200: OutputSerializer, 401: E, 403: E, 404: E}, tags=TAGS)
    def get(self, request: Request, device_id: int) -> Response:
        return self._answer(device_id)

    @extend_schema(
        request=InputSerializer, responses={200: OutputSerializer, 400: E, 401: E, 403: E, 404: E}, tags=TAGS
    )
    def patch(self, request: Request, device_id: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        device = selectors.device_get(device_id=device_id)
        if device is None:
            raise DeviceNotFoundError()
        services.device_set_tags(device=device, tags=data.validated_data["tags"])
        return self._answer(device_id)


# --- The operator's task API (ours: envelope and OpenAPI) ---------------------------------------


def _task_summary(task: Message, counts: dict[str, int]) -> dict[str, Any]:
    return {
        **message_to_wire(task),
        "state": task.state,
        "paused": task.paused_at is not None,
        "abort_reason": task.abort_reason,
        "expires_at": task.expires_at,
        "cancelled_at": task.cancelled_at,
        "counts": counts,
    }


@extend_schema_serializer(component_name="PoolTaskSummary")
class TaskSummarySerializer(MessageSerializer):  # type: ignore[misc,valid-type]
    """The task as a wire message, plus its state and delivery counts."""

    state = serializers.ChoiceField(choices=TaskState.choices)
    paused = serializers.BooleanField()
    abort_reason = serializers.CharField(allow_blank=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    cancelled_at = serializers.DateTimeField(allow_null=True)
    counts = serializers.DictField(child=serializers.IntegerField(), help_text="Deliveries by state.")


@extend_schema_serializer(component_name="PoolTaskExecution")
class ExecutionSerializer(serializers.Serializer):
    device_id = serializers.IntegerField()
    device_name = serializers.CharField()
    state = serializers.ChoiceField(choices=DeliveryState.choices)
    progress = serializers.JSONField(allow_null=True)
    attempts = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    released_at = serializers.DateTimeField(allow_null=True)
    updated_at = serializers.DateTimeField()
    last_response = serializers.DictField(allow_null=True)


@extend_schema_serializer(component_name="PoolTaskDetail")
class TaskDetailSerializer(TaskSummarySerializer):
    executions = ExecutionSerializer(many=True)
    executions_total = serializers.IntegerField()


def _task_for(request: Request, task_id: str) -> Message:
    user = platform_user(request)
    assert user is not None  # IsMasterOrAdmin
    task = selectors.task_get(user=user, msg_id=task_id[:40])
    if task is None:  # another master's task is as unknown as a missing one
        raise TaskNotFoundError("No task with this id that you may see.")
    return task


def _task_detail(task: Message) -> dict[str, Any]:
    counts = selectors.task_state_counts(task=task)
    return {
        **_task_summary(task, counts),
        "executions": selectors.task_executions(task=task),
        "executions_total": sum(counts.values()),
    }


class TaskListApi(APIView):
    """Tasks newest first, paginated: a master's own, all for an admin; filter by state, target,
    device, creation time and sender."""

    permission_classes = [IsMasterOrAdmin]

    class FilterSerializer(serializers.Serializer):
        state = serializers.ChoiceField(choices=TaskState.choices, required=False)
        to = serializers.CharField(max_length=4000, required=False)
        device = serializers.IntegerField(min_value=1, max_value=MAX_DEVICE_ID, required=False)
        created_after = serializers.DateTimeField(required=False)
        created_before = serializers.DateTimeField(required=False)
        sender = serializers.EmailField(required=False)

    @extend_schema(
        operation_id="pool_tasks_list",
        parameters=[FilterSerializer, OpenApiParameter("page", int), OpenApiParameter("page_size", int)],
        responses={200: page_of("PoolTaskPage", TaskSummarySerializer(many=True)), 400: E, 401: E, 403: E, 404: E},
        tags=TAGS,
    )
    def get(self, request: Request) -> Response:
        params = self.FilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        values = dict(params.validated_data)
        if "device" in values:
            values["device_id"] = values.pop("device")
        user = platform_user(request)
        assert user is not None
        paginator = DefaultPagination()
        page = paginator.paginate_queryset(
            selectors.task_list(user=user, filters=selectors.TaskFilters(**values)), request, view=self
        )
        tasks = list(page or [])
        counts = selectors.tasks_state_counts(task_ids=[t.pk for t in tasks])
        rows = [_task_summary(t, counts[t.pk]) for t in tasks]
        return paginator.get_paginated_response(TaskSummarySerializer(rows, many=True).data)


class TaskDetailApi(APIView):
    """A task with its per-device executions (first 1,000 by device id) and counts by state."""

    permission_classes = [IsMasterOrAdmin]

    @extend_schema(responses={200: TaskDetailSerializer, 401: E, 403: E, 404: E}, tags=TAGS)
    def get(self, request: Request, task_id: str) -> Response:
        return Response(TaskDetailSerializer(_task_detail(_task_for(request, task_id))).data)


class TaskCancelApi(APIView):
    """Cancel a task: its queued and open deliveries are cancelled."""

    permission_classes = [IsMasterOrAdmin]

    @extend_schema(request=None, responses={200: TaskDetailSerializer, 401: E, 403: E, 404: E, 409: E}, tags=TAGS)
    def post(self, request: Request, task_id: str) -> Response:
        task = _task_for(request, task_id)
        if not services.task_cancel(task=task):
            raise TaskNotOpenError(f"This task is {task.state}; it cannot be cancelled.")
        task.refresh_from_db()
        return Response(TaskDetailSerializer(_task_detail(task)).data)


class TaskPauseApi(APIView):
    """Pause a staged rollout: nothing more is released until it is resumed."""

    permission_classes = [IsMasterOrAdmin]

    @extend_schema(request=None, responses={200: TaskDetailSerializer, 401: E, 403: E, 404: E, 409: E}, tags=TAGS)
    def post(self, request: Request, task_id: str) -> Response:
        task = _task_for(request, task_id)
        services.task_pause(task=task)
        return Response(TaskDetailSerializer(_task_detail(task)).data)


class TaskResumeApi(APIView):
    """Resume a paused rollout."""

    permission_classes = [IsMasterOrAdmin]

    @extend_schema(request=None, responses={200: TaskDetailSerializer, 401: E, 403: E, 404: E, 409: E}, tags=TAGS)
    def post(self, request: Request, task_id: str) -> Response:
        task = _task_for(request, task_id)
        services.task_resume(task=task)
        return Response(TaskDetailSerializer(_task_detail(task)).data)
