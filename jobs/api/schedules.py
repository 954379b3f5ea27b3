"""`/v1/schedules`: recurring and one-off typed jobs of the caller (admins: everyone's); envelope errors."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from coordinator.api.pagination import DefaultPagination, page_of
from coordinator.api.parsers import JSONParser
from coordinator.api.views import ErrorEnvelopeSerializer
from coordinator.permissions import platform_user
from jobs.models import JobSchedule
from jobs.schedules import schedule_create, schedule_delete, schedule_next_runs, schedule_update
from jobs.selectors import schedule_get_for_user, schedule_last_runs, schedule_list

E = ErrorEnvelopeSerializer


class ScheduleInputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "ScheduleInput"

    type = serializers.CharField(max_length=200)
    data = serializers.JSONField(required=False, default=dict)  # type: ignore[assignment]
    cron = serializers.CharField(required=False, max_length=200, help_text="5 fields, e.g. `59 23 * * *`.")
    interval_seconds = serializers.IntegerField(required=False, min_value=1)
    run_at = serializers.DateTimeField(required=False, help_text="Once, at this time (ISO 8601 with an offset).")
    timezone = serializers.CharField(required=False, default="UTC", max_length=64, help_text="IANA name.")
    enabled = serializers.BooleanField(required=False, default=True)
    missed = serializers.ChoiceField(choices=JobSchedule.Missed.choices, required=False, default="skip")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        for name, value in attrs.items():
            if isinstance(value, str) and "\x00" in value:
                raise serializers.ValidationError({name: "NUL characters are not allowed."})
        return attrs


class ScheduleRunSerializer(serializers.Serializer):
    class Meta:
        ref_name = "ScheduleRun"

    occurrence = serializers.DateTimeField()
    job_id = serializers.IntegerField(allow_null=True)
    status = serializers.SerializerMethodField()
    skipped = serializers.BooleanField()
    error = serializers.CharField()

    def get_status(self, run: Any) -> str | None:
        return run.job.status_label if run.job is not None else None


class ScheduleOutputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "Schedule"

    id = serializers.IntegerField()
    type = serializers.CharField()
    data = serializers.JSONField()  # type: ignore[assignment]
    cron = serializers.CharField()
    interval_seconds = serializers.IntegerField(allow_null=True)
    run_at = serializers.DateTimeField(allow_null=True)
    timezone = serializers.CharField()
    enabled = serializers.BooleanField()
    missed = serializers.CharField()
    owner = serializers.IntegerField(source="owner_id")
    next_runs = serializers.SerializerMethodField()
    last_runs = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    @extend_schema_field(serializers.ListField(child=serializers.DateTimeField()))
    def get_next_runs(self, schedule: JobSchedule) -> list[str]:
        return [moment.isoformat() for moment in schedule_next_runs(schedule)]

    @extend_schema_field(ScheduleRunSerializer(many=True))
    def get_last_runs(self, schedule: JobSchedule) -> list[dict[str, Any]]:
        runs = self.context.get("last_runs", {}).get(schedule.pk, [])
        return ScheduleRunSerializer(runs, many=True).data  # type: ignore[return-value]


def _out(schedules: list[JobSchedule]) -> Any:
    runs = schedule_last_runs(schedule_ids=[schedule.pk for schedule in schedules])
    return ScheduleOutputSerializer(schedules, many=True, context={"last_runs": runs}).data


class ScheduleListApi(APIView):
    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="v1_schedules_list",
        responses={200: page_of("SchedulePage", ScheduleOutputSerializer(many=True)), 401: E, 404: E},
        summary="The caller's schedules (admins: everyone's)",
    )
    def get(self, request: Request) -> Response:
        user = platform_user(request)
        assert user is not None
        paginator = DefaultPagination()
        page = paginator.paginate_queryset(schedule_list(user=user), request, view=self) or []
        return paginator.get_paginated_response(_out(list(page)))

    @extend_schema(
        operation_id="v1_schedules_create",
        request=ScheduleInputSerializer,
        responses={201: ScheduleOutputSerializer, 400: E, 401: E, 403: E, 409: E, 422: E},
        summary="Create a schedule (cron, interval_seconds or run_at), run with the caller's permissions",
    )
    def post(self, request: Request) -> Response:
        user = platform_user(request)
        assert user is not None
        body = ScheduleInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        schedule = schedule_create(owner=user, **body.validated_data)
        return Response(_out([schedule])[0], status=status.HTTP_201_CREATED)


class ScheduleDetailApi(APIView):
    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="v1_schedules_retrieve",
        responses={200: ScheduleOutputSerializer, 401: E, 404: E},
        summary="A schedule with its next 5 runs and last runs",
    )
    def get(self, request: Request, schedule_id: int) -> Response:
        user = platform_user(request)
        assert user is not None
        return Response(_out([schedule_get_for_user(schedule_id=schedule_id, user=user)])[0])

    @extend_schema(
        operation_id="v1_schedules_update",
        request=ScheduleInputSerializer(partial=True),
        responses={200: ScheduleOutputSerializer, 400: E, 401: E, 403: E, 404: E, 422: E},
        summary="Change a schedule (a new cron / interval_seconds / run_at replaces the old one)",
    )
    def patch(self, request: Request, schedule_id: int) -> Response:
        user = platform_user(request)
        assert user is not None
        schedule = schedule_get_for_user(schedule_id=schedule_id, user=user)
        body = ScheduleInputSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        schedule = schedule_update(schedule=schedule, **body.validated_data)
        return Response(_out([schedule])[0])

    @extend_schema(
        operation_id="v1_schedules_delete",
        responses={204: None, 401: E, 404: E},
        summary="Delete a schedule (the jobs it started stay)",
    )
    def delete(self, request: Request, schedule_id: int) -> Response:
        user = platform_user(request)
        assert user is not None
        schedule_delete(schedule=schedule_get_for_user(schedule_id=schedule_id, user=user))
        return Response(status=status.HTTP_204_NO_CONTENT)
