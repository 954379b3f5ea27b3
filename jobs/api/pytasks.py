"""pytasks' endpoints (seed 002): `/task`, `/task/<id>`, `/tasks`, `/ping`, `/token`, `/protected`.

No platform authentication runs on these views: like pytasks they read the `Authorization`
header themselves, accept pytasks-style tokens (and platform access tokens), and answer errors
as flask-restx did, `{"message": ...}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView, set_rollback

from coordinator.api.idempotency import IdempotentCreateMixin
from coordinator.api.parsers import JSONParser
from coordinator.errors import ApplicationError, as_application_error
from coordinator.models import User
from coordinator.throttling import CREDENTIAL_THROTTLES, AnonymousJobThrottle
from jobs.api.common import (
    EXISTING_HEADER,
    BodyError,
    SubmissionOptionError,
    json_body,
    message_response,
    scoped_unique_key,
    submission_options,
)
from jobs.api.pytasks_auth import (
    PytasksAuthError,
    allowed_to_run,
    is_platform_access_token,
    payload_user,
    token_decode,
    token_from_header,
    token_issue,
)
from jobs.errors import ArgumentError
from jobs.models import Job
from jobs.registry import all_specs, get_spec, type_label
from jobs.selectors import job_get_by_uuid
from jobs.services import job_create


def pytasks_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    set_rollback()
    exc = as_application_error(exc)
    if isinstance(exc, PytasksAuthError):
        return Response({"message": exc.message}, status=exc.status_code)
    if isinstance(exc, ApplicationError):
        return Response({"message": exc.message}, status=exc.status_code, headers=exc.headers)
    if isinstance(exc, exceptions.Throttled):
        wait = int(getattr(exc, "wait", None) or 1) + 1
        return Response({"message": str(exc.detail)}, status=exc.status_code, headers={"Retry-After": str(wait)})
    if isinstance(exc, exceptions.APIException):
        return Response({"message": str(exc.detail)}, status=exc.status_code)
    return None


class PytasksView(APIView):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    # pytasks speaks JSON only; the views read the body themselves (GET /token has one too).
    parser_classes = [JSONParser]

    def get_exception_handler(self) -> Callable[[Exception, dict[str, Any]], Response | None]:
        return pytasks_exception_handler


def _payload_validation_failed(errors: dict[str, str]) -> Response:
    return Response({"errors": errors, "message": "Input payload validation failed"}, status=400)


VALIDATION_400 = OpenApiResponse(
    response=inline_serializer(
        name="PytasksValidation",
        fields={"errors": serializers.DictField(child=serializers.CharField()), "message": serializers.CharField()},
    ),
    description="A required key is missing or the body is not a JSON object (flask-restx reqparse).",
)
AUTH_401 = message_response("PytasksUnauthorized", "Missing, invalid or insufficient JWT.")

STATUS_NAMES = {
    Job.Status.FRESH: "PENDING",
    Job.Status.STARTED: "STARTED",
    Job.Status.SUCCESS: "SUCCESS",
    Job.Status.FAILURE: "FAILURE",
}


def pytasks_status(job: Job) -> str:
    """Celery's state names; a fresh job waiting for another attempt is RETRY, a cancelled one REVOKED."""
    if job.status == Job.Status.FRESH and job.attempts > 0:
        return "RETRY"
    if job.status == Job.Status.FAILURE and job.cancel_requested:
        return "REVOKED"
    return STATUS_NAMES.get(Job.Status(job.status), "PENDING")


class PytasksTaskCreateApi(IdempotentCreateMixin, PytasksView):
    throttle_classes = [AnonymousJobThrottle]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "PytasksTaskCreateInput"

        type = serializers.CharField(help_text="A registered job name, e.g. `test.main.add`.")
        args = serializers.DictField(help_text="Arguments by name, typed as `GET /tasks` lists them.")
        run_after = serializers.DateTimeField(required=False, help_text="Start no earlier (ISO 8601 with an offset).")
        delay_seconds = serializers.FloatField(required=False, min_value=0, help_text="Start after this many seconds.")
        unique_key = serializers.CharField(
            required=False, max_length=200, help_text="While a job of this type and key waits or runs, get that job."
        )

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "PytasksTaskCreated"

        id = serializers.CharField()
        type = serializers.CharField()
        status = serializers.CharField()
        existing = serializers.BooleanField(
            required=False, help_text="Present (true) when the answer is the job already holding the unique_key."
        )

    @extend_schema(
        operation_id="pytasks_task_create",
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            400: VALIDATION_400,
            401: AUTH_401,
            404: message_response(
                "PytasksNotFound",
                "Unknown type, or an argument is missing, of the wrong "
                "type or not expected (pytasks answers all of these 404).",
            ),
            429: message_response("PytasksSubmissionsThrottled", "Too many anonymous submissions; see Retry-After."),
        },
        summary="Submit a job (pytasks)",
    )
    def post(self, request: Request) -> Response:
        try:
            body = json_body(request)
        except BodyError:
            return _payload_validation_failed(
                {"type": "You need to inform type", "args": "You need to inform args dict"}
            )
        if not isinstance(body, dict):
            body = {}
        errors = {}
        if not isinstance(body.get("type"), str):
            errors["type"] = "You need to inform type"
        if not isinstance(body.get("args"), dict):
            errors["args"] = "You need to inform args dict"
        if errors:
            return _payload_validation_failed(errors)
        try:
            options = submission_options(body)
        except SubmissionOptionError as exc:
            return _payload_validation_failed({exc.field: exc.message})
        job_type, args = body["type"], body["args"]
        spec = get_spec(job_type)
        if spec is None:
            return Response({"message": f"task type {job_type} doesnt exist"}, status=404)
        header = request.headers.get("Authorization")
        user: User | None = None
        allowed_tasks: dict[str, Any] | None = None
        if spec.protected:
            token = token_from_header(header)
            payload = token_decode(token)
            allowed_to_run(payload, job_type)
            user = payload_user(payload)
            if not is_platform_access_token(payload):
                allowed_tasks = payload.get("allowed_tasks")
        elif header:
            # Unprotected types need no token; a valid one still records who submitted the job.
            try:
                user = payload_user(token_decode(token_from_header(header)))
            except PytasksAuthError:
                user = None
        try:
            job = job_create(
                type=job_type,
                data=args,
                user=user,
                strict=True,
                allowed_tasks=allowed_tasks,
                run_after=options.run_after,
                unique_key=scoped_unique_key(options.unique_key, user),
            )
        except ArgumentError as exc:
            return Response({"message": exc.message}, status=404)
        if job.existing:
            return Response(
                {"id": str(job.uuid), "type": job.type, "status": pytasks_status(job), "existing": True},
                headers={EXISTING_HEADER: "true"},
            )
        return Response({"id": str(job.uuid), "type": job.type, "status": "PENDING"})


