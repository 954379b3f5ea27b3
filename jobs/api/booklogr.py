"""BookLogr's `/v1` task and file endpoints (seed 001), with its error bodies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView, set_rollback

from coordinator.api.exception_handler import envelope_exception_handler
from coordinator.api.idempotency import IdempotentCreateMixin
from coordinator.api.pagination import DefaultPagination, page_of
from coordinator.api.parsers import JSONParser
from coordinator.api.views import ErrorEnvelopeSerializer
from coordinator.errors import ApplicationError, as_application_error
from coordinator.permissions import IsPlatformUser, platform_user
from jobs import conf
from jobs.api.common import (
    EXISTING_HEADER,
    BodyError,
    SubmissionOptionError,
    booklogr_error,
    json_body,
    scoped_unique_key,
    submission_options,
)
from jobs.errors import ArgumentError, UnknownJobTypeError
from jobs.exports import upload_store
from jobs.models import Job
from jobs.registry import all_specs, get_spec
from jobs.retention import file_open_for_download
from jobs.selectors import file_get_for_owner, file_list, job_get_for_user, job_list
from jobs.services import job_cancel, job_create, job_rerun, job_retry, user_may_run

_ERROR_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    503: "Service unavailable",
    422: "Invalid type",
}


def booklogr_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Errors as BookLogr answered them: `{"error", "message"}`, and flask-jwt-extended's `{"msg"}`."""
    set_rollback()
    exc = as_application_error(exc)
    if isinstance(exc, exceptions.NotAuthenticated):
        return Response({"msg": "Missing Authorization Header"}, status=401, headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, exceptions.AuthenticationFailed):
        detail = exc.detail.get("detail", exc.detail) if isinstance(exc.detail, dict) else exc.detail
        return Response({"msg": str(detail)}, status=401, headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, ApplicationError):
        return Response(
            {"error": _ERROR_TITLES.get(exc.status_code, "Error"), "message": exc.message},
            status=exc.status_code,
            headers=exc.headers,
        )
    if isinstance(exc, exceptions.APIException):
        return Response(
            {"error": _ERROR_TITLES.get(exc.status_code, "Error"), "message": str(exc.detail)}, status=exc.status_code
        )
    return None  # unexpected: let the middleware log it and answer 500


class BookLogrView(APIView):
    def get_exception_handler(self) -> Callable[[Exception, dict[str, Any]], Response | None]:
        return booklogr_exception_handler


JWT_401 = OpenApiResponse(
    response=inline_serializer(name="BookLogrJwtError", fields={"msg": serializers.CharField()}),
    description="Missing or invalid access token (flask-jwt-extended's body).",
)
NOT_FOUND = booklogr_error("BookLogrNotFound", "Not found (also when it is not the caller's).")


def _type_list() -> str:
    return ", ".join(spec.name for spec in all_specs())


class TaskOutputSerializer(serializers.ModelSerializer):
    created_on = serializers.DateTimeField(source="created_at", read_only=True)
    created_by = serializers.IntegerField(source="created_by_id", allow_null=True)
    data = serializers.JSONField()  # type: ignore[assignment]
    result = serializers.JSONField(allow_null=True)
    status = serializers.CharField(help_text="fresh, started, success or failure.")
    rerun_of = serializers.IntegerField(
        source="rerun_of_id", allow_null=True, help_text="The task this one runs again."
    )
    run_after = serializers.DateTimeField(
        allow_null=True, help_text="A fresh job with this set starts no earlier (a delay or a retry's backoff)."
    )

    class Meta:
        ref_name = "BookLogrTask"
        model = Job
        fields = [
            "id",
            "type",
            "data",
            "status",
            "worker",
            "created_on",
            "created_at",
            "updated_on",
            "created_by",
            "attempts",
            "max_attempts",
            "result",
            "error",
            "progress",
            "progress_message",
            "started_at",
            "finished_at",
            "run_after",
            "unique_key",
            "rerun_of",
            "queue",
        ]


