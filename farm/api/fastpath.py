"""A WSGI fast path for the requests a taskfarm worker sends for every task, and the batch pair.

`taskfarm-worker` sends four requests per task: the hand-out (`POST /api/runs/<uuid>/task`), a read
of the task (`GET …/tasks/<n>?info=percentCompleted`) and two updates (`PUT …/tasks/<n>`). Through
Django's handler, its ten middlewares, URL resolution and DRF's request cycle, each of them spent
several times more Python than its one SQL statement (profiled: about 1 ms of framework per request
against 0.2 ms of work, more with eight workers sharing two cores). This layer sits in front of the
Django application and answers exactly those requests, when they are the ordinary well-formed ones,
with the same services, the same authentication (a farm token, `farm.authentication`), the same
permission rule (an active platform user) and the same response bytes and headers. The batch
claim and completion (`POST …/tasks/claim`, `…/tasks/done`), sent thousands of times a second by
batch clients, are answered the same way.

Everything else is *declined*: handed to Django untouched (its body, if read, put back), so every
error, 404, 409, lazily created task, unusual header or body gets the full stack's answer. Only
cases that changed nothing are declined after work started: a claim that found no such run or
worker, an update from a worker that does not hold the task, a read of a task row not yet created.
`tests/farm/test_fastpath.py` sends each request both ways and compares the answers.

`FARM_FAST_PATH=0` turns it off (every request then takes the full stack).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import re
from collections.abc import Callable, Iterable
from http.cookies import SimpleCookie
from typing import Any

from django.conf import settings
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import setting_changed
from django.http.cookie import parse_cookie
from django.http.request import split_domain_port, validate_host
from rest_framework.settings import api_settings

from coordinator.api.envelope import error_body
from coordinator.models import User
from farm import selectors, services
from farm.api import identity
from farm.api.views import (
    MAX_TASKS,
    batch_claim_data,
    batch_done_data,
    batch_shortcut,
    count_ok,
    numbers_ok,
    plain_change,
    task_data,
    well_formed_worker_uuid,
)
from farm.authentication import FarmToken, user_for_farm_token
from farm.conf import WORKER_COOKIE, fast_path_enabled
from farm.errors import RunNotFoundError, WorkerNotFoundError

logger = logging.getLogger("coordinator.api")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

PREFIX = "/api/runs/"
# No NUL in a uuid: Django's middleware refuses such paths (PostgreSQL cannot hold the character).
_CLAIM = re.compile(r"/api/runs/([^/\x00]+)/task")
_TASK = re.compile(r"/api/runs/([^/\x00]+)/tasks/([0-9]+)")
_BATCH = re.compile(r"/api/runs/([^/\x00]+)/tasks/(claim|done)")
# A worker's bodies are under 100 bytes, a batch completion of a thousand numbers about 8 KB;
# anything larger goes to the full stack.
MAX_BODY = 256 * 1024
_ACCEPTED = frozenset(("", "*/*", "application/json"))
_INFO_QUERIES = {"": "", "info=": "", "info=status": "status", "info=percentCompleted": "percentCompleted"}
_ALLOW_POST = "POST, OPTIONS"
_ALLOW_TASK = "GET, PUT, HEAD, OPTIONS"
_HOSTS_SEEN: dict[tuple[str, tuple[str, ...], bool], bool] = {}


class _Decline(Exception):
    """The request is not one this layer answers: Django takes it."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # as DRF's strict JSON parser (NaN, Infinity)


def _json_bytes(data: dict[str, Any]) -> bytes:
    # DRF's JSONRenderer with its defaults (compact, UTF-8, no NaN).
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


_static: list[tuple[tuple[str, str], ...]] = []  # built once; emptied when settings change (tests)


def _forget_static_headers(**kwargs: Any) -> None:
    _static.clear()


setting_changed.connect(_forget_static_headers, dispatch_uid="farm.api.fastpath.static_headers")


def _static_headers() -> tuple[tuple[str, str], ...]:
    """What Django's middlewares add to every one of these answers, from the same settings."""
    if not _static:
        _static.append(tuple(_build_static_headers()))
    return _static[0]


def _build_static_headers() -> list[tuple[str, str]]:
    headers = [("X-Frame-Options", settings.X_FRAME_OPTIONS)]
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        policy = settings.SECURE_REFERRER_POLICY
        headers.append(("Referrer-Policy", policy if isinstance(policy, str) else ",".join(policy)))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    # DRF varies on Accept when it has several renderers (the browsable API in development), and
    # django-cors-headers on the origin (on its URL pattern, unless every origin is allowed).
    vary = ["Accept"] if len(api_settings.DEFAULT_RENDERER_CLASSES) > 1 else []
    if not getattr(settings, "CORS_ALLOW_ALL_ORIGINS", False):
        vary.append("origin")
    if vary:
        headers.append(("Vary", ", ".join(vary)))
    return headers


