import ast
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests.live import ROOT


def run_settings_probe(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    base = {"DJANGO_SETTINGS_MODULE": "coordinator.settings", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + code],
        env={**base, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


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
        {
            "COORDINATOR_VAR_DIR": str(tmp_path),
            "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/somedb",
            "REDIS_URL": "redis://127.0.0.1:6379/3",
        },
        "from django.conf import settings as s\n"
        "print(s.DATABASES['default']['ENGINE'], s.DATABASES['default']['NAME'], s.CHANNEL_LAYERS['default']['BACKEND'])",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["django.db.backends.postgresql", "somedb", "channels_redis.core.RedisChannelLayer"]


def test_without_redis_the_channel_layer_is_in_process(tmp_path: Path) -> None:
    out = run_settings_probe(
        {"COORDINATOR_VAR_DIR": str(tmp_path)},
        "from django.conf import settings as s; print(s.CHANNEL_LAYERS['default']['BACKEND'])",
    )
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


def _variables_read_by_settings() -> set[str]:
    """The names passed to the `env_*` helpers in coordinator/settings.py."""
    tree = ast.parse((ROOT / "coordinator" / "settings.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id.startswith("env_")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(node.args[0].value)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_pem":
            names.add(node.args[0].value)
    return names


def _variables_in_env_example() -> list[str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return [line.split("=", 1)[0] for line in lines if line and not line.startswith("#")]


def test_env_example_lists_exactly_what_settings_read() -> None:
    listed = _variables_in_env_example()
    assert len(listed) == len(set(listed)), "a variable is listed twice"
    assert set(listed) == _variables_read_by_settings()


def test_each_variable_in_env_example_has_its_comment_line() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    for index, line in enumerate(lines):
        if line and not line.startswith("#"):
            previous = lines[index - 1]
            assert previous.startswith("# ") or _is_pair(lines, index), f"{line} has no comment"


def _is_pair(lines: list[str], index: int) -> bool:
    # JWT_PRIVATE_KEY / JWT_PUBLIC_KEY share one comment line.
    return index >= 2 and not lines[index - 1].startswith("#") and lines[index - 2].startswith("# ")


def test_only_settings_read_the_environment() -> None:
    """Apps read django.conf.settings; the one exception is the stand-alone progress client, which
    runs in other programs (without Django) and finds the socket from their environment. Handing
    the whole environment on to child processes (`dict(os.environ)`) reads no setting."""
    readers = []
    for package in ("coordinator", "pool", "farm", "jobs", "progress", "webhooks"):
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT).as_posix()
            if relative in {"coordinator/settings.py", "progress/client.py"} or "/migrations/" in relative:
                continue
            text = path.read_text()
            tree = ast.parse(text)
            handed_on = {
                id(call.args[0])
                for call in ast.walk(tree)
                if isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id == "dict"
                and len(call.args) == 1
            }
            for node in ast.walk(tree):
                if id(node) in handed_on:
                    continue
                if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv"}:
                    if isinstance(node.value, ast.Name) and node.value.id == "os":
                        line = text.splitlines()[node.lineno - 1]
                        if "DJANGO_SETTINGS_MODULE" not in line:
                            readers.append(f"{relative}:{node.lineno}")
    assert readers == []


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("Q_WORKERS", "two", "Q_WORKERS='two' is not a whole number"),
        ("FARM_LEASE_SECONDS", "0", "FARM_LEASE_SECONDS='0' must be at least 1"),
        ("JOBS_STALE_SECONDS", "nan", "JOBS_STALE_SECONDS='nan' must be a finite number"),
        ("LOG_LEVEL", "chatty", "LOG_LEVEL='chatty' is not one of DEBUG"),
    ],
)
def test_bad_values_stop_start_up_naming_the_variable(tmp_path: Path, variable: str, value: str, message: str) -> None:
    out = run_settings_probe({"COORDINATOR_VAR_DIR": str(tmp_path), variable: value}, "")
    assert out.returncode != 0
    assert message in out.stderr


def test_retry_shorter_than_timeout_is_refused(tmp_path: Path) -> None:
    out = run_settings_probe({"COORDINATOR_VAR_DIR": str(tmp_path), "Q_TIMEOUT": "600", "Q_RETRY": "60"}, "")
    assert out.returncode != 0
    assert "Q_RETRY=60 must be longer than Q_TIMEOUT=600" in out.stderr


def test_the_wsgi_application_keeps_no_secret_in_the_environment_requests_are_built_from() -> None:
    """granian copies the process environment into every request's environ (request.META): once
    settings hold the secrets, the WSGI module drops them from it."""
    import subprocess
    import sys

    from tests.live import ROOT, server_env

    env = server_env(COORDINATOR_ADMIN_PASSWORD="an-admin-secret-1", JWT_PRIVATE_KEY="")
    probe = (
        "import os, coordinator.wsgi; from django.conf import settings; "
        "print(sorted(k for k in settings.SECRET_ENVIRONMENT if k in os.environ))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert "DJANGO_SECRET_KEY" in env and "DATABASE_URL" in env  # they were there to start with
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
