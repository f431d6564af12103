"""Settings, read from the environment (see .env.example for every variable)."""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from corsheaders.defaults import default_headers as cors_default_headers
from django.core.exceptions import ImproperlyConfigured

from musetalk_site.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_rate,
    env_secret,
    env_str,
    env_username,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))

SECRET_KEY = env_secret("SECRET_KEY", generate_into=VAR_DIR / "secret_key")
DEBUG = env_bool("DEBUG", False)
# Anyone may create an account on the dashboard's sign-up page; off: admins create accounts.
SIGNUP_ENABLED = env_bool("SIGNUP_ENABLED", True)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from here (no CDN)
    "channels",
    "django_dramatiq",
    "musetalk_site",
    "avatars",
    "sessions_app",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# HTTPS, for a site served behind a TLS-terminating reverse proxy (README "Production: HTTPS
# behind a reverse proxy"). Everything is off by default: a local run is plain HTTP.
HTTPS = env_bool("HTTPS", False)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", HTTPS)
# The launcher and load balancers probe /health over plain HTTP on the loopback.
SECURE_REDIRECT_EXEMPT = [r"^health$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Only behind a proxy that sets X-Forwarded-Proto itself: otherwise any client could claim
# HTTPS.
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("TRUST_X_FORWARDED_PROTO", False) else None
)

# CORS: off unless origins are listed. Cross-origin callers send an API token (header or
# ?token=) or a player token, never cookies, so credentials are not allowed.
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", [])
CORS_ALLOW_CREDENTIALS = False
# The API, SSE feeds, chunks and HLS, the health and stats, and the root's JSON; not the
# pages, the login or the admin.
CORS_URLS_REGEX = (
    r"^/(api/|avatars/|generate|sessions/|chunks/|hls/(?!player/)|player/chunks/"
    r"|player/session/[^/]+/idle\.mp4$|health$|stats(/cache)?$|capabilities$|$)"
)
# EventSource resends Last-Event-ID on reconnect; media elements may ask for a Range.
CORS_ALLOW_HEADERS = [*cors_default_headers, "last-event-id", "range"]
CORS_EXPOSE_HEADERS = ["Content-Disposition", "Retry-After"]
if CORS_ALLOWED_ORIGINS:
    INSTALLED_APPS.append("corsheaders")
    # Before anything that may answer: a preflight carries no credentials.
    MIDDLEWARE.insert(0, "corsheaders.middleware.CorsMiddleware")

ROOT_URLCONF = "musetalk_site.urls"
ASGI_APPLICATION = "musetalk_site.asgi.application"

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
                "musetalk_site.context_processors.platform",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The end-to-end tests share the test database with a worker and a web process.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
    # WAL + IMMEDIATE: web, worker and tests write concurrently without "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "media/"

# Uploads: these caps are the product's own limits, checked before a body is read
# (musetalk_site/body_limit.py); a file is written once, into MEDIA_ROOT/incoming.
MAX_VIDEO_UPLOAD_BYTES = env_int("MAX_VIDEO_UPLOAD_MB", 200, minimum=1) * 1024 * 1024
MAX_AUDIO_UPLOAD_BYTES = env_int("MAX_AUDIO_UPLOAD_MB", 50, minimum=1) * 1024 * 1024
MAX_VIDEO_SECONDS = env_float("MAX_VIDEO_SECONDS", 120.0, minimum=1.0)
MAX_AUDIO_SECONDS = env_float("MAX_AUDIO_SECONDS", 300.0, minimum=1.0)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 0  # every upload is spooled to a temp file, then probed
FILE_UPLOAD_HANDLERS = ["musetalk_site.uploads.LimitedUploadHandler"]
# Caps on every other request body, and on any body sent without credentials (body_limit.py).
MAX_REQUEST_BODY_BYTES = 1024 * 1024
ANONYMOUS_REQUEST_BODY_BYTES = 64 * 1024

# Opt-in, for clients that send no credentials (the seed API's players, load tester and
# request collections) on a trusted network: such requests act as this one existing user.
# Empty: off, every request needs credentials. Requests that carry credentials are checked as
# always, and a browser page on another origin (not in CORS_ALLOWED_ORIGINS) never gets it.
ANONYMOUS_ACCESS_USER = env_username("ANONYMOUS_ACCESS_USER")

