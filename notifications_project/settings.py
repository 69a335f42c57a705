"""Settings, read from the environment in this one place (defaults documented in .env.example).

A missing or malformed variable stops the process with one line naming it, not a traceback.
"""

import re
import zoneinfo
from datetime import timedelta
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# Existing environment variables win over the file; ENV_FILE names another file (/dev/null: none).
environ.Env.read_env(env.str("ENV_FILE", default=str(BASE_DIR / ".env")))


def _setting(name: str, cast, default=environ.Env.NOTSET, check=None):
    """Read one variable; on any problem exit with a one-line message that names it."""
    try:
        if name not in env.ENVIRON and default is environ.Env.NOTSET:
            raise SystemExit(f"Configuration error: {name} is not set (see .env.example).")
        value = cast(name, default=default)
    except SystemExit:
        raise
    except Exception as exc:  # django-environ raises several kinds for bad values
        raise SystemExit(f"Configuration error: {name}={env.ENVIRON.get(name)!r} is malformed ({exc}).") from None
    if check is not None and not check(value):
        raise SystemExit(f"Configuration error: {name}={env.ENVIRON.get(name)!r} is not an accepted value.")
    return value


def _strict_bool(name: str, default):
    raw = env.ENVIRON.get(name)
    if raw is None:
        return default
    if raw.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.strip().lower() in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true or false")


def _positive(value) -> bool:
    return value > 0


def _is_webhook_secret(value: str) -> bool:
    import base64
    import binascii

    try:
        return value.startswith("whsec_") and len(base64.b64decode(value.removeprefix("whsec_"), validate=True)) >= 16
    except (binascii.Error, ValueError):
        return False


DEBUG = _setting("DEBUG", _strict_bool, default=False)
SECRET_KEY = _setting("SECRET_KEY", env.str, check=lambda v: len(v) >= 16)
ALLOWED_HOSTS = _setting("ALLOWED_HOSTS", env.list, default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = _setting("CSRF_TRUSTED_ORIGINS", env.list, default=[])

# SQLite when DATABASE_URL is unset: the zero-setup development default. Tests and production use PostgreSQL.
SUPPORTED_DATABASE_ENGINES = {"django.db.backends.postgresql", "django.db.backends.sqlite3"}
DATABASES = {
    "default": _setting(
        "DATABASE_URL",
        env.db_url,
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        check=lambda db: db["ENGINE"] in SUPPORTED_DATABASE_ENGINES,  # postgres://... or sqlite:///...
    ),
}
DATABASES["default"]["CONN_MAX_AGE"] = _setting("DATABASE_CONN_MAX_AGE", env.int, default=600)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (API, relay, dispatcher, worker) share the file: WAL and a write lock taken up front.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }

# --- Kafka ---------------------------------------------------------------------------------------
KAFKA_BOOTSTRAP_SERVERS = _setting("KAFKA_BOOTSTRAP_SERVERS", env.list, default=["127.0.0.1:9092"])
# Prefixes every topic and consumer group, so test runs and parallel stacks never share them.
KAFKA_TOPIC_PREFIX = _setting("KAFKA_TOPIC_PREFIX", env.str, default="")
KAFKA_PARTITIONS = _setting("KAFKA_PARTITIONS", env.int, default=12, check=_positive)
KAFKA_REPLICATION_FACTOR = _setting("KAFKA_REPLICATION_FACTOR", env.int, default=1, check=_positive)
# Kafka's minimum session timeout: a group's first join waits about half of it on some brokers.
KAFKA_SESSION_TIMEOUT_MS = _setting("KAFKA_SESSION_TIMEOUT_MS", env.int, default=6000, check=_positive)
KAFKA_HEARTBEAT_INTERVAL_MS = _setting("KAFKA_HEARTBEAT_INTERVAL_MS", env.int, default=1000, check=_positive)
# A waiting fetch is not woken by new data on every broker: keep the wait short (low latency).
KAFKA_FETCH_MAX_WAIT_MS = _setting("KAFKA_FETCH_MAX_WAIT_MS", env.int, default=5, check=_positive)
# Idle consumers (core/consumer.py): after CONSUMER_IDLE_AFTER_SECONDS without records a consumer stops
# fetching continuously; it fetches again at once on the outbox's NOTIFY (PostgreSQL), and polls once
# every CONSUMER_IDLE_CHECK_SECONDS (group membership, and records from producers that bypass the outbox).
CONSUMER_IDLE_AFTER_SECONDS = _setting("CONSUMER_IDLE_AFTER_SECONDS", env.float, default=2.0, check=_positive)
CONSUMER_IDLE_CHECK_SECONDS = _setting("CONSUMER_IDLE_CHECK_SECONDS", env.float, default=1.0, check=_positive)
KAFKA_PRODUCER_LINGER_MS = _setting("KAFKA_PRODUCER_LINGER_MS", env.int, default=5, check=lambda v: v >= 0)
KAFKA_PRODUCER_BATCH_BYTES = _setting("KAFKA_PRODUCER_BATCH_BYTES", env.int, default=512 * 1024, check=_positive)

