"""Hardening settings as a user of the shop meets them: the admin where ``KULIPA_ADMIN_PATH`` says, the HTTPS
and content-security headers on responses, secrets kept off Django's error pages, log lines in UTC, and the
environment variables reaching the settings (read in a fresh process, as a deployment does)."""

from __future__ import annotations

import importlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, RequestFactory
from django.urls import clear_url_caches
from django.views.debug import ExceptionReporter

import kulipa.urls
from kulipa.core.logs import UTCJSONFormatter, UTCTextFormatter, gunicorn_logconfig_dict, logging_config
from kulipa.core.reporting import SecretsFilter
from kulipa.core.tests import keys
from kulipa.core.tests.test_entrypoints import clean_env, production, run

pytestmark = pytest.mark.django_db


# --- the admin path ----------------------------------------------------------------------------------------------
@pytest.fixture
def admin_at(settings: Any) -> Iterator[Any]:
    """Reload the URLs after changing ``settings.ADMIN_PATH`` (as a process started with KULIPA_ADMIN_PATH would)."""

    def move(path: str) -> None:
        settings.ADMIN_PATH = path
        importlib.reload(kulipa.urls)
        clear_url_caches()

    yield move
    settings.ADMIN_PATH = "admin/"
    importlib.reload(kulipa.urls)
    clear_url_caches()


def test_the_admin_lives_where_kulipa_admin_path_says(admin_at: Any, client: Client) -> None:
    assert client.get("/admin/").status_code == 302  # the default

    admin_at("gestao/")

    moved = client.get("/gestao/")
    assert moved.status_code == 302 and moved["Location"].startswith("/gestao/login/")
    assert client.get("/gestao/login/").status_code == 200
    assert client.get("/admin/").status_code == 404
    assert client.get("/admin/login/").status_code == 404


