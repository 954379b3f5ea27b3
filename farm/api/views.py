"""The taskfarm-compatible API under `/api/` (seed 003), plus batch hand-out.

Paths, status codes, JSON keys and empty bodies are those the published `taskfarm-worker`
client and the seed's test suite expect; error bodies are our envelope.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.authentication import JWTAuthentication

from coordinator.api.parsers import JSONParser
from coordinator.api.views import ErrorEnvelopeSerializer
from coordinator.models import User
from farm import selectors, services
from farm.api import identity
from farm.api.fields import (
    HostnameField,
    LabelsField,
    StrictBooleanField,
    StrictFloatField,
    StrictIntegerField,
    TaskNumberListField,
    WorkerUuidField,
)
from farm.authentication import FarmBasicAuthentication, farm_token_for
from farm.conf import batch_max
from farm.errors import EmptyUpdateError, UnknownInfoError
from farm.models import Run, Task

MAX_TASKS = 2**62
# The most numbers one batch body may carry.
BATCH_BODY_MAX = 100_000
E = ErrorEnvelopeSerializer
AUTH_ERRORS: dict[int, Any] = {401: E, 403: E}
BODY_ERRORS: dict[int, Any] = {400: E, 415: E}
RUN_INFO_KEYS = ("percentDone", "numWaiting", "numDone", "numComputing", "numNotStarted", "numFailed")
SEED_STATUSES = [(value, label) for value, label in Task.Status.choices if value != Task.Status.FAILED]
TASK_INFO_KEYS = ("status", "percentCompleted")
NO_CONTENT = OpenApiResponse(description="No content (empty body).")
# The PUT body as the seed defines it: at least one of the two keys, nothing else.
PUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "percentCompleted": {"type": "number", "minimum": 0, "maximum": 100},
        "status": {"type": "string", "enum": ["waiting", "computing", "done"]},
    },
    "additionalProperties": False,
    "minProperties": 1,
}


def _user(request: Request) -> User:
    user = request.user
    assert isinstance(user, User)  # guaranteed by IsPlatformUser
    return user


def _info(request: Request, allowed: tuple[str, ...]) -> str:
    info = request.query_params.get("info", "")
    if info and info not in allowed:
        raise UnknownInfoError(f"Unknown info {info!r}; use one of {', '.join(allowed)}.")
    return info


def _pick(data: dict[str, Any], info: str) -> dict[str, Any]:
    return {info: data[info]} if info else data


class FarmApi(APIView):
    """Common base: taskfarm Basic auth first (so a 401 asks for Basic), JSON bodies only."""

    authentication_classes = [FarmBasicAuthentication, JWTAuthentication]
    parser_classes = [JSONParser]


@extend_schema_serializer(component_name="FarmRunSummary")
class RunSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    uuid = serializers.CharField()
    numTasks = serializers.IntegerField(source="num_tasks")


def _run_summary(run: Run) -> dict[str, Any]:
    return {"id": run.pk, "uuid": run.uuid, "numTasks": run.num_tasks}


@extend_schema_serializer(component_name="FarmTask")
class TaskOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField(required=False)
    task = serializers.IntegerField(required=False)
    percentCompleted = serializers.FloatField(required=False)
    status = serializers.ChoiceField(choices=Task.Status.choices, required=False)


def task_data(task: Task) -> dict[str, Any]:
    return {"id": task.id, "task": task.task, "percentCompleted": task.percent_completed, "status": task.status}


class TokenApi(FarmApi):
    """A token for the taskfarm client: send it as the Basic username (any password)."""

    @extend_schema_serializer(component_name="FarmTokenOutput")
    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()

    @extend_schema(responses={200: OutputSerializer, **AUTH_ERRORS}, tags=["farm"])
    def get(self, request: Request) -> Response:
        return Response({"token": farm_token_for(_user(request))})


class RunCreateApi(FarmApi):
    """Create a run of `numTasks` tasks (constant time, whatever the size), optionally named,
    labelled and limited to `maxComputing` tasks at once."""

    @extend_schema_serializer(component_name="FarmRunCreateInput")
    class InputSerializer(serializers.Serializer):
        numTasks = StrictIntegerField(min_value=0, max_value=MAX_TASKS)
        name = serializers.CharField(max_length=200, required=False, allow_blank=True)
        labels = LabelsField(required=False)
        maxComputing = StrictIntegerField(min_value=1, max_value=2**31 - 1, required=False, allow_null=True)

    @extend_schema(
        request=InputSerializer, responses={201: RunSummarySerializer, **BODY_ERRORS, **AUTH_ERRORS}, tags=["farm"]
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        given = data.validated_data
        run = services.run_create(
            owner=_user(request),
            num_tasks=given["numTasks"],
            name=given.get("name", ""),
            labels=given.get("labels"),
            max_computing=given.get("maxComputing"),
        )
        return Response(_run_summary(run), status=status.HTTP_201_CREATED)


class RunListApi(FarmApi):
    """The caller's runs (all runs for admins) in creation order, as `{"data": [...]}`."""

    @extend_schema_serializer(component_name="FarmRunListOutput")
    class OutputSerializer(serializers.Serializer):
        data = RunSummarySerializer(many=True)  # type: ignore[assignment]

    @extend_schema(responses={200: OutputSerializer, **AUTH_ERRORS}, tags=["farm"], operation_id="farm_run_list")
    def get(self, request: Request) -> Response:
        runs = selectors.run_list(user=_user(request)).only("id", "uuid", "num_tasks")
        return Response({"data": [_run_summary(run) for run in runs]})


