"""Django settings for Kulipa. Everything a deployment changes comes from the environment, or from a ``.env`` file
whose values the real environment overrides: docs/configuration.md lists every variable, .env.example is a
production example.

Development needs nothing: ``DJANGO_DEBUG`` defaults to on, SQLite in WAL mode (``DATABASE_URL`` for PostgreSQL),
huey on SQLite (``REDIS_URL`` for Redis), the local M-Pesa simulator. With ``DJANGO_DEBUG=0`` the configuration is
checked (``kulipa.core.config``) before the web server, the worker or ``check --deploy`` run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import dj_database_url
import django_stubs_ext
import environ  # type: ignore[import-untyped]  # django-environ ships no type hints
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from kulipa.core import config, logs

# Django's admin and form classes take type parameters at runtime as in their stubs (``admin.ModelAdmin[Product]``).
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BASE_DIR.parent

# --- Reading the environment ------------------------------------------------------------------------------------
# ``.env`` (or KULIPA_ENV_FILE; empty: none) fills in what the environment does not say. ``<NAME>_FILE`` may name a
# file holding a value (Docker/systemd secrets) for every variable read through ``env`` below.
try:
    ENV_FILE = config.read_env_file(PROJECT_DIR)
except FileNotFoundError as exc:
    raise ImproperlyConfigured(str(exc)) from exc
env = environ.FileAwareEnv()
_T = TypeVar("_T")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_str(name: str, default: str = "") -> str:
    """The variable's text, stripped; ``default`` when unset or empty."""
    try:
        return str(env.str(name, default="")).strip() or default
    except OSError as exc:  # NAME_FILE names a file that cannot be read
        raise ImproperlyConfigured(f"{name}_FILE: {exc}") from exc


def env_bool(name: str, default: bool = False) -> bool:
    """1/true/yes/on or 0/false/no/off (any case); unset or empty → ``default``; anything else is refused."""
    value = env_str(name).lower()
    if not value:
        return default
    if value in _TRUE | _FALSE:
        return value in _TRUE
    raise ImproperlyConfigured(f"{name}={value!r}: expected 1/true/yes/on or 0/false/no/off")


def _env_cast(name: str, default: _T, cast: Callable[[str], _T], what: str) -> _T:
    value = env_str(name)
    if not value:
        return default
    try:
        return cast(value)
    except (ValueError, ArithmeticError) as exc:
        raise ImproperlyConfigured(f"{name}={value!r}: expected {what}") from exc


def env_int(name: str, default: int) -> int:
    return _env_cast(name, default, int, "a whole number")


def env_float(name: str, default: float) -> float:
    return _env_cast(name, default, float, "a number")


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    """Comma-separated, items stripped, empty items dropped; unset or empty → ``default``."""
    try:
        items = [str(item).strip() for item in env.list(name, default=[]) if str(item).strip()]
    except OSError as exc:
        raise ImproperlyConfigured(f"{name}_FILE: {exc}") from exc
    return items or list(default or [])


def _parsed(parse: Callable[[str], _T], value: str) -> _T:
    """``parse(value)``; its ``ValueError`` (which names the variable) becomes ``ImproperlyConfigured``."""
    try:
        return parse(value)
    except ValueError as exc:
        raise ImproperlyConfigured(str(exc)) from exc


