"""A `django-tasks` backend (Django 6's `django.tasks`, backported to 5.2): code written against
the standard (`@task`, `.enqueue()`, `.get_result()`) runs as Coordinator jobs on its clusters.

Each enqueue is a job of the type `django_tasks.run` (protected: only trusted code, through this
backend, and admins may start one), so it shows in the admin with progress, retry and cancel. The
result id is the job's uuid. `queue_name` is the job's queue; a priority above 0 runs on its band
`<queue>-high`, below 0 on `<queue>-low` (`jobs.registry.queue_band`): the clusters serving the
queue serve its bands, high before normal before low.
"""

from __future__ import annotations

import builtins
import json
from typing import Any, TypeVar

from django.utils.module_loading import import_string
from django_tasks.backends.base import BaseTaskBackend
from django_tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist
from django_tasks.utils import normalize_json

from jobs.context import JobContext
from jobs.models import Job
from jobs.registry import job, queue_band, queue_name_valid
from jobs.selectors import job_get_by_uuid

T = TypeVar("T")
JOB_TYPE = "django_tasks.run"

STATUSES = {
    Job.Status.FRESH: TaskResultStatus.READY,
    Job.Status.STARTED: TaskResultStatus.RUNNING,
    Job.Status.SUCCESS: TaskResultStatus.SUCCESSFUL,
    Job.Status.FAILURE: TaskResultStatus.FAILED,
}


def _queue(task: Task[Any, Any]) -> str:
    return queue_band(task.queue_name, task.priority)


class CoordinatorBackend(BaseTaskBackend):
    supports_defer = True
    supports_get_result = True
    supports_priority = True

    def validate_task(self, task: Task[Any, Any]) -> None:
        super().validate_task(task)
        if not queue_name_valid(_queue(task)):
            raise InvalidTaskError(f"Queue {task.queue_name!r} is not a short lower-case name.")

    def enqueue(self, task: Task[Any, T], args: Any, kwargs: Any) -> TaskResult[T]:
        from jobs.services import job_create

        self.validate_task(task)
        call = {"task": task.module_path, "args": normalize_json(list(args)), "kwargs": normalize_json(dict(kwargs))}
        json.dumps(call)  # arguments must be JSON, as the standard says
        created = job_create(
            type=JOB_TYPE,
            data=call,
            user=None,
            run_after=task.run_after,
            queue=_queue(task),
            allowed_tasks={JOB_TYPE: True},  # trusted code: the caller is the application
        )
        return self._result(created, task)

    def get_result(self, result_id: str) -> TaskResult[Any]:
        found = job_get_by_uuid(public_id=result_id)
        if found is None or found.type != JOB_TYPE:
            raise TaskResultDoesNotExist(result_id)
        return self._result(found, _task_at(found.data.get("task", "")))

    def _result(self, found: Job, task: Task[Any, Any]) -> TaskResult[Any]:
        result: TaskResult[Any] = TaskResult(
            task=task,
            id=str(found.uuid),
            status=STATUSES[Job.Status(found.status)],
            enqueued_at=found.queued_at or found.created_at,
            started_at=found.started_at,
            last_attempted_at=found.started_at,
            finished_at=found.finished_at,
            args=found.data.get("args", []),
            kwargs=found.data.get("kwargs", {}),
            backend=self.alias,
            errors=[_error(found)] if found.status == Job.Status.FAILURE else [],
            worker_ids=[found.worker] * found.attempts if found.worker else [],
        )
        if found.status == Job.Status.SUCCESS:
            object.__setattr__(result, "_return_value", found.result)
        return result


def _error(found: Job) -> TaskError:
    name = found.error.split(":", 1)[0]
    is_exception = isinstance(getattr(builtins, name, None), type) and issubclass(
        getattr(builtins, name), BaseException
    )
    return TaskError(
        exception_class_path=f"builtins.{name if is_exception else 'Exception'}", traceback=found.traceback
    )


def _task_at(path: str) -> Task[Any, Any]:
    """The `@task` object at `path`; nothing else can be run (no arbitrary callable by name)."""
    try:
        found = import_string(path)
    except ImportError as exc:
        raise LookupError(f"No task at {path!r}") from exc
    if not isinstance(found, Task):
        raise LookupError(f"{path!r} is not a @task")
    return found


@job(name=JOB_TYPE, protected=True, signed_in=False)
def run(ctx: JobContext, task: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Run a django-tasks `@task` enqueued through CoordinatorBackend."""
    target = _task_at(task)
    if target.takes_context:
        backend = target.get_backend()
        assert isinstance(backend, CoordinatorBackend)
        current = backend._result(Job.objects.get(pk=ctx.job_id), target)
        value = target.call(TaskContext(task_result=current), *args, **kwargs)
    else:
        value = target.call(*args, **kwargs)
    return normalize_json(value)
