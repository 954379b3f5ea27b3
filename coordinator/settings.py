"""Coordinator settings: one file, driven by environment variables.

Every variable is listed with a comment in `.env.example`. The defaults give the embedded setup
(SQLite under `var/`, no services); production sets `DATABASE_URL`, `REDIS_URL` and
`DJANGO_SECRET_KEY`.
"""

from __future__ import annotations

import ipaddress
import math
import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from corsheaders.defaults import default_headers
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


# The only place that reads the environment. Each helper names the variable and what it accepts
# when a value is wrong, so a bad deployment fails at start-up instead of at the first request.
def env_str(name: str, default: str) -> str:
    """A text variable; unset or blank gives the default."""
    raw = os.environ.get(name, "").strip()
    return raw or default


def env_bool(name: str, default: bool) -> bool:
    """A boolean variable ("1/true/yes/on" vs "0/false/no/off")."""
    raw = env_str(name, "")
    if not raw:
        return default
    value = raw.lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off).")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    """A whole number, optionally at least `minimum`."""
    raw = env_str(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number.") from exc
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be at least {minimum}.")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    """A number of seconds or similar, optionally at least `minimum`."""
    raw = env_str(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from exc
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        raise ImproperlyConfigured(f"{name}={raw!r} must be a finite number of at least {minimum}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    """A comma-separated list."""
    raw = env_str(name, "")
    if not raw:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def forget_secret_environment() -> None:
    """Drop SECRET_ENVIRONMENT from this process's environment (settings already hold the values)."""
    for name in SECRET_ENVIRONMENT:
        os.environ.pop(name, None)


def env_rate(name: str, default: str) -> str:
    """A rate such as `30/min` (a count per s, min, hour or day), as DRF's throttles read it."""
    raw = env_str(name, default)
    count, _, period = raw.partition("/")
    if not count.isdigit() or period not in ("s", "sec", "second", "m", "min", "minute", "h", "hour", "d", "day"):
        raise ImproperlyConfigured(f"{name}={raw!r}: expected a count per period, such as 30/min or 1000/hour.")
    return raw


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """One word out of `choices`, matched without regard to case."""
    raw = env_str(name, default)
    for choice in choices:
        if raw.lower() == choice.lower():
            return choice
    raise ImproperlyConfigured(f"{name}={raw!r} is not one of {', '.join(choices)}.")


def env_path(name: str, default: Path | None) -> Path | None:
    """A file-system path (`~` expanded); unset gives the default."""
    raw = env_str(name, "")
    return Path(raw).expanduser().resolve() if raw else default


# Runtime state (SQLite file, generated dev key, sockets, exports) lives here.
VAR_DIR = env_path("COORDINATOR_VAR_DIR", None) or (BASE_DIR / "var").resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)  # the database, sockets, exports: private

DEBUG = env_bool("DJANGO_DEBUG", True)


def _secret_key() -> str:
    configured = env_str("DJANGO_SECRET_KEY", "")
    if configured:
        return configured
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set and DJANGO_DEBUG is off. Refusing to start without a "
            "secret key: set DJANGO_SECRET_KEY to a long random string (for example the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`)."
        )
    # Development: generate one key once and keep it, so sessions and tokens survive restarts.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "coordinator.apps.CoordinatorAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "corsheaders",
    "channels",
    "coordinator",
    "pool",
    "farm",
    "jobs",
    "progress",
    "webhooks",
    # After jobs: its `qcluster` (django-q2's, plus `--queue`) takes the name's place.
    "django_q",
    "django_tasks",
]

MIDDLEWARE = [
    # Outermost: every answer is counted and timed, the ones the layers below make themselves too.
    "coordinator.middleware.HttpMetricsMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "coordinator.middleware.ApiErrorEnvelopeMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # The front door's question before it reads a large body (coordinator/admission.py).
    "coordinator.admission.AdmissionMiddleware",
    "coordinator.middleware.AuditMiddleware",
    "progress.middleware.LiveCoverageMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
]

# Content-Security-Policy on every answer (django-csp): scripts only from this origin, so markup
# injected into an admin or docs page cannot run. Inline style attributes stay allowed (the admin's
# and our progress widgets'); Redoc renders its search in a blob: worker.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "worker-src": ["'self'", "blob:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