VAR_DIR = Path(env_str("KULIPA_VAR_DIR", str(PROJECT_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DJANGO_DEBUG", True)
# Unset: a development key. kulipa.core.config refuses it (and short or placeholder keys) with DJANGO_DEBUG=0.
SECRET_KEY = env_str("DJANGO_SECRET_KEY") or config.DEV_SECRET_KEY
SECRET_KEY_FALLBACKS = env_list("DJANGO_SECRET_KEY_FALLBACKS")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")
ADMIN_PATH = _parsed(config.normalize_admin_path, env_str("KULIPA_ADMIN_PATH", "admin/"))
"""Where the back office lives (``kulipa/urls.py``): ``admin/`` unless ``KULIPA_ADMIN_PATH`` says otherwise."""

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "huey.contrib.djhuey",
    "csp",
    "kulipa.core",  # registers the configuration checks (kulipa.core.checks)
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
    "csp.middleware.CSPMiddleware",
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
DATABASES = {"default": dj_database_url.parse(env_str("DATABASE_URL", f"sqlite:///{_SQLITE_PATH}"), conn_max_age=60)}
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
TIME_ZONE = "Africa/Maputo"  # what pages show; log lines are in UTC (kulipa.core.logs)

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

# --- Sessions, cookies and HTTPS ----------------------------------------------------------------------------
# Production defaults are HTTPS-only; `check --deploy` is clean with the .env.example values.
SESSION_COOKIE_AGE = 60 * 60 * 24 * 30
# Django's database sessions without a look-up per new key nor BEGIN/COMMIT around each save (kulipa/core/sessions.py).
SESSION_ENGINE = "kulipa.core.sessions"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = env_list("DJANGO_SECURE_REDIRECT_EXEMPT")  # path regexes, e.g. ^healthz$
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0 if DEBUG else 60 * 60 * 24 * 365)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
# Only when the reverse proxy in front always sets this header (and strips it from clients): e.g. X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = _parsed(config.proxy_ssl_header, env_str("DJANGO_SECURE_PROXY_SSL_HEADER"))
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Error pages and reports hide MPESA credentials, the callback URL and passwords inside URLs too.
DEFAULT_EXCEPTION_REPORTER_FILTER = "kulipa.core.reporting.SecretsFilter"

# --- Content security policy (django-csp) --------------------------------------------------------------------
# Scripts and styles from our own static files; the few inline <script>/<style> blocks carry the request's nonce
# ({{ request.csp_nonce }}). KULIPA_CSP: enforce (default) | report-only | off. KULIPA_CSP_EXTRA adds sources.
CSP_MODE = env_str("KULIPA_CSP", "enforce").lower()
_csp_directives: dict[str, list[object]] = {
    "default-src": [SELF],
    "script-src": [SELF, NONCE],
    "style-src": [SELF, NONCE],
    "img-src": [SELF, "data:"],
    "font-src": [SELF],
    "connect-src": [SELF],
    "object-src": [NONE],
    "base-uri": [NONE],
    "form-action": [SELF],
    "frame-ancestors": [NONE],
}
for _directive, _sources in _parsed(config.csp_extra_sources, env_str("KULIPA_CSP_EXTRA")).items():
    _csp_directives.setdefault(_directive, []).extend(_sources)
if env_str("KULIPA_CSP_REPORT_URI"):
    _csp_directives["report-uri"] = [env_str("KULIPA_CSP_REPORT_URI")]
if CSP_MODE == "enforce":
    CONTENT_SECURITY_POLICY = {"DIRECTIVES": _csp_directives}
elif CSP_MODE == "report-only":
    CONTENT_SECURITY_POLICY_REPORT_ONLY = {"DIRECTIVES": _csp_directives}
elif CSP_MODE != "off":
    raise ImproperlyConfigured(f"KULIPA_CSP={CSP_MODE!r}: expected enforce, report-only or off")

# --- Background work (huey) -------------------------------------------------------------------------------
# SQLite storage by default; REDIS_URL switches to Redis for several worker machines.
REDIS_URL = env_str("REDIS_URL")
HUEY_IMMEDIATE = env_bool("HUEY_IMMEDIATE", False)
_HUEY_CONSUMER = {"workers": env_int("HUEY_WORKERS", 8), "worker_type": "thread"}
# "results": False — no caller ever reads a task's return value; stored, they would pile up (Redis keeps them
# forever) at a few per payment.
if REDIS_URL:
    HUEY = {
        "huey_class": "huey.PriorityRedisHuey",
        "name": env_str("HUEY_NAME", "kulipa"),
        "url": REDIS_URL,
        "immediate": HUEY_IMMEDIATE,
        "results": False,
        "consumer": _HUEY_CONSUMER,
    }
else:
    HUEY = {
        "huey_class": "huey.SqliteHuey",
        "name": env_str("HUEY_NAME", "kulipa"),
        "filename": env_str("HUEY_SQLITE_PATH", str(VAR_DIR / "huey.sqlite3")),
        "immediate": HUEY_IMMEDIATE,
        "results": False,
        # SQLite cannot block on an empty queue: each worker thread polls, backing off to max_delay when idle
        # (huey's default 10 s would leave a push or a callback waiting seconds on a quiet shop). Redis blocks.
        "consumer": {**_HUEY_CONSUMER, "max_delay": 0.5},
    }

# --- Shop -------------------------------------------------------------------------------------------------
CURRENCY = "MZN"
RESERVATION_MINUTES = env_int("KULIPA_RESERVATION_MINUTES", 15)
# However many pushes and "try again", no hold on stock outlives checkout + this (docs/payments.md).
HOLD_CAP_MINUTES = env_int("KULIPA_HOLD_CAP_MINUTES", 30)
MAX_LINE_QUANTITY = 20
MAX_ORDER_TOTAL = _env_cast("KULIPA_MAX_ORDER_TOTAL", Decimal("250000"), Decimal, "an amount in meticais")

# --- M-Pesa -----------------------------------------------------------------------------------------------
# MPESA_ENVIRONMENT: simulator (the local mpesa.sandbox, which `make run` starts), sandbox (Vodacom's test gateway)
# or live. Unset: the simulator in development without an API key, Vodacom's sandbox with one; in production it
# must be set (kulipa.core.config). The simulator is never chosen because a key is missing in production.
_MPESA_API_KEY = env_str("MPESA_API_KEY")
_MPESA_TIMEOUT_MS = env_str("MPESA_TIMEOUT_MS") or None  # the integration plan's name for the C2B read timeout
MPESA = {
    "ENVIRONMENT": env_str("MPESA_ENVIRONMENT").lower()
    or config.default_mpesa_environment(debug=DEBUG, api_key=_MPESA_API_KEY),
    "API_KEY": _MPESA_API_KEY,
    "PUBLIC_KEY": env_str("MPESA_PUBLIC_KEY"),
    "SERVICE_PROVIDER_CODE": env_str(
        "MPESA_SERVICE_PROVIDER_CODE", config.SANDBOX_SERVICE_PROVIDER_CODE if DEBUG else ""
    ),
    "BASE_URL": env_str("MPESA_BASE_URL"),
    "PORT_OFFSET": env_int("MPESA_PORT_OFFSET", 0),
    "CA_BUNDLE": env_str("MPESA_CA_BUNDLE"),
    "ORIGIN": env_str("MPESA_ORIGIN", "developer.mpesa.vm.co.mz"),
    "INITIATOR_IDENTIFIER": env_str("MPESA_INITIATOR_IDENTIFIER"),
    "SECURITY_CREDENTIAL": env_str("MPESA_SECURITY_CREDENTIAL"),
    # "sync": a worker holds the C2B call; "async": the gateway answers at once and posts to MPESA_CALLBACK_URL.
    "MODE": env_str("MPESA_MODE", "sync").lower(),
    "CALLBACK_URL": env_str("MPESA_CALLBACK_URL"),
    "CALLBACK_PATH_TOKEN": env_str("MPESA_CALLBACK_PATH_TOKEN"),
    "CALLBACK_ALLOWED_IPS": env_list("MPESA_CALLBACK_ALLOWED_IPS"),
    "PUSH_WINDOW_SECONDS": env_int("MPESA_PUSH_WINDOW_SECONDS", 60),
    # Seconds, at least 120 (kulipa.core.config refuses less). MPESA_TIMEOUT_MS says the same in milliseconds.
    "C2B_READ_TIMEOUT_SECONDS": env_float(
        "MPESA_C2B_READ_TIMEOUT_SECONDS",
        _env_cast("MPESA_TIMEOUT_MS", 150_000.0, float, "milliseconds") / 1000,
    ),
    "TIMEOUT_MS": _MPESA_TIMEOUT_MS,
    "RECONCILE_MARGIN_SECONDS": env_int("MPESA_RECONCILE_MARGIN_SECONDS", 300),
    "SANDBOX_PHONE_URL": env_str("MPESA_SANDBOX_PHONE_URL"),
}

# --- Logs -------------------------------------------------------------------------------------------------------
# One line per event on stderr, timestamps in UTC: JSON with DJANGO_DEBUG=0, readable text otherwise.
LOG_FORMAT = env_str("KULIPA_LOG_FORMAT", logs.TEXT if DEBUG else logs.JSON).lower()
LOG_LEVEL = env_str("KULIPA_LOG_LEVEL", "INFO").upper()
LOGGING = _parsed(lambda fmt: logs.logging_config(fmt=fmt, level=LOG_LEVEL), LOG_FORMAT)

# --- Callback listener and proxies ---------------------------------------------------------------------------
# The M-Pesa callback listener (docs/callback-listener.md): gunicorn -c deploy/gunicorn-callback.conf.py serves only
# /api/mpesa/callback[/<token>] over TLS. Its port is KULIPA_CALLBACK_PORT, else the port of MPESA_CALLBACK_URL.
CALLBACK_LISTENER_HOST = env_str("KULIPA_CALLBACK_HOST", "0.0.0.0")  # noqa: S104 (it faces the gateway)
CALLBACK_LISTENER_PORT = env_int("KULIPA_CALLBACK_PORT", 0)  # 0: the port of MPESA_CALLBACK_URL
CALLBACK_TLS_CERT = env_str("KULIPA_CALLBACK_TLS_CERT")  # PEM: the certificate, then its chain
CALLBACK_TLS_KEY = env_str("KULIPA_CALLBACK_TLS_KEY")  # PEM: its private key
# Reverse proxies in front of Kulipa (addresses or CIDR networks). Only a request whose peer is one of these may
# name the client in X-Forwarded-For (kulipa.core.net.client_ip); empty: the header is never believed.
TRUSTED_PROXIES = env_list("KULIPA_TRUSTED_PROXIES")

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
AXES_FAILURE_LIMIT = env_int("KULIPA_LOGIN_FAILURE_LIMIT", 5)
LOGIN_IP_FAILURE_LIMIT = env_int("KULIPA_LOGIN_IP_FAILURE_LIMIT", 30)
AXES_COOLOFF_TIME = env_int("KULIPA_LOGIN_COOLOFF_MINUTES", 15) / 60  # hours, as django-axes reads it
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
STAFF_SESSION_SECONDS = int(env_float("KULIPA_STAFF_SESSION_HOURS", 8) * 3600)

RATELIMIT_FAIL_OPEN = True  # the cache unreachable: let requests through rather than refuse every one
# Callbacks accepted per client address (kulipa.core.net.client_ip) per window; more get 429 (M-Pesa's INS-16).
MPESA["CALLBACK_RATE_LIMIT"] = env_str("MPESA_CALLBACK_RATE_LIMIT", "120/m")

# --- Health and metrics -----------------------------------------------------------------------------------
# /healthz, /readyz and /metrics are answered first, before host validation and HTTPS redirects: load balancers
# and Prometheus reach each process by its address (docs/metrics.md).
MIDDLEWARE.insert(0, "kulipa.observability.middleware.ProbeMiddleware")
# Bearer token Prometheus sends to /metrics. Unset: /metrics answers 404 (open only with DJANGO_DEBUG=1).
METRICS_TOKEN = env_str("KULIPA_METRICS_TOKEN")
# prometheus_client's multiprocess mode: every process of the machine (gunicorn workers, huey consumers) writes
# its metrics under this directory, and /metrics adds them up. prometheus_client reads the variable itself, when
# it is imported: set it in the environment of every process, not here. Empty out the directory when the
# machine's Kulipa processes are (re)started together.
PROMETHEUS_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if PROMETHEUS_MULTIPROC_DIR:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
# /readyz asks the M-Pesa gateway (TCP connect to its host and C2B port): "required" (unreachable → 503),
# "report" (shown, never 503) or "off". Default: required with real credentials, off with the local simulator.
READYZ_GATEWAY = env_str("KULIPA_READYZ_GATEWAY", "off" if MPESA["ENVIRONMENT"] == config.SIMULATOR else "required")
if READYZ_GATEWAY not in ("required", "report", "off"):
    raise ImproperlyConfigured("KULIPA_READYZ_GATEWAY must be required, report or off")
READYZ_GATEWAY_TIMEOUT_SECONDS = env_float("KULIPA_READYZ_GATEWAY_TIMEOUT_SECONDS", 2)
READYZ_GATEWAY_CACHE_SECONDS = env_float("KULIPA_READYZ_GATEWAY_CACHE_SECONDS", 10)

# --- Application server and workers -----------------------------------------------------------------------
# Sizing (gunicorn processes × threads, huey consumers, database connections): docs/scaling.md; the web server's
# own settings are in deploy/gunicorn.conf.py. Periodic jobs run once per period across every worker machine
# (kulipa.scheduling.run_once).
INSTALLED_APPS += ["kulipa.scheduling"]
if DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
    # Each web thread and each worker thread keeps its own connection this many seconds (0: one per request/task);
    # the health check replaces a connection the database dropped (restart, failover) instead of failing a request.
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("DJANGO_CONN_MAX_AGE", 60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # A database that stops answering fails a request (and /readyz) in seconds instead of hanging it; a
    # connect_timeout in DATABASE_URL's query string wins.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env_int("DJANGO_DB_CONNECT_TIMEOUT", 5)
    )

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
            "LOCATION": env_str("KULIPA_CACHE_DIR", str(VAR_DIR / "cache")),
            "KEY_PREFIX": "kulipa",
            "OPTIONS": {"MAX_ENTRIES": 20000},
        }
    }
