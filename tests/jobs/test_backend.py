"""Django's tasks interface (django-tasks) on Coordinator's jobs: the standard's usage examples."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from django_tasks import TaskResultStatus
from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist

from jobs.models import Job
from jobs.services import job_create, job_execute
from tests.jobs import sample_tasks
from tests.jobs.conftest import run_cluster, wait_for

pytestmark = pytest.mark.django_db


def test_enqueue_then_get_the_result_as_the_standard_says() -> None:
    result = sample_tasks.calculate_meaning_of_life.enqueue()
    assert result.status == TaskResultStatus.READY and not result.is_finished
    job = Job.objects.get(uuid=result.id)
    assert (job.type, job.queue, job.data["task"]) == (
        "django_tasks.run",
        "default",
        "tests.jobs.sample_tasks.calculate_meaning_of_life",
    )
    assert job_execute(job_id=job.pk) == "success"
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 42
    again = sample_tasks.calculate_meaning_of_life.get_result(result.id)
    assert again.return_value == 42 and again.attempts == 1


def test_arguments_context_and_failures() -> None:
    added = sample_tasks.add.enqueue(2, y=3)
    greeted = sample_tasks.whoami.enqueue("hello")
    broken = sample_tasks.broken.enqueue()
    for result in (added, greeted, broken):
        job_execute(job_id=Job.objects.get(uuid=result.id).pk)
        result.refresh()
    assert added.return_value == 5 and added.args == [2] and added.kwargs == {"y": 3}
    assert greeted.return_value == f"hello from attempt 1 of {greeted.id}"
    assert broken.status == TaskResultStatus.FAILED and broken.errors[0].exception_class is ValueError
    assert "broken on purpose" in broken.errors[0].traceback


def test_priority_queue_and_run_after_map_onto_jobs() -> None:
    later = timezone.now() + timedelta(hours=1)
    result = sample_tasks.add.using(run_after=later).enqueue(1, 1)  # priority 10 on queue "reports"
    job = Job.objects.get(uuid=result.id)
    assert (job.queue, job.run_after, job.status) == ("reports-high", later, "fresh")
    low = sample_tasks.calculate_meaning_of_life.using(priority=-5).enqueue()
    assert Job.objects.get(uuid=low.id).queue == "default-low"
    with pytest.raises(InvalidTaskError):
        sample_tasks.add.using(queue_name="Not A Queue").enqueue(1, 1)
    with pytest.raises(TaskResultDoesNotExist):
        sample_tasks.add.get_result("no-such-id")


def test_only_real_tasks_run_and_only_trusted_callers_submit_them(user, client_for, admin) -> None:
    # The job type is protected: a user cannot name a function to run over the API.
    body = {"type": "django_tasks.run", "data": {"task": "os.system", "args": ["id"], "kwargs": {}}}
    assert client_for(user).post("/v1/tasks", body, format="json").status_code == 403
    # Even a permitted caller only ever runs @task objects, never an arbitrary callable.
    for path in ("os.system", "tests.jobs.sample_tasks.not_a_task", "no.such.module"):
        job = job_create(type="django_tasks.run", data={"task": path, "args": ["id"], "kwargs": {}}, user=admin)
        assert job_execute(job_id=job.pk) == "failure"
        assert "LookupError" in Job.objects.get(pk=job.pk).error


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_standard_examples_run_on_a_live_cluster(export_root: Path) -> None:
    with run_cluster(export_root):
        results = [
            sample_tasks.calculate_meaning_of_life.enqueue(),
            sample_tasks.add.enqueue(20, 22),
            sample_tasks.whoami.enqueue("hi"),
            sample_tasks.broken.enqueue(),
        ]

        def finished() -> bool:
            for result in results:
                result.refresh()
            return all(result.is_finished for result in results)

        wait_for(finished, timeout=60)
    assert [r.status for r in results] == [TaskResultStatus.SUCCESSFUL] * 3 + [TaskResultStatus.FAILED]
    assert [r.return_value for r in results[:2]] == [42, 42]
    assert results[2].return_value.startswith("hi from attempt 1 of ")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_cluster_serving_only_the_default_queue_runs_its_high_and_low_priority_tasks(export_root: Path) -> None:
    with run_cluster(export_root, "--queue", "default"):
        results = [
            sample_tasks.calculate_meaning_of_life.using(priority=50).enqueue(),
            sample_tasks.calculate_meaning_of_life.using(priority=-50).enqueue(),
        ]

        def finished() -> bool:
            for result in results:
                result.refresh()
            return all(result.is_finished for result in results)

        wait_for(finished, timeout=60)
    assert [Job.objects.get(uuid=result.id).queue for result in results] == ["default-high", "default-low"]
    assert [result.return_value for result in results] == [42, 42]
