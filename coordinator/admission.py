"""The question the front door asks before it reads a large request body: may this request go on?

The front door (`coordinator.serving.proxy`) buffers each plain request's body before granian sees
it, so that a slow client never holds a web worker. For a body larger than `ASK_FIRST_ABOVE` (or
one of unknown length) it first sends the request head alone, with the method replaced by
`ADMISSION_METHOD` and the real one in the `ADMISSION_HEADER` header. `AdmissionMiddleware`
answers it: the view's authentication, permission classes and throttles run as they would for the
request itself (the throttles are only looked at, not counted, as the request itself counts), and a
refusal (401, 403, 429, in the view's dialect) goes to the client without a byte of the body read;
otherwise `204` with `ADMISSION_HEADER: granted`, and the front door reads the body and passes the
request on. Pages other than the API's (the admin) take a large body only from signed-in staff. A view's own checks that need the body (a job type's permission, a password) still
run on the request itself.

A view never sees `ADMISSION_METHOD` when this middleware is installed; without it, Django's views
treat the unknown method as a read (DRF answers 405), so a misconfiguration cannot run a write twice.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseNotFound
from django.urls import Resolver404, resolve
from rest_framework.request import Request
from rest_framework.views import APIView

from coordinator.api.envelope import error_response
from coordinator.middleware import is_api_path
from coordinator.serving.proxy import ADMISSION_HEADER, ADMISSION_LIMIT_HEADER, ADMISSION_METHOD, MULTIPART_FRAMING
from coordinator.throttling import throttle_wait

_BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def _granted(limit: int | None = None) -> HttpResponse:
    response = HttpResponse(status=204)
    response[ADMISSION_HEADER] = "granted"
    if limit is not None:
        response[ADMISSION_LIMIT_HEADER] = str(limit)
    return response


def body_limit(request: Request) -> int:
    """The largest body an API request may send: files (multipart) up to the upload limit from a
    signed-in caller; anything else no more than Django reads (DATA_UPLOAD_MAX_MEMORY_SIZE, 413
    beyond), so that no anonymous body is buffered up to the upload limit only to be refused."""
    multipart = request.content_type.lower().startswith("multipart/form-data")
    signed_in = (request.user is not None and request.user.is_authenticated) or request.auth is not None
    if multipart and signed_in:
        return int(settings.JOBS_UPLOAD_MAX_BYTES) + MULTIPART_FRAMING
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


def admission_answer(request: HttpRequest) -> HttpResponse:
    """Whether the request `request` heads may send its body: a grant, or the view's refusal."""
    try:
        match = resolve(request.path_info)
    except Resolver404:
        if is_api_path(request.path):
            return error_response(404, "not_found", f"No endpoint or object at {request.path}.")
        return HttpResponseNotFound("Not found.")
    view_class = getattr(match.func, "cls", None)
    if not (isinstance(view_class, type) and issubclass(view_class, APIView)):
        # The pages (the admin's forms) are for signed-in staff; no page takes a large body from
        # anyone else (Django's CSRF check would read it before the admin asks for a sign-in).
        user = getattr(request, "user", None)
        if user is not None and user.is_active and user.is_staff:
            return _granted()
        return HttpResponseForbidden("Sign in to the admin to send a body this large.")
    view = view_class(**getattr(match.func, "initkwargs", {}))
    view.args, view.kwargs = match.args, match.kwargs
    view.headers = view.default_response_headers
    view.format_kwarg = None
    drf_request = view.initialize_request(request, *match.args, **match.kwargs)
    view.request = drf_request
    try:
        view.perform_authentication(drf_request)
        view.check_permissions(drf_request)
        wait = throttle_wait(view, drf_request)
        if wait is not None:
            view.throttled(drf_request, wait)
    except Exception as exc:
        response = view.finalize_response(drf_request, view.handle_exception(exc))
        response.render()  # the view's own dispatch would leave this to the handler; here it is ours
        return response  # type: ignore[no-any-return]
    return _granted(body_limit(drf_request))


class AdmissionMiddleware:
    """Answers the front door's admission requests (see the module docstring); passes the rest on."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method != ADMISSION_METHOD:
            return self.get_response(request)
        method = request.headers.get(ADMISSION_HEADER, "").upper()
        if method not in _BODY_METHODS:
            return error_response(400, "bad_request", f"{ADMISSION_HEADER} must name a method with a body.")
        request.method = method
        request.META["REQUEST_METHOD"] = method
        return admission_answer(request)