# Per-user quotas (musetalk_site/quotas.py); each can be overridden per user in the admin.
# 0: unlimited.
QUOTA_MAX_AVATARS = env_int("QUOTA_MAX_AVATARS", 50, minimum=0)
QUOTA_MAX_ACTIVE_SESSIONS = env_int("QUOTA_MAX_ACTIVE_SESSIONS", 20, minimum=0)
QUOTA_MONTHLY_MINUTES = env_int("QUOTA_MONTHLY_MINUTES", 600, minimum=0)
QUOTA_STORAGE_MB = env_int("QUOTA_STORAGE_MB", 20480, minimum=0)

# Request rates (musetalk_site/throttles.py), DRF rates such as "30/min"; 0 or empty: no limit.
# They are counted in Django's cache: the local memory of each web process.
THROTTLE_TOKEN_RATE = env_rate("THROTTLE_TOKEN_RATE", "30/min")  # token requests per client IP
THROTTLE_UPLOAD_RATE = env_rate("THROTTLE_UPLOAD_RATE", "120/min")  # uploads per user, all kinds
# Reverse proxies in front that append the client's address to X-Forwarded-For; 0: the
# connection's own address, so no client can pick its address by sending that header.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)

# Live admission (musetalk_site/capacity.py): a session or an utterance beyond the workers'
# measured frames/s answers 429 with Retry-After instead of slowing every stream down. Open
# sessions may reserve LIVE_CAPACITY_TARGET of the measured frames/s (the rest is headroom).
LIVE_ADMISSION = env_bool("LIVE_ADMISSION", True)
LIVE_CAPACITY_TARGET = env_float("LIVE_CAPACITY_TARGET", 0.9, minimum=0.05)
# A live stream behind its playback clock repeats frames (audio whole) until it catches up
LIVE_DEGRADE = env_bool("LIVE_DEGRADE", True)

# Retention (avatars/services/retention.py, run by worker maintenance); 0: kept for good.
RESULT_RETENTION_DAYS = env_int("RESULT_RETENTION_DAYS", 30, minimum=0)  # finished jobs, files
UPLOAD_RETENTION_HOURS = env_int("UPLOAD_RETENTION_HOURS", 24, minimum=0)  # their uploaded audio

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # The socket timeout must outlast the layer's 5 s BZPOPMIN, which redis-py's 5 s
        # default does not: receives would then fail at random.
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, "socket_timeout": 30}],
            "prefix": "musetalk:channels",
        },
    }
}

# The worker keeps the engine resident; see musetalk_site/worker.py.
DRAMATIQ_BROKER = {
    "BROKER": "musetalk_site.broker.DoorbellRedisBroker",
    "OPTIONS": {"url": REDIS_URL, "namespace": "musetalk:dramatiq"},
    "MIDDLEWARE": [
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.TimeLimit",
        "dramatiq.middleware.Callbacks",
        "dramatiq.middleware.Retries",
        "django_dramatiq.middleware.DbConnectionsMiddleware",
        "musetalk_site.worker.EngineMiddleware",
        "musetalk_site.worker.HeartbeatMiddleware",
        "musetalk_site.worker.MaintenanceMiddleware",
    ],
}
DRAMATIQ_AUTODISCOVER_MODULES = ["tasks"]
WORKER_PROCESSES = env_int("WORKER_PROCESSES", 1, minimum=1)
WORKER_THREADS = env_int("WORKER_THREADS", 4, minimum=1)
PREPARE_WORKER_THREADS = env_int("PREPARE_WORKER_THREADS", 1, minimum=1)
WORKER_HEARTBEAT_SECONDS = env_float("WORKER_HEARTBEAT_SECONDS", 5.0, minimum=0.5)
WORKER_STALE_SECONDS = env_float("WORKER_STALE_SECONDS", 30.0, minimum=1.0)
# How long a stopping worker lets its open streams finish (the launcher's shutdown timeout)
WORKER_SHUTDOWN_SECONDS = env_float("WORKER_SHUTDOWN_SECONDS", 30.0, minimum=1.0)
WORKER_MAINTENANCE_SECONDS = env_float("WORKER_MAINTENANCE_SECONDS", 25.0, minimum=0.5)
# Queued work is looked up in the broker once it has waited this long since it was sent; work
# whose message was lost is re-sent at most QUEUE_RESEND_LIMIT times, then failed (utterances
# are failed at once). See musetalk_site/broker.py.
QUEUE_CHECK_AFTER_SECONDS = env_float("QUEUE_CHECK_AFTER_SECONDS", 30.0, minimum=1.0)
QUEUE_RESEND_LIMIT = env_int("QUEUE_RESEND_LIMIT", 2, minimum=0)