class TaskListApi(IdempotentCreateMixin, BookLogrView):
    """`POST` is BookLogr's create (its shapes); `GET`, the list, is ours (the envelope)."""

    parser_classes = [JSONParser]

    def get_exception_handler(self) -> Callable[[Exception, dict[str, Any]], Response | None]:
        if self.request.method == "GET":
            return envelope_exception_handler
        return booklogr_exception_handler

    class FilterSerializer(serializers.Serializer):
        class Meta:
            ref_name = "TaskListFilter"

        status = serializers.ChoiceField(choices=Job.Status.choices, required=False)
        type = serializers.CharField(required=False, max_length=200)
        queue = serializers.CharField(required=False, max_length=63)
        created_after = serializers.DateTimeField(required=False, help_text="Created at or after (ISO 8601).")
        created_before = serializers.DateTimeField(required=False, help_text="Created before (ISO 8601).")
        unique_key = serializers.CharField(required=False, max_length=200, help_text="The key as it was sent.")
        page = serializers.IntegerField(required=False, min_value=1, max_value=2**31)
        page_size = serializers.IntegerField(required=False, min_value=1, max_value=500)

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            for name, value in attrs.items():
                if isinstance(value, str) and "\x00" in value:
                    raise serializers.ValidationError({name: "NUL characters are not allowed."})
            return attrs

    @extend_schema(
        operation_id="v1_tasks_list",
        parameters=[FilterSerializer],
        responses={
            200: page_of("TaskPage", TaskOutputSerializer(many=True)),
            400: ErrorEnvelopeSerializer,
            401: ErrorEnvelopeSerializer,
            404: ErrorEnvelopeSerializer,
        },
        summary="The caller's tasks (admins: everyone's), newest first, filtered and paginated",
    )
    def get(self, request: Request) -> Response:
        user = platform_user(request)
        assert user is not None
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        params = {k: v for k, v in filters.validated_data.items() if k not in ("page", "page_size")}
        paginator = DefaultPagination()
        page = paginator.paginate_queryset(job_list(user=user, **params), request, view=self)
        return paginator.get_paginated_response(TaskOutputSerializer(page, many=True).data)

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "BookLogrTaskCreateInput"

        type = serializers.CharField()
        data = serializers.JSONField(  # type: ignore[assignment]
            help_text="The job's arguments (an object; `{}` for the exports' defaults)."
        )
        run_after = serializers.DateTimeField(
            required=False, help_text="Start no earlier than this (ISO 8601 with an offset); the job stays fresh."
        )
        delay_seconds = serializers.FloatField(
            required=False, min_value=0, help_text="Start after this many seconds (instead of run_after)."
        )
        unique_key = serializers.CharField(
            required=False,
            max_length=200,
            help_text="While a job of this type and key is fresh or started, answer with that job (200).",
        )

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "BookLogrTaskCreated"

        message = serializers.CharField()
        task_id = serializers.IntegerField()
        existing = serializers.BooleanField(
            required=False, help_text="Present (true) when the answer is the job already holding the unique_key."
        )

    @extend_schema(
        operation_id="v1_tasks_create",
        request=InputSerializer,
        responses={
            202: OutputSerializer,
            200: OpenApiResponse(
                response=OutputSerializer,
                description="A job of this type with this unique_key is fresh or started: that job, "
                "with `existing: true` and the header `Job-Existing: true`.",
            ),
            400: OpenApiResponse(
                response=inline_serializer(
                    name="BookLogrMissing",
                    fields={
                        "status": serializers.CharField(required=False),
                        "message": serializers.CharField(),
                        "missing": serializers.ListField(child=serializers.CharField(), required=False),
                        "error": serializers.CharField(required=False),
                    },
                ),
                description="Missing `type`/`data` (with the `missing` list), or arguments not matching the job.",
            ),
            401: JWT_401,
            403: booklogr_error("BookLogrForbidden", "The job type is protected and not granted to the caller."),
            422: booklogr_error("BookLogrInvalidType", "Unknown job type."),
        },
        summary="Create a background task (BookLogr)",
    )
    def post(self, request: Request) -> Response:
        try:
            body = json_body(request)
        except BodyError as exc:
            return Response({"error": "Bad request", "message": str(exc)}, status=400)
        if not isinstance(body, dict):
            body = {}
        missing = [key for key in ("type", "data") if key not in body]
        if missing:
            return Response(
                {"status": "error", "message": "Request JSON is missing some required params", "missing": missing},
                status=400,
            )
        job_type = body["type"]
        if not isinstance(job_type, str) or get_spec(job_type) is None:
            return Response(
                {
                    "error": "Invalid type",
                    "message": f"The supplied task type is invalid. It can be either {_type_list()}.",
                },
                status=422,
            )
        try:
            options = submission_options(body)
        except SubmissionOptionError as exc:
            return Response({"error": "Bad request", "message": exc.message}, status=400)
        user = platform_user(request)
        try:
            job = job_create(
                type=job_type,
                data=body["data"],
                user=user,
                strict=False,
                run_after=options.run_after,
                unique_key=scoped_unique_key(options.unique_key, user),
            )
        except ArgumentError as exc:
            return Response({"error": "Invalid data", "message": exc.message}, status=400)
        except UnknownJobTypeError:  # unregistered between the check and the create
            return Response({"error": "Invalid type", "message": "The supplied task type is invalid."}, status=422)
        if job.existing:
            return Response(
                {"message": "Task exists.", "task_id": job.pk, "existing": True},
                status=status.HTTP_200_OK,
                headers={EXISTING_HEADER: "true"},
            )
        return Response({"message": "Task created.", "task_id": job.pk}, status=status.HTTP_202_ACCEPTED)


