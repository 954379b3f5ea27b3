"""The taskfarm-compatible API under `/api/` (seed 003), plus batch hand-out.

Paths, status codes, JSON keys and empty bodies are those the published `taskfarm-worker`
client and the seed's test suite expect; error bodies are our envelope.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.authentication import JWTAuthentication

from coordinator.api.views import ErrorEnvelopeSerializer
from coordinator.models import User
from farm import selectors, services
from farm.api import identity
from farm.api.fields import (
    WORKER_UUID_PATTERN,
    HostnameField,
    StrictFloatField,
    StrictIntegerField,
    TaskNumberListField,
    WorkerUuidField,
)
from farm.authentication import FarmBasicAuthentication, farm_token_for
from farm.conf import WORKER_COOKIE, batch_max
from farm.errors import EmptyUpdateError, UnknownInfoError
from farm.models import Run, Task

MAX_TASKS = 2**62
# The most numbers one batch body may carry (the serializers' and the shortcuts' limit alike).
BATCH_BODY_MAX = 100_000
E = ErrorEnvelopeSerializer
AUTH_ERRORS: dict[int, Any] = {401: E, 403: E}
BODY_ERRORS: dict[int, Any] = {400: E, 415: E}
RUN_INFO_KEYS = ("percentDone", "numWaiting", "numDone", "numComputing", "numNotStarted")
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


def _cookie(request: Request) -> str | None:
    return request.COOKIES.get(WORKER_COOKIE) or None


def _worker_uuid_from(request: Request) -> str | None:
    return identity.sending_worker(
        header=request.headers.get("X-Farm-Worker") or None, cookie=_cookie(request), token=request.auth
    )


def _possible_senders(request: Request) -> frozenset[str]:
    return identity.possible_senders(
        header=request.headers.get("X-Farm-Worker") or None, cookie=_cookie(request), token=request.auth
    )


def _remember_worker(response: Response, worker_uuid: str, request: Request) -> Response:
    # The worker's later PUTs must be told apart from those of a worker that took its task over
    # (`farm.api.identity`): where its token does not name it, a cookie does.
    if identity.cookie_needed(worker_uuid, cookie=_cookie(request), token=request.auth):
        response.set_cookie(WORKER_COOKIE, worker_uuid, httponly=True, samesite="Lax")
    return response


def _claim(request: Request, run_uuid: str, worker_uuid: str, limit: int) -> list[services.ClaimedTask]:
    return services.tasks_claim_for(user=_user(request), run_uuid=run_uuid, worker_uuid=worker_uuid, limit=limit)


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


def task_data(task: Task | services.ClaimedTask) -> dict[str, Any]:
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
    """Create a run of `numTasks` tasks (constant time, whatever the size)."""

    @extend_schema_serializer(component_name="FarmRunCreateInput")
    class InputSerializer(serializers.Serializer):
        numTasks = StrictIntegerField(min_value=0, max_value=MAX_TASKS)

    @extend_schema(
        request=InputSerializer, responses={201: RunSummarySerializer, **BODY_ERRORS, **AUTH_ERRORS}, tags=["farm"]
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run = services.run_create(owner=_user(request), num_tasks=data.validated_data["numTasks"])
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


class RunRestartApi(FarmApi):
    """Put unfinished tasks (`all=False`, default) or every task (`all=True`) back to waiting."""

    @extend_schema(
        request=None,
        parameters=[OpenApiParameter("all", str, enum=["True", "False"], required=False)],
        responses={204: NO_CONTENT, 404: E, **AUTH_ERRORS},
        tags=["farm"],
    )
    def post(self, request: Request, uuid: str) -> Response:
        run = selectors.run_get(user=_user(request), uuid=uuid)
        everything = request.query_params.get("all", "False")
        if everything not in ("True", "False"):
            raise UnknownInfoError("`all` must be True or False.", code="bad_all")
        services.run_restart(run=run, everything=everything == "True")
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_serializer(component_name="FarmWorkerRef")
class WorkerInputSerializer(serializers.Serializer):
    worker_uuid = WorkerUuidField()


_WORKER_UUID = re.compile(WORKER_UUID_PATTERN)


def _worker_uuid_of(body: Any) -> str:
    """The claim body's worker uuid. A well-formed one is taken as it is: this runs on every hand-out,
    and building and running a serializer cost more Python than the claim itself. Anything else goes
    through the serializer, for its error details."""
    if isinstance(body, dict):
        value = body.get("worker_uuid")
        if well_formed_worker_uuid(value):
            return str(value)
    data = WorkerInputSerializer(data=body)
    data.is_valid(raise_exception=True)
    return str(data.validated_data["worker_uuid"])


class RunTaskClaimApi(FarmApi):
    """Hand the next task to a worker: 201 with the task, 204 (empty) when none is left."""

    @extend_schema(
        request=WorkerInputSerializer,
        responses={201: TaskOutputSerializer, 204: NO_CONTENT, 404: E, **BODY_ERRORS, **AUTH_ERRORS},
        tags=["farm"],
    )
    def post(self, request: Request, uuid: str) -> Response:
        worker_uuid = _worker_uuid_of(request.data)
        tasks = _claim(request, uuid, worker_uuid, 1)
        if not tasks:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return _remember_worker(Response(task_data(tasks[0]), status=status.HTTP_201_CREATED), worker_uuid, request)


class RequiredBodySchema(AutoSchema):
    """A raw request schema is optional by default; the seed refuses a PUT without a body (400)."""

    def _get_request_body(self, direction: str = "request") -> dict[str, Any] | None:
        body = super()._get_request_body(direction)
        if body is not None:
            body["required"] = True
        return body


_PUT_KEYS = frozenset(("percentCompleted", "status"))
_STATUSES = frozenset(Task.Status.values)


def plain_change(body: Any) -> services.TaskChange | None:
    """A well-formed PUT body as a change, checked without a serializer (every worker update runs
    this); None for anything else, which the serializer then explains."""
    if not isinstance(body, dict) or not body or not body.keys() <= _PUT_KEYS:
        return None
    percent, state = body.get("percentCompleted"), body.get("status")
    if "percentCompleted" in body and not (
        isinstance(percent, int | float) and type(percent) is not bool and 0 <= percent <= 100
    ):
        return None
    if "status" in body and not (type(state) is str and state in _STATUSES):
        return None
    return services.TaskChange(percent_completed=None if percent is None else float(percent), status=state)


class TaskDetailApi(FarmApi):
    """Read or update task `n` of a run (an in-range task never handed out is created as waiting)."""

    schema = RequiredBodySchema()

    @extend_schema_serializer(component_name="FarmTaskDetailInput")
    class InputSerializer(serializers.Serializer):
        percentCompleted = StrictFloatField(min_value=0, max_value=100, required=False)
        status = serializers.ChoiceField(choices=Task.Status.choices, required=False)

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
        # The common case in one query (run and task joined on the run's uuid); a task row that does
        # not exist yet (or a run that is not visible) takes the path that creates it or says 404.
        row = selectors.task_read(user=user, run_uuid=uuid, number=n) if 0 <= n < MAX_TASKS else None
        if row is not None:
            data = {
                "id": row["id"],
                "task": row["task"],
                "percentCompleted": row["percent_completed"],
                "status": row["status"],
            }
            return Response(_pick(data, info))
        run = selectors.run_get(user=user, uuid=uuid)
        task = services.task_get_or_materialise(run=run, number=n)
        return Response(_pick(task_data(task), info))

    @extend_schema(
        request={"application/json": PUT_SCHEMA},
        responses={204: NO_CONTENT, 404: E, 409: E, **BODY_ERRORS, **AUTH_ERRORS},
        tags=["farm"],
        description="Only `percentCompleted` and/or `status`; any other key is a 400. A PUT from a worker "
        "whose task was re-handed out after its lease expired is refused with 409.",
    )
    def put(self, request: Request, uuid: str, n: int) -> Response:
        body = request.data
        change = plain_change(body)
        if change is None:
            change = self._validated_change(body)
        user = _user(request)
        worker_uuid = _worker_uuid_from(request)
        # The worker holding the task updates it: one guarded UPDATE. Anything else (lazy creation,
        # 404, 409 for a lease lost, a PUT without a worker cookie) takes the full path.
        held = (
            worker_uuid is not None
            and 0 <= n < MAX_TASKS
            and services.task_update_held(user=user, run_uuid=uuid, number=n, change=change, worker_uuid=worker_uuid)
        )
        if held:
            return Response(status=status.HTTP_204_NO_CONTENT)
        run = selectors.run_get(user=user, uuid=uuid)
        # This path may refuse the update (409): it trusts no cached token binding.
        services.task_update(run=run, number=n, change=change, senders=_possible_senders(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _validated_change(self, body: Any) -> services.TaskChange:
        if not isinstance(body, dict) or not body:
            raise EmptyUpdateError()
        unknown = sorted(set(body) - _PUT_KEYS)
        if unknown:
            raise EmptyUpdateError(
                f"Unknown keys: {', '.join(unknown)}.",
                code="unknown_key",
                extra={"fields": {key: ["Unknown key."] for key in unknown}},
            )
        data = self.InputSerializer(data=body)
        data.is_valid(raise_exception=True)
        return services.TaskChange(
            percent_completed=data.validated_data.get("percentCompleted"), status=data.validated_data.get("status")
        )


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
        worker = services.worker_register(
            owner=_user(request), **data.validated_data, token_id=identity.token_id_of(request.auth)
        )
        response = Response({"uuid": worker.uuid, "id": worker.pk}, status=status.HTTP_201_CREATED)
        return _remember_worker(response, worker.uuid, request)


@extend_schema_serializer(component_name="FarmTaskList")
class TaskListOutputSerializer(serializers.Serializer):
    tasks = TaskOutputSerializer(many=True)


def well_formed_worker_uuid(value: Any) -> bool:
    return type(value) is str and _WORKER_UUID.fullmatch(value) is not None


def count_ok(value: Any) -> bool:
    return type(value) is int and 1 <= value <= BATCH_BODY_MAX


def numbers_ok(value: Any) -> bool:
    return (
        type(value) is list
        and len(value) <= BATCH_BODY_MAX
        and all(type(n) is int and 0 <= n <= MAX_TASKS for n in value)
    )


def batch_shortcut(body: Any, key: str, value_ok: Callable[[Any], bool]) -> tuple[str, Any] | None:
    """(worker uuid, body[key]) of a well-formed batch body, checked without a serializer (a batch
    client sends thousands a second); None for anything else."""
    if isinstance(body, dict):
        worker_uuid, value = body.get("worker_uuid"), body.get(key)
        if well_formed_worker_uuid(worker_uuid) and value_ok(value):
            return str(worker_uuid), value
    return None


def _batch_input(
    body: Any, key: str, value_ok: Callable[[Any], bool], serializer_class: type[serializers.Serializer]
) -> tuple[str, Any]:
    """`batch_shortcut`, or the serializer's answer: its values, or its error details (400)."""
    given = batch_shortcut(body, key, value_ok)
    if given is not None:
        return given
    data = serializer_class(data=body)
    data.is_valid(raise_exception=True)
    return data.validated_data["worker_uuid"], data.validated_data[key]


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
        worker_uuid, count = _batch_input(request.data, "count", count_ok, self.InputSerializer)
        data = batch_claim_data(user=_user(request), run_uuid=uuid, worker_uuid=worker_uuid, count=count)
        return _remember_worker(Response(data), worker_uuid, request)