WORKER_BATCH_SIZE = _setting("WORKER_BATCH_SIZE", env.int, default=5000, check=_positive)
DISPATCHER_PAGE_SIZE = _setting("DISPATCHER_PAGE_SIZE", env.int, default=5000, check=_positive)
# Recipients per campaign chunk (one record; at most core.messages.CHUNK_MAX_RECIPIENTS, 5,000).
DISPATCHER_CHUNK_SIZE = _setting("DISPATCHER_CHUNK_SIZE", env.int, default=1000, check=lambda v: 0 < v <= 5000)
RELAY_BATCH_SIZE = _setting("RELAY_BATCH_SIZE", env.int, default=1000, check=_positive)
# run_worker and run_dispatcher publish the outbox themselves (one at a time, under a PostgreSQL lock);
# false: run `manage.py run_relay` apart.
RELAY_EMBEDDED = _setting("RELAY_EMBEDDED", _strict_bool, default=True)
# Published outbox events are kept this long, so that a broker that lost acknowledged records (a topic
# recreated, checked every RELAY_LOSS_CHECK_SECONDS) is sent them again; then they are purged.
RELAY_RETENTION_SECONDS = _setting("RELAY_RETENTION_SECONDS", env.int, default=900, check=_positive)
RELAY_LOSS_CHECK_SECONDS = _setting("RELAY_LOSS_CHECK_SECONDS", env.float, default=5.0, check=_positive)

# --- The scheduler (core/scheduler.py) ---------------------------------------------------------
# Moves the clock that decides when waiting work is due, for this process: development and tests only.
# Refused unless DEBUG: the times it moves (due sends, leases) are read by every worker, not only this one.
CLOCK_OFFSET_SECONDS = _setting("CLOCK_OFFSET_SECONDS", env.float, default=0.0)
if CLOCK_OFFSET_SECONDS and not DEBUG:
    raise SystemExit("Configuration error: CLOCK_OFFSET_SECONDS moves the scheduler's clock for development and "
                     "tests only; it needs DEBUG=true (every worker reads the times it writes).")
# How often a worker looks for due items while some are due but cannot go yet (a busy endpoint host).
SCHEDULER_POLL_SECONDS = _setting("SCHEDULER_POLL_SECONDS", env.float, default=0.5, check=_positive)
# With nothing due, the scheduler's loops sleep until the next due item, this long at most (an item
# scheduled by any process wakes the due loop at once; the sender is woken by its own worker).
SCHEDULER_IDLE_SECONDS = _setting("SCHEDULER_IDLE_SECONDS", env.float, default=5.0, check=_positive)

# The time zone of recipients without one of their own (an IANA name): their quiet hours are read in it.
DEFAULT_TIMEZONE = _setting("DEFAULT_TIMEZONE", env.str, default="UTC",
                            check=lambda v: v in zoneinfo.available_timezones())

# --- Retention (delivery.retention: a thread of run_worker, or `manage.py purge`) ------------------
# Every RETENTION_PURGE_INTERVAL_SECONDS the worker deletes, RETENTION_PURGE_BATCH_SIZE rows per
# statement: Idempotency-Keys older than 24 h, published outbox events older than
# RELAY_RETENTION_SECONDS, channel deliveries `sent` more than RETENTION_CHANNEL_DELIVERY_DAYS ago and
# dead letters discarded more than RETENTION_DEAD_LETTER_DAYS ago. The ledger is kept (see README).
RETENTION_PURGE_INTERVAL_SECONDS = _setting("RETENTION_PURGE_INTERVAL_SECONDS", env.float, default=300.0, check=_positive)
RETENTION_PURGE_BATCH_SIZE = _setting("RETENTION_PURGE_BATCH_SIZE", env.int, default=1000, check=_positive)
RETENTION_CHANNEL_DELIVERY_DAYS = _setting("RETENTION_CHANNEL_DELIVERY_DAYS", env.float, default=7.0, check=_positive)
RETENTION_DEAD_LETTER_DAYS = _setting("RETENTION_DEAD_LETTER_DAYS", env.float, default=30.0, check=_positive)