class RunDetailApi(FarmApi):
    """A run with its counts (or one of them with `?info=`); DELETE removes it."""

    @extend_schema_serializer(component_name="FarmRunDetailOutput")
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField(required=False)
        uuid = serializers.CharField(required=False)
        numTasks = serializers.IntegerField(required=False)
        percentDone = serializers.FloatField(required=False)
        numWaiting = serializers.IntegerField(required=False)
        numDone = serializers.IntegerField(required=False)
        numComputing = serializers.IntegerField(required=False)
        numNotStarted = serializers.IntegerField(required=False)
        numFailed = serializers.IntegerField(required=False)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "info", str, enum=["", *RUN_INFO_KEYS], required=False, description="Return only this key."
            )
        ],
        responses={200: OutputSerializer, 404: E, **AUTH_ERRORS},
        tags=["farm"],
        operation_id="farm_run_retrieve",
    )
    def get(self, request: Request, uuid: str) -> Response:
        run = selectors.run_get(user=_user(request), uuid=uuid)
        info = _info(request, RUN_INFO_KEYS)
        data = {**_run_summary(run), **selectors.run_counts(run=run).as_state()}
        return Response(_pick(data, info))

    @extend_schema(responses={204: NO_CONTENT, 404: E, **AUTH_ERRORS}, tags=["farm"])
    def delete(self, request: Request, uuid: str) -> Response:
        services.run_delete(run=selectors.run_get(user=_user(request), uuid=uuid))
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_serializer(component_name="FarmRunControls")
class RunControlsSerializer(serializers.Serializer):
    uuid = serializers.CharField(read_only=True)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    labels = LabelsField(required=False)
    maxComputing = StrictIntegerField(
        source="max_computing", min_value=1, max_value=2**31 - 1, required=False, allow_null=True
    )
    paused = StrictBooleanField(required=False)


class RunControlsApi(FarmApi):
    """A run's controls: name, labels, `maxComputing` (null: no limit) and `paused`. PATCH changes
    those given; a paused run hands out nothing (a claim gets 204), a resumed one continues."""

    @extend_schema(responses={200: RunControlsSerializer, 404: E, **AUTH_ERRORS}, tags=["farm"])
    def get(self, request: Request, uuid: str) -> Response:
        return Response(RunControlsSerializer(selectors.run_get(user=_user(request), uuid=uuid)).data)

    @extend_schema(
        request=RunControlsSerializer,
        responses={200: RunControlsSerializer, 404: E, **BODY_ERRORS, **AUTH_ERRORS},
        tags=["farm"],
    )
    def patch(self, request: Request, uuid: str) -> Response:
        run = selectors.run_get(user=_user(request), uuid=uuid)
        data = RunControlsSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        given = data.validated_data
        controls = services.RunControls(
            name=given.get("name"),
            labels=given.get("labels"),
            max_computing=given.get("max_computing"),
            clear_max_computing="max_computing" in given and given["max_computing"] is None,
            paused=given.get("paused"),
        )
        return Response(RunControlsSerializer(services.run_control(run=run, controls=controls)).data)


class RunRestartApi(FarmApi):
    """Put tasks back to waiting: those not finished that no live worker computes (`all=False`, the
    default), every task at 0% (`all=True`), or the failed ones (`failed=True`)."""

    @extend_schema(
        request=None,
        parameters=[
            OpenApiParameter("all", str, enum=["True", "False"], required=False),
            OpenApiParameter("failed", str, enum=["True", "False"], required=False),
        ],
        responses={204: NO_CONTENT, 404: E, **AUTH_ERRORS},
        tags=["farm"],
    )
    def post(self, request: Request, uuid: str) -> Response:
        run = selectors.run_get(user=_user(request), uuid=uuid)
        everything, failed = request.query_params.get("all", "False"), request.query_params.get("failed", "False")
        if everything not in ("True", "False") or failed not in ("True", "False"):
            raise UnknownInfoError("`all` and `failed` must be True or False.", code="bad_all")
        what = services.Restart.ALL if everything == "True" else services.Restart.INCOMPLETE
        services.run_restart(run=run, what=services.Restart.FAILED if failed == "True" else what)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_serializer(component_name="FarmWorkerRef")
