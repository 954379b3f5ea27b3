from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from coordinator.models import Role, User
from farm import throttle
from farm.authentication import farm_token_for
from tests.factories import DEFAULT_PASSWORD, UserFactory


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@pytest.fixture
def fast_hashers(settings: Any) -> None:
    """In-process tests only: a cheap hasher (live servers keep the real ones)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def farm_user(db: None, fast_hashers: None) -> User:
    return UserFactory(role=Role.USER, email="test@example.com")


@pytest.fixture
def basic_client(farm_user: User) -> APIClient:
    """The seed suite's fixture: HTTP Basic with the user's login and password."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=basic(farm_user.email, DEFAULT_PASSWORD))
    return client


@pytest.fixture
def token_client_for(fast_hashers: None) -> Callable[[User], APIClient]:
    """`token_client_for(user)`: Basic with the user's farm token as username, as the client does."""

    def make(user: User) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=basic(farm_token_for(user), " "))
        return client

    return make


@pytest.fixture
def api(farm_user: User, token_client_for: Callable[[User], APIClient]) -> APIClient:
    return token_client_for(farm_user)


@pytest.fixture(autouse=True)
def _quiet_progress_windows() -> None:
    """The throttle's windows are keyed by run ids, and ids come back after a test's rollback:
    every test starts from quiet windows."""
    throttle.reset()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(throttle, "clock", fake)
    monkeypatch.setattr(throttle, "trailing_thread", False)  # the test sends the trailing events
    return fake
