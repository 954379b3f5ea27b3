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
    headers: dict[str, str] = {}

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


class DatabaseUnavailableError(ApplicationError):
    """The database does not answer (an outage, a restart, a connection it dropped): the request
    changed nothing and may be sent again."""

    code = "database_unavailable"
    status_code = 503
    default_message = "The database is not reachable right now; retry shortly."
    headers = {"Retry-After": "5"}


class SharedCacheUnavailableError(ApplicationError):
    """Redis, the shared cache behind the rate limits, does not answer: the request changed
    nothing and may be sent again."""

    code = "shared_cache_unavailable"
    status_code = 503
    default_message = "The shared cache (Redis) is not reachable right now; retry shortly."
    headers = {"Retry-After": "5"}


def as_application_error(exc: Exception) -> Exception:
    """`exc`, or the ApplicationError a client should see for it: every dialect's exception handler
    and the error middleware start here, so an outage is a 503 with Retry-After in each shape."""
    from django.db import InterfaceError, OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    if isinstance(exc, OperationalError | InterfaceError):
        return DatabaseUnavailableError()
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return SharedCacheUnavailableError()
    return exc


class IdempotencyKeyReusedError(ApplicationError):
    code = "idempotency_key_reused"
    status_code = 422
    default_message = "This Idempotency-Key was already used with a different request body."


class IdempotencyKeyInvalidError(ApplicationError):
    code = "idempotency_key_invalid"
    status_code = 400
    default_message = "An Idempotency-Key is 1 to 255 printable ASCII characters."
