import json
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from rest_framework.test import APIClient

from coordinator.models import User
from tests.factories import DEFAULT_PASSWORD
from tests.live import ROOT


@pytest.mark.django_db
def test_obtain_refresh_verify_and_use(anon_client: APIClient, user: User) -> None:
    response = anon_client.post("/auth/token/", {"email": user.email, "password": DEFAULT_PASSWORD}, format="json")
    assert response.status_code == 200
    tokens = response.json()
    assert set(tokens) == {"access", "refresh"}
    assert jwt.get_unverified_header(tokens["access"])["alg"] == "HS256"

    assert anon_client.post("/auth/token/verify/", {"token": tokens["access"]}, format="json").status_code == 200

    refreshed = anon_client.post("/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
    assert refreshed.status_code == 200
    new_access = refreshed.json()["access"]

    anon_client.credentials(HTTP_AUTHORIZATION=f"Bearer {new_access}")
    me = anon_client.get("/auth/me/")
    assert me.status_code == 200
    assert me.json()["email"] == user.email
    assert me.json()["role"] == "user"


@pytest.mark.django_db
def test_email_login_is_case_insensitive(anon_client: APIClient, user: User) -> None:
    response = anon_client.post(
        "/auth/token/", {"email": user.email.upper(), "password": DEFAULT_PASSWORD}, format="json"
    )
    assert response.status_code == 200


@pytest.mark.django_db
def test_refresh_token_is_not_an_access_token(anon_client: APIClient, user: User) -> None:
    tokens = anon_client.post("/auth/token/", {"email": user.email, "password": DEFAULT_PASSWORD}, format="json").json()
    anon_client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['refresh']}")
    assert anon_client.get("/auth/me/").status_code == 401


@pytest.mark.django_db
def test_forged_token_is_refused(anon_client: APIClient, user: User) -> None:
    forged = jwt.encode({"user_id": user.pk, "token_type": "access", "exp": 4102444800, "jti": "x"}, "wrong-key")
    assert anon_client.post("/auth/token/verify/", {"token": forged}, format="json").status_code == 401
    anon_client.credentials(HTTP_AUTHORIZATION=f"Bearer {forged}")
    assert anon_client.get("/auth/me/").status_code == 401


def test_hs256_uses_the_secret_key() -> None:
    assert settings.SIMPLE_JWT["ALGORITHM"] == "HS256"
    assert settings.SIMPLE_JWT["SIGNING_KEY"] == settings.SECRET_KEY


RS256_PROBE = """
import json, django
django.setup()
from django.conf import settings
from coordinator.tokens import PlatformAccessToken, TokenKind, token_issue, token_verify
token = PlatformAccessToken()
token["user_id"] = 1
PlatformAccessToken(str(token))  # verified with the public key
device = token_issue(TokenKind.DEVICE, {"sub": "d1"})
print(json.dumps({"alg": settings.SIMPLE_JWT["ALGORITHM"], "token": str(token), "device": device,
                  "device_sub": token_verify(device, TokenKind.DEVICE)["sub"]}))
"""


def test_rs256_when_keys_are_configured(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "private.pem").write_bytes(private_pem)
    # One key given as a file path, the other as PEM text: both forms are accepted.
    env = {
        "DJANGO_SETTINGS_MODULE": "coordinator.settings",
        "JWT_PRIVATE_KEY": str(tmp_path / "private.pem"),
        "JWT_PUBLIC_KEY": public_pem.decode(),
        "COORDINATOR_VAR_DIR": str(settings.VAR_DIR),
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [sys.executable, "-c", RS256_PROBE], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["alg"] == "RS256"
    assert result["device_sub"] == "d1"
    assert jwt.decode(result["device"], public_pem, algorithms=["RS256"])["token_type"] == "device"
    assert jwt.get_unverified_header(result["token"])["alg"] == "RS256"
    # The token really is signed by that private key: the public key verifies it.
    claims = jwt.decode(result["token"], public_pem, algorithms=["RS256"])
    assert claims["user_id"] == 1


def test_only_one_rs256_key_refuses_to_start() -> None:
    env = {
        "DJANGO_SETTINGS_MODULE": "coordinator.settings",
        "JWT_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----x",
        "COORDINATOR_VAR_DIR": str(settings.VAR_DIR),
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode != 0
    assert "JWT_PUBLIC_KEY" in out.stderr
