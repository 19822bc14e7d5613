"""Django settings for Kulipa. Everything a deployment changes comes from the environment (see .env.example).

SQLite in WAL mode is the embedded default so a newcomer needs no server; set DATABASE_URL for PostgreSQL.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

# Django's admin and form classes take type parameters at runtime as in their stubs (``admin.ModelAdmin[Product]``).
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BASE_DIR.parent
VAR_DIR = Path(os.environ.get("KULIPA_VAR_DIR", PROJECT_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


DEBUG = env_bool("DJANGO_DEBUG", True)
_DEV_SECRET_KEY = "dev-only-insecure-key-change-me-in-production-0123456789"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", _DEV_SECRET_KEY)
if not DEBUG and SECRET_KEY == _DEV_SECRET_KEY:
    raise ImproperlyConfigured("DJANGO_DEBUG=0 needs a DJANGO_SECRET_KEY of your own")
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "huey.contrib.djhuey",
    "kulipa.accounts",
    "kulipa.catalog",
    "kulipa.cart",
    "kulipa.inventory",
    "kulipa.orders",
    "kulipa.payments",
    "kulipa.backoffice",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Not LocaleMiddleware: Portuguese unless the customer chose otherwise (ignores Accept-Language).
    "kulipa.core.middleware.ChosenLanguageMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "kulipa.urls"
WSGI_APPLICATION = "kulipa.wsgi.application"

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
                "django.template.context_processors.i18n",
                "kulipa.context_processors.shop",
            ],
        },
    },
]

# --- Data -------------------------------------------------------------------------------------------------
_SQLITE_PATH = VAR_DIR / "kulipa.sqlite3"
DATABASES = {
    "default": dj_database_url.parse(os.environ.get("DATABASE_URL", f"sqlite:///{_SQLITE_PATH}"), conn_max_age=60)
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes the write lock at BEGIN, so two checkouts cannot both read stock and then both write
    # (SQLite has no SELECT ... FOR UPDATE). WAL lets readers go on while one writer works.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # A file, not :memory:, so test threads share it; one per process so two test runs never collide.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-kulipa-{os.getpid()}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "catalog:product_list"
LOGOUT_REDIRECT_URL = "catalog:product_list"

# --- Languages --------------------------------------------------------------------------------------------
LANGUAGE_CODE = "pt"
LANGUAGES = [("pt", _("Português")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
USE_TZ = True
TIME_ZONE = "Africa/Maputo"

# --- Static files -----------------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]  # shop.css, vendor/htmx.min.js, catalog/*.svg
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# --- Sessions and security --------------------------------------------------------------------------------
SESSION_COOKIE_AGE = 60 * 60 * 24 * 30
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"

# --- Background work (huey) -------------------------------------------------------------------------------
# SQLite storage by default; REDIS_URL switches to Redis for several worker machines.
REDIS_URL = os.environ.get("REDIS_URL", "")
HUEY_IMMEDIATE = env_bool("HUEY_IMMEDIATE", False)
if REDIS_URL:
    HUEY = {
        "huey_class": "huey.PriorityRedisHuey",
        "name": os.environ.get("HUEY_NAME", "kulipa"),
        "url": REDIS_URL,
        "immediate": HUEY_IMMEDIATE,
        "consumer": {"workers": int(os.environ.get("HUEY_WORKERS", "8")), "worker_type": "thread"},
    }
else:
    HUEY = {
        "huey_class": "huey.SqliteHuey",
        "name": os.environ.get("HUEY_NAME", "kulipa"),
        "filename": os.environ.get("HUEY_SQLITE_PATH", str(VAR_DIR / "huey.sqlite3")),
        "immediate": HUEY_IMMEDIATE,
        "consumer": {"workers": int(os.environ.get("HUEY_WORKERS", "8")), "worker_type": "thread"},
    }

# --- Shop -------------------------------------------------------------------------------------------------
CURRENCY = "MZN"
RESERVATION_MINUTES = int(os.environ.get("KULIPA_RESERVATION_MINUTES", "15"))
# However many pushes and "try again", no hold on stock outlives checkout + this (docs/payments.md).
HOLD_CAP_MINUTES = int(os.environ.get("KULIPA_HOLD_CAP_MINUTES", "30"))
MAX_LINE_QUANTITY = 20
MAX_ORDER_TOTAL = Decimal(os.environ.get("KULIPA_MAX_ORDER_TOTAL", "250000"))

# --- M-Pesa -----------------------------------------------------------------------------------------------
# Unset MPESA_API_KEY means: use the local sandbox simulator (make run starts it) and show a sandbox banner.
MPESA = {
    "API_KEY": os.environ.get("MPESA_API_KEY", ""),
    "PUBLIC_KEY": os.environ.get("MPESA_PUBLIC_KEY", ""),
    "SERVICE_PROVIDER_CODE": os.environ.get("MPESA_SERVICE_PROVIDER_CODE", "171717"),
    "ENVIRONMENT": os.environ.get("MPESA_ENVIRONMENT", "sandbox"),
    "BASE_URL": os.environ.get("MPESA_BASE_URL", ""),
    "PORT_OFFSET": int(os.environ.get("MPESA_PORT_OFFSET", "0")),
    "CA_BUNDLE": os.environ.get("MPESA_CA_BUNDLE", ""),
    "ORIGIN": os.environ.get("MPESA_ORIGIN", "developer.mpesa.vm.co.mz"),
    "INITIATOR_IDENTIFIER": os.environ.get("MPESA_INITIATOR_IDENTIFIER", ""),
    "SECURITY_CREDENTIAL": os.environ.get("MPESA_SECURITY_CREDENTIAL", ""),
    # "sync": a worker holds the C2B call; "async": the gateway answers at once and calls MPESA_CALLBACK_URL.
    "MODE": os.environ.get("MPESA_MODE", "sync"),
    "CALLBACK_URL": os.environ.get("MPESA_CALLBACK_URL", ""),
    "CALLBACK_PATH_TOKEN": os.environ.get("MPESA_CALLBACK_PATH_TOKEN", ""),
    "CALLBACK_ALLOWED_IPS": [ip for ip in os.environ.get("MPESA_CALLBACK_ALLOWED_IPS", "").split(",") if ip],
    "PUSH_WINDOW_SECONDS": int(os.environ.get("MPESA_PUSH_WINDOW_SECONDS", "60")),
    "C2B_READ_TIMEOUT_SECONDS": float(os.environ.get("MPESA_C2B_READ_TIMEOUT_SECONDS", "150")),
    "RECONCILE_MARGIN_SECONDS": int(os.environ.get("MPESA_RECONCILE_MARGIN_SECONDS", "300")),
    "SANDBOX_PHONE_URL": os.environ.get("MPESA_SANDBOX_PHONE_URL", ""),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("KULIPA_LOG_LEVEL", "INFO")},
    # huey's consumer installs its own handler; without this every line of it is printed twice.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "huey": {"propagate": False}},
}

# --- Abuse limits -------------------------------------------------------------------------------------------
# docs/payments.md "Abuse limits". Windows are django-ratelimit rates ("5/10m": 5 per 10 minutes; "" turns one
# off) counted in the cache; caps are integers checked in the database (0 turns one off).
# The cache: Django's RedisCache when REDIS_URL is set (shared by every machine; INCR is atomic). Otherwise a file
# cache in KULIPA_CACHE_DIR, shared by every process of this machine (gunicorn workers), with atomic counting
# (kulipa.core.filecache) and no setup. Not locmem: each process would count alone, so N processes allow N times
# the limit. Not the database cache: it needs `createcachetable` and would put every counter through SQLite's one
# writer, in the way of checkouts. Several machines without Redis would each count alone: use Redis there.
CACHES: dict[str, dict[str, Any]]
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "kulipa",
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "kulipa.core.filecache.LockedFileBasedCache",
            "LOCATION": os.environ.get("KULIPA_CACHE_DIR", str(VAR_DIR / "cache")),
            "KEY_PREFIX": "kulipa",
            "OPTIONS": {"MAX_ENTRIES": 20000},
        }
    }
RATELIMIT_USE_CACHE = "default"
# Orders placed (POST "Pagar com M-Pesa" that would place one) per browser session / per client address.
LIMIT_CHECKOUTS_PER_SESSION = os.environ.get("KULIPA_LIMIT_CHECKOUTS_PER_SESSION", "5/10m")
LIMIT_CHECKOUTS_PER_IP = os.environ.get("KULIPA_LIMIT_CHECKOUTS_PER_IP", "20/10m")  # many customers share a NAT
# "Tentar de novo" per browser session / per client address.
LIMIT_RETRIES_PER_SESSION = os.environ.get("KULIPA_LIMIT_RETRIES_PER_SESSION", "6/10m")
LIMIT_RETRIES_PER_IP = os.environ.get("KULIPA_LIMIT_RETRIES_PER_IP", "30/10m")
# Payment prompts queued for one phone number, whatever the order (and never two in flight at once).
LIMIT_PROMPTS_PER_PHONE = os.environ.get("KULIPA_LIMIT_PROMPTS_PER_PHONE", "3/10m")
# Payment attempts of one order, the first one included.
LIMIT_ATTEMPTS_PER_ORDER = int(os.environ.get("KULIPA_LIMIT_ATTEMPTS_PER_ORDER", "5"))
# Units held in live reservations of unpaid orders, per session / per phone number / per client address.
LIMIT_UNITS_HELD_PER_SESSION = int(os.environ.get("KULIPA_LIMIT_UNITS_HELD_PER_SESSION", "40"))
LIMIT_UNITS_HELD_PER_PHONE = int(os.environ.get("KULIPA_LIMIT_UNITS_HELD_PER_PHONE", "40"))
LIMIT_UNITS_HELD_PER_IP = int(os.environ.get("KULIPA_LIMIT_UNITS_HELD_PER_IP", "120"))
