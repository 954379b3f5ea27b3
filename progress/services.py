"""Publishing progress: the one entry point every app uses.

`progress_publish()` is called by `pool`, `farm` and `jobs` (and by the socket listener) after
their own writes; the event leaves only once the surrounding transaction has committed.
`progress` itself imports no other app: it knows topics, not domains.
"""

from __future__ import annotations

from typing import Any, Literal

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

EventKind = Literal["new", "msg", "end"]


def group_name(topic: str) -> str:
    """Channels group names allow only [a-zA-Z0-9._-]; topics look like `run:<uuid>`."""
    return "progress." + topic.replace(":", ".")


def progress_publish(
    *,
    topic: str,
    kind: EventKind,
    text: str = "",
    state: dict[str, Any] | None = None,
    owner_id: int | None = None,
) -> None:
    """Publish one progress event on `topic` once the current transaction commits.

    `text` is what the seed's front-end shows (the name for `new`, the message for `msg`, the
    error or "" for `end`); `state` is structured data for live admin pages (percentages,
    counts); `owner_id` is the user allowed to see it besides admins (None: admins only).
    """
    event = {"topic": topic, "kind": kind, "text": text, "state": state or {}, "owner_id": owner_id}

    def send() -> None:
        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(layer.group_send)(group_name(topic), {"type": "progress.event", "event": event})

    transaction.on_commit(send)
