from types import SimpleNamespace

import pytest
from django.contrib.auth.models import AnonymousUser

from coordinator.models import Role
from coordinator.permissions import IsAdmin, IsMasterOrAdmin, IsPlatformUser, has_role
from tests.factories import UserFactory


def request_as(user: object) -> SimpleNamespace:
    return SimpleNamespace(user=user)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("role", "platform", "master_or_admin", "admin"),
    [
        (Role.USER, True, False, False),
        (Role.MASTER, True, True, False),
        (Role.ADMIN, True, True, True),
    ],
)
def test_role_permissions(role: str, platform: bool, master_or_admin: bool, admin: bool) -> None:
    request = request_as(UserFactory(role=role))
    assert IsPlatformUser().has_permission(request, None) is platform
    assert IsMasterOrAdmin().has_permission(request, None) is master_or_admin
    assert IsAdmin().has_permission(request, None) is admin


@pytest.mark.django_db
def test_inactive_user_and_non_users_are_refused() -> None:
    inactive = UserFactory(role=Role.ADMIN, is_active=False)
    device_like = SimpleNamespace(is_authenticated=True, role="admin", is_active=True)
    for who in (inactive, AnonymousUser(), device_like):
        assert not IsPlatformUser().has_permission(request_as(who), None)
        assert not IsAdmin().has_permission(request_as(who), None)


@pytest.mark.django_db
def test_has_role_factory() -> None:
    only_masters = has_role(Role.MASTER)
    assert only_masters().has_permission(request_as(UserFactory(role=Role.MASTER)), None)
    assert not only_masters().has_permission(request_as(UserFactory(role=Role.ADMIN)), None)


@pytest.mark.django_db
def test_admin_role_implies_staff_and_demotion_removes_it() -> None:
    user = UserFactory(role=Role.ADMIN)
    assert user.is_staff and user.is_superuser
    user.role = Role.USER
    user.save()
    user.refresh_from_db()
    assert not user.is_superuser
