"""Turn Django's HTML error pages into the JSON envelope on API paths.

DRF views already answer with the envelope; this covers what never reaches a DRF view: unknown
URLs (404), Django-level method refusals (405), paths with a NUL character (404, before any view; a
page whose query holds one answers 400: PostgreSQL refuses NUL in any text value),
and every unexpected exception (500). Those are left to Django's own handling, which logs them on
`django.request` and sends `got_request_exception` for error trackers; only its answer, an HTML
page, is replaced here by the envelope.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseNotFound

from coordinator.api.envelope import error_response
from coordinator.errors import DatabaseUnavailableError, as_application_error
from coordinator.metrics import http_observe

logger = logging.getLogger("coordinator.request")

_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    500: "server_error",
    503: "service_unavailable",
}


def is_api_path(path: str) -> bool:
    return any(path.startswith(prefix) for prefix in settings.API_PATH_PREFIXES)


def _query_has_nul(request: HttpRequest) -> bool:
    return any("\x00" in key or any("\x00" in value for value in values) for key, values in request.GET.lists())


class ApiErrorEnvelopeMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path_info:
            # A NUL (`%00`) can name nothing here, and PostgreSQL refuses it in any text value: answer
            # 404 before a view passes it to the database (a 500 there).
            if is_api_path(request.path):
                return error_response(404, "not_found", "No endpoint or object at this path (it contains a NUL).")
            return HttpResponseNotFound("Not found.")
        if not is_api_path(request.path) and _query_has_nul(request):
            # The same for a page's query (an admin list filter, a search): the API's views
            # refuse it each in their dialect.
            return HttpResponseBadRequest("Bad request: the query contains a NUL character.")
        response = self.get_response(request)
        if response.status_code < 400 or not is_api_path(request.path):
            return response
        if response.get("Content-Type", "").startswith(("application/json", "text/event-stream")):
            return response
        if getattr(response, "streaming", False):
            return response
        status = response.status_code
        code = _CODES.get(status, "error")
        try:
            message = HTTPStatus(status).phrase + "."
        except ValueError:
            message = "Error."
        extra: dict[str, object] = {}
        if status == 500:
            message = "Internal server error. The error has been logged."
        elif status == 404:
            message = f"No endpoint or object at {request.path}."
        elif status == 405:
            allowed = response.get("Allow", "")
            message = f"Method {request.method} is not allowed here."
            extra = {"allowed": [m.strip() for m in allowed.split(",") if m.strip()]}
        envelope = error_response(status, code, message, extra)
        for header in ("Allow", "WWW-Authenticate", "Retry-After"):
            if header in response:
                envelope[header] = response[header]
        return envelope

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if settings.DEBUG_PROPAGATE_EXCEPTIONS:
            return None
        translated = as_application_error(exception)
        if isinstance(translated, DatabaseUnavailableError):  # the admin's pages too: a 503, not a 500
            logger.warning("Database unavailable for %s %s: %s", request.method, request.path, exception)
            response: HttpResponse
            if is_api_path(request.path):
                response = error_response(translated.status_code, translated.code, translated.message)
            else:
                response = HttpResponse(translated.message, status=503, content_type="text/plain; charset=utf-8")
            for name, value in translated.headers.items():
                response[name] = value
            return response
        if not is_api_path(request.path):
            return None
        from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
        from django.http import Http404

        if isinstance(exception, Http404):
            return error_response(404, "not_found", f"No endpoint or object at {request.path}.")
        if isinstance(exception, PermissionDenied):
            return error_response(403, "permission_denied", "You do not have permission to perform this action.")
        if isinstance(exception, RequestDataTooBig):
            return error_response(413, "payload_too_large", "The request body is too large.")
        if isinstance(exception, SuspiciousOperation):
            return error_response(400, "bad_request", "The request was refused as malformed.")
        return None


class AuditMiddleware:
    """Each state-changing request is one operator action: the audit records its services make
    (coordinator.services.audit_record) become one entry, written when the answer is ready."""

    UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method not in self.UNSAFE:
            return self.get_response(request)
        from coordinator.services import audit_scope

        with audit_scope(request=request):
            return self.get_response(request)


class HttpMetricsMiddleware:
    """Counts and times every answer for /metrics, by route name, method and status. Sync and
    async: the SSE views run on daphne's event loop and must not be moved to a thread for this."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        started = time.perf_counter()
        response = self.get_response(request)
        http_observe(request, response.status_code, time.perf_counter() - started)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        get_response: Callable[[HttpRequest], Awaitable[HttpResponse]] = self.get_response
        response = await get_response(request)
        http_observe(request, response.status_code, time.perf_counter() - started)
        return response