# --- Channels, retries, dead letters -------------------------------------------------------------
# Every notification goes to the in-app inbox; also to the recipient's push endpoint (or this gateway
# when set) and to its email address.
PUSH_GATEWAY_URL = _setting("PUSH_GATEWAY_URL", env.str, default="")
# Signs what goes to PUSH_GATEWAY_URL (Standard Webhooks: "whsec_" and base64); required with it.
PUSH_GATEWAY_SECRET = _setting("PUSH_GATEWAY_SECRET", env.str, default="", check=lambda v: not v or _is_webhook_secret(v))
if PUSH_GATEWAY_URL and not PUSH_GATEWAY_SECRET:
    raise SystemExit("Configuration error: PUSH_GATEWAY_SECRET is not set; PUSH_GATEWAY_URL needs it (see .env.example).")
# Recipients' push endpoints may target loopback, private and link-local addresses: development only.
WEBHOOK_ALLOW_PRIVATE_NETWORKS = _setting("WEBHOOK_ALLOW_PRIVATE_NETWORKS", _strict_bool, default=False)
# After a push secret is rotated, the old one still signs (beside the new one) this long.
WEBHOOK_SECRET_GRACE_SECONDS = _setting("WEBHOOK_SECRET_GRACE_SECONDS", env.int, default=86400, check=lambda v: v >= 0)
WEBHOOK_TIMEOUT_SECONDS = _setting("WEBHOOK_TIMEOUT_SECONDS", env.float, default=5.0, check=_positive)
# Channel sends run off the poll loop, from the scheduler: this many at once per worker process, and
# at most CHANNEL_HOST_CONCURRENCY of them to any one endpoint host (a slow host holds only its own).
CHANNEL_SEND_CONCURRENCY = _setting("CHANNEL_SEND_CONCURRENCY", env.int, default=64, check=_positive)
CHANNEL_HOST_CONCURRENCY = _setting("CHANNEL_HOST_CONCURRENCY", env.int, default=4, check=_positive)
# A transient failure (timeout, connection error, HTTP 5xx or 429) is retried this many more times,
# after base * factor**(n-1) seconds (with jitter); a permanent one is dead-lettered at once.
RETRY_MAX_RETRIES = _setting("RETRY_MAX_RETRIES", env.int, default=3, check=lambda v: v >= 0)
RETRY_BACKOFF_BASE_SECONDS = _setting("RETRY_BACKOFF_BASE_SECONDS", env.float, default=1.0, check=_positive)
RETRY_BACKOFF_FACTOR = _setting("RETRY_BACKOFF_FACTOR", env.float, default=2.0, check=lambda v: v >= 1)
# The worker stops (instead of draining the topic into the dead-letter topic) when at least this
# share of the last FAILURE_GUARD_WINDOW channel attempts and records failed.
FAILURE_GUARD_WINDOW = _setting("FAILURE_GUARD_WINDOW", env.int, default=200, check=_positive)
FAILURE_GUARD_RATIO = _setting("FAILURE_GUARD_RATIO", env.float, default=0.95, check=lambda v: 0 < v <= 1)

# Email: console in development; tests use a file backend; production smtp://user:password@host:587
vars().update(_setting("EMAIL_URL", env.email_url, default="consolemail://"))
DEFAULT_FROM_EMAIL = _setting("DEFAULT_FROM_EMAIL", env.str, default="notifications@localhost")
# Seconds a mail server may take per operation (Django's default is none: a server that never answers
# would hold a sender thread, and a worker stopping, for good). A timeout is a transient failure.
EMAIL_TIMEOUT = _setting("EMAIL_TIMEOUT", env.float, default=10.0, check=_positive)

# --- Operations -----------------------------------------------------------------------------------
# Port on which run_worker / run_dispatcher / run_relay serve Prometheus metrics (0: off; or --metrics-port).
METRICS_PORT = _setting("METRICS_PORT", env.int, default=0, check=lambda v: 0 <= v < 65536)
# Bearer token that GET /metrics on the API requires (empty: /metrics answers 404).
METRICS_TOKEN = _setting("METRICS_TOKEN", env.str, default="")
# "json": one JSON object per log line (for log shippers); "plain": human-readable lines.
LOG_FORMAT = _setting("LOG_FORMAT", env.str, default="plain", check=lambda v: v in {"plain", "json"})

