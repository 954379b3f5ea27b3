from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from coordinator.models import Role, User


@pytest.mark.django_db
def test_createuser_creates_and_updates() -> None:
    call_command("createuser", "Farm@Example.com", "--role", "master", "--password", "s3cret-pass-word")
    user = User.objects.get(email="farm@example.com")
    assert user.role == Role.MASTER
    assert user.check_password("s3cret-pass-word")
    assert not user.is_staff

    call_command("createuser", "farm@example.com", "--role", "admin", "--password", "another-pass-word")
    user.refresh_from_db()
    assert user.role == Role.ADMIN and user.is_staff
    assert user.check_password("another-pass-word")
    assert User.objects.count() == 1


@pytest.mark.django_db
def test_createuser_reads_password_from_environment(settings) -> None:
    settings.COORDINATOR_PASSWORD = "from-the-environment"  # read from COORDINATOR_PASSWORD at start-up
    call_command("createuser", "env@example.com", "--role", "user")
    assert User.objects.get(email="env@example.com").check_password("from-the-environment")


@pytest.mark.django_db
def test_createuser_refuses_bad_input(settings) -> None:
    settings.COORDINATOR_PASSWORD = ""
    with pytest.raises(CommandError, match="not a valid email"):
        call_command("createuser", "not-an-email", "--password", "long-enough-pass")
    with pytest.raises(CommandError, match="too weak"):
        call_command("createuser", "weak@example.com", "--password", "123")
    with pytest.raises(CommandError, match="No password"):
        call_command("createuser", "nopass@example.com")
    assert not User.objects.exists()


@pytest.mark.django_db
def test_ensureadmin_creates_once(capsys: pytest.CaptureFixture[str], settings: Any) -> None:
    settings.COORDINATOR_ADMIN_PASSWORD = ""
    settings.COORDINATOR_ADMIN_EMAIL = "boss@example.com"
    call_command("ensureadmin")
    out = capsys.readouterr().out
    assert "Generated password" in out
    password = out.split("(shown once): ")[1].strip()
    assert User.objects.get(email="boss@example.com").check_password(password)
    call_command("ensureadmin")
    assert "nothing to do" in capsys.readouterr().out
    assert User.objects.filter(role=Role.ADMIN).count() == 1
