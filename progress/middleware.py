"""The newest stored event id, read before an admin page reads its rows (see progress/live.js).

A live page applies only events newer than this id, so the replay of a topic's last event on
subscribe never overrides the state the page was rendered with. It is read first, before the
view: an event committed while the rows are read has a larger id and is applied, never dropped.
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
