"""Task farm errors, each with a stable code."""

from __future__ import annotations

from coordinator.errors import ConflictError, NotFoundError, ValidationFailedError


class RunNotFoundError(NotFoundError):
    code = "run_not_found"
    default_message = "No run with this uuid."


class TaskNotFoundError(NotFoundError):
    code = "task_not_found"
    default_message = "The task number is outside the run."


class WorkerNotFoundError(NotFoundError):
    code = "worker_not_found"
    default_message = "No worker with this uuid."


class UnknownInfoError(NotFoundError):
    code = "unknown_info"
    default_message = "Unknown info value."


class WorkerExistsError(ConflictError):
    code = "worker_exists"
    default_message = "A worker with this uuid is already registered."


class LeaseLostError(ConflictError):
    code = "lease_lost"
    default_message = "This task is now held by another worker; its lease expired."


class EmptyUpdateError(ValidationFailedError):
    code = "empty_update"
    default_message = "Send a JSON object with percentCompleted and/or status."
