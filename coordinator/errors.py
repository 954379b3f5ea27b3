"""Errors that carry a stable snake_case code and an HTTP status.

Services raise these; the API exception handler turns them into the envelope
`{"code", "message", "extra"}`. Each app subclasses `ApplicationError` in its own `errors.py`.
"""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    code: str = "application_error"
    status_code: int = 400
    default_message: str = "The request could not be processed."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        status_code: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.message = message or self.default_message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.extra = extra or {}
        super().__init__(self.message)


class NotFoundError(ApplicationError):
    code = "not_found"
    status_code = 404
    default_message = "Not found."


class ConflictError(ApplicationError):
    code = "conflict"
    status_code = 409
    default_message = "The request conflicts with the current state."


class PermissionDeniedError(ApplicationError):
    code = "permission_denied"
    status_code = 403
    default_message = "You do not have permission to perform this action."


class ValidationFailedError(ApplicationError):
    code = "validation_error"
    status_code = 400
    default_message = "Invalid input."
