"""Errors of the device task pool, each with a stable code and HTTP status."""

from __future__ import annotations

from coordinator.errors import ApplicationError, ConflictError, NotFoundError, PermissionDeniedError


class InvalidTargetError(ApplicationError):
    code = "invalid_target"
    status_code = 400
    default_message = (
        "`to` must be one of: device:<id>, device:*, device:[<id>,...], device:tag:<slug>, "
        "device:group:<slug> or user:<email>."
    )


class UnknownDevicesError(ApplicationError):
    code = "unknown_devices"
    status_code = 400
    default_message = "The target names devices that do not exist."


class InvalidDateError(ApplicationError):
    code = "invalid_date"
    status_code = 400
    default_message = "`date` must be a calendar date written YYYY-MM-DD."


class TaskNotFoundError(NotFoundError):
    code = "task_not_found"
    default_message = "No task with this id is addressed to this device."


class AlreadyAnsweredError(ConflictError):
    code = "already_answered"
    default_message = "This device has already answered this task with done or failed."


class TaskClosedError(ConflictError):
    code = "task_closed"
    default_message = "This task was cancelled or has expired."


class InvalidCredentialsError(ApplicationError):
    code = "invalid_credentials"
    status_code = 401
    default_message = "Unknown device id or wrong secret."


class DeviceNotValidatedError(PermissionDeniedError):
    code = "device_not_validated"
    default_message = "This device has not been validated by staff yet."


class DeviceDisabledError(PermissionDeniedError):
    code = "device_disabled"
    default_message = "This device is disabled."


class UnknownGroupError(ApplicationError):
    code = "unknown_group"
    status_code = 400
    default_message = "No device group has this slug."


class DeviceNotFoundError(NotFoundError):
    code = "device_not_found"
    default_message = "No device has this id."


class NotARolloutError(ConflictError):
    code = "not_a_rollout"
    default_message = "Only a staged rollout (a task with meta.rollout) can be paused or resumed."


class TaskNotOpenError(ConflictError):
    code = "task_not_open"
    default_message = "This task is no longer open."


class InvalidFilterError(ApplicationError):
    code = "validation_error"
    status_code = 400
    default_message = "A filter is not valid."