class WorkerInputSerializer(serializers.Serializer):
    worker_uuid = WorkerUuidField()


def _claim(request: Request, run_uuid: str, serializer: serializers.Serializer) -> tuple[str, list[Task]]:
    """Validate a claim body, then hand out: the worker is looked up first (its 404 first)."""
    serializer.is_valid(raise_exception=True)
    given = serializer.validated_data
    user = _user(request)
    worker = selectors.worker_get(user=user, uuid=given["worker_uuid"])
    run = selectors.run_get(user=user, uuid=run_uuid)
    tasks = services.tasks_claim(run=run, worker=worker, limit=min(given.get("count", 1), batch_max()))
    return worker.uuid, tasks


class RunTaskClaimApi(FarmApi):
    """Hand the next task to a worker: 201 with the task, 204 (empty) when none is left, the run is
    paused or at its `maxComputing`."""

    @extend_schema(
        request=WorkerInputSerializer,
        responses={201: TaskOutputSerializer, 204: NO_CONTENT, 404: E, **BODY_ERRORS, **AUTH_ERRORS},
        tags=["farm"],
    )
    def post(self, request: Request, uuid: str) -> Response:
        worker_uuid, tasks = _claim(request, uuid, WorkerInputSerializer(data=request.data))
        if not tasks:
            return Response(status=status.HTTP_204_NO_CONTENT)
        response = Response(task_data(tasks[0]), status=status.HTTP_201_CREATED)
        return identity.remember_worker(response, request, worker_uuid)


class RequiredBodySchema(AutoSchema):
    """A raw request schema is optional by default; the seed refuses a PUT without a body (400)."""

    def _get_request_body(self, direction: str = "request") -> dict[str, Any] | None:
        body = super()._get_request_body(direction)
        if body is not None:
            body["required"] = True
        return body


_PUT_KEYS = frozenset(("percentCompleted", "status"))


