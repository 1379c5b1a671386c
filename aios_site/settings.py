"""Django settings for AIOS, entirely from the environment.

With DATABASE_URL / REDIS_URL unset, the embedded default (aios_site.embedded) starts or
reuses a real PostgreSQL and Redis under AIOS_DATA_DIR. Nothing here is SQLite.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

from aios_site import embedded

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


AIOS_DATA_DIR = embedded.data_dir()
DEBUG = env_bool("DEBUG", False)
# A fresh machine gets a per-data-dir random key so sessions survive restarts of `make up`.
SECRET_KEY = os.environ.get("SECRET_KEY") or embedded.local_secret("secret_key")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
# Behind a TLS-terminating proxy/Ingress (the Helm chart), trust its X-Forwarded-Proto.
if env_bool("AIOS_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
CSRF_TRUSTED_ORIGINS = env_list(
    "CSRF_TRUSTED_ORIGINS", "http://127.0.0.1:8000,http://localhost:8000"
)

DATABASE_URL = embedded.ensure_database_url()
REDIS_URL = embedded.ensure_redis_url()

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "django_prometheus",
    "django_celery_results",
    "channels",
    "apps.core",
    "apps.tasks",
    "apps.policies",
    "apps.registries",
    "apps.search",
    "apps.parser",
    "apps.clusters",
    "apps.allocator",
    "apps.blocks",
    "apps.vdags",
    "apps.inference",
    "apps.metrics",
    "apps.llm",
    "apps.dashboard",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "aios_site.urls"
WSGI_APPLICATION = "aios_site.wsgi.application"
ASGI_APPLICATION = "aios_site.asgi.application"

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

DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
DATABASES["default"]["OPTIONS"] = {"connect_timeout": 10}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "aios:cache",
        "TIMEOUT": 300,
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": "aios:channels", "expiry": 60, "capacity": 200},
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = AIOS_DATA_DIR / "staticfiles"
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("AIOS_MEDIA_ROOT", AIOS_DATA_DIR / "media"))

# Files (policy archives, assets): filesystem by default, S3-compatible when configured.
if os.environ.get("AIOS_S3_BUCKET"):
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": os.environ["AIOS_S3_BUCKET"],
            "endpoint_url": os.environ.get("AIOS_S3_ENDPOINT_URL"),
            "access_key": os.environ.get("AIOS_S3_ACCESS_KEY"),
            "secret_key": os.environ.get("AIOS_S3_SECRET_KEY"),
        },
    }
else:
    _default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["apps.core.permissions.IsAuthenticatedForWrites"],
    "DEFAULT_PAGINATION_CLASS": "apps.core.pagination.StandardPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "apps.core.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "AIOS API",
    "DESCRIPTION": "Control plane of an AI network: clusters, components, blocks, vDAGs, policies.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {},
}

# Celery: Redis broker, results in the database, JSON only, late acks, bounded runtimes.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_RESULT_EXPIRES = 7 * 24 * 3600
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = int(os.environ.get("AIOS_TASK_TIME_LIMIT", 1800))
CELERY_TASK_SOFT_TIME_LIMIT = int(os.environ.get("AIOS_TASK_SOFT_TIME_LIMIT", 1700))
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, "global_keyprefix": "aios:celery:"}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env_bool("AIOS_CELERY_EAGER", False)
CELERY_BEAT_SCHEDULE: dict = {
    # Restart T4 policy-function replicas that died (local process runner).
    "reconcile-policy-functions": {
        "task": "aios.policies.reconcile_functions_periodic",
        "schedule": 30.0,
    },
    # Copy vDAG controllers' quality samples and live metrics into PostgreSQL.
    "collect-vdag-controller-data": {
        "task": "aios.vdags.collect_controller_data",
        "schedule": 10.0,
    },
    # Heal the adhoc servers' block -> executor map (signals keep it current in between).
    "sync-block-executor-map": {"task": "aios.inference.sync_executor_map", "schedule": 10.0},
    # Read back Kubernetes clusters' objects into workload status (no-op without such clusters).
    "sync-kubernetes-clusters": {"task": "aios.clusters.k8s_sync_all", "schedule": 10.0},
}

AIOS_HTTP_PORT = int(os.environ.get("AIOS_HTTP_PORT", 8000))
AIOS_PUBLIC_URL = os.environ.get("AIOS_PUBLIC_URL", f"http://127.0.0.1:{AIOS_HTTP_PORT}")
# Fernet key for secrets at rest (kubeconfigs). Generated per data dir when unset.
AIOS_FERNET_KEY = os.environ.get("AIOS_FERNET_KEY") or embedded.local_secret(
    "fernet_key", fernet=True
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "kv": {"format": "ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "kv"}},
    "root": {"handlers": ["console"], "level": os.environ.get("AIOS_LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
    },
}