# Engine (the worker process reads these; the web process never imports torch).
MODELS_DIR = Path(env_str("MODELS_DIR", str(BASE_DIR / "models")))
MUSETALK_MODEL_PROFILE = env_choice(
    "MUSETALK_MODEL_PROFILE", "auto", ("auto", "musetalk-v15", "random-full", "random-tiny")
)
MUSETALK_DEMO_MODE = env_bool("MUSETALK_DEMO_MODE", False)
MUSETALK_DEVICE = env_str("MUSETALK_DEVICE", "auto")
MUSETALK_CACHE_MAX_MB = env_int("MUSETALK_CACHE_MAX_MB", 2048, minimum=1)
MUSETALK_CACHE_TTL_SECONDS = env_int("MUSETALK_CACHE_TTL_SECONDS", 1800, minimum=1)
MUSETALK_MEMORY_BUDGET_MB = env_int("MUSETALK_MEMORY_BUDGET_MB", 0, minimum=0)  # 0: measure
# The scheduler's largest model batch (frames of all streams together); 0: by device
MUSETALK_MAX_BATCH = env_int("MUSETALK_MAX_BATCH", 0, minimum=0)
# Model speed-ups (inference/accel.py): "auto" (CUDA graphs on CUDA, nothing on a CPU), "none",
# or a comma list such as "channels_last,cudnn_benchmark,cuda_graphs" (bench/models.py
# measures each option on the device)
MUSETALK_ACCEL = env_str("MUSETALK_ACCEL", "auto")

SESSION_TTL_SECONDS = env_int("SESSION_TTL_SECONDS", 3600, minimum=60)
PLAYER_TOKEN_MAX_AGE_SECONDS = env_int("PLAYER_TOKEN_MAX_AGE_SECONDS", 3600, minimum=60)

WEBRTC_STUN_URLS = env_list("WEBRTC_STUN_URLS", [])
WEBRTC_TURN_URLS = env_list("WEBRTC_TURN_URLS", [])
WEBRTC_TURN_USERNAME = env_str("WEBRTC_TURN_USERNAME", "")
WEBRTC_TURN_CREDENTIAL = env_str("WEBRTC_TURN_CREDENTIAL", "")
WEBRTC_ICE_TRANSPORT_POLICY = env_str("WEBRTC_ICE_TRANSPORT_POLICY", "all")  # or "relay"
if WEBRTC_ICE_TRANSPORT_POLICY not in ("all", "relay"):
    raise ImproperlyConfigured("WEBRTC_ICE_TRANSPORT_POLICY must be 'all' or 'relay'")
WEBRTC_AUDIO_PREBUFFER_SECONDS = env_float("WEBRTC_AUDIO_PREBUFFER_SECONDS", 0.2, minimum=0.0)
WEBRTC_AUDIO_MAX_LEAD_SECONDS = env_float("WEBRTC_AUDIO_MAX_LEAD_SECONDS", 0.08, minimum=0.0)
WEBRTC_AUDIO_MAX_LAG_SECONDS = env_float("WEBRTC_AUDIO_MAX_LAG_SECONDS", 0.12, minimum=0.0)
# x264's speed preset for the viewers' H.264 (sessions_app/webrtc/encoder.py): veryfast gives
# medium's (aiortc's) picture at the same bitrate for about a third of its CPU.
WEBRTC_X264_PRESET = env_choice(
    "WEBRTC_X264_PRESET",
    "veryfast",
    ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"),
)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "musetalk_site.token_auth.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        # Last: only a request that carries no credentials at all (see ANONYMOUS_ACCESS_USER).
        "musetalk_site.anonymous.AnonymousAccessAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": env_int("API_PAGE_SIZE", 50, minimum=1),
    "EXCEPTION_HANDLER": "musetalk_site.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "musetalk_site.schema.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "MuseTalk platform API",
    "DESCRIPTION": "Talking avatars lip-synced by MuseTalk v1.5: prepare, generate, stream.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # The schema documents the credentials; anonymous access is the operator's, not the API's.
    "AUTHENTICATION_WHITELIST": [
        "musetalk_site.token_auth.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # The docs page loads Swagger UI from our own static files: it works offline and on hosts
    # that may not reach a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "AvatarStatusEnum": "avatars.models.Avatar.Status",
        "JobStatusEnum": "avatars.models.GenerationJob.Status",
    },
}

LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
