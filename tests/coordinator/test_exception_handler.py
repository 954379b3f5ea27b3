import logging
from collections.abc import Iterator

import pytest
from django.core.signals import got_request_exception
from rest_framework.test import APIClient

from coordinator.models import User


def assert_envelope(body: dict, code: str) -> None:
    assert set(body) == {"code", "message", "extra"}
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["extra"], dict)


@pytest.mark.django_db
def test_validation_error_lists_fields(anon_client: APIClient) -> None:
    response = anon_client.post("/auth/token/", {}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert_envelope(body, "validation_error")
    assert set(body["extra"]["fields"]) == {"email", "password"}


@pytest.mark.django_db
def test_malformed_json_is_a_400_envelope(anon_client: APIClient) -> None:
    response = anon_client.post("/auth/token/", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert_envelope(response.json(), "parse_error")


@pytest.mark.django_db
def test_missing_credentials_is_401_with_challenge(anon_client: APIClient) -> None:
    response = anon_client.get("/auth/me/")
    assert response.status_code == 401
    assert_envelope(response.json(), "not_authenticated")
    assert "Bearer" in response["WWW-Authenticate"]


@pytest.mark.django_db
def test_bad_token_keeps_simplejwt_code(anon_client: APIClient) -> None:
    anon_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    response = anon_client.get("/auth/me/")
    assert response.status_code == 401
    body = response.json()
    assert_envelope(body, "token_not_valid")
    assert body["extra"]["messages"]


@pytest.mark.django_db
def test_wrong_password_is_401_envelope(anon_client: APIClient, user: User) -> None:
    response = anon_client.post("/auth/token/", {"email": user.email, "password": "wrong-password"}, format="json")
    assert response.status_code == 401
    assert_envelope(response.json(), "no_active_account")


def test_unknown_api_path_is_404_envelope(anon_client: APIClient) -> None:
    response = anon_client.get("/api/does-not-exist")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert_envelope(response.json(), "not_found")


def test_non_api_path_keeps_html_404(anon_client: APIClient) -> None:
    response = anon_client.get("/no-such-page/")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


@pytest.mark.django_db
def test_wrong_method_is_405_envelope(anon_client: APIClient) -> None:
    response = anon_client.delete("/healthz")
    assert response.status_code == 405
    assert_envelope(response.json(), "method_not_allowed")


@pytest.fixture
def request_errors() -> Iterator[tuple[list[logging.LogRecord], list[object]]]:
    """What Django's error path reports: records on `django.request` and `got_request_exception`."""
    records: list[logging.LogRecord] = []
    signalled: list[object] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    def receiver(sender: object, request: object = None, **kwargs: object) -> None:
        signalled.append(request)

    handler = Keep(level=logging.ERROR)
    logging.getLogger("django.request").addHandler(handler)
    got_request_exception.connect(receiver)
    yield records, signalled
    got_request_exception.disconnect(receiver)
    logging.getLogger("django.request").removeHandler(handler)


@pytest.mark.urls("tests.coordinator.urls_crash")
@pytest.mark.parametrize("path", ["/api/crash", "/api/plain-crash"])
def test_a_crash_is_logged_by_django_and_answered_with_the_envelope(request_errors, path: str) -> None:
    records, signalled = request_errors
    response = APIClient(raise_request_exception=False).get(path)
    assert response.status_code == 500
    assert_envelope(response.json(), "server_error")
    assert "boom" not in response.content.decode()
    assert [record.exc_info[1].args for record in records if record.exc_info] == [
        ("boom",) if path == "/api/crash" else ("plain boom",)
    ]
    assert len(signalled) == 1


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/runs/ab%00cd", "/api/runs/ab%00cd/tasks/1", "/v1/files/a%00b", "/task/x%00y"])
def test_a_nul_in_the_path_is_a_404_envelope_not_a_database_error(
    anon_client: APIClient, user: User, path: str
) -> None:
    anon_client.force_authenticate(user)
    response = anon_client.get(path)
    assert response.status_code == 404
    assert_envelope(response.json(), "not_found")


def test_a_nul_in_a_page_path_is_a_plain_404(anon_client: APIClient) -> None:
    response = anon_client.get("/admin/x%00y/")
    assert response.status_code == 404 and not response["Content-Type"].startswith("application/json")


def test_a_nul_in_a_page_query_is_a_plain_400(anon_client: APIClient) -> None:
    response = anon_client.get("/admin/jobs/job/?type=%00")
    assert response.status_code == 400 and not response["Content-Type"].startswith("application/json")


@pytest.mark.django_db
def test_a_redis_outage_is_a_503_with_retry_after_not_a_500(anon_client: APIClient, user: User) -> None:
    from django.test import override_settings

    from tests.live import free_port

    gone = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        }
    }
    with override_settings(CACHES=gone):
        anon_client.raise_request_exception = False
        response = anon_client.post("/auth/token/", {"email": user.email, "password": "x" * 12}, format="json")
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert_envelope(response.json(), "shared_cache_unavailable")
