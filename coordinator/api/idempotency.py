"""`Idempotency-Key` on the creating endpoints: a retry gets the first answer and creates nothing.

A client that sends `POST` with an `Idempotency-Key` header (1 to 255 printable ASCII characters,
a UUID for example) and retries it with the same key within IDEMPOTENCY_KEEP gets the first
answer again, with `Idempotent-Replayed: true`, and nothing new is created. The key is scoped to
who asked (the authenticated user or device, else the client's address), the method and the
path; the same key with a different body is refused (422). Only successful answers (2xx) are
kept: a refused request can be corrected and sent again with its key.

The view, its writes and the stored answer are one transaction. Two requests with the same key
at once cannot both create: the second one's insert of the answer waits for the first to commit
and then fails on the unique key, which rolls back everything the second one wrote, and it
answers with the first one's answer instead.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from coordinator.errors import IdempotencyKeyInvalidError, IdempotencyKeyReusedError
from coordinator.models import IdempotentAnswer
from coordinator.selectors import idempotent_answer_find
from coordinator.services import idempotent_answer_store

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
IDEMPOTENCY_KEEP = timedelta(hours=24)
MAX_KEY_LENGTH = 255


class _Replay(Exception):
    def __init__(self, answer: IdempotentAnswer) -> None:
        self.answer = answer


def _replayed(answer: IdempotentAnswer) -> HttpResponse:
    response = HttpResponse(bytes(answer.content), status=answer.status, content_type=answer.content_type)
    response[REPLAYED_HEADER] = "true"
    return response


def _scope(request: Request) -> str:
    user: Any = request.user  # a platform user or a pool device
    if user is not None and user.is_authenticated:
        who = f"{user._meta.label}:{user.pk}"
    else:
        who = f"address:{BaseThrottle().get_ident(request)}"
    return hashlib.sha256(f"{request.method} {request.path} {who}".encode()).hexdigest()


class IdempotentCreateMixin:
    """For APIViews whose POST creates something (see the module's docstring)."""

    _idempotency: tuple[str, str, str] | None = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        key = request.headers.get(HEADER)
        if request.method != "POST" or key is None:
            return
        if not 0 < len(key) <= MAX_KEY_LENGTH or not (key.isascii() and key.isprintable()):
            raise IdempotencyKeyInvalidError()
        scope = _scope(request)
        fingerprint = hashlib.sha256(request._request.body).hexdigest()  # after authentication
        stored = idempotent_answer_find(scope=scope, key=key, keep=IDEMPOTENCY_KEEP)
        if stored is not None:
            if stored.fingerprint != fingerprint:
                raise IdempotencyKeyReusedError()
            raise _Replay(stored)
        self._idempotency = (scope, key, fingerprint)

    def handle_exception(self, exc: Exception) -> Any:
        if isinstance(exc, _Replay):
            return _replayed(exc.answer)
        return super().handle_exception(exc)  # type: ignore[misc]

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method != "POST" or HEADER not in request.headers:
            return super().dispatch(request, *args, **kwargs)  # type: ignore[misc, no-any-return]
        try:
            with transaction.atomic():
                response: HttpResponseBase = super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
                if self._idempotency is not None and 200 <= response.status_code < 300:
                    response.render()  # type: ignore[attr-defined]
                    scope, key, fingerprint = self._idempotency
                    idempotent_answer_store(
                        scope=scope,
                        key=key,
                        fingerprint=fingerprint,
                        status=response.status_code,
                        content=response.content,  # type: ignore[attr-defined]
                        content_type=response.get("Content-Type", "application/json"),
                        keep=IDEMPOTENCY_KEEP,
                    )
                return response
        except IntegrityError:
            if self._idempotency is None:
                raise
            scope, key, fingerprint = self._idempotency
            stored = idempotent_answer_find(scope=scope, key=key, keep=IDEMPOTENCY_KEEP)
            if stored is None:
                raise
            self._idempotency = None
            if stored.fingerprint != fingerprint:
                return self.finalize_response(  # type: ignore[attr-defined, no-any-return]
                    self.request,  # type: ignore[attr-defined]
                    self.handle_exception(IdempotencyKeyReusedError()),
                    *args,
                    **kwargs,
                )
            return _replayed(stored)
