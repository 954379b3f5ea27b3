import pytest
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


@pytest.mark.urls("tests.coordinator.urls_crash")
def test_crash_in_api_view_is_500_envelope(anon_client: APIClient, caplog: pytest.LogCaptureFixture) -> None:
    response = anon_client.get("/api/crash")
    assert response.status_code == 500
    assert_envelope(response.json(), "server_error")
    assert "boom" not in response.content.decode()
    assert any("Unhandled error" in record.message for record in caplog.records)


@pytest.mark.urls("tests.coordinator.urls_crash")
def test_crash_outside_drf_is_500_envelope() -> None:
    client = APIClient(raise_request_exception=False)
    response = client.get("/api/plain-crash")
    assert response.status_code == 500
    assert_envelope(response.json(), "server_error")


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/runs/ab%00cd", "/api/runs/ab%00cd/tasks/1", "/v1/files/a%00b", "/task/x%00y"])
def test_a_nul_in_the_path_is_a_404_envelope_not_a_database_error(anon_client: APIClient, user: User,
                                                                 path: str) -> None:
    anon_client.force_authenticate(user)
    response = anon_client.get(path)
    assert response.status_code == 404
    assert_envelope(response.json(), "not_found")


def test_a_nul_in_a_page_path_is_a_plain_404(anon_client: APIClient) -> None:
    response = anon_client.get("/admin/x%00y/")
    assert response.status_code == 404 and not response["Content-Type"].startswith("application/json")
