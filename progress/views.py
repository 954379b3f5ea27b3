"""The seed's Server-Sent Events stream at `/progress/events` (an async view served by daphne).

Frames: a `retry:` line first; then, on a fresh connection, one `new` and the latest `msg` per
live stream the caller may see (the snapshot) closed by an `id:` line, or, with `Last-Event-ID`,
every missed event with its id; then live events (`id:`/`event:`/`data:`), and a `: keep-alive`
comment whenever the stream is idle. `?once=1` (and any request served by the WSGI server, which
cannot hold a stream open), and any request without `Accept: text/event-stream` (which EventSource
always sends; `curl -N -H 'Accept: text/event-stream'` by hand), sends the same beginning and
closes: `EventSource` reconnects after `retry` milliseconds with `Last-Event-ID`, so even then
nothing is lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.views import APIView
from rest_framework_simplejwt.authentication import JWTAuthentication

from coordinator.api.envelope import error_response
from progress import conf
from progress.auth import Access, TooManyStreams, access_for, still_allowed, stream_slot_release, stream_slot_take
from progress.db import db_call
from progress.events import Event, sse_frame
from progress.selectors import (
    REPLAY_LIMIT,
    Viewer,
    event_latest_id,
    event_list_after,
    event_replay_possible,
    topic_snapshot_events,
)
from progress.streams import BadParameter, last_event_id, sse_responses, sse_stream


def _topics(request: HttpRequest) -> set[str]:
    return {part.strip() for value in request.GET.getlist("topic") for part in value.split(",") if part.strip()}


def _once(request: HttpRequest) -> bool:
    raw = request.GET.get("once", "")
    if raw not in ("", "0", "1"):
        raise BadParameter("`once` must be 1 or 0.")
    # Only a client that asks for an event stream gets one that never ends (EventSource always
    # sends `Accept: text/event-stream`); any other client, and the WSGI server, get the beginning.
    wants_stream = "text/event-stream" in request.headers.get("Accept", "")
    return raw == "1" or not wants_stream or not isinstance(request, ASGIRequest)


def _beginning(viewer: Viewer, topics: set[str], after: int | None) -> tuple[list[str], set[int], int]:
    """The frames sent first, the ids they replayed, and the id up to which the snapshot covers."""
    frames = [f"retry: {conf.SSE_RETRY_MS}\n\n"]
    if after is not None and event_replay_possible(after):
        replayed = event_list_after(viewer=viewer, after_id=after, topics=topics)
        if len(replayed) < REPLAY_LIMIT:
            frames += [sse_frame(e["kind"], e["topic"], e["text"], e["id"]) for e in replayed]
            return frames, {e["id"] for e in replayed}, 0
    covered = event_latest_id()
    frames += [sse_frame(e["kind"], e["topic"], e["text"]) for e in topic_snapshot_events(viewer=viewer, topics=topics)]
    frames.append(f"id: {covered}\n\n")
    return frames, set(), covered


async def _live(access: Access, lease: int | None, topics: set[str], after: int | None) -> AsyncIterator[str]:
    viewer = access.viewer
    assert viewer is not None

    every_topic = not topics or "*" in topics  # as the snapshot and the WebSocket read `*`

    def accepts(event: Event) -> bool:
        return viewer.can_see(event) and (every_topic or event["topic"] in topics)

    try:
        async for chunk in sse_stream(
            accepts=accepts,
            beginning=lambda: db_call(_beginning)(viewer, topics, after),
            still_allowed=lambda: still_allowed(access, lease),
        ):
            yield chunk
    finally:
        await stream_slot_release(lease)


def _stream_headers(response: HttpResponseBase) -> HttpResponseBase:
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response


async def progress_events(request: HttpRequest) -> HttpResponseBase:
    """GET /progress/events: the seed's SSE stream (see the module docstring)."""
    if request.method != "GET":
        response = error_response(405, "method_not_allowed", f'Method "{request.method}" not allowed.')
        response["Allow"] = "GET"
        return response
    try:
        topics, after, once = _topics(request), last_event_id(request), _once(request)
    except BadParameter as exc:
        return error_response(400, "validation_error", str(exc))
    token = request.GET.get("token") or _bearer(request)
    access = await access_for(session_user=await request.auser(), token=token)
    if access.viewer is None:
        code = "not_authenticated" if access.status == 401 else "permission_denied"
        return error_response(access.status, code, access.message)
    if once:
        frames, _, _ = await db_call(_beginning)(access.viewer, topics, after)
        return _stream_headers(HttpResponse("".join(frames), content_type="text/event-stream"))
    try:
        lease = await stream_slot_take(access)
    except TooManyStreams:
        response = error_response(
            429, "too_many_streams", f"At most {conf.streams_per_user()} open progress streams per user."
        )
        response["Retry-After"] = str(max(1, int(conf.keepalive_seconds())))
        return response
    return _stream_headers(StreamingHttpResponse(_live(access, lease, topics, after), content_type="text/event-stream"))


def _bearer(request: HttpRequest) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


class ProgressEventsSchema(APIView):
    """Documents `/progress/events` in the OpenAPI schema; the async view above serves it."""

    authentication_classes = [JWTAuthentication, SessionAuthentication]
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="progress_events",
        summary="Server-Sent Events: new / msg / end",
        description=(
            "`text/event-stream` of named events `new`, `msg`, `end`, each with `data` a JSON object "
            '`{"<uid or topic>": "<text>"}` and an `id:`. Starts with a `retry:` line and either the '
            "snapshot of live streams (then an `id:` line) or, with `Last-Event-ID`, the missed events; "
            "then streams until the client leaves, with `: keep-alive` comments — when the request sends "
            "`Accept: text/event-stream`, as EventSource does. Without that header, with `once=1`, or when "
            "served by the WSGI server, the response ends after that beginning. Users see their own "
            "progress, admins everything; anonymous readers only when PROGRESS_PUBLIC is on."
        ),
        parameters=[
            OpenApiParameter(
                "topic", OpenApiTypes.STR, many=True, description="Only these topics (repeat or comma-separate)."
            ),
            OpenApiParameter(
                "once", OpenApiTypes.STR, enum=["0", "1"], description="1: send the beginning, then close."
            ),
            OpenApiParameter(
                "token", OpenApiTypes.STR, description="A user access JWT (EventSource cannot send headers)."
            ),
            OpenApiParameter(
                "lastEventId",
                OpenApiTypes.STR,
                pattern=r"^[0-9]{1,18}$",
                description="Same as the Last-Event-ID header.",
            ),
            OpenApiParameter(
                "Last-Event-ID",
                OpenApiTypes.STR,
                location=OpenApiParameter.HEADER,
                pattern=r"^[0-9]{1,18}$",
                description="Replay the events after this id (sent by EventSource on reconnect).",
            ),
        ],
        responses=sse_responses(events=["new", "msg", "end"], data='JSON: {"<uid or topic>": "<text>"}'),
        tags=["progress"],
    )
    def get(self, request: Request) -> Any:  # pragma: no cover - never routed; the async view serves the path
        raise NotImplementedError


# drf-spectacular finds API views through `callback.cls`; the async view borrows the schema class.
progress_events.cls = ProgressEventsSchema  # type: ignore[attr-defined]
progress_events.initkwargs = {}  # type: ignore[attr-defined]
