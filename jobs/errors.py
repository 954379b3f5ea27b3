"""Errors of the jobs app, each with a stable code and HTTP status."""

from __future__ import annotations

from coordinator.errors import ApplicationError, ConflictError, NotFoundError, PermissionDeniedError


class JobNotFoundError(NotFoundError):
    code = "job_not_found"
    default_message = "No task found"


class UnknownJobTypeError(ApplicationError):
    code = "unknown_job_type"
    status_code = 422
    default_message = "The supplied task type is invalid."


class JobNotAllowedError(PermissionDeniedError):
    code = "job_not_allowed"
    default_message = "You don't have permission to use this tasktype."


class JobNeedsUserError(PermissionDeniedError):
    code = "sign_in_required"
    status_code = 401
    default_message = "Sign in to run this job type: it works on the caller's own data."


class JobStateError(ConflictError):
    code = "job_state_conflict"


class FileNotFoundForUserError(NotFoundError):
    code = "file_not_found"
    default_message = "No file found"


class ArgumentError(ApplicationError):
    """An argument did not match the job function's signature (kind: missing, type or extra)."""

    code = "invalid_job_arguments"
    status_code = 400

    def __init__(self, kind: str, param: str, expected: str, detail: str = "") -> None:
        self.kind = kind
        self.param = param
        self.expected = expected
        self.detail = detail
        if kind == "missing":
            message = f"the required param {param} was not passed. "
        elif kind == "extra":
            message = f"the passed param {param} is not required."
        else:
            message = f"the passed param {param} doesnt match the required type: {expected}."
        super().__init__(message, extra={"kind": kind, "param": param, "expected": expected, "detail": detail})


class ScheduleInvalidError(ApplicationError):
    code = "invalid_schedule"
    status_code = 400
    default_message = "The schedule is not valid."


class TooManySchedulesError(ConflictError):
    """The owner already has SCHEDULES_PER_OWNER schedules."""

    code = "too_many_schedules"
    default_message = "Too many schedules."


class ScheduleOwnerInactiveError(ApplicationError):
    code = "owner_inactive"
    status_code = 403
    default_message = "The schedule's owner is deactivated; it starts nothing."


class ScheduleNotFoundError(NotFoundError):
    code = "schedule_not_found"
    default_message = "No schedule found"