class TaskDetailApi(FarmApi):
    """Read or update task `n` of a run (an in-range task never handed out is created as waiting)."""

    schema = RequiredBodySchema()

    @extend_schema_serializer(component_name="FarmTaskDetailInput")
    class InputSerializer(serializers.Serializer):
        percentCompleted = StrictFloatField(min_value=0, max_value=100, required=False)
        status = serializers.ChoiceField(choices=SEED_STATUSES, required=False)

        def to_internal_value(self, data: Any) -> Any:
            if not isinstance(data, dict) or not data:
                raise EmptyUpdateError()
            unknown = sorted(set(data) - _PUT_KEYS)
            if unknown:
                raise EmptyUpdateError(
                    f"Unknown keys: {', '.join(unknown)}.",
                    code="unknown_key",
                    extra={"fields": {key: ["Unknown key."] for key in unknown}},
                )
            return super().to_internal_value(data)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "info", str, enum=["", *TASK_INFO_KEYS], required=False, description="Return only this key."
            )
        ],
        responses={200: TaskOutputSerializer, 404: E, **AUTH_ERRORS},
        tags=["farm"],
    )
    def get(self, request: Request, uuid: str, n: int) -> Response:
        info = _info(request, TASK_INFO_KEYS)
        user = _user(request)
        task = selectors.task_read(user=user, run_uuid=uuid, number=n) if 0 <= n < MAX_TASKS else None
        if task is None:  # a task row not there yet, or a run not visible: create it, or 404
            task = services.task_get_or_materialise(run=selectors.run_get(user=user, uuid=uuid), number=n)
        return Response(_pick(task_data(task), info))

    @extend_schema(
        request={"application/json": PUT_SCHEMA},
        responses={204: NO_CONTENT, 404: E, 409: E, **BODY_ERRORS, **AUTH_ERRORS},
        tags=["farm"],
        description="Only `percentCompleted` and/or `status`; any other key is a 400. A PUT from a worker "
        "whose task was re-handed out after its lease expired is refused with 409.",
    )
    def put(self, request: Request, uuid: str, n: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        change = services.TaskChange(
            percent_completed=data.validated_data.get("percentCompleted"), status=data.validated_data.get("status")
        )
        run = selectors.run_get(user=_user(request), uuid=uuid)
        services.task_update(run=run, number=n, change=change, sender=identity.sending_worker(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WorkerCreateApi(FarmApi):
    """Register a worker process (a uuid already registered is a 409)."""

    @extend_schema_serializer(component_name="FarmWorkerCreateInput")
    class InputSerializer(serializers.Serializer):
        uuid = WorkerUuidField()
        hostname = HostnameField()
        pid = StrictIntegerField(min_value=0, max_value=2**63 - 1)

    @extend_schema_serializer(component_name="FarmWorkerCreateOutput")
    class OutputSerializer(serializers.Serializer):
        uuid = serializers.CharField()
        id = serializers.IntegerField()

    @extend_schema(
        request=InputSerializer, responses={201: OutputSerializer, 409: E, **BODY_ERRORS, **AUTH_ERRORS}, tags=["farm"]
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        worker = services.worker_register(owner=_user(request), **data.validated_data)
        response = Response({"uuid": worker.uuid, "id": worker.pk}, status=status.HTTP_201_CREATED)
        return identity.remember_worker(response, request, worker.uuid)


@extend_schema_serializer(component_name="FarmTaskList")
class TaskListOutputSerializer(serializers.Serializer):
    tasks = TaskOutputSerializer(many=True)


class TaskBatchClaimApi(FarmApi):
    """Batch hand-out for tiny tasks: claim up to `count` tasks in one request (200, maybe empty)."""

    @extend_schema_serializer(component_name="FarmTaskBatchClaimInput")
    class InputSerializer(WorkerInputSerializer):
        count = StrictIntegerField(min_value=1, max_value=BATCH_BODY_MAX)

    @extend_schema(
        request=InputSerializer,
        responses={200: TaskListOutputSerializer, 404: E, **BODY_ERRORS, **AUTH_ERRORS},
        tags=["farm"],
    )
    def post(self, request: Request, uuid: str) -> Response:
        worker_uuid, tasks = _claim(request, uuid, self.InputSerializer(data=request.data))
        return identity.remember_worker(Response({"tasks": [task_data(t) for t in tasks]}), request, worker_uuid)


class _BatchFinishApi(FarmApi):
    """Shared by batch completion and batch failure: the worker, the run, the numbers it holds."""

    def _held(self, request: Request, uuid: str) -> tuple[Any, Any, list[int], dict[str, Any]]:
        data = self.InputSerializer(data=request.data)  # type: ignore[attr-defined]
        data.is_valid(raise_exception=True)
        user = _user(request)
        worker = selectors.worker_get(user=user, uuid=data.validated_data["worker_uuid"])
        run = selectors.run_get(user=user, uuid=uuid)
        return run, worker, sorted(set(data.validated_data["tasks"])), data.validated_data


def _answer(key: str, finished: list[int], numbers: list[int]) -> Response:
    kept = set(finished)
    return Response({key: finished, "refused": [n for n in numbers if n not in kept]})


class RefusedSerializer(serializers.Serializer):
    refused = serializers.ListField(
        child=serializers.IntegerField(), help_text="Numbers not computing for this worker (left unchanged)."
    )


class TaskBatchDoneApi(_BatchFinishApi):
    """Batch completion: mark several tasks held by the worker done at 100% in one request."""

    @extend_schema_serializer(component_name="FarmTaskBatchDoneInput")
    class InputSerializer(WorkerInputSerializer):
        tasks = TaskNumberListField(max_value=MAX_TASKS, max_length=BATCH_BODY_MAX)

    @extend_schema_serializer(component_name="FarmTaskBatchDoneOutput")
    class OutputSerializer(RefusedSerializer):
        done = serializers.ListField(child=serializers.IntegerField())

    @extend_schema(
        request=InputSerializer, responses={200: OutputSerializer, 404: E, **BODY_ERRORS, **AUTH_ERRORS}, tags=["farm"]
    )
    def post(self, request: Request, uuid: str) -> Response:
        run, worker, numbers, _ = self._held(request, uuid)
        return _answer("done", services.tasks_complete(run=run, worker=worker, numbers=numbers), numbers)


class TaskBatchFailApi(_BatchFinishApi):
    """Batch failure: the worker reports tasks it holds failed; they are not handed out again until
    an operator restarts the run's failed tasks."""

    @extend_schema_serializer(component_name="FarmTaskBatchFailInput")
    class InputSerializer(WorkerInputSerializer):
        tasks = TaskNumberListField(max_value=MAX_TASKS, max_length=BATCH_BODY_MAX)
        reason = serializers.CharField(max_length=500, required=False, allow_blank=True)

    @extend_schema_serializer(component_name="FarmTaskBatchFailOutput")
    class OutputSerializer(RefusedSerializer):
        failed = serializers.ListField(child=serializers.IntegerField())

    @extend_schema(
        request=InputSerializer, responses={200: OutputSerializer, 404: E, **BODY_ERRORS, **AUTH_ERRORS}, tags=["farm"]
    )
    def post(self, request: Request, uuid: str) -> Response:
        run, worker, numbers, given = self._held(request, uuid)
        failed = services.tasks_fail(run=run, worker=worker, numbers=numbers, reason=given.get("reason", ""))
        return _answer("failed", failed, numbers)
