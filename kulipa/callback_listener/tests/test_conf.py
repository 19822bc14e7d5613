"""The listener's configuration: what it listens on, and the sentence it stops with when something is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trustme
from django.core.exceptions import ImproperlyConfigured
from django.urls import Resolver404, resolve, reverse

from kulipa.callback_listener.conf import listener_config
from kulipa.payments import views

PROJECT_DIR = Path(__file__).resolve().parents[3]
URL = "https://loja.example.co.mz:12345/api/mpesa/callback/t0ken"


@pytest.fixture
def pem(tmp_path: Path) -> tuple[str, str]:
    server = trustme.CA().issue_cert("loja.example.co.mz")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


@pytest.fixture
def configured(settings: Any, pem: tuple[str, str]) -> Any:
    settings.MPESA = {**settings.MPESA, "CALLBACK_URL": URL}
    settings.CALLBACK_TLS_CERT, settings.CALLBACK_TLS_KEY = pem
    settings.CALLBACK_LISTENER_PORT = 0
    settings.CALLBACK_LISTENER_HOST = "0.0.0.0"
    settings.TRUSTED_PROXIES = []
    return settings


def test_the_port_comes_from_the_callback_url(configured: Any, pem: tuple[str, str]) -> None:
    listener = listener_config()
    assert (listener.port, listener.bind) == (12345, "0.0.0.0:12345")
    assert (str(listener.certfile), str(listener.keyfile)) == pem


def test_an_own_port_and_an_ipv6_host(configured: Any) -> None:
    configured.CALLBACK_LISTENER_PORT = 8443  # behind port forwarding: public 12345 → local 8443
    configured.CALLBACK_LISTENER_HOST = "::"
    assert listener_config().bind == "[::]:8443"
    configured.MPESA = {**configured.MPESA, "CALLBACK_URL": ""}
    assert listener_config().port == 8443


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"CALLBACK_URL": "http://loja.example.co.mz:12345/api/mpesa/callback"}, "https://host:PORT"),
        ({"CALLBACK_URL": "https://loja.example.co.mz/api/mpesa/callback"}, "11000 to 19000"),
        ({"CALLBACK_URL": "https://loja.example.co.mz:443/api/mpesa/callback"}, "11000 to 19000"),
        ({"CALLBACK_URL": "https://loja.example.co.mz:19001/api/mpesa/callback"}, "11000 to 19000"),
        ({"CALLBACK_URL": "https://loja.example.co.mz:port/api/mpesa/callback"}, "11000 to 19000"),
        ({"CALLBACK_URL": ""}, "needs a port"),
    ],
)
def test_a_callback_url_the_gateway_would_not_call_is_refused(
    configured: Any, change: dict[str, str], message: str
) -> None:
    configured.MPESA = {**configured.MPESA, **change}
    with pytest.raises(ImproperlyConfigured, match=message):
        listener_config()


def test_tls_files_are_required_and_must_match(configured: Any, tmp_path: Path) -> None:
    configured.CALLBACK_TLS_KEY = ""
    with pytest.raises(ImproperlyConfigured, match="HTTPS only"):
        listener_config()
    configured.CALLBACK_TLS_KEY = str(tmp_path / "missing.pem")
    with pytest.raises(ImproperlyConfigured, match="cannot be used together"):
        listener_config()
    other = trustme.CA().issue_cert("loja.example.co.mz")
    other.private_key_pem.write_to_path(str(tmp_path / "other-key.pem"))
    configured.CALLBACK_TLS_KEY = str(tmp_path / "other-key.pem")
    with pytest.raises(ImproperlyConfigured, match="cannot be used together"):
        listener_config()


def test_a_bad_trusted_proxy_stops_the_listener(configured: Any) -> None:
    configured.TRUSTED_PROXIES = ["loadbalancer"]
    with pytest.raises(ImproperlyConfigured, match="TRUSTED_PROXIES"):
        listener_config()


def test_the_urlconf_has_the_callback_routes_and_nothing_else(settings: Any) -> None:
    settings.ROOT_URLCONF = "kulipa.callback_listener.urls"
    assert resolve("/api/mpesa/callback").func is views.mpesa_callback
    assert resolve("/api/mpesa/callback/t0ken").func is views.mpesa_callback
    assert reverse("payments:callback_token", kwargs={"token": "t"}) == "/api/mpesa/callback/t"
    for path in ("/", "/admin/", "/carrinho/", "/checkout/", "/pedido/X/estado/", "/i18n/setlang/"):
        with pytest.raises(Resolver404):
            resolve(path)


def test_gunicorn_refuses_to_start_without_a_certificate(tmp_path: Path) -> None:
    """The documented command, missing its certificate: it stops before listening, saying what to set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KULIPA_CALLBACK_", "MPESA_CALLBACK_"))}
    env.update(MPESA_CALLBACK_URL=URL, KULIPA_VAR_DIR=str(tmp_path))
    gunicorn = Path(sys.executable).with_name("gunicorn")
    result = subprocess.run(
        [str(gunicorn), "-c", "deploy/gunicorn-callback.conf.py", "--check-config"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "KULIPA_CALLBACK_TLS_CERT" in result.stderr + result.stdout


def test_gunicorn_refuses_a_configuration_the_shop_would_refuse(tmp_path: Path, pem: tuple[str, str]) -> None:
    """The shop's gate (kulipa.core.config) applies to the listener too: DEBUG off with a weak secret key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KULIPA_", "MPESA_", "DJANGO_"))}
    env.update(
        KULIPA_ENV_FILE="",
        KULIPA_VAR_DIR=str(tmp_path),
        KULIPA_CALLBACK_TLS_CERT=pem[0],
        KULIPA_CALLBACK_TLS_KEY=pem[1],
        MPESA_CALLBACK_URL=URL,
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="secret",
    )
    gunicorn = Path(sys.executable).with_name("gunicorn")
    result = subprocess.run(
        [str(gunicorn), "-c", "deploy/gunicorn-callback.conf.py", "--check-config"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "kulipa-callback: not started" in result.stderr
    assert "DJANGO_SECRET_KEY" in result.stderr