# Routes a bare DRF endpoint for the api benchmark's ceiling (only on the benchmark's own server).
BENCH_ENDPOINTS = _setting("BENCH_ENDPOINTS", _strict_bool, default=False)

# --- End users ---------------------------------------------------------------------------------
RECIPIENT_TOKEN_TTL_SECONDS = _setting("RECIPIENT_TOKEN_TTL_SECONDS", env.int, default=3600, check=_positive)
# Per-token request rates ("<n>/<sec|min|hour|day>"; empty: no limit).
THROTTLE_RATE_SERVICE = _setting("THROTTLE_RATE_SERVICE", env.str, default="")
THROTTLE_RATE_RECIPIENT = _setting("THROTTLE_RATE_RECIPIENT", env.str, default="300/min")
# A comment line on every open live stream this often, so that proxies keep it open.
SSE_HEARTBEAT_SECONDS = _setting("SSE_HEARTBEAT_SECONDS", env.float, default=15.0, check=_positive)
# Open live streams per recipient and per server process; beyond either, the oldest stream of that
# recipient (or of the process) is closed, and its EventSource reconnects later.
SSE_MAX_STREAMS_PER_RECIPIENT = _setting("SSE_MAX_STREAMS_PER_RECIPIENT", env.int, default=10, check=_positive)
SSE_MAX_STREAMS_PER_PROCESS = _setting("SSE_MAX_STREAMS_PER_PROCESS", env.int, default=1000, check=_positive)
# Where the ASGI server serves the live streams (e.g. https://stream.example.com); a sync server
# answers the stream route at once with a 421 that names it.
STREAM_URL = _setting("STREAM_URL", env.str, default="", check=lambda v: v == "" or v.startswith(("http://", "https://")))
# Web apps (https://app.example.com) allowed to call the routes a recipient token reaches (CORS).
CORS_ALLOWED_ORIGINS = _setting("CORS_ALLOWED_ORIGINS", env.list, default=[], check=lambda origins: all(
    o.startswith(("http://", "https://")) and o.split("://", 1)[1] and "/" not in o.split("://", 1)[1] for o in origins))
# Throttle counts live here; one process: the default; several processes: redis://... to share them.
CACHES = {"default": _setting("CACHE_URL", env.cache_url, default="locmemcache://")}

# --- Django --------------------------------------------------------------------------------------
INSTALLED_APPS = [
    "daphne",  # its runserver (ASGI) replaces Django's: `manage.py runserver` serves the streams too
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "corsheaders",
    "django_filters",  # its templates: the browsable API's filter forms
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "core",
    "notifications_project",
    "inbox",
    "campaigns",
    "delivery",
]

MIDDLEWARE = [
    "corsheaders.middleware.CorsMiddleware",
    "core.middleware.RequestBodyLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# CORS only on the routes a browser calls with a recipient token: its inbox, read state, unread count,
# stream and preferences. Bearer tokens, no cookies: no credentials.
CORS_URLS_REGEX = r"^/api/v1/recipients/[^/]+/(notifications/|preferences/$)"
CORS_ALLOW_HEADERS = ("accept", "authorization", "content-type", "last-event-id")
CORS_EXPOSE_HEADERS = ("Retry-After",)

ROOT_URLCONF = "notifications_project.urls"
WSGI_APPLICATION = "notifications_project.wsgi.application"
ASGI_APPLICATION = "notifications_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# WhiteNoise serves the apps' static files (the admin's, the drop-in inbox's notification-inbox.js)
# from where they are too, so a server started without `collectstatic` still has them.
WHITENOISE_USE_FINDERS = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Every API body is capped (the middleware answers 400 with a JSON message above it); a view may
# allow more with `max_body_bytes` (the recipients' bulk upsert: 10,000 entries).
REQUEST_BODY_MAX_BYTES = 64 * 1024
RECIPIENT_UPSERT_MAX_BYTES = 16 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = RECIPIENT_UPSERT_MAX_BYTES

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "inbox.authentication.ServiceTokenAuthentication",  # DRF's, remembered per process, checked every use
        "inbox.authentication.RecipientTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["inbox.permissions.IsServiceClientOrStaff"],
    "DEFAULT_THROTTLE_CLASSES": ["inbox.throttling.TokenRateThrottle"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Each list's query parameters are its view's `filterset_class` (django-filter), on `list` only.
    "DEFAULT_FILTER_BACKENDS": ["core.filters.ListFilterBackend"],
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Notification backend API",
    "DESCRIPTION": "Send user-to-user notifications and campaigns; read each recipient's inbox.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["inbox.permissions.IsServiceClientOrStaff"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # The user-to-user kinds keep the name they had when only POST /api/v1/notifications/ took them.
    "ENUM_NAME_OVERRIDES": {"NotificationSendInputKindEnum": "core.messages.USER_TO_USER_KIND_VALUES"},
}

LOG_LEVEL = _setting("LOG_LEVEL", env.str, default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "pythonjsonlogger.json.JsonFormatter", "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {  # every package of ours (a test checks that none is missing)
        "core": {"level": LOG_LEVEL},
        "notifications_project": {"level": LOG_LEVEL},
        "delivery": {"level": LOG_LEVEL},
        "campaigns": {"level": LOG_LEVEL},
        "inbox": {"level": LOG_LEVEL},
        "kafka": {"level": "WARNING"},
    },
}

