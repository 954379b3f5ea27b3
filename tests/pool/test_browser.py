"""Real-browser test of the task composer: Debian's chromium through Playwright against `manage.py serve`."""

from __future__ import annotations

import pytest

from pool.services import device_create, device_set_tags
from tests.factories import DEFAULT_PASSWORD
from tests.progress.conftest import admin_login, serve_platform, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

COUNT = "(n) => document.querySelector('.pool-target-count')?.dataset.count === n"


def test_the_composer_counts_the_devices_of_the_tag_being_typed(
    transactional_db, socket_dir, browser, admin, settings
) -> None:
    # The server checks the password with the platform's hashers, not the fast one of tests/pool.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    admin.set_password(DEFAULT_PASSWORD)
    admin.save()
    devices = [device_create(name=f"d{i}", validated=True)[0] for i in range(3)]
    device_set_tags(device=devices[0], tags=["greenhouse", "fw-2"])
    device_set_tags(device=devices[1], tags=["greenhouse"])
    with serve_platform(socket_dir) as base:
        page = browser.new_page()
        admin_login(page, base, admin)
        page.goto(f"{base}/admin/pool/task/add/")
        page.check("input[name=target][value=tag]")
        page.fill("input[name=tag]", "greenhouse")
        wait_until(page, COUNT, "2")
        assert page.locator(".pool-target-count").inner_text() == "2 devices match device:tag:greenhouse now."
        page.fill("input[name=tag]", "fw-2")
        wait_until(page, COUNT, "1")
        page.fill("input[name=tag]", "nothing-here")
        wait_until(page, COUNT, "0")
        page.fill("input[name=tag]", "Not A Slug")
        wait_until(page, "() => !document.querySelector('.pool-target-count').dataset.count")
        assert "slug" in page.locator(".pool-target-count").inner_text()
        page.check("input[name=target][value=all]")
        wait_until(page, COUNT, "3")