class PytasksTaskDetailApi(PytasksView):
    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "PytasksTaskState"

        id = serializers.CharField()
        status = serializers.CharField(help_text="PENDING, STARTED, SUCCESS, FAILURE, RETRY or REVOKED.")
        result = serializers.JSONField(help_text="The return value when SUCCESS, otherwise `{}`.")

    @extend_schema(
        operation_id="pytasks_task_retrieve",
        responses={200: OutputSerializer},
        summary="A job's status and result (unknown ids are PENDING, as in Celery)",
    )
    def get(self, request: Request, task_id: str) -> Response:
        job = job_get_by_uuid(public_id=task_id)
        if job is None:
            return Response({"id": task_id, "status": "PENDING", "result": {}})
        result = job.result if job.status == Job.Status.SUCCESS else {}
        return Response({"id": str(job.uuid), "status": pytasks_status(job), "result": result})


class PytasksTaskListApi(PytasksView):
    @extend_schema(
        operation_id="pytasks_task_types",
        responses={
            200: OpenApiResponse(
                response=OpenApiTypes.OBJECT,
                description='`{"<name>": {"require_authorization": bool, "args": {"<arg>": "<class \'int\'>"}}}`',
            )
        },
        summary="Every registered job type with its argument types",
    )
    def get(self, request: Request) -> Response:
        return Response(
            {
                spec.name: {
                    "require_authorization": spec.protected,
                    "args": {param.name: type_label(param.annotation) for param in spec.params},
                }
                for spec in all_specs()
            }
        )


class PytasksPingApi(PytasksView):
    @extend_schema(
        operation_id="pytasks_ping",
        responses={200: inline_serializer(name="PytasksPing", fields={"status": serializers.CharField()})},
        summary="Liveness (pytasks)",
    )
    def get(self, request: Request) -> Response:
        return Response({"status": "online"})


def _token_user(request: Request) -> object:
    """The account a token request names, for the per-account limit (the view reads the raw body
    itself, as pytasks does; a body that is not JSON names none and gets pytasks' own 400)."""
    try:
        body = json_body(request)
    except BodyError:
        return None
    return body.get("user") if isinstance(body, dict) else None


class PytasksTokenApi(PytasksView):
    throttle_classes = CREDENTIAL_THROTTLES
    credential_account = staticmethod(_token_user)

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "PytasksTokenInput"

        user = serializers.CharField(help_text="A platform user's email.")
        password = serializers.CharField()

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "PytasksToken"

        token = serializers.CharField()
        exp = serializers.CharField(help_text='Unix seconds as a string, or "infinity".')

    schema_kwargs: dict[str, Any] = dict(
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            400: VALIDATION_400,
            401: message_response("PytasksBadCredentials", "Unknown user or wrong password."),
            429: message_response("PytasksThrottled", "Too many attempts; see Retry-After."),
        },
        summary="A pytasks token whose `allowed_tasks` are the caller's protected job types",
        description="pytasks reads the JSON body of a GET; POST is accepted too.",
    )

    def _issue(self, request: Request) -> Response:
        try:
            body = json_body(request)
        except BodyError:
            body = None
        if not isinstance(body, dict):
            body = {}
        errors = {
            key: f"You need to inform {key}" for key in ("user", "password") if not isinstance(body.get(key), str)
        }
        if errors:
            return _payload_validation_failed(errors)
        email = body["user"].strip().lower()
        user = User.objects.filter(email=email, is_active=True).first() if "\x00" not in email else None
        if user is None or not user.check_password(body["password"]):
            return Response({"message": "Invalid user or password."}, status=401)
        token, exp = token_issue(user)
        return Response({"token": token, "exp": exp})

    @extend_schema(operation_id="pytasks_token_get", **schema_kwargs)
    def get(self, request: Request) -> Response:
        return self._issue(request)

    @extend_schema(operation_id="pytasks_token_post", **schema_kwargs)
    def post(self, request: Request) -> Response:
        return self._issue(request)


class PytasksProtectedApi(PytasksView):
    @extend_schema(
        operation_id="pytasks_protected",
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="The decoded JWT payload."), 401: AUTH_401},
        summary="The caller's decoded token payload",
    )
    def get(self, request: Request) -> Response:
        token = token_from_header(request.headers.get("Authorization"))
        payload = token_decode(token)
        if is_platform_access_token(payload):
            # /protected shows what a pytasks token grants; other kinds are not its business.
            raise PytasksAuthError("This token is invalid")
        return Response(payload)
