"""`/` and the admin's "View site" link lead to the platform's landing page, not a 404."""

from __future__ import annotations

import pytest
from django.test import Client

from coordinator.models import User


@pytest.mark.django_db
def test_landing_page_lists_what_runs_and_where_to_go(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    for link in ('href="/admin/"', 'href="/admin/progress/', 'href="/docs/"', 'href="/healthz"'):
        assert link in page
    for part in ("Device pool", "Task farm", "Background jobs", "Live progress"):
        assert part in page
    assert "//cdn" not in page and "https://" not in page  # nothing loads from elsewhere


@pytest.mark.django_db
def test_admin_view_site_link_leads_to_the_landing_page(client: Client, admin: User) -> None:
    client.force_login(admin)
    page = client.get("/admin/").content.decode()
    assert '<a href="/">' in page