# --- API input, schema, production security, login throttling (issue 10) --------------------------
# Every JSON body is checked for what PostgreSQL and our encoders cannot carry (NUL, lone surrogates,
# integers beyond 64 bits, nesting deeper than 32 levels): a 400 naming the field, before any view.
REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"] = [
    "core.api.StorableJSONParser",
    "rest_framework.parsers.FormParser",
    "rest_framework.parsers.MultiPartParser",
]
# Documents every answer of each operation (400/401/403/404/406/415/422/429) and the recipient-token scheme.
REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "notifications_project.schema.ApiAutoSchema"
# Path ids and query parameters follow the body rules on every route (400 naming them).
MIDDLEWARE.insert(MIDDLEWARE.index("core.middleware.RequestBodyLimitMiddleware") + 1,
                  "core.middleware.RequestInputMiddleware")

# Production behind TLS (docker-compose.yml sets these; all off by default for plain-HTTP development).
# SECURE_PROXY_SSL_HEADER names the header your TLS-terminating proxy sets to "https" (X-Forwarded-Proto);
# set it only behind a proxy that overwrites that header.
SECURE_SSL_REDIRECT = _setting("SECURE_SSL_REDIRECT", _strict_bool, default=False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]  # probes and scrapers inside the network
SECURE_HSTS_SECONDS = _setting("SECURE_HSTS_SECONDS", env.int, default=0, check=lambda v: v >= 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _setting("SECURE_HSTS_INCLUDE_SUBDOMAINS", _strict_bool, default=False)
SECURE_HSTS_PRELOAD = _setting("SECURE_HSTS_PRELOAD", _strict_bool, default=False)
SESSION_COOKIE_SECURE = _setting("SESSION_COOKIE_SECURE", _strict_bool, default=False)
CSRF_COOKIE_SECURE = _setting("CSRF_COOKIE_SECURE", _strict_bool, default=False)
_proxy_ssl_header = _setting("SECURE_PROXY_SSL_HEADER", env.str, default="",
                             check=lambda v: re.fullmatch(r"[A-Za-z0-9-]*", v) is not None)
SECURE_PROXY_SSL_HEADER = (f"HTTP_{_proxy_ssl_header.upper().replace('-', '_')}", "https") if _proxy_ssl_header else None

# Login throttling for the admin and the browsable API's login (django-axes): after
# LOGIN_FAILURE_LIMIT wrong passwords for one username, that username is refused (429) for
# LOGIN_LOCKOUT_MINUTES, whatever the password and wherever from. By username, not address: behind a
# proxy every client has the proxy's address, and an attacker can change theirs.
INSTALLED_APPS.append("axes")
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
MIDDLEWARE.append("axes.middleware.AxesMiddleware")  # last, as django-axes requires
AXES_FAILURE_LIMIT = _setting("LOGIN_FAILURE_LIMIT", env.int, default=5, check=_positive)
AXES_COOLOFF_TIME = timedelta(minutes=_setting("LOGIN_LOCKOUT_MINUTES", env.float, default=15.0, check=_positive))
AXES_LOCKOUT_PARAMETERS = ["username"]
# axes.W006 asks for the address too, against clients that rotate user agents or cookies to escape a
# lockout keyed on those; a lockout keyed on the username alone is not escaped that way.
SILENCED_SYSTEM_CHECKS = ["axes.W006"]
AXES_RESET_ON_SUCCESS = True