class TaskDetailApi(BookLogrView):
    @extend_schema(
        operation_id="v1_tasks_retrieve",
        responses={200: TaskOutputSerializer, 401: JWT_401, 404: NOT_FOUND},
        summary="A task's whole record (the caller's own; admins see all)",
    )
    def get(self, request: Request, task_id: int) -> Response:
        user = platform_user(request)
        assert user is not None
        job = job_get_for_user(job_id=task_id, user=user)
        return Response(TaskOutputSerializer(job).data)


class TaskRetryApi(BookLogrView):
    @extend_schema(
        operation_id="v1_tasks_retry",
        request=None,
        responses={
            200: inline_serializer(name="BookLogrRetried", fields={"message": serializers.CharField()}),
            401: JWT_401,
            404: NOT_FOUND,
            409: booklogr_error("BookLogrRetryConflict", "Only a task in status `failure` can be retried."),
        },
        summary="Retry a failed task (queued again, never run inside the request)",
    )
    def post(self, request: Request, task_id: int) -> Response:
        user = platform_user(request)
        assert user is not None
        job = job_get_for_user(job_id=task_id, user=user)
        job_retry(job=job)
        return Response({"message": "Task set to be retried."})


class TaskCancelApi(APIView):
    @extend_schema(
        operation_id="v1_tasks_cancel",
        request=None,
        responses={
            200: TaskOutputSerializer,
            401: ErrorEnvelopeSerializer,
            404: ErrorEnvelopeSerializer,
            409: ErrorEnvelopeSerializer,
        },
        summary="Cancel a task: a fresh one stops at once, a started one at its next progress report",
        description="The caller's own tasks (admins: all); 409 `job_state_conflict` when the task is final.",
    )
    def post(self, request: Request, task_id: int) -> Response:
        user = platform_user(request)
        assert user is not None
        job = job_cancel(job=job_get_for_user(job_id=task_id, user=user))
        return Response(TaskOutputSerializer(job).data)


class TaskRerunApi(APIView):
    parser_classes = [JSONParser]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "TaskRerunInput"

        data = serializers.JSONField(  # type: ignore[assignment]
            required=False, help_text="New arguments (validated like a submission); default: the original's."
        )

    @extend_schema(
        operation_id="v1_tasks_rerun",
        request=InputSerializer,
        responses={
            201: TaskOutputSerializer,
            400: ErrorEnvelopeSerializer,
            401: ErrorEnvelopeSerializer,
            403: ErrorEnvelopeSerializer,
            404: ErrorEnvelopeSerializer,
            422: ErrorEnvelopeSerializer,
        },
        summary="Run a task again (any status) as a new task linked to it by `rerun_of`",
        description="The caller's own tasks (admins: all); the new task belongs to the original's owner.",
    )
    def post(self, request: Request, task_id: int) -> Response:
        user = platform_user(request)
        assert user is not None
        job = job_get_for_user(job_id=task_id, user=user)
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        rerun = job_rerun(job=job, user=user, data=body.validated_data.get("data"))
        return Response(TaskOutputSerializer(rerun).data, status=status.HTTP_201_CREATED)


class FileOutputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "BookLogrFile"

    id = serializers.IntegerField()
    filename = serializers.CharField()
    created_at = serializers.DateTimeField()
    format = serializers.CharField()
    size = serializers.IntegerField()
    job_id = serializers.IntegerField(allow_null=True)


# Room for the multipart boundaries and part headers around the file itself.
MULTIPART_ALLOWANCE = 64 * 1024


class CappedUploadHandler(FileUploadHandler):
    """Stops reading an upload once it passes `limit` bytes (Django's upload-handler interface), so
    no more than the limit is ever written to disk; the view then answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.received = limit, 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > self.limit:
            raise StopUpload(connection_reset=True)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None

    @property
    def cut_off(self) -> bool:
        return self.received > self.limit


class MayImport(BasePermission):
    """An upload (POST) only from a user who may run `jsonl_import`. A permission, not a check in
    the handler, so that it runs before any of the body is read: in the view, and in the front
    door's admission question before it buffers the upload (coordinator/admission.py)."""

    message = "You don't have permission to import into the task pool."

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method != "POST":
            return True
        user, spec = platform_user(request), get_spec("jsonl_import")
        return user is not None and spec is not None and user_may_run(user, spec)


