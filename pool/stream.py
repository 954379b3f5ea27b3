"""`GET /pool/events`: a device's Server-Sent Events stream, served on the ASGI side like
`/progress/events` and by the same machinery (progress.hub, progress.streams).

An event `pending` (with an `id:`) is sent whenever something becomes pending for the device —
a task to it, its list, tag or group, a broadcast, a rollout releasing its delivery — and a
`: keep-alive` comment when idle; the device then fetches `/pool/pending` as before. A reconnect
with `Last-Event-ID` first gets the events it missed. The stream ends once the token has expired,
was revoked (the device's secret replaced) or the device was disabled or un-validated.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.views import APIView

from coordinator.api.envelope import error_response
from pool.authentication import DeviceJWTAuthentication, IsDevice, device_from_token
from pool.models import Device
from pool.services import PUSH_ALL, push_topic
from pool.tokens import device_stamp
from progress import conf as progress_conf
from progress.db import BatchedLookup, db_call
from progress.events import Event
from progress.selectors import REPLAY_LIMIT, Viewer, event_latest_id, event_list_after, event_replay_possible
from progress.streams import BadParameter, Beginning, last_event_id, sse_responses, sse_stream

PUSH_READER = Viewer(sees_all=True)  # the topics chosen below are the device's own


def _frame(event: Event) -> str:
    return f"id: {event['id']}\nevent: pending\ndata: {json.dumps({'pending': True})}\n\n"


def _beginning(topics: set[str], after: int | None) -> Beginning:
    """`retry:`, then the missed events after `after` (when they are all still stored), or else an
    `id:` line marking now (a device connecting fresh fetches /pool/pending once anyway)."""
    frames = [f"retry: {progress_conf.SSE_RETRY_MS}\n\n"]
    if after is not None and event_replay_possible(after):
        missed = event_list_after(viewer=PUSH_READER, after_id=after, topics=topics)
        if len(missed) < REPLAY_LIMIT:
            return frames + [_frame(e) for e in missed], {e["id"] for e in missed}, 0
    covered = event_latest_id()
    frames.append(f"id: {covered}\n\n")
    return frames, set(), covered


def _authenticate(token: str) -> tuple[int, str, float] | tuple[int, str, str]:
    """(device id, its token stamp, expiry) or (status, code, message)."""
    try:
        device, payload = device_from_token(token)
    except exceptions.APIException as exc:
        codes = exc.get_codes()
        return exc.status_code, str(codes if isinstance(codes, str) else "not_authenticated"), str(exc.detail)
    return int(device.pk), str(payload.get("stamp", "")), float(payload["exp"])


def _stamps_of_streaming_devices(device_ids: set[int]) -> dict[int, str]:
    """The token stamp of each device that may still stream (enabled and validated)."""
    rows = Device.objects.filter(pk__in=device_ids, enabled=True, validated=True).values_list("pk", "secret_hash")
    return {pk: device_stamp(secret_hash) for pk, secret_hash in rows}


# Every device stream of this process re-checks its device each keep-alive; one read a second
# answers all of them.
_streaming_devices = BatchedLookup(_stamps_of_streaming_devices, window=1.0)


async def _still_allowed(device_id: int, stamp: str, expires_at: float) -> bool:
    if time.time() >= expires_at:
        return False
    return await _streaming_devices.get(device_id) == stamp


async def pool_events(request: HttpRequest) -> HttpResponseBase:
    """GET /pool/events: the device's push stream (see the module docstring)."""
    if request.method != "GET":
        refused = error_response(405, "method_not_allowed", f'Method "{request.method}" not allowed.')
        refused["Allow"] = "GET"
        return refused
    try:
        after = last_event_id(request)
    except BadParameter as exc:
        return error_response(400, "validation_error", str(exc))
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    token = (credentials.strip() if scheme.lower() == "bearer" else "") or request.GET.get("token", "")
    if not token:
        return error_response(401, "not_authenticated", "Send a device token: Authorization: Bearer <token>.")
    found = await db_call(_authenticate)(token)
    if isinstance(found[2], str):
        return error_response(int(found[0]), str(found[1]), found[2])
    device_id, stamp, expires_at = int(found[0]), str(found[1]), float(found[2])
    topics = {push_topic(device_id), PUSH_ALL}
    once = not isinstance(request, ASGIRequest) or "text/event-stream" not in request.headers.get("Accept", "")
    if once or request.GET.get("once") == "1":
        frames, _, _ = await db_call(_beginning)(topics, after)
        response: HttpResponseBase = HttpResponse("".join(frames), content_type="text/event-stream")
    else:
        stream = sse_stream(
            accepts=lambda event: event["topic"] in topics,
            beginning=lambda: db_call(_beginning)(topics, after),
            still_allowed=lambda: _still_allowed(device_id, stamp, expires_at),
            frame=_frame,
            only_topics=frozenset(topics),
        )
        response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


class PoolEventsSchema(APIView):
    """Documents `/pool/events` in the OpenAPI schema; the async view above serves it."""

    authentication_classes = [DeviceJWTAuthentication]
    permission_classes = [IsDevice]

    @extend_schema(
        operation_id="pool_events",
        summary="Server-Sent Events for a device: `pending` whenever something becomes pending for it",
        description=(
            "`text/event-stream`: a `retry:` line, then either the missed events (with `Last-Event-ID`) or an "
            "`id:` line, then an event `pending` (with an `id:`) each time a task becomes pending for the "
            "device (then fetch GET /pool/pending), and `: keep-alive` comments. Ends when the device token "
            "expires or is revoked, or the device is disabled. Without `Accept: text/event-stream`, with "
            "`once=1`, or from the WSGI server, the answer ends after its beginning."
        ),
        parameters=[
            OpenApiParameter(
                "once", OpenApiTypes.STR, enum=["0", "1"], description="1: send the beginning, then close."
            ),
            OpenApiParameter(
                "token", OpenApiTypes.STR, description="The device token, for clients that cannot send headers."
            ),
            OpenApiParameter(
                "Last-Event-ID",
                OpenApiTypes.STR,
                location=OpenApiParameter.HEADER,
                pattern=r"^[0-9]{1,18}$",
                description="Replay the events after this id.",
            ),
        ],
        responses=sse_responses(events=["pending"], data='JSON: {"pending": true}'),
        tags=["pool"],
    )
    def get(self, request: Request) -> Any:  # pragma: no cover - never routed; the async view serves the path
        raise NotImplementedError


# drf-spectacular finds API views through `callback.cls`; the async view borrows the schema class.
pool_events.cls = PoolEventsSchema  # type: ignore[attr-defined]
pool_events.initkwargs = {}  # type: ignore[attr-defined]