# --- response headers --------------------------------------------------------------------------------------------
def test_pages_carry_a_content_security_policy_with_a_nonce(client: Client) -> None:
    response = client.get("/")

    policy = response["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";") if part.strip())
    assert directives["default-src"] == "'self'"
    assert directives["script-src"].startswith("'self'") and "unsafe" not in directives["script-src"]
    assert directives["style-src"].startswith("'self'") and "unsafe" not in directives["style-src"]
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert directives["form-action"] == "'self'"
    assert response["X-Frame-Options"] == "DENY" and response["X-Content-Type-Options"] == "nosniff"


def test_inline_scripts_and_styles_carry_the_nonce_of_their_response(client: Client) -> None:
    from kulipa.orders.tests.factories import order_make, product_make

    order = order_make({product_make().pk: 1})
    response = client.get(order.get_absolute_url())

    html = response.content.decode()
    policy = response["Content-Security-Policy"]
    nonce = policy.split("'nonce-", 1)[1].split("'", 1)[0]
    assert f'<script nonce="{nonce}">' in html and f'<style nonce="{nonce}">' in html
    assert "<script>" not in html and "<style>" not in html


# --- secrets on error pages ----------------------------------------------------------------------------------------
def _debug_error_page() -> str:
    """Django's technical 500 page for an error raised here (a frame whose locals hold no secret)."""
    request = RequestFactory().get("/")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        return str(ExceptionReporter(request, *sys.exc_info()).get_traceback_html())


def test_error_reports_hide_every_mpesa_secret_and_url_passwords(settings: Any) -> None:
    token = keys.callback_token()
    settings.MPESA = {
        **settings.MPESA,
        "API_KEY": keys.API_KEY,
        "SECURITY_CREDENTIAL": keys.CREDENTIAL,
        "INITIATOR_IDENTIFIER": keys.INITIATOR,
        "CALLBACK_PATH_TOKEN": token,
        "CALLBACK_URL": f"https://loja.example.co.mz:14443/api/mpesa/callback/{token}",
    }
    settings.REDIS_URL = "redis://:redis-pa55word@10.0.0.5:6379/0"
    settings.HUEY = {**settings.HUEY, "url": settings.REDIS_URL}
    settings.DEBUG = True

    html = _debug_error_page()

    assert "boom" in html and "MPESA" in html  # the settings are on the page…
    for secret in (keys.API_KEY, keys.CREDENTIAL, keys.INITIATOR, token, "redis-pa55word"):
        assert secret not in html, secret  # …their secrets are not
    assert "10.0.0.5:6379" in html  # the rest of a URL stays readable
    assert settings.DEFAULT_EXCEPTION_REPORTER_FILTER == "kulipa.core.reporting.SecretsFilter"


def test_the_filter_cleanses_url_passwords_in_lists_and_dicts() -> None:
    cleansed = SecretsFilter().cleanse_setting("CACHES", {"default": {"LOCATION": ["redis://u:p4ss@cache:6379/1"]}})

    assert cleansed == {"default": {"LOCATION": ["redis://u:********************@cache:6379/1"]}}


# --- log lines -----------------------------------------------------------------------------------------------------
def _record(**extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("kulipa.test", logging.INFO, __file__, 1, "paid %s", ("K0000042",), None)
    record.created = 1_780_000_000.25  # 2026-05-28T20:26:40.250Z
    record.__dict__.update(extra)
    return record


def test_text_lines_start_with_a_utc_timestamp() -> None:
    line = UTCTextFormatter().format(_record())

    assert line == "2026-05-28T20:26:40.250+00:00 INFO kulipa.test paid K0000042"


def test_json_lines_have_utc_time_and_the_extra_fields() -> None:
    line = json.loads(UTCJSONFormatter().format(_record(order="K0000042", outcome="succeeded")))

    assert line == {
        "time": "2026-05-28T20:26:40.250+00:00",
        "level": "INFO",
        "logger": "kulipa.test",
        "message": "paid K0000042",
        "order": "K0000042",
        "outcome": "succeeded",
    }


def test_an_unknown_log_format_is_refused() -> None:
    # The configurations themselves are applied by real processes in test_entrypoints.py (worker, gunicorn).
    with pytest.raises(ValueError, match="KULIPA_LOG_FORMAT"):
        logging_config(fmt="xml", level="INFO")
    assert gunicorn_logconfig_dict()["loggers"]["gunicorn.access"]["handlers"] == ["console"]


# --- the environment reaches the settings ----------------------------------------------------------------------------
SHOW = """
import json, django
django.setup()
from django.conf import settings as s
print(json.dumps({name: getattr(s, name, None) for name in [
    "DEBUG", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD",
    "SECURE_PROXY_SSL_HEADER", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_REDIRECT_EXEMPT", "ADMIN_PATH",
    "LOG_FORMAT", "CONTENT_SECURITY_POLICY", "CONTENT_SECURITY_POLICY_REPORT_ONLY", "ALLOWED_HOSTS",
]} | {"MPESA_TIMEOUT": s.MPESA["C2B_READ_TIMEOUT_SECONDS"]}, default=str))
"""


def settings_of(env: dict[str, str]) -> dict[str, Any]:
    done = run([sys.executable, "-c", SHOW], env)
    assert done.returncode == 0, done.stderr
    values: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return values


def test_production_defaults_are_https_only(tmp_path: Path) -> None:
    values = settings_of(production(tmp_path))

    assert values["DEBUG"] is False
    assert values["SECURE_SSL_REDIRECT"] is True and values["SECURE_HSTS_SECONDS"] == 31_536_000
    assert values["SESSION_COOKIE_SECURE"] is True and values["CSRF_COOKIE_SECURE"] is True
    assert values["SECURE_PROXY_SSL_HEADER"] is None  # no proxy is trusted unless told
    assert values["LOG_FORMAT"] == "json" and values["CONTENT_SECURITY_POLICY"] is not None
    assert values["MPESA_TIMEOUT"] == 150.0


def test_hardening_settings_come_from_the_environment(tmp_path: Path) -> None:
    values = settings_of(
        production(
            tmp_path,
            DJANGO_SECURE_HSTS_SECONDS="600",
            DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS="yes",
            DJANGO_SECURE_HSTS_PRELOAD="true",
            DJANGO_SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto",
            DJANGO_SECURE_REDIRECT_EXEMPT="^healthz$, ^metrics$",
            KULIPA_ADMIN_PATH="/gestao",
            KULIPA_LOG_FORMAT="text",
            KULIPA_CSP="report-only",
            KULIPA_CSP_EXTRA="img-src https://cdn.example.co.mz",
            KULIPA_CSP_REPORT_URI="https://reports.example.co.mz/csp",
            MPESA_TIMEOUT_MS="180000",
        )
    )

    assert values["SECURE_HSTS_SECONDS"] == 600
    assert values["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True and values["SECURE_HSTS_PRELOAD"] is True
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert values["SECURE_REDIRECT_EXEMPT"] == ["^healthz$", "^metrics$"]
    assert values["ADMIN_PATH"] == "gestao/" and values["LOG_FORMAT"] == "text"
    assert values["CONTENT_SECURITY_POLICY"] is None
    report_only = values["CONTENT_SECURITY_POLICY_REPORT_ONLY"]["DIRECTIVES"]
    assert report_only["img-src"] == ["'self'", "data:", "https://cdn.example.co.mz"]
    assert report_only["report-uri"] == ["https://reports.example.co.mz/csp"]
    assert values["MPESA_TIMEOUT"] == 180.0  # MPESA_TIMEOUT_MS is milliseconds


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DJANGO_DEBUG", "maybe"),
        ("DJANGO_SECURE_HSTS_SECONDS", "a year"),
        ("MPESA_TIMEOUT_MS", "2 minutes"),
        ("KULIPA_CSP", "strict"),
        ("KULIPA_ADMIN_PATH", "a b"),
        ("KULIPA_LOG_FORMAT", "xml"),
    ],
)
def test_a_malformed_value_is_refused_naming_its_variable(tmp_path: Path, name: str, value: str) -> None:
    done = run([sys.executable, "-c", SHOW], clean_env(tmp_path, **{name: value}))

    assert done.returncode != 0 and name in done.stderr and "ImproperlyConfigured" in done.stderr