ROOT_URLCONF = "coordinator.urls"
WSGI_APPLICATION = "coordinator.wsgi.application"
ASGI_APPLICATION = "coordinator.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DEFAULT_SQLITE_PATH = VAR_DIR / "coordinator.sqlite3"
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{DEFAULT_SQLITE_PATH}")
# Test databases are per test run (the pytest process's id), so that several runs on one machine
# never share one; the servers a test starts are handed the test database's URL itself.
TEST_DB_SUFFIX = str(os.getpid())
# Health checks cost a `SELECT 1` round trip at the start of every request; off by default (a
# connection broken by a database restart then fails one request per worker and is replaced).
_database: dict[str, Any] = dict(
    dj_database_url.parse(DATABASE_URL, conn_health_checks=env_bool("DATABASE_CONN_HEALTH_CHECKS", False))
)
if _database["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (WSGI workers, daphne, django-q2, the socket listener) write to one file.
    # WAL lets readers run beside the single writer, IMMEDIATE takes the write lock at BEGIN so
    # two transactions never deadlock upgrading read locks, and the timeout makes writers queue
    # instead of failing with "database is locked".
    _database["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
    }
    # A file, not ":memory:", so the processes started by concurrency tests share the test DB.
    _database["TEST"] = {"NAME": str(VAR_DIR / f"test_coordinator_{TEST_DB_SUFFIX}.sqlite3")}
else:
    _database["TEST"] = {"NAME": f"test_{_database['NAME']}_{TEST_DB_SUFFIX}"}
# Persistent connections: each WSGI worker (granian, one Python thread) keeps its connection between requests.
_database["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
DATABASES = {"default": _database}
IS_POSTGRES = _database["ENGINE"] == "django.db.backends.postgresql"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis and Channels ---------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL", "")
# One cache for every process (rate-limit counters must be shared): Redis in production, a
# database table on the embedded default (created by `migrate`, coordinator migration 0002).
if REDIS_URL:
    CACHES: dict[str, Any] = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "coordinator_cache"}}
if REDIS_URL:
    CHANNEL_LAYERS: dict[str, Any] = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Users and authentication ---------------------------------------------------------------
AUTH_USER_MODEL = "coordinator.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "admin:login"


def _pem(name: str) -> str:
    """A PEM key given either as the text itself or as a path to a file holding it."""
    raw = env_str(name, "")
    if not raw:
        return ""
    if raw.startswith("-----BEGIN"):
        return raw.replace("\\n", "\n")
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ImproperlyConfigured(f"{name} is neither PEM text nor the path of a readable file: {raw!r}")
    return path.read_text()


# Variables holding secrets. The WSGI server copies the process environment into every request's
# environ (request.META, error reports), so coordinator/wsgi.py drops these once settings hold them
# (`forget_secret_environment`).
SECRET_ENVIRONMENT = (
    "DJANGO_SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "JWT_PRIVATE_KEY",
    "COORDINATOR_ADMIN_PASSWORD",
    "COORDINATOR_PASSWORD",
    "METRICS_TOKEN",
    "WEBHOOKS_SECRET_KEYS",
)
JWT_PRIVATE_KEY = _pem("JWT_PRIVATE_KEY")
JWT_PUBLIC_KEY = _pem("JWT_PUBLIC_KEY")
if bool(JWT_PRIVATE_KEY) != bool(JWT_PUBLIC_KEY):
    raise ImproperlyConfigured("Set both JWT_PRIVATE_KEY and JWT_PUBLIC_KEY for RS256, or neither for HS256.")
JWT_ALGORITHM = "RS256" if JWT_PRIVATE_KEY else "HS256"
JWT_SIGNING_KEY = JWT_PRIVATE_KEY or SECRET_KEY
JWT_VERIFYING_KEY = JWT_PUBLIC_KEY or ""

SIMPLE_JWT = {
    "ALGORITHM": JWT_ALGORITHM,
    "SIGNING_KEY": JWT_SIGNING_KEY,
    "VERIFYING_KEY": JWT_VERIFYING_KEY or None,
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_int("JWT_ACCESS_MINUTES", 60, minimum=1)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("JWT_REFRESH_DAYS", 7, minimum=1)),
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "user_id",
    "UPDATE_LAST_LOGIN": False,
    # Only our access tokens, checked for their kind before anything else (coordinator/tokens.py).
    "AUTH_TOKEN_CLASSES": ("coordinator.tokens.PlatformAccessToken",),
    # A password change revokes the user's tokens (a digest of the password hash in each token).
    "CHECK_REVOKE_TOKEN": True,
}

REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Deny by default: every view states who may call it.
    "DEFAULT_PERMISSION_CLASSES": ["coordinator.permissions.IsPlatformUser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "coordinator.api.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "coordinator.api.pagination.DefaultPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "coordinator.api.exception_handler.envelope_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # `?format=` would let any client turn an answer into a 404 by naming an unknown renderer;
    # clients choose the representation with the Accept header instead.
    "URL_FORMAT_OVERRIDE": None,
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")

SPECTACULAR_SETTINGS = {
    "TITLE": "Coordinator API",
    "DESCRIPTION": (
        "One platform for device task pools, task farms, background jobs and live progress. "
        "Our own endpoints answer errors with the envelope {code, message, extra}; the seed "
        "dialects (taskfarm `/api/`, pytasks, BookLogr `/v1`) keep the shapes their clients expect."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema is public: any caller (a device, a farm worker with Basic auth) may read it.
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "COMPONENT_SPLIT_REQUEST": True,
    "SECURITY": [{"jwtAuth": []}],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Named enums where several apps have a field called `state`.
    "ENUM_NAME_OVERRIDES": {
        "PoolTaskStateEnum": "pool.models.TaskState",
        "PoolDeliveryStateEnum": "pool.models.DeliveryState",
        "PoolMessageTypeEnum": "pool.models.MessageType",
    },
}

# --- API paths ------------------------------------------------------------------------------
# Paths answered by API code: errors there are JSON envelopes, never HTML pages.
API_PATH_PREFIXES = [
    "/api/",
    "/auth/",
    "/pool/",
    "/v1/",
    "/task",
    "/token",
    "/protected",
    "/ping",
    "/progress/",
    "/webhooks/",
    "/healthz",
    "/schema/",
]
# Paths served by the ASGI server (daphne) rather than the WSGI server.
ASGI_PATH_PREFIXES = ["/ws/", "/progress/events", "/pool/events"]

# --- CORS (the seed's SSE front-end is served from another origin) --------------------------
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", [])
CORS_ALLOW_ALL_ORIGINS = env_bool("CORS_ALLOW_ALL_ORIGINS", False)
CORS_URLS_REGEX = r"^/(progress|api|pool|v1|auth)/.*$"
# EventSource resends the last event id on reconnect; a cross-origin reader must be allowed to.
CORS_ALLOW_HEADERS = (*default_headers, "last-event-id")

# --- django-q2 ------------------------------------------------------------------------------
Q_CLUSTER: dict[str, Any] = {
    "name": "coordinator",
    "orm": "default",
    "workers": env_int("Q_WORKERS", 2, minimum=1),
    # A task is killed after `timeout` seconds; the broker re-delivers an unacknowledged task
    # after `retry` seconds, which must be longer or a running task would be handed out twice.
    "timeout": env_int("Q_TIMEOUT", 600, minimum=1),
    "retry": env_int("Q_RETRY", 660, minimum=2),
    "max_attempts": 1,
    "catch_up": False,
    "save_limit": 1000,
    "poll": 0.5,
    "label": "Django Q2",
    # jobs: the ORM broker that waits on PostgreSQL LISTEN/NOTIFY (plain ORM polling on SQLite).
    "broker_class": "jobs.broker.ListenNotifyBroker",
    # django-q2 reads this whenever Q_CLUSTER_NAME names a cluster (a job queue, docs/jobs.md).
    "ALT_CLUSTERS": {},
}
# Django's tasks interface (django-tasks, the backport of Django 6's django.tasks): `@task`
# functions run as Coordinator jobs (docs/jobs.md). No queue list: any valid queue name.
TASKS: dict[str, Any] = {"default": {"BACKEND": "jobs.backend.CoordinatorBackend", "QUEUES": []}}
if Q_CLUSTER["retry"] <= Q_CLUSTER["timeout"]:
    raise ImproperlyConfigured(
        f"Q_RETRY={Q_CLUSTER['retry']} must be longer than Q_TIMEOUT={Q_CLUSTER['timeout']}: a job still "
        "running when its re-delivery is due would be handed out twice."
    )

# --- Internationalisation, time, static -----------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# The WSGI server (granian) serves the admin's static files through WhiteNoise; with the finders on, no
# collectstatic step is needed (production may still run it for cached, compressed files).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# Request bodies: large enough for JSONL imports, small enough that a client cannot exhaust memory.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 10 * 1024 * 1024, minimum=1024)

# --- Serving (`manage.py serve`) ------------------------------------------------------------
SERVE_WSGI_WORKERS = env_int("WEB_CONCURRENCY", os.cpu_count() or 2, minimum=1)
SERVE_HOST = env_str("COORDINATOR_HOST", "127.0.0.1")
SERVE_PORT = env_int("COORDINATOR_PORT", 8000, minimum=1)
RUN_DIR = VAR_DIR / "run"
# /healthz names a directory the platform writes to (exports, the day log) `full` below this much free space.
HEALTH_LOW_DISK_BYTES = env_int("HEALTH_LOW_DISK_BYTES", 50 * 1024 * 1024, minimum=0)

LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {
        # The farm lease sweep and the dashboard minute run every minute: routine lines DEBUG, failures ERROR.
        "routine_schedules": {
            "()": "coordinator.log_filters.RoutineScheduleFilter",
            "markers": [
                "farm.services.leases_expire",
                "farm: return expired leases",
                "coordinator.services.operations_record",
                "coordinator: dashboard minute",
            ],
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
        "django-q": {"filters": ["routine_schedules"]},
    },
}

# --- Quick start (`./dev up`, `manage.py ensureadmin`, `manage.py createuser`) ------------------
COORDINATOR_ADMIN_EMAIL = env_str("COORDINATOR_ADMIN_EMAIL", "admin@example.com").lower()
COORDINATOR_ADMIN_PASSWORD = env_str("COORDINATOR_ADMIN_PASSWORD", "")
COORDINATOR_PASSWORD = env_str("COORDINATOR_PASSWORD", "")

# --- Device task pool (pool) --------------------------------------------------------------------
POOL_JOURNAL_DIR = env_path("POOL_JOURNAL_DIR", None)
# The day log counts as behind (/healthz, the admin) when a committed message waited longer than this.
POOL_JOURNAL_BEHIND_SECONDS = env_float("POOL_JOURNAL_BEHIND_SECONDS", 60.0, minimum=1.0)
POOL_DEVICE_TOKEN_MINUTES = env_int("POOL_DEVICE_TOKEN_MINUTES", 24 * 60, minimum=1)
POOL_ONLINE_SECONDS = env_int("POOL_ONLINE_SECONDS", 120, minimum=1)

# --- Credential rate limits (coordinator/throttling.py) ---------------------------------------
# Proxies in front of the web processes that append the client's address to X-Forwarded-For: the
# embedded front door, or nginx with `--behind-proxy`. The limits count the address the nearest
# proxy saw; entries a client wrote itself further left are ignored.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 1, minimum=0)
REST_FRAMEWORK["NUM_PROXIES"] = TRUSTED_PROXY_COUNT
# Token endpoints, farm Basic passwords, device tokens and enrolment, and the admin's sign-in.
CREDENTIAL_RATES = {
    "credentials_per_address": env_rate("CREDENTIAL_RATE_PER_ADDRESS", "30/min"),
    "credentials_per_account": env_rate("CREDENTIAL_RATE_PER_ACCOUNT", "10/min"),
}
# Job submissions without credentials (pytasks' anonymous jobs), per client address.
ANONYMOUS_JOB_RATE = env_rate("ANONYMOUS_JOB_RATE", "60/min")

# --- Task farm (farm) ---------------------------------------------------------------------------
FARM_LEASE_SECONDS = env_int("FARM_LEASE_SECONDS", 3600, minimum=1)
FARM_BATCH_MAX = env_int("FARM_BATCH_MAX", 1000, minimum=1)
FARM_MAX_ATTEMPTS = env_int("FARM_MAX_ATTEMPTS", 3, minimum=1)
# Least seconds between two `msg` events of one run from one server process (tests set 0).
FARM_PROGRESS_INTERVAL = 0.5
# Send a run's last change inside a throttled window when the window closes.
FARM_PROGRESS_TRAILING = True

# --- Background jobs (jobs) ---------------------------------------------------------------------
EXPORT_ROOT = env_path("EXPORT_ROOT", None) or VAR_DIR / "exports"
JOBS_DEFAULT_TIMEOUT = env_int("JOBS_DEFAULT_TIMEOUT", 300, minimum=1)
JOBS_STALE_SECONDS = env_float("JOBS_STALE_SECONDS", 30.0, minimum=1.0)
# `serve`'s watchdog restarts its job cluster when jobs have been due this long while no worker
# takes any (a healthy cluster with an idle worker takes one within a second or two).
JOBS_STALL_SECONDS = env_float("JOBS_STALL_SECONDS", 15.0, minimum=5.0)
JOBS_TOKEN_EXPIRE_SEC = env_int("JOBS_TOKEN_EXPIRE_SEC", 3600, minimum=0)
JOBS_UPLOAD_MAX_BYTES = env_int("JOBS_UPLOAD_MAX_BYTES", 100 * 1024 * 1024, minimum=1)
JOBS_EXTRA_MODULES = env_list("JOBS_EXTRA_MODULES", [])
JOBS_EXAMPLE_PACK = env_bool("JOBS_EXAMPLE_PACK", True)
# Retention: finished jobs (with their attempts) and export/upload files are pruned after this.
JOBS_KEEP_DAYS = env_float("JOBS_KEEP_DAYS", 30.0, minimum=0.01)
JOBS_FILES_KEEP_DAYS = env_float("JOBS_FILES_KEEP_DAYS", 7.0, minimum=0.01)
# Schedules one user may own: each starts jobs by itself until deleted.
SCHEDULES_PER_OWNER = env_int("SCHEDULES_PER_OWNER", 50, minimum=1)
# The shortest interval of a schedule, as a cron's minute: with the cap, at most 50 jobs a minute
# from one user's schedules (one-second schedules let a user start 50 exports a second for good).
SCHEDULES_MIN_INTERVAL_SECONDS = env_int("SCHEDULES_MIN_INTERVAL_SECONDS", 60, minimum=1)

# --- Live progress (progress) -------------------------------------------------------------------
PROGRESS_PUBLIC = env_bool("PROGRESS_PUBLIC", False)
PROGRESS_SOCKET = env_path("PROGRESS_SOCKET", None) or RUN_DIR / "progress.sock"
PROGRESS_STREAM_SOCKET = env_path("PROGRESS_STREAM_SOCKET", None) or RUN_DIR / "progress-stream.sock"
PROGRESS_MAX_STREAMS = env_int("PROGRESS_MAX_STREAMS", 1000, minimum=1)
# Open SSE streams and WebSockets one signed-in user may hold at once, across all ASGI processes.
PROGRESS_STREAMS_PER_USER = env_int("PROGRESS_STREAMS_PER_USER", 20, minimum=1)
PROGRESS_RETENTION_SECONDS = env_float("PROGRESS_RETENTION_SECONDS", 3600.0, minimum=1.0)

# --- Webhooks (webhooks) --------------------------------------------------------------------------
# Allow webhook URLs on loopback, private, link-local and other non-public addresses (1/0). Off:
# refused at subscription and again at every delivery, after resolving the host name.
WEBHOOKS_ALLOW_PRIVATE = env_bool("WEBHOOKS_ALLOW_PRIVATE", False)
# Keys the webhooks' signing secrets are encrypted under (webhooks/sealing.py), comma-separated:
# the first seals, all unseal (put a new key first, keep the old one until its secrets are
# rotated). Default: DJANGO_SECRET_KEY.
WEBHOOKS_SECRET_KEYS = env_list("WEBHOOKS_SECRET_KEYS", []) or [SECRET_KEY]
# Webhooks one user may own: every event is queued once per matching webhook, in the publisher's
# transaction, so an unbounded number would let one user flood the job queue and a third party.
WEBHOOKS_PER_OWNER = env_int("WEBHOOKS_PER_OWNER", 25, minimum=1)

# --- Metrics for Prometheus (`GET /metrics`, coordinator/metrics.py) ------------------------------
# Never public: a scraper sends `Authorization: Bearer <METRICS_TOKEN>`, or scrapes from an address
# (or network, CIDR) on the list. Neither set: every scrape is refused.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
METRICS_ALLOWED_ADDRESSES = env_list("METRICS_ALLOWED_ADDRESSES", [])
for _network in METRICS_ALLOWED_ADDRESSES:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError as _exc:
        raise ImproperlyConfigured(f"METRICS_ALLOWED_ADDRESSES: {_network!r} is no address or network.") from _exc
# prometheus-client's multiprocess mode: every process writes its counts into files here and
# /metrics merges them. `serve` sets it for all its processes (under RUN_DIR, emptied at start);
# set it yourself when you run the WSGI server and job clusters another way.
METRICS_MULTIPROC_DIR = env_path("PROMETHEUS_MULTIPROC_DIR", None)

# --- Operations dashboard (the admin index) -----------------------------------------------------
# Hours of per-minute chart values kept (the charts show the last 24 h).
OPERATIONS_RETENTION_HOURS = env_int("OPERATIONS_RETENTION_HOURS", 48, minimum=25)
# Seconds between two live updates of the dashboard's counts and needs-attention list, platform-wide,
# while someone has it open (whole seconds: the shared cache's expiry is whole seconds on Redis).
OPERATIONS_LIVE_SECONDS = env_int("OPERATIONS_LIVE_SECONDS", 5, minimum=1)
