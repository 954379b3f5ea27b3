"""The newest stored event id, read before an admin page reads its rows (see progress/live.js).

A live page applies a replayed event (a topic's last event, sent on subscribe) only if it is
newer than this id, so a replay never overrides the state the page was rendered with. It is read
first, before the view reads its rows. Live events are judged by the element's own last id
instead: on PostgreSQL an event can commit after a larger id was read, and its live broadcast
must still be applied.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from progress.selectors import event_latest_id


class LiveCoverageMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.admin_prefix = ""

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not self.admin_prefix:
            self.admin_prefix = reverse("admin:index")
        # Staff only: the admin's pages behind its login (the login page needs no database).
        if request.method == "GET" and request.path.startswith(self.admin_prefix) and request.user.is_staff:
            request.progress_covered_id = event_latest_id()  # type: ignore[attr-defined]
        return self.get_response(request)
