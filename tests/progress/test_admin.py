from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import DEFAULT_PASSWORD
from tests.progress.conftest import publish

pytestmark = pytest.mark.django_db


def test_live_page_lists_streams_live_first_and_ended_at_the_bottom(client: Client, admin) -> None:
    publish("stream:0", "new", "old finished task")
    publish("stream:0", "end", "")
    publish("stream:1", "new", "backup")
    publish("stream:1", "msg", "[40%] copying", {"percent": 40.0})
    publish("job:3", "new", "csv export", {"percent": 5}, owner_id=admin.pk)
    assert client.login(username=admin.email, password=DEFAULT_PASSWORD)
    page = client.get("/admin/progress/progresstopic/live/")
    assert page.status_code == 200
    html = page.content.decode()
    # grouped by kind (socket streams first); running ones above ended ones in each group
    assert html.index("Socket streams") < html.index("backup") < html.index("old finished task")
    assert html.index("old finished task") < html.index(">Jobs <") < html.index("csv export")
    assert "[40%] copying" in html and 'style="width: 40%"' in html
    assert 'data-progress-topic="*"' in html and "progress/live.js" in html
    only = client.get("/admin/progress/progresstopic/live/?only=streams").content.decode()
    assert "csv export" not in only and "backup" in only


def test_admin_index_links_the_live_page(client: Client, admin) -> None:
    publish("stream:2", "new", "something")
    client.login(username=admin.email, password=DEFAULT_PASSWORD)
    index = client.get("/admin/").content.decode()
    assert "/admin/progress/progresstopic/live/" in index
    assert "1 socket stream running" in index


def test_live_page_is_for_admins_only(client: Client, user) -> None:
    client.login(username=user.email, password=DEFAULT_PASSWORD)
    assert client.get("/admin/progress/progresstopic/live/").status_code == 302


def test_changelist_is_read_only(client: Client, admin) -> None:
    publish("stream:0", "new", "x")
    client.login(username=admin.email, password=DEFAULT_PASSWORD)
    listing = client.get("/admin/progress/progresstopic/")
    assert listing.status_code == 200 and "Live page" in listing.content.decode()
    assert client.get("/admin/progress/progresstopic/add/").status_code == 403


def test_live_page_hides_heartbeats_filters_and_marks_failures(client: Client, admin) -> None:
    publish("pooldevice:4", "msg", "4 heartbeat", {"badge": "online"})
    publish("stream:5", "new", "nightly backup")
    publish("stream:5", "end", "disk full")
    publish("stream:6", "new", "thumbnail pass")
    publish("stream:6", "end", "")
    publish("job:9", "new", "csv export", {"status": "started", "percent": 5}, owner_id=admin.pk)
    assert client.login(username=admin.email, password=DEFAULT_PASSWORD)
    html = client.get("/admin/progress/progresstopic/live/").content.decode()
    assert "4 heartbeat" not in html and 'data-progress-kinds="stream job run pooltask"' in html
    failed = html.split('data-topic-row="stream:5"')[0].rsplit("<tr", 1)[1]
    assert 'class="ended failed"' in failed and "failed: disk full" in html
    assert 'class="ended"' in html.split('data-topic-row="stream:6"')[0].rsplit("<tr", 1)[1]
    beats = client.get("/admin/progress/progresstopic/live/?heartbeats=1").content.decode()
    assert "4 heartbeat" in beats and "Device heartbeats" in beats
    found = client.get("/admin/progress/progresstopic/live/?q=backup").content.decode()
    assert "nightly backup" in found and "thumbnail pass" not in found and "csv export" not in found
    jobs = client.get("/admin/progress/progresstopic/live/?kind=job").content.decode()
    assert "csv export" in jobs and "nightly backup" not in jobs and 'data-progress-kinds="job"' in jobs
