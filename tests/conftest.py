from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from coordinator.models import Role, User
from tests.factories import UserFactory
from tests.live import run_wsgi_server


@pytest.fixture(autouse=True)
def _no_trailing_farm_events(settings: Any) -> None:
    """The farm's trailing progress events come from a thread with its own database connection,
    which cannot see a test's uncommitted rows; tests of that thread turn it back on."""
    settings.FARM_PROGRESS_TRAILING = False


# The suite signs in far more often than any one client would; the tests of the limits set their own.
UNLIMITED_CREDENTIALS = {"credentials_per_address": "100000/min", "credentials_per_account": "100000/min"}


@pytest.fixture(autouse=True)
def _credential_limits_out_of_the_way(settings: Any) -> None:
    settings.CREDENTIAL_RATES = UNLIMITED_CREDENTIALS
    settings.ANONYMOUS_JOB_RATE = "100000/min"


@pytest.fixture
def user(db: None) -> User:
    return UserFactory(role=Role.USER)


@pytest.fixture
def master(db: None) -> User:
    return UserFactory(role=Role.MASTER)


@pytest.fixture
def admin(db: None) -> User:
    return UserFactory(role=Role.ADMIN)


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


def access_token_for(user: User) -> str:
    return str(RefreshToken.for_user(user).access_token)


@pytest.fixture
def client_for() -> Callable[[User], APIClient]:
    """`client_for(user)`: an APIClient sending that user's JWT as a Bearer token."""

    def make(user: User) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token_for(user)}")
        return client

    return make


@pytest.fixture
def live_server_url(transactional_db: None) -> Iterator[str]:
    """A real granian server (tests/live.py) serving this test's database."""
    with run_wsgi_server() as base:
        yield base
