"""DRF exception handler: every non-2xx answer of our own endpoints is one envelope.

`{"code": "snake_case", "message": "human sentence", "extra": {...}}`; validation errors are
`code="validation_error"` with the per-field messages in `extra.fields`. An unexpected exception is
not answered here: DRF re-raises it, so that Django's own path logs it on `django.request`, sends
`got_request_exception` (what error trackers listen to) and `ApiErrorEnvelopeMiddleware` answers
the 500 envelope.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import set_rollback

from coordinator.api.envelope import error_body
from coordinator.errors import ApplicationError, as_application_error


def _first_message(detail: Any) -> str:
    if isinstance(detail, dict):
        if "detail" in detail:
            return str(detail["detail"])
        for value in detail.values():
            return _first_message(value)
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def _api_exception_body(exc: exceptions.APIException) -> dict[str, Any]:
    detail: Any = exc.detail
    if isinstance(exc, exceptions.ValidationError):
        fields = detail if isinstance(detail, dict) else {"non_field_errors": detail}
        return error_body("validation_error", "Invalid input.", {"fields": fields})
    extra: dict[str, Any] = {}
    # DRF's codes are already snake_case ("not_authenticated", "permission_denied", simplejwt's
    # "no_active_account"…); a dict detail is simplejwt's {"detail", "code", "messages"}.
    codes = exc.get_codes()
    code = codes if isinstance(codes, str) else exc.default_code
    if isinstance(detail, dict):
        # simplejwt's token errors: {"detail", "code", "messages"}.
        if "code" in detail:
            code = str(detail["code"])
        extra = {key: value for key, value in detail.items() if key not in {"detail", "code"}}
    wait = getattr(exc, "wait", None)
    if isinstance(exc, exceptions.Throttled) and wait is not None:
        extra["wait_seconds"] = wait
    return error_body(code, _first_message(detail), extra)


def envelope_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    headers: dict[str, str] = {}
    exc = as_application_error(exc)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )

    if isinstance(exc, ApplicationError):
        set_rollback()
        return Response(error_body(exc.code, exc.message, exc.extra), status=exc.status_code, headers=exc.headers)

    if isinstance(exc, exceptions.APIException):
        auth_header = getattr(exc, "auth_header", None)
        if auth_header:
            headers["WWW-Authenticate"] = auth_header
        wait = getattr(exc, "wait", None)
        if wait:
            headers["Retry-After"] = str(int(wait))
        set_rollback()
        return Response(_api_exception_body(exc), status=exc.status_code, headers=headers)

    return None
