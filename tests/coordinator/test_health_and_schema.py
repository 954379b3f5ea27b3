from unittest import mock

import pytest
import yaml
from django.core.management import call_command
from django.db import OperationalError
from rest_framework.test import APIClient


@pytest.mark.django_db
def test_healthz_ok(anon_client: APIClient) -> None:
    from django.core.cache import cache

    from jobs.conf import SWEEP_SEEN_KEY

    cache.delete(SWEEP_SEEN_KEY)  # a cluster of another test may have swept into the shared cache
    response = anon_client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["components"]["database"] == "ok"
    # No job cluster and no listener run beside the test server: absent, not failed.
    assert body["components"]["job cluster"] == "absent"
    assert body["components"]["export disk"] == "ok"


@pytest.mark.django_db
def test_healthz_503_when_database_is_down(anon_client: APIClient) -> None:
    with mock.patch("django.db.backends.utils.CursorWrapper.execute", side_effect=OperationalError("down")):
        response = anon_client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "unhealthy" and body["extra"]["components"]["database"] == "down"
    assert "database (down)" in body["message"]


@pytest.mark.django_db
def test_healthz_names_a_stale_job_cluster_and_a_full_disk(anon_client: APIClient, monkeypatch) -> None:
    import shutil
    import time
    from collections import namedtuple

    from django.core.cache import cache

    from jobs.conf import SWEEP_SEEN_KEY

    cache.set(SWEEP_SEEN_KEY, time.time(), timeout=None)
    assert anon_client.get("/healthz").json()["components"]["job cluster"] == "ok"
    cache.set(SWEEP_SEEN_KEY, time.time() - 3600, timeout=None)  # every cluster gone or frozen for an hour
    stale = anon_client.get("/healthz")
    assert stale.status_code == 503 and "job cluster (stale)" in stale.json()["message"]
    cache.delete(SWEEP_SEEN_KEY)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    full = anon_client.get("/healthz")
    assert full.status_code == 503 and "export disk (full)" in full.json()["message"]


@pytest.mark.django_db
def test_healthz_tells_a_listening_progress_listener_from_a_killed_ones_socket(
    anon_client: APIClient, settings
) -> None:
    """A listener killed with SIGKILL leaves its socket file behind: /healthz must not take the
    file for a live listener."""
    import shutil
    import socket
    import tempfile
    from pathlib import Path

    directory = Path(tempfile.mkdtemp(prefix="hz", dir="/tmp"))  # UNIX socket paths are short
    settings.PROGRESS_SOCKET = directory / "progress.sock"
    try:
        assert anon_client.get("/healthz").json()["components"]["progress listener"] == "absent"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(str(settings.PROGRESS_SOCKET))
        listener.listen()
        assert anon_client.get("/healthz").json()["components"]["progress listener"] == "ok"
        listener.close()  # as a killed process's: the file stays, nothing listens
        assert settings.PROGRESS_SOCKET.exists()
        dead = anon_client.get("/healthz")
        assert dead.status_code == 503 and "progress listener (down)" in dead.json()["message"]
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_schema_generates_without_warnings(
    tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "schema.yaml"  # type: ignore[operator]
    call_command("spectacular", "--file", str(out), "--validate", "--fail-on-warn")
    schema = yaml.safe_load(out.read_text())
    assert schema["openapi"].startswith("3.")
    assert "/auth/token/" in schema["paths"]
    assert "/healthz" in schema["paths"]


@pytest.mark.django_db
def test_schema_and_docs_are_served(anon_client: APIClient) -> None:
    assert anon_client.get("/schema/").status_code == 200
    docs = anon_client.get("/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/docs/", "/redoc/"])
def test_api_docs_load_nothing_from_elsewhere_and_run_no_inline_script(anon_client: APIClient, path: str) -> None:
    """Swagger UI and Redoc come from the project (drf-spectacular-sidecar), under a CSP that allows
    scripts only from this origin (an offline machine shows them; nothing unpinned runs here)."""
    import re

    page = anon_client.get(path)
    assert page.status_code == 200
    html = page.content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(source.startswith("/") for source in sources), sources
    assert not re.search(r"<script>(?!\s*</script>)", html)  # no inline script body
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert anon_client.get(sources[0]).status_code in (200, 302)


@pytest.mark.django_db
def test_admin_pages_carry_the_content_security_policy(anon_client: APIClient) -> None:
    policy = anon_client.get("/admin/login/").headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "object-src 'none'" in policy


@pytest.mark.django_db
def test_schema_is_readable_with_any_credentials(anon_client: APIClient) -> None:
    anon_client.credentials(HTTP_AUTHORIZATION="Bearer something-that-is-not-a-user-token")
    assert anon_client.get("/schema/").status_code == 200


@pytest.mark.django_db
def test_format_query_parameter_cannot_break_an_endpoint(anon_client: APIClient) -> None:
    assert anon_client.get("/healthz?format=nonsense").status_code == 200
