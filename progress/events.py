"""The one event format shared by SSE, the WebSocket and the admin's live pages."""

from __future__ import annotations

import json
from typing import Any, TypedDict


class Event(TypedDict):
    id: int
    topic: str
    kind: str
    text: str
    state: dict[str, Any]
    owner_id: int | None
    at: float


STREAM_PREFIX = "stream:"


def sse_key(topic: str) -> str:
    """The key of the seed's `{"<uid>": "<text>"}` data: the uid for socket streams, else the topic."""
    return topic[len(STREAM_PREFIX) :] if topic.startswith(STREAM_PREFIX) else topic


def sse_frame(kind: str, topic: str, text: str, event_id: int | None = None) -> str:
    """One Server-Sent Events frame; JSON data never contains a raw newline."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {kind}")
    lines.append("data: " + json.dumps({sse_key(topic): text}, ensure_ascii=False))
    return "\n".join(lines) + "\n\n"


def ws_payload(event: Event, *, snapshot: bool = False) -> dict[str, Any]:
    """The WebSocket message for one event (owner ids are not shown to clients)."""
    payload: dict[str, Any] = {
        "type": "event",
        "id": event["id"],
        "topic": event["topic"],
        "kind": event["kind"],
        "text": event["text"],
        "state": event["state"],
        "at": event["at"],
    }
    if snapshot:
        payload["snapshot"] = True
    return payload
