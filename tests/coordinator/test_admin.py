import pytest
from django.test import Client

from coordinator.models import Role, User
from tests.factories import DEFAULT_PASSWORD, UserFactory


def test_admin_login_page_renders(client: Client) -> None:
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert b"Coordinator" in response.content


@pytest.mark.django_db
def test_admin_can_log_in_and_list_users(client: Client) -> None:
    admin = UserFactory(role=Role.ADMIN)
    UserFactory(email="someone@example.com", role=Role.MASTER)
    assert client.login(username=admin.email, password=DEFAULT_PASSWORD)
    index = client.get("/admin/")
    assert index.status_code == 200
    assert b"API documentation" in index.content
    listing = client.get("/admin/coordinator/user/?role__exact=master")
    assert listing.status_code == 200
    assert b"someone@example.com" in listing.content
    assert f">{admin.email}</a></th>".encode() not in listing.content
    assert b">someone@example.com</a></th>" in listing.content
    search = client.get("/admin/coordinator/user/?q=someone")
    assert b"someone@example.com" in search.content


@pytest.mark.django_db
def test_non_admin_roles_cannot_enter_admin(client: Client) -> None:
    master = UserFactory(role=Role.MASTER)
    client.login(username=master.email, password=DEFAULT_PASSWORD)
    response = client.get("/admin/")
    assert response.status_code == 302


@pytest.mark.django_db
def test_role_action_promotes(client: Client) -> None:
    admin = UserFactory(role=Role.ADMIN)
    target = UserFactory(role=Role.USER)
    client.login(username=admin.email, password=DEFAULT_PASSWORD)
    response = client.post("/admin/coordinator/user/", {"action": "make_admin", "_selected_action": [target.pk]})
    assert response.status_code == 302
    target = User.objects.get(pk=target.pk)
    assert target.role == Role.ADMIN and target.is_staff


@pytest.mark.django_db
def test_admin_can_add_user_with_role(client: Client) -> None:
    admin = UserFactory(role=Role.ADMIN)
    client.login(username=admin.email, password=DEFAULT_PASSWORD)
    response = client.post(
        "/admin/coordinator/user/add/",
        {
            "email": "new@example.com",
            "name": "New",
            "role": "master",
            "password1": "a-long-password-1",
            "password2": "a-long-password-1",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    assert User.objects.get(email="new@example.com").role == Role.MASTER


@pytest.mark.django_db
def test_a_broken_dashboard_card_does_not_break_the_index(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    from django.apps import apps

    def broken(request: object) -> list[dict[str, object]]:
        raise RuntimeError("card failed")

    monkeypatch.setattr(apps.get_app_config("coordinator"), "admin_dashboard", broken, raising=False)
    admin = UserFactory(role=Role.ADMIN)
    client.login(username=admin.email, password=DEFAULT_PASSWORD)
    assert client.get("/admin/").status_code == 200
