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


@pytest.fixture(scope="session", autouse=True)
def _a_clean_shared_cache() -> None:
    """The suite owns the Redis database REDIS_URL names: what an earlier run's processes left
    there (a killed cluster's last sweep, rate-limit counters) must not decide this run's answers."""
    from django.conf import settings

    if settings.REDIS_URL:
        from django.core.cache import cache

        cache.clear()


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


@pytest.fixture
def socket_dir() -> Any:
    """A short directory for UNIX sockets (paths are limited to 108 bytes)."""
    import shutil
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="prg", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser(monkeypatch: Any) -> Any:
    """A headless Debian chromium driven by Playwright (never a downloaded browser)."""
    import os

    if not os.path.exists(CHROMIUM):
        if os.environ.get("COORDINATOR_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is not installed and COORDINATOR_REQUIRE_BROWSER is set")
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are still sync.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()
            # Playwright's greenlet gives this code its own context: close the connection the test
            # opened in it, or it would outlive the test database.
            from django.db import connections

            connections.close_all()
