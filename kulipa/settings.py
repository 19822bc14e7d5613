"""Django settings for Kulipa. Everything a deployment changes comes from the environment (see .env.example).

SQLite in WAL mode is the embedded default so a newcomer needs no server; set DATABASE_URL for PostgreSQL.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

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

# --- Callback listener and proxies ---------------------------------------------------------------------------
# The M-Pesa callback listener (docs/callback-listener.md): gunicorn -c deploy/gunicorn-callback.conf.py serves only
# /api/mpesa/callback[/<token>] over TLS. Its port is KULIPA_CALLBACK_PORT, else the port of MPESA_CALLBACK_URL.
CALLBACK_LISTENER_HOST = os.environ.get("KULIPA_CALLBACK_HOST", "0.0.0.0")  # noqa: S104 (it faces the gateway)
CALLBACK_LISTENER_PORT = int(os.environ.get("KULIPA_CALLBACK_PORT") or 0)  # 0: the port of MPESA_CALLBACK_URL
CALLBACK_TLS_CERT = os.environ.get("KULIPA_CALLBACK_TLS_CERT", "")  # PEM: the certificate, then its chain
CALLBACK_TLS_KEY = os.environ.get("KULIPA_CALLBACK_TLS_KEY", "")  # PEM: its private key
# Reverse proxies in front of Kulipa (addresses or CIDR networks). Only a request whose peer is one of these may
# name the client in X-Forwarded-For (kulipa.core.net.client_ip); empty: the header is never believed.
TRUSTED_PROXIES = [p.strip() for p in os.environ.get("KULIPA_TRUSTED_PROXIES", "").split(",") if p.strip()]

# --- Login throttling and sessions ---------------------------------------------------------------------------------
# django-axes counts failed logins (shop and back office) in the database and refuses logins — the right password
# too — for a cool-off after 5 failures for one e-mail from one address, or 30 from one address whatever the e-mail
# (password spraying). Logins tried while locked are not counted, so a lock never outlasts the cool-off since the
# last counted failure. See kulipa/accounts/throttle.py; unlock a staff member with `manage.py axes_reset_username`.
INSTALLED_APPS += ["axes"]
# Absolute end of staff sessions: after the view, so it runs before SessionMiddleware saves the session.
MIDDLEWARE.append("kulipa.accounts.middleware.StaffSessionMiddleware")
MIDDLEWARE.append("axes.middleware.AxesMiddleware")  # last, as django-axes asks: turns a lock into the 429 page
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_HANDLER = "kulipa.accounts.throttle.LoginThrottleHandler"
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]  # by address alone: LOGIN_IP_FAILURE_LIMIT (the handler)
AXES_FAILURE_LIMIT = int(os.environ.get("KULIPA_LOGIN_FAILURE_LIMIT", "5"))
LOGIN_IP_FAILURE_LIMIT = int(os.environ.get("KULIPA_LOGIN_IP_FAILURE_LIMIT", "30"))
AXES_COOLOFF_TIME = int(os.environ.get("KULIPA_LOGIN_COOLOFF_MINUTES", "15")) / 60  # hours, as django-axes reads it
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = True
AXES_USERNAME_FORM_FIELD = "username"  # the field both login forms post (and the name authenticate() is given)
AXES_USERNAME_CALLABLE = "kulipa.accounts.throttle.login_username"
AXES_CLIENT_IP_CALLABLE = "kulipa.core.net.client_ip"
AXES_LOCKOUT_CALLABLE = "kulipa.accounts.throttle.lockout_response"
AXES_DISABLE_ACCESS_LOG = True  # no row per successful login (failures are what it is for; users.last_login stays)
_loggers = LOGGING["loggers"]
if isinstance(_loggers, dict):
    _loggers["axes"] = {"level": "WARNING"}  # failures and lockouts; not a line per login about its bookkeeping

# A staff session ends this long after login, however busy (customers: SESSION_COOKIE_AGE, 30 days).
STAFF_SESSION_SECONDS = int(float(os.environ.get("KULIPA_STAFF_SESSION_HOURS", "8")) * 3600)

# Request rate limits (django-ratelimit) count in their own cache: Redis when REDIS_URL is set (shared by every web
# process and machine), else this process's memory (one limit per process).
if REDIS_URL:
    _RATELIMIT_CACHE = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "kulipa-ratelimit",
    }
else:
    _RATELIMIT_CACHE = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "kulipa-ratelimit"}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}, "ratelimit": _RATELIMIT_CACHE}
RATELIMIT_USE_CACHE = "ratelimit"
RATELIMIT_FAIL_OPEN = True  # the cache unreachable: let requests through rather than refuse every one
# Callbacks accepted per client address (kulipa.core.net.client_ip) per window; more get 429 (M-Pesa's INS-16).
MPESA["CALLBACK_RATE_LIMIT"] = os.environ.get("MPESA_CALLBACK_RATE_LIMIT", "120/m")

# --- Health and metrics -----------------------------------------------------------------------------------
# /healthz, /readyz and /metrics are answered first, before host validation and HTTPS redirects: load balancers
# and Prometheus reach each process by its address (docs/metrics.md).
MIDDLEWARE.insert(0, "kulipa.observability.middleware.ProbeMiddleware")
# Bearer token Prometheus sends to /metrics. Unset: /metrics answers 404 (open only with DJANGO_DEBUG=1).
METRICS_TOKEN = os.environ.get("KULIPA_METRICS_TOKEN", "")
# prometheus_client's multiprocess mode: every process of the machine (gunicorn workers, huey consumers) writes
# its metrics under this directory, and /metrics adds them up. prometheus_client reads the variable itself, when
# it is imported: set it in the environment of every process, not here. Empty out the directory when the
# machine's Kulipa processes are (re)started together.
PROMETHEUS_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if PROMETHEUS_MULTIPROC_DIR:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
# /readyz asks the M-Pesa gateway (TCP connect to its host and C2B port): "required" (unreachable → 503),
# "report" (shown, never 503) or "off". Default: required with real credentials, off with the local simulator.
READYZ_GATEWAY = os.environ.get("KULIPA_READYZ_GATEWAY", "required" if MPESA["API_KEY"] else "off")
if READYZ_GATEWAY not in ("required", "report", "off"):
    raise ImproperlyConfigured("KULIPA_READYZ_GATEWAY must be required, report or off")
READYZ_GATEWAY_TIMEOUT_SECONDS = float(os.environ.get("KULIPA_READYZ_GATEWAY_TIMEOUT_SECONDS", "2"))
READYZ_GATEWAY_CACHE_SECONDS = float(os.environ.get("KULIPA_READYZ_GATEWAY_CACHE_SECONDS", "10"))
