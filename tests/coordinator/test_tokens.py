"""One token module: each kind is refused wherever another kind is expected, and a token stops
working when its user is deactivated or deleted or their credentials change. Each test performs
the attack against the real endpoints."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import jwt
import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from coordinator.models import Role, User
from coordinator.services import user_set_role
from coordinator.tokens import (
    PlatformRefreshToken,
    TokenError,
    TokenExpiredError,
    TokenKind,
    token_issue,
    token_kind_unverified,
    token_verify,
)
from jobs.api.pytasks_auth import token_issue as pytasks_token_issue
from pool.tokens import device_token_encode
from tests.factories import DEFAULT_PASSWORD, UserFactory
from tests.progress.conftest import run, ws_connect

pytestmark = pytest.mark.django_db


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def me(client: APIClient, token: str) -> int:
    return client.get("/auth/me/", **bearer(token)).status_code


def verify(client: APIClient, token: str) -> int:
    return client.post("/auth/token/verify/", {"token": token}, format="json").status_code


def refresh(client: APIClient, token: str) -> int:
    return client.post("/auth/token/refresh/", {"refresh": token}, format="json").status_code


def protected(client: APIClient, token: str) -> int:
    return client.get("/protected", **bearer(token)).status_code


def user_tokens(user: User) -> tuple[str, str]:
    pair = PlatformRefreshToken.for_user(user)
    return str(pair.access_token), str(pair)


# --- the module itself -------------------------------------------------------------------------


def test_each_kind_verifies_only_as_itself() -> None:
    for kind in (TokenKind.DEVICE, TokenKind.FARM, TokenKind.PYTASKS):
        token = token_issue(kind, {"sub": "x"}, timedelta(minutes=5))
        assert token_kind_unverified(token) == kind
        assert token_verify(token, kind)["sub"] == "x"
        for other in set(TokenKind) - {kind}:
            with pytest.raises(TokenError):
                token_verify(token, other)


def test_expired_and_forged_tokens_are_refused() -> None:
    expired = token_issue(TokenKind.DEVICE, {}, timedelta(minutes=5), issued_at=_hours_ago(1))
    with pytest.raises(TokenExpiredError):
        token_verify(expired, TokenKind.DEVICE)
    forged = jwt.encode({"token_type": "device"}, "not-our-key-not-our-key-not-our-key", algorithm="HS256")
    with pytest.raises(TokenError):
        token_verify(forged, TokenKind.DEVICE)
    unsigned = jwt.encode({"token_type": "device"}, None, algorithm="none")
    with pytest.raises(TokenError):
        token_verify(unsigned, TokenKind.DEVICE)


def test_seed_pytasks_tokens_without_a_kind_still_verify_and_their_string_expiry_holds() -> None:
    seed = jwt.encode(
        {"allowed_tasks": {"a": True}, "exp": str(int(time.time()) + 60)}, _signing_key(), algorithm="HS256"
    )
    assert token_verify(seed, TokenKind.PYTASKS)["allowed_tasks"] == {"a": True}
    lapsed = jwt.encode({"allowed_tasks": {}, "exp": str(int(time.time()) - 1)}, _signing_key(), algorithm="HS256")
    with pytest.raises(TokenExpiredError):
        token_verify(lapsed, TokenKind.PYTASKS)
    nonsense = jwt.encode({"allowed_tasks": {}, "exp": "nan"}, _signing_key(), algorithm="HS256")
    with pytest.raises(TokenError):
        token_verify(nonsense, TokenKind.PYTASKS)


# --- other kinds where a user token is expected ------------------------------------------------


def test_a_pytasks_token_is_no_user_token(anon_client: APIClient, user: User) -> None:
    token, _ = pytasks_token_issue(user)
    assert me(anon_client, token) == 401
    assert verify(anon_client, token) == 401
    assert refresh(anon_client, token) == 401


def test_a_device_token_is_no_user_token(anon_client: APIClient) -> None:
    token, _ = device_token_encode(device_id=1)
    assert me(anon_client, token) == 401
    assert verify(anon_client, token) == 401
    assert refresh(anon_client, token) == 401


def test_a_refresh_token_is_no_access_token(anon_client: APIClient, user: User) -> None:
    access, refresh_token = user_tokens(user)
    assert me(anon_client, access) == 200
    assert me(anon_client, refresh_token) == 401
    assert refresh(anon_client, access) == 401


def test_the_websocket_refuses_tokens_of_other_kinds(user: User) -> None:
    pytasks, _ = pytasks_token_issue(user)
    device, _ = device_token_encode(device_id=1)
    _, refresh_token = user_tokens(user)

    async def body() -> None:
        for token in (pytasks, device, refresh_token):
            communicator, _, _ = await ws_connect(f"/ws/progress/?token={token}")
            assert (await communicator.receive_output(timeout=5))["code"] == 4401
            await communicator.disconnect()

    run(body)


def test_pytasks_protected_refuses_other_kinds(anon_client: APIClient, user: User) -> None:
    device, _ = device_token_encode(device_id=1)
    _, refresh_token = user_tokens(user)
    assert protected(anon_client, device) == 401
    assert protected(anon_client, refresh_token) == 401


# --- former users and changed credentials ------------------------------------------------------


def test_a_deactivated_or_deleted_users_tokens_stop_working(anon_client: APIClient) -> None:
    leaver = UserFactory(role=Role.USER)
    access, refresh_token = user_tokens(leaver)
    pytasks, _ = pytasks_token_issue(leaver)
    assert (verify(anon_client, access), refresh(anon_client, refresh_token), protected(anon_client, pytasks)) == (
        200,
        200,
        200,
    )
    leaver.is_active = False
    leaver.save()
    assert verify(anon_client, access) == 401
    assert refresh(anon_client, refresh_token) == 401
    assert protected(anon_client, pytasks) == 401
    assert protected(anon_client, access) == 401
    leaver.delete()
    assert refresh(anon_client, refresh_token) == 401
    assert protected(anon_client, pytasks) == 401


def test_a_password_change_revokes_every_token(anon_client: APIClient, user: User) -> None:
    access, refresh_token = user_tokens(user)
    pytasks, _ = pytasks_token_issue(user)
    user.set_password("a new password, long enough")
    user.save()
    assert me(anon_client, access) == 401
    assert verify(anon_client, access) == 401
    assert refresh(anon_client, refresh_token) == 401
    assert protected(anon_client, pytasks) == 401
    assert protected(anon_client, access) == 401


def test_a_role_change_revokes_pytasks_grants(anon_client: APIClient, admin: User, master: User) -> None:
    pytasks, _ = pytasks_token_issue(master)
    assert protected(anon_client, pytasks) == 200
    user_set_role(actor=admin, user=master, role=Role.USER)
    assert protected(anon_client, pytasks) == 401


def test_the_pytasks_token_endpoint_issues_tokens_that_name_their_kind(anon_client: APIClient, user: User) -> None:
    response = anon_client.generic(
        "GET", "/token", json.dumps({"user": user.email, "password": DEFAULT_PASSWORD}), content_type="application/json"
    )
    assert response.status_code == 200
    token = response.json()["token"]
    assert jwt.decode(token, options={"verify_signature": False})["token_type"] == "pytasks"
    assert protected(anon_client, token) == 200


def test_simplejwt_tokens_signed_elsewhere_with_our_key_still_need_their_kind(
    anon_client: APIClient, user: User
) -> None:
    """A token made by simplejwt's own class (as an older release issued them) is an access token like ours."""
    access = str(RefreshToken.for_user(user).access_token)
    assert me(anon_client, access) == 200


def _hours_ago(hours: int):  # type: ignore[no-untyped-def]
    from django.utils import timezone

    return timezone.now() - timedelta(hours=hours)


def _signing_key() -> str:
    from coordinator.tokens import signing_key

    return signing_key()
