from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from pool.models import Device
from pool.services import device_create
from pool.tokens import device_token_encode


@pytest.fixture(autouse=True)
def _fast_hashers(settings: Any) -> None:
    # Device secrets use the real hashers in production; tests need not pay PBKDF2 each time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def make_device(db: None) -> Callable[..., Device]:
    def make(name: str = "dev", kind: str = "sensor", validated: bool = True, enabled: bool = True) -> Device:
        device, secret = device_create(name=name, kind=kind, validated=validated)
        if not enabled:
            Device.objects.filter(pk=device.pk).update(enabled=False)
            device.refresh_from_db()
        device.secret = secret  # type: ignore[attr-defined]
        return device

    return make


@pytest.fixture
def device(make_device: Callable[..., Device]) -> Device:
    return make_device("d1")


def device_client(device: Device) -> APIClient:
    client = APIClient()
    token, _ = device_token_encode(device_id=device.pk)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def client_for_device() -> Callable[[Device], APIClient]:
    return device_client
