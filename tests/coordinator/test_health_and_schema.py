from unittest import mock

import pytest
import yaml
from django.core.management import call_command
from django.db import OperationalError
from rest_framework.test import APIClient


@pytest.mark.django_db
def test_healthz_ok(anon_client: APIClient) -> None:
    response = anon_client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


@pytest.mark.django_db
def test_healthz_503_when_database_is_down(anon_client: APIClient) -> None:
    with mock.patch("django.db.backends.utils.CursorWrapper.execute", side_effect=OperationalError("down")):
        response = anon_client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["code"] == "database_unavailable"


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
def test_schema_is_readable_with_any_credentials(anon_client: APIClient) -> None:
    anon_client.credentials(HTTP_AUTHORIZATION="Bearer something-that-is-not-a-user-token")
    assert anon_client.get("/schema/").status_code == 200


@pytest.mark.django_db
def test_format_query_parameter_cannot_break_an_endpoint(anon_client: APIClient) -> None:
    assert anon_client.get("/healthz?format=nonsense").status_code == 200