def batch_claim_data(*, user: User, run_uuid: str, worker_uuid: str, count: int) -> dict[str, Any]:
    """A batch claim's answer."""
    tasks = services.tasks_claim_for(
        user=user, run_uuid=run_uuid, worker_uuid=worker_uuid, limit=min(count, batch_max())
    )
    return {"tasks": [task_data(task) for task in tasks]}


def batch_done_data(*, user: User, run_uuid: str, worker_uuid: str, listed: list[int]) -> dict[str, Any]:
    """A batch completion's answer. PostgreSQL: one round trip; a missing
    run or worker and other databases take the lookup that says which one is missing, then the writes."""
    numbers = sorted(set(listed))
    done = services.tasks_complete_by_uuid(user=user, run_uuid=run_uuid, worker_uuid=worker_uuid, numbers=numbers)
    if done is None:
        worker, run = selectors.worker_and_run_get(user=user, worker_uuid=worker_uuid, run_uuid=run_uuid)
        done = services.tasks_complete(run=run, worker=worker, numbers=numbers)
    done_set = set(done)
    return {"done": done, "refused": [n for n in numbers if n not in done_set]}


class TaskBatchDoneApi(FarmApi):
    """Batch completion: mark several tasks held by the worker done at 100% in one request."""

    @extend_schema_serializer(component_name="FarmTaskBatchDoneInput")
    class InputSerializer(WorkerInputSerializer):
        tasks = TaskNumberListField(max_value=MAX_TASKS, max_length=BATCH_BODY_MAX)

    @extend_schema_serializer(component_name="FarmTaskBatchDoneOutput")
    class OutputSerializer(serializers.Serializer):
        done = serializers.ListField(child=serializers.IntegerField())
        refused = serializers.ListField(
            child=serializers.IntegerField(), help_text="Numbers not computing for this worker (left unchanged)."
        )

    @extend_schema(
        request=InputSerializer, responses={200: OutputSerializer, 404: E, **BODY_ERRORS, **AUTH_ERRORS}, tags=["farm"]
    )
    def post(self, request: Request, uuid: str) -> Response:
        worker_uuid, listed = _batch_input(request.data, "tasks", numbers_ok, self.InputSerializer)
        return Response(batch_done_data(user=_user(request), run_uuid=uuid, worker_uuid=worker_uuid, listed=listed))
