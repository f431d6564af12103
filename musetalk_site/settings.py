"""Settings, read from the environment (see .env.example for every variable)."""

from __future__ import annotations

from pathlib import Path

import dj_database_url

from musetalk_site.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_secret,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))

SECRET_KEY = env_secret("SECRET_KEY", generate_into=VAR_DIR / "secret_key")
DEBUG = env_bool("DEBUG", False)
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
    "channels",
    "django_dramatiq",
    "musetalk_site",
    "avatars",
    "sessions_app",
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

# Uploads: Django spools large bodies to disk; these caps are the product's own limits.
MAX_VIDEO_UPLOAD_BYTES = env_int("MAX_VIDEO_UPLOAD_MB", 200, minimum=1) * 1024 * 1024
MAX_AUDIO_UPLOAD_BYTES = env_int("MAX_AUDIO_UPLOAD_MB", 50, minimum=1) * 1024 * 1024
MAX_VIDEO_SECONDS = env_float("MAX_VIDEO_SECONDS", 120.0, minimum=1.0)
MAX_AUDIO_SECONDS = env_float("MAX_AUDIO_SECONDS", 300.0, minimum=1.0)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 0  # every upload is spooled to a temp file, then probed
FILE_UPLOAD_HANDLERS = ["musetalk_site.uploads.LimitedUploadHandler"]

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
    "BROKER": "dramatiq.brokers.redis.RedisBroker",
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
WORKER_MAINTENANCE_SECONDS = env_float("WORKER_MAINTENANCE_SECONDS", 25.0, minimum=0.5)

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

SESSION_TTL_SECONDS = env_int("SESSION_TTL_SECONDS", 3600, minimum=60)
PLAYER_TOKEN_MAX_AGE_SECONDS = env_int("PLAYER_TOKEN_MAX_AGE_SECONDS", 3600, minimum=60)

WEBRTC_STUN_URLS = env_list("WEBRTC_STUN_URLS", [])
WEBRTC_TURN_URLS = env_list("WEBRTC_TURN_URLS", [])
WEBRTC_TURN_USERNAME = env_str("WEBRTC_TURN_USERNAME", "")
WEBRTC_TURN_CREDENTIAL = env_str("WEBRTC_TURN_CREDENTIAL", "")
WEBRTC_AUDIO_PREBUFFER_SECONDS = env_float("WEBRTC_AUDIO_PREBUFFER_SECONDS", 0.2, minimum=0.0)
WEBRTC_AUDIO_MAX_LEAD_SECONDS = env_float("WEBRTC_AUDIO_MAX_LEAD_SECONDS", 0.08, minimum=0.0)
WEBRTC_AUDIO_MAX_LAG_SECONDS = env_float("WEBRTC_AUDIO_MAX_LAG_SECONDS", 0.12, minimum=0.0)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": env_int("API_PAGE_SIZE", 50, minimum=1),
    "EXCEPTION_HANDLER": "musetalk_site.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "musetalk_site.schema.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "MuseTalk platform API",
    "DESCRIPTION": "Talking avatars lip-synced by MuseTalk v1.5: prepare, generate, stream.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
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
