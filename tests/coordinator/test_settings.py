import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests.live import ROOT


def run_settings_probe(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    base = {"DJANGO_SETTINGS_MODULE": "coordinator.settings", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", "import django; django.setup()\n" + code],
                          env={**base, **env}, cwd=ROOT, capture_output=True, text=True)


@pytest.mark.django_db
def test_settings_load_on_the_configured_database() -> None:
    engine = settings.DATABASES["default"]["ENGINE"]
    assert engine in {"django.db.backends.sqlite3", "django.db.backends.postgresql"}
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone()[0] == 1
    assert settings.TIME_ZONE == "UTC"
    assert settings.Q_CLUSTER["retry"] > settings.Q_CLUSTER["timeout"]
    assert settings.Q_CLUSTER["orm"] == "default"


def test_sqlite_is_set_up_for_concurrent_writers(tmp_path: Path) -> None:
    out = run_settings_probe(
        {"COORDINATOR_VAR_DIR": str(tmp_path), "DATABASE_URL": ""},
        "from django.db import connection\n"
        "c = connection.cursor(); c.execute('PRAGMA journal_mode'); print(c.fetchone()[0])\n"
        "c.execute('PRAGMA busy_timeout'); print(c.fetchone()[0])\n"
        "print(connection.settings_dict['OPTIONS']['transaction_mode'])",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["wal", "30000", "IMMEDIATE"]
    assert (tmp_path / "coordinator.sqlite3").exists()


def test_postgres_url_is_understood(tmp_path: Path) -> None:
    out = run_settings_probe(
        {"COORDINATOR_VAR_DIR": str(tmp_path), "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/somedb",
         "REDIS_URL": "redis://127.0.0.1:6379/3"},
        "from django.conf import settings as s\n"
        "print(s.DATABASES['default']['ENGINE'], s.DATABASES['default']['NAME'], s.CHANNEL_LAYERS['default']['BACKEND'])",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["django.db.backends.postgresql", "somedb", "channels_redis.core.RedisChannelLayer"]


def test_without_redis_the_channel_layer_is_in_process(tmp_path: Path) -> None:
    out = run_settings_probe({"COORDINATOR_VAR_DIR": str(tmp_path)},
                             "from django.conf import settings as s; print(s.CHANNEL_LAYERS['default']['BACKEND'])")
    assert out.stdout.strip() == "channels.layers.InMemoryChannelLayer"


def test_dev_secret_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    code = "from django.conf import settings as s; print(s.SECRET_KEY)"
    first = run_settings_probe({"COORDINATOR_VAR_DIR": str(tmp_path), "DJANGO_DEBUG": "1"}, code)
    second = run_settings_probe({"COORDINATOR_VAR_DIR": str(tmp_path), "DJANGO_DEBUG": "1"}, code)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == second.stdout.strip()
    assert len(first.stdout.strip()) >= 50
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_production_without_secret_key_refuses_to_start(tmp_path: Path) -> None:
    out = run_settings_probe({"COORDINATOR_VAR_DIR": str(tmp_path), "DJANGO_DEBUG": "0"}, "")
    assert out.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in out.stderr
    assert not (tmp_path / "secret_key").exists()


def test_bad_boolean_is_reported(tmp_path: Path) -> None:
    out = run_settings_probe({"COORDINATOR_VAR_DIR": str(tmp_path), "DJANGO_DEBUG": "maybe"}, "")
    assert out.returncode != 0
    assert "DJANGO_DEBUG='maybe' is not a boolean" in out.stderr


def test_cross_origin_preflight_may_carry_last_event_id(settings: object) -> None:
    from django.test import Client

    settings.CORS_ALLOWED_ORIGINS = ["http://front.example"]  # type: ignore[attr-defined]
    response = Client().options(
        "/progress/events",
        HTTP_ORIGIN="http://front.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="last-event-id",
    )
    assert response["Access-Control-Allow-Origin"] == "http://front.example"
    assert "last-event-id" in response["Access-Control-Allow-Headers"]
