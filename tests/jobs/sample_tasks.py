"""Tasks written against Django's standard tasks interface (django-tasks), as its docs show them."""

from __future__ import annotations

from django_tasks import TaskContext, task


@task
def calculate_meaning_of_life() -> int:
    return 42


@task(priority=10, queue_name="reports")
def add(x: int, y: int) -> int:
    return x + y


@task(takes_context=True)
def whoami(context: TaskContext, greeting: str) -> str:
    return f"{greeting} from attempt {context.attempt} of {context.task_result.id}"


@task
def broken() -> None:
    raise ValueError("broken on purpose")


not_a_task = "a plain value"
