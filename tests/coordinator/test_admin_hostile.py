"""Hostile query parameters on admin pages: a 4xx or a page, never a 500 (PostgreSQL refuses NUL)."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

PAGES = [
    "/admin/progress/progresstopic/live/",
    "/admin/pool/message/",
    "/admin/pool/task/",
    "/admin/jobs/job/",
    "/admin/farm/worker/",
]


@pytest.mark.parametrize("url", PAGES)
@pytest.mark.parametrize("query", ["q=a%00b", "kind=%00", "q=%ED%A0%80", "q=" + "x" * 5000])
def test_hostile_search_terms_never_answer_500(admin, url: str, query: str) -> None:
    client = Client(raise_request_exception=False)
    client.force_login(admin)
    answer = client.get(f"{url}?{query}")
    assert answer.status_code < 500, (url, query, answer.status_code)