RATELIMIT_USE_CACHE = "default"


def env_rate(name: str, default: str) -> str:
    """A django-ratelimit rate (``"5/10m"``); ``off`` turns the window off (an empty value means the default)."""
    value = env_str(name, default)
    return "" if value.lower() == "off" else value


# Orders placed (POST "Pagar com M-Pesa" that would place one) per browser session / per client address.
LIMIT_CHECKOUTS_PER_SESSION = env_rate("KULIPA_LIMIT_CHECKOUTS_PER_SESSION", "5/10m")
LIMIT_CHECKOUTS_PER_IP = env_rate("KULIPA_LIMIT_CHECKOUTS_PER_IP", "20/10m")  # many customers share a NAT
# "Tentar de novo" per browser session / per client address.
LIMIT_RETRIES_PER_SESSION = env_rate("KULIPA_LIMIT_RETRIES_PER_SESSION", "6/10m")
LIMIT_RETRIES_PER_IP = env_rate("KULIPA_LIMIT_RETRIES_PER_IP", "30/10m")
# Payment prompts queued for one phone number, whatever the order (and never two in flight at once).
LIMIT_PROMPTS_PER_PHONE = env_rate("KULIPA_LIMIT_PROMPTS_PER_PHONE", "3/10m")
# Payment attempts of one order, the first one included.
LIMIT_ATTEMPTS_PER_ORDER = env_int("KULIPA_LIMIT_ATTEMPTS_PER_ORDER", 5)
# Units held in live reservations of unpaid orders, per session / per phone number / per client address.
LIMIT_UNITS_HELD_PER_SESSION = env_int("KULIPA_LIMIT_UNITS_HELD_PER_SESSION", 40)
LIMIT_UNITS_HELD_PER_PHONE = env_int("KULIPA_LIMIT_UNITS_HELD_PER_PHONE", 40)
LIMIT_UNITS_HELD_PER_IP = env_int("KULIPA_LIMIT_UNITS_HELD_PER_IP", 120)