class FileListApi(BookLogrView):
    parser_classes = [MultiPartParser, FormParser]
    permission_classes = [IsPlatformUser, MayImport]

    class UploadSerializer(serializers.Serializer):
        class Meta:
            ref_name = "BookLogrUpload"

        file = serializers.FileField()
        type = serializers.ChoiceField(choices=["jsonl"], required=False, default="jsonl")

    @extend_schema(
        operation_id="v1_files_list",
        responses={
            200: FileOutputSerializer(many=True),
            401: JWT_401,
            404: booklogr_error("BookLogrNoFiles", "The caller has no files (BookLogr answers 404)."),
        },
        summary="The caller's files, newest first",
    )
    def get(self, request: Request) -> Response:
        user = platform_user(request)
        assert user is not None
        rows = list(file_list(user=user))
        if not rows:
            return Response({"error": "Not found", "message": "No files found"}, status=404)
        return Response(FileOutputSerializer(rows, many=True).data)

    @extend_schema(
        operation_id="v1_files_upload",
        request={"multipart/form-data": UploadSerializer},
        responses={
            202: inline_serializer(
                name="BookLogrUploadCreated",
                fields={
                    "message": serializers.CharField(),
                    "task_id": serializers.IntegerField(),
                    "filename": serializers.CharField(),
                },
            ),
            400: booklogr_error("BookLogrUploadBad", "Unknown import type or unreadable request."),
            401: JWT_401,
            403: booklogr_error("BookLogrUploadForbidden", "The caller may not run `jsonl_import`."),
            413: booklogr_error("BookLogrUploadTooBig", "The file is larger than JOBS_UPLOAD_MAX_BYTES."),
            415: booklogr_error("BookLogrUploadMedia", "Not a multipart upload."),
            422: booklogr_error("BookLogrUploadMissing", "`file` is missing."),
        },
        summary="Upload a task-pool JSONL file; creates a `jsonl_import` job",
    )
    def post(self, request: Request) -> Response:
        user = platform_user(request)
        assert user is not None
        # Declared size first (the permission, MayImport, came before the handler): nothing of the
        # body is read (or written to a temporary file) for a body over the limit.
        too_large = Response({"error": "Payload too large", "message": "The file is too large."}, status=413)
        declared = str(request.META.get("CONTENT_LENGTH") or "")
        if declared.isdigit() and int(declared) > conf.upload_max_bytes() + MULTIPART_ALLOWANCE:
            return too_large
        # A body that declares no length (or lies) is cut off while it streams in.
        cap = CappedUploadHandler(conf.upload_max_bytes())
        request.upload_handlers.insert(0, cap)
        upload = request.FILES.get("file")
        if cap.cut_off:
            return too_large
        if upload is None:
            return Response({"error": "Missing file", "message": "The request is missing the file."}, status=422)
        import_type = request.POST.get("type") or "jsonl"
        if import_type != "jsonl":
            return Response({"error": "Bad type", "message": "The import type can only be jsonl."}, status=400)
        if upload.size and upload.size > conf.upload_max_bytes():
            return too_large
        row = upload_store(user=user, chunks=upload.chunks())
        job = job_create(type="jsonl_import", data={"filename": row.filename}, user=user)
        return Response(
            {"message": "Task created.", "task_id": job.pk, "filename": row.filename}, status=status.HTTP_202_ACCEPTED
        )


DOWNLOAD_TYPES = {"csv": "text/csv", "json": "application/json", "html": "text/html", "jsonl": "application/x-ndjson"}


class FileDownloadApi(BookLogrView):
    @extend_schema(
        operation_id="v1_files_download",
        responses={
            **{
                (200, media): OpenApiResponse(OpenApiTypes.BINARY, description="The file, as an attachment.")
                for media in DOWNLOAD_TYPES.values()
            },
            401: JWT_401,
            404: booklogr_error("BookLogrFileNotFound", "No such file of the caller's."),
        },
        summary="Download one of the caller's files as an attachment",
    )
    def get(self, request: Request, filename: str) -> FileResponse:
        user = platform_user(request)
        assert user is not None
        row = file_get_for_owner(filename=filename, user=user)
        try:
            handle = file_open_for_download(row)
        except OSError as exc:
            raise exceptions.NotFound("No file found") from exc
        content_type = DOWNLOAD_TYPES.get(row.format, "application/octet-stream")
        return FileResponse(handle, as_attachment=True, filename=row.filename, content_type=content_type)