def _worker_cookie(worker_uuid: str) -> str:
    cookie: SimpleCookie = SimpleCookie()
    cookie[WORKER_COOKIE] = worker_uuid
    cookie[WORKER_COOKIE]["path"] = "/"
    cookie[WORKER_COOKIE]["httponly"] = True
    cookie[WORKER_COOKIE]["samesite"] = "Lax"
    return cookie.output(header="").strip()


class FarmFastPath:
    """WSGI middleware: answers the worker's hot requests itself, hands the rest to `app`."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(PREFIX) or not fast_path_enabled():
            return self.app(environ, start_response)
        try:
            request = _Request.read(environ, path)
        except _Decline:
            return self.app(environ, start_response)
        # Django's request cycle around the work: the database connection is checked (and an old
        # or broken one closed) before, and released as `CONN_MAX_AGE` says after.
        signals.request_started.send(sender=WSGIHandler, environ=environ)
        try:
            answer = request.answer()
        except _Decline:
            request.restore(environ)
            return self.app(environ, start_response)
        except Exception as exc:
            if settings.DEBUG_PROPAGATE_EXCEPTIONS:
                raise
            logger.error("Unhandled error on %s", path, exc_info=exc)
            answer = ("500 Internal Server Error", _json_bytes(error_body(
                "server_error", "Internal server error. The error has been logged.")), None, None)
        finally:
            signals.request_finished.send(sender=WSGIHandler)
        status, body, allow, worker_uuid = answer
        headers = [("Content-Type", "application/json")] if body else []
        if allow:
            headers.append(("Allow", allow))
        headers += _static_headers()
        headers.append(("Content-Length", str(len(body))))
        if worker_uuid:
            headers.append(("Set-Cookie", _worker_cookie(worker_uuid)))
        start_response(status, headers)
        return [body]


Answer = tuple[str, bytes, str | None, str | None]  # status line, body, Allow, worker cookie to set


class _Request:
    """One candidate request, checked without touching the database."""

    def __init__(self, environ: dict[str, Any], method: str, run_uuid: str, number: int | None,
                 batch: str | None, body: bytes, user_token: str) -> None:
        self.environ = environ
        self.method = method
        self.run_uuid = run_uuid
        self.number = number
        self.batch = batch  # "claim" or "done" for the batch endpoints
        self.body = body
        self.user_token = user_token
        self.token: FarmToken | None = None  # the verified token, once `_user()` ran

    @classmethod
    def read(cls, environ: dict[str, Any], path: str) -> _Request:
        method = environ.get("REQUEST_METHOD", "")
        number: int | None = None
        batch: str | None = None
        if method == "POST":
            match = _CLAIM.fullmatch(path) or _BATCH.fullmatch(path)
            if match is not None and match.re is _BATCH:
                batch = match.group(2)
        elif method in ("GET", "PUT"):
            match = _TASK.fullmatch(path)
            if match is not None:
                number = int(match.group(2))
                if number >= MAX_TASKS:
                    raise _Decline
        else:
            raise _Decline
        if match is None or environ.get("HTTP_ORIGIN") or environ.get("HTTP_ACCEPT", "") not in _ACCEPTED:
            raise _Decline
        _check_host(environ)
        token = _basic_token(environ.get("HTTP_AUTHORIZATION", ""))
        body = b""
        if method != "GET":
            content_type = environ.get("CONTENT_TYPE", "")
            if content_type != "application/json" and content_type.replace(" ", "").lower() != \
                    "application/json;charset=utf-8":
                raise _Decline
            try:
                length = int(environ.get("CONTENT_LENGTH") or "")
            except ValueError:
                raise _Decline from None
            if not 0 < length <= min(MAX_BODY, settings.DATA_UPLOAD_MAX_MEMORY_SIZE or MAX_BODY):
                raise _Decline
            body = environ["wsgi.input"].read(length)
            if len(body) != length:
                environ["wsgi.input"] = io.BytesIO(body)
                raise _Decline
        elif environ.get("QUERY_STRING", "") not in _INFO_QUERIES:
            raise _Decline
        return cls(environ, method, match.group(1), number, batch, body, token)

    def restore(self, environ: dict[str, Any]) -> None:
        """Put a consumed body back for Django."""
        if self.body:
            environ["wsgi.input"] = io.BytesIO(self.body)

    def _user(self) -> User:
        found = user_for_farm_token(self.user_token)
        if found is None or not found[0].is_active:
            raise _Decline
        self.token = found[1]
        return found[0]

    def _data(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8"), parse_constant=_reject_constant)
        except ValueError:  # also UnicodeDecodeError
            raise _Decline from None

    def answer(self) -> Answer:
        if self.batch is not None:
            return self._batch()
        if self.method == "POST":
            return self._claim()
        if self.method == "GET":
            return self._read()
        return self._update()

    def _claim(self) -> Answer:
        data = self._data()
        worker_uuid = data.get("worker_uuid") if isinstance(data, dict) else None
        if not well_formed_worker_uuid(worker_uuid):
            raise _Decline
        worker_uuid = str(worker_uuid)
        user = self._user()
        try:
            tasks = services.tasks_claim_for(user=user, run_uuid=self.run_uuid, worker_uuid=worker_uuid, limit=1)
        except (RunNotFoundError, WorkerNotFoundError):
            raise _Decline from None  # nothing was claimed; Django says which one is missing
        if not tasks:
            return "204 No Content", b"", _ALLOW_POST, None
        return "201 Created", _json_bytes(task_data(tasks[0])), _ALLOW_POST, self._cookie_to_set(worker_uuid)

    def _batch(self) -> Answer:
        claiming = self.batch == "claim"
        given = batch_shortcut(self._data(), "count", count_ok) if claiming else \
            batch_shortcut(self._data(), "tasks", numbers_ok)
        if given is None:
            raise _Decline  # the serializer explains what is wrong
        worker_uuid, value = given
        user = self._user()
        try:
            if claiming:
                data = batch_claim_data(user=user, run_uuid=self.run_uuid, worker_uuid=worker_uuid, count=value)
            else:
                data = batch_done_data(user=user, run_uuid=self.run_uuid, worker_uuid=worker_uuid, listed=value)
        except (RunNotFoundError, WorkerNotFoundError):
            raise _Decline from None  # nothing was changed; Django says which one is missing
        return "200 OK", _json_bytes(data), _ALLOW_POST, self._cookie_to_set(worker_uuid) if claiming else None

    def _read(self) -> Answer:
        info = _INFO_QUERIES[self.environ.get("QUERY_STRING", "")]
        assert self.number is not None
        row = selectors.task_read(user=self._user(), run_uuid=self.run_uuid, number=self.number)
        if row is None:
            raise _Decline  # a task never handed out (created on read) or no such run
        data = {"id": row["id"], "task": row["task"], "percentCompleted": row["percent_completed"],
                "status": row["status"]}
        return "200 OK", _json_bytes({info: data[info]} if info else data), _ALLOW_TASK, None

    def _update(self) -> Answer:
        change = plain_change(self._data())
        if change is None:
            raise _Decline
        user = self._user()
        worker_uuid = identity.sending_worker(header=self.environ.get("HTTP_X_FARM_WORKER") or None,
                                              cookie=self._cookie(), token=self.token)
        if worker_uuid is None:
            raise _Decline
        assert self.number is not None
        held = services.task_update_held(user=user, run_uuid=self.run_uuid, number=self.number,
                                         change=change, worker_uuid=worker_uuid)
        if not held:
            raise _Decline  # nothing changed; the full path decides (lazy creation, 404, 409)
        return "204 No Content", b"", _ALLOW_TASK, None

    def _cookie(self) -> str | None:
        cookies = self.environ.get("HTTP_COOKIE")
        return parse_cookie(cookies).get(WORKER_COOKIE) or None if cookies else None

    def _cookie_to_set(self, worker_uuid: str) -> str | None:
        """`worker_uuid` when the answer must set its cookie (after `_user()`)."""
        return worker_uuid if identity.cookie_needed(worker_uuid, cookie=self._cookie(), token=self.token) else None


def _basic_token(header: str) -> str:
    """The farm token sent as the Basic username; anything else (a password login, a bearer token,
    a malformed header) is declined."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded or " " in encoded:
        raise _Decline
    try:
        username = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")[0]
    except (binascii.Error, UnicodeDecodeError):
        raise _Decline from None
    if username.count(".") != 2:
        raise _Decline
    return username


def _check_host(environ: dict[str, Any]) -> None:
    """Django's `get_host()` check (CommonMiddleware runs it on every request): an unknown host is a 400
    there, so such a request is declined here."""
    if (settings.USE_X_FORWARDED_HOST or settings.DISALLOWED_USER_AGENTS or settings.SECURE_SSL_REDIRECT
            or settings.SECURE_HSTS_SECONDS):
        raise _Decline  # rare settings whose effects this layer does not repeat
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
    key = (host, tuple(settings.ALLOWED_HOSTS), settings.DEBUG)
    known = _HOSTS_SEEN.get(key)
    if known is None:
        domain, _port = split_domain_port(host)
        allowed = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not allowed:
            allowed = [".localhost", "127.0.0.1", "[::1]"]
        known = bool(domain) and validate_host(domain, allowed)
        if len(_HOSTS_SEEN) < 64:
            _HOSTS_SEEN[key] = known
    if not known:
        raise _Decline
