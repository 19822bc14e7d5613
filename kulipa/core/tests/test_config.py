"""``config_problems`` as a table: one configuration per row, the problems it must (and must only) report.

Each row starts from a valid production configuration and changes what it names; ``mpesa.X`` keys change
``settings.MPESA["X"]``. The expected value is the list of ``(check id, environment variable)`` reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kulipa.core import config
from kulipa.core.config import Problem, config_problems, deploy_warnings
from kulipa.core.tests import keys

SECRET_KEY = keys.secret_key()
TOKEN = keys.callback_token()
CALLBACK_URL = f"https://loja.example.co.mz:14443/api/mpesa/callback/{TOKEN}"


def production(**changes: Any) -> dict[str, Any]:
    """The keyword arguments of ``config_problems`` for a valid live shop, with ``changes`` applied."""
    values: dict[str, Any] = {
        "debug": False,
        "secret_key": SECRET_KEY,
        "allowed_hosts": ["loja.example.co.mz"],
        "mpesa": {
            "ENVIRONMENT": "live",
            "API_KEY": keys.API_KEY,
            "PUBLIC_KEY": keys.portal_public_key(),
            "SERVICE_PROVIDER_CODE": keys.SERVICE_PROVIDER_CODE,
            "INITIATOR_IDENTIFIER": keys.INITIATOR,
            "SECURITY_CREDENTIAL": keys.CREDENTIAL,
            "BASE_URL": "",
            "CA_BUNDLE": "",
            "ORIGIN": "developer.mpesa.vm.co.mz",
            "MODE": "sync",
            "CALLBACK_URL": "",
            "CALLBACK_PATH_TOKEN": "",
            "CALLBACK_ALLOWED_IPS": [],
            "C2B_READ_TIMEOUT_SECONDS": 150.0,
            "TIMEOUT_MS": None,
        },
    }
    for name, value in changes.items():
        if name.startswith("mpesa."):
            values["mpesa"][name.removeprefix("mpesa.")] = value
        else:
            values[name] = value
    return values


ASYNC = {"mpesa.MODE": "async", "mpesa.CALLBACK_PATH_TOKEN": TOKEN, "mpesa.CALLBACK_URL": CALLBACK_URL}
NOTHING_SET = {  # what DJANGO_DEBUG=0 alone gives
    "secret_key": config.DEV_SECRET_KEY,
    "allowed_hosts": [],
    "mpesa.ENVIRONMENT": "",
    "mpesa.API_KEY": "",
    "mpesa.PUBLIC_KEY": "",
    "mpesa.SERVICE_PROVIDER_CODE": "",
    "mpesa.INITIATOR_IDENTIFIER": "",
    "mpesa.SECURITY_CREDENTIAL": "",
}

SECRET = "DJANGO_SECRET_KEY"
E001 = ("kulipa.E001", SECRET)
E004 = ("kulipa.E004", "MPESA_API_KEY")
E005 = ("kulipa.E005", "MPESA_PUBLIC_KEY")
E006 = ("kulipa.E006", "MPESA_SERVICE_PROVIDER_CODE")
E007 = ("kulipa.E007", "MPESA_INITIATOR_IDENTIFIER")
E008 = ("kulipa.E008", "MPESA_SECURITY_CREDENTIAL")
E010 = ("kulipa.E010", "MPESA_CALLBACK_PATH_TOKEN")
E011 = ("kulipa.E011", "MPESA_CALLBACK_URL")
E012_SECONDS = ("kulipa.E012", "MPESA_C2B_READ_TIMEOUT_SECONDS")
E012_MS = ("kulipa.E012", "MPESA_TIMEOUT_MS")

TABLE: list[tuple[str, dict[str, Any], list[tuple[str, str]]]] = [
    # --- fit to run ---
    ("live, sync", {}, []),
    ("live, async with token and callback URL", ASYNC, []),
    (
        "Vodacom's sandbox with its test short code and documented initiator",
        {
            "mpesa.ENVIRONMENT": "sandbox",
            "mpesa.SERVICE_PROVIDER_CODE": "171717",
            "mpesa.INITIATOR_IDENTIFIER": "MPesa2018",
            "mpesa.SECURITY_CREDENTIAL": "Mpesa2019",
        },
        [],
    ),
    (
        "the simulator, asked for, needs no credentials",
        {
            "mpesa.ENVIRONMENT": "simulator",
            "mpesa.API_KEY": "",
            "mpesa.PUBLIC_KEY": "",
            "mpesa.SERVICE_PROVIDER_CODE": "",
            "mpesa.INITIATOR_IDENTIFIER": "",
            "mpesa.SECURITY_CREDENTIAL": "",
        },
        [],
    ),
    ("development: nothing set is fine", {"debug": True, **NOTHING_SET}, []),
    ("MPESA_TIMEOUT_MS alone", {"mpesa.TIMEOUT_MS": "180000", "mpesa.C2B_READ_TIMEOUT_SECONDS": 180.0}, []),
    ("a PEM public key", {"mpesa.PUBLIC_KEY": "pem"}, []),
    ("an https base URL", {"mpesa.BASE_URL": "https://api.vm.co.mz"}, []),
    ("callback IP allow-list", {"mpesa.CALLBACK_ALLOWED_IPS": ["196.201.214.200", "2001:db8::1"]}, []),
    # --- the secret key ---
    ("secret key not set", {"secret_key": config.DEV_SECRET_KEY}, [E001]),
    ("secret key empty", {"secret_key": ""}, [E001]),
    ("secret key is the .env.example placeholder", {"secret_key": config.EXAMPLE_SECRET_KEY}, [E001]),
    ("secret key says change-me", {"secret_key": "change-me-" + "x" * 60}, [E001]),
    ("secret key from startproject", {"secret_key": "django-insecure-" + "k" * 10 + SECRET_KEY}, [E001]),
    ("secret key of 49 characters", {"secret_key": SECRET_KEY[:49]}, [E001]),
    ("secret key of 4 different characters", {"secret_key": "abcd" * 20}, [E001]),
    # --- hosts ---
    ("no allowed hosts", {"allowed_hosts": []}, [("kulipa.E002", "DJANGO_ALLOWED_HOSTS")]),
    ("blank allowed host", {"allowed_hosts": [" "]}, [("kulipa.E002", "DJANGO_ALLOWED_HOSTS")]),
    # --- the environment ---
    ("environment not said", {"mpesa.ENVIRONMENT": ""}, [("kulipa.E003", "MPESA_ENVIRONMENT")]),
    ("environment misspelt", {"mpesa.ENVIRONMENT": "production"}, [("kulipa.E003", "MPESA_ENVIRONMENT")]),
    (
        "environment misspelt, in development too",
        {"debug": True, "mpesa.ENVIRONMENT": "prod"},
        [("kulipa.E003", "MPESA_ENVIRONMENT")],
    ),
    # --- API key ---
    ("API key missing", {"mpesa.API_KEY": ""}, [E004]),
    ("API key is the simulator's", {"mpesa.API_KEY": config.SIMULATOR_API_KEY}, [E004]),
    ("API key pasted with a space", {"mpesa.API_KEY": keys.API_KEY[:16] + " " + keys.API_KEY[16:]}, [E004]),
    ("API key pasted with quotes", {"mpesa.API_KEY": f'"{keys.API_KEY}"'}, [E004]),
    ("API key too short", {"mpesa.API_KEY": "abc123"}, [E004]),
    ("API key too long for the public key", {"mpesa.API_KEY": "k" * 300}, [E004]),
    # --- public key ---
    ("public key missing", {"mpesa.PUBLIC_KEY": ""}, [E005]),
    ("public key truncated", {"mpesa.PUBLIC_KEY": "truncated"}, [E005]),
    ("public key not base64", {"mpesa.PUBLIC_KEY": "MII not base64 at all!"}, [E005]),
    ("public key is not RSA", {"mpesa.PUBLIC_KEY": "ec"}, [E005]),
    ("public key file missing", {"mpesa.PUBLIC_KEY": "/nonexistent/mpesa-public-key.txt"}, [E005]),
    # --- short code ---
    ("short code missing", {"mpesa.SERVICE_PROVIDER_CODE": ""}, [E006]),
    ("short code with letters", {"mpesa.SERVICE_PROVIDER_CODE": "ABC123"}, [E006]),
    ("short code too long", {"mpesa.SERVICE_PROVIDER_CODE": "1234567"}, [E006]),
    ("sandbox short code on the live gateway", {"mpesa.SERVICE_PROVIDER_CODE": "171717"}, [E006]),
    # --- initiator and credential ---
    ("initiator missing", {"mpesa.INITIATOR_IDENTIFIER": ""}, [E007]),
    ("documentation's initiator, live", {"mpesa.INITIATOR_IDENTIFIER": "MPesa2018"}, [E007]),
    ("credential missing", {"mpesa.SECURITY_CREDENTIAL": ""}, [E008]),
    ("credential with a space", {"mpesa.SECURITY_CREDENTIAL": "two words"}, [E008]),
    ("documentation's credential, live", {"mpesa.SECURITY_CREDENTIAL": "Mpesa2019"}, [E008]),
    # --- mode and callback ---
    ("mode misspelt", {"mpesa.MODE": "asynchronous"}, [("kulipa.E009", "MPESA_MODE")]),
    (
        "async without callback secret",
        {
            **ASYNC,
            "mpesa.CALLBACK_PATH_TOKEN": "",
            "mpesa.CALLBACK_URL": "https://loja.example.co.mz:14443/api/mpesa/callback",
        },
        [E010],
    ),
    (
        "async with a short secret",
        {**ASYNC, "mpesa.CALLBACK_PATH_TOKEN": "abc123", "mpesa.CALLBACK_URL": CALLBACK_URL.replace(TOKEN, "abc123")},
        [E010],
    ),
    ("secret with characters a path cannot hold", {**ASYNC, "mpesa.CALLBACK_PATH_TOKEN": "a/b?c" * 8}, [E010, E011]),
    ("sync with a short secret", {"mpesa.CALLBACK_PATH_TOKEN": "short"}, [E010]),
    ("async without callback URL", {**ASYNC, "mpesa.CALLBACK_URL": ""}, [E011]),
    ("callback URL over http", {**ASYNC, "mpesa.CALLBACK_URL": CALLBACK_URL.replace("https:", "http:")}, [E011]),
    ("callback URL without port", {**ASYNC, "mpesa.CALLBACK_URL": CALLBACK_URL.replace(":14443", "")}, [E011]),
    ("callback URL on port 443", {**ASYNC, "mpesa.CALLBACK_URL": CALLBACK_URL.replace("14443", "443")}, [E011]),
    ("callback URL on port 19001", {**ASYNC, "mpesa.CALLBACK_URL": CALLBACK_URL.replace("14443", "19001")}, [E011]),
    ("callback URL on port 10999", {**ASYNC, "mpesa.CALLBACK_URL": CALLBACK_URL.replace("14443", "10999")}, [E011]),
    ("callback URL on port 11000", {**ASYNC, "mpesa.CALLBACK_URL": CALLBACK_URL.replace("14443", "11000")}, []),
    ("callback URL on port 19000", {**ASYNC, "mpesa.CALLBACK_URL": CALLBACK_URL.replace("14443", "19000")}, []),
    ("callback URL with another token", {**ASYNC, "mpesa.CALLBACK_URL": CALLBACK_URL.replace(TOKEN, "x" * 43)}, [E011]),
    ("callback URL with a password", {**ASYNC, "mpesa.CALLBACK_URL": CALLBACK_URL.replace("//", "//u:p@")}, [E011]),
    ("callback URL that is no URL", {**ASYNC, "mpesa.CALLBACK_URL": "https://loja:port/x"}, [E011]),
    ("bad callback URL in sync mode", {"mpesa.CALLBACK_URL": "http://loja.example.co.mz/api/mpesa/callback"}, [E011]),
    # --- timeouts ---
    ("C2B timeout below 120 s", {"mpesa.C2B_READ_TIMEOUT_SECONDS": 60.0}, [E012_SECONDS]),
    (
        "C2B timeout below 120 s, in development too",
        {"debug": True, "mpesa.C2B_READ_TIMEOUT_SECONDS": 119.0},
        [E012_SECONDS],
    ),
    ("MPESA_TIMEOUT_MS below 120000", {"mpesa.TIMEOUT_MS": "60000", "mpesa.C2B_READ_TIMEOUT_SECONDS": 60.0}, [E012_MS]),
    (
        "MPESA_TIMEOUT_MS and seconds disagree",
        {"mpesa.TIMEOUT_MS": "150000", "mpesa.C2B_READ_TIMEOUT_SECONDS": 200.0},
        [E012_MS],
    ),
    ("MPESA_TIMEOUT_MS not a number", {"mpesa.TIMEOUT_MS": "2min"}, [E012_MS]),
    # --- the rest ---
    (
        "callback allow-list with a range",
        {"mpesa.CALLBACK_ALLOWED_IPS": ["10.0.0.0/8"]},
        [("kulipa.E013", "MPESA_CALLBACK_ALLOWED_IPS")],
    ),
    ("base URL over http", {"mpesa.BASE_URL": "http://api.vm.co.mz"}, [("kulipa.E014", "MPESA_BASE_URL")]),
    ("base URL with a port", {"mpesa.BASE_URL": "https://api.vm.co.mz:18352"}, [("kulipa.E014", "MPESA_BASE_URL")]),
    ("CA bundle missing", {"mpesa.CA_BUNDLE": "/nonexistent/ca.pem"}, [("kulipa.E015", "MPESA_CA_BUNDLE")]),
    # --- everything at once: all listed, each once ---
    (
        "DJANGO_DEBUG=0 and nothing else",
        NOTHING_SET,
        [E001, ("kulipa.E002", "DJANGO_ALLOWED_HOSTS"), ("kulipa.E003", "MPESA_ENVIRONMENT")],
    ),
    (
        "live with nothing filled in",
        {k: v for k, v in NOTHING_SET.items() if k != "mpesa.ENVIRONMENT"},
        [E001, ("kulipa.E002", "DJANGO_ALLOWED_HOSTS"), E004, E005, E006, E007, E008],
    ),
]


def _resolve(changes: dict[str, Any]) -> dict[str, Any]:
    """Stand-ins for keys generated at run time ("pem", "ec")."""
    import base64

    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_public_key

    resolved = dict(changes)
    if resolved.get("mpesa.PUBLIC_KEY") == "pem":
        key = load_der_public_key(base64.b64decode(keys.portal_public_key()))
        resolved["mpesa.PUBLIC_KEY"] = key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    if resolved.get("mpesa.PUBLIC_KEY") == "ec":
        resolved["mpesa.PUBLIC_KEY"] = keys.ec_public_key_pem()
    if resolved.get("mpesa.PUBLIC_KEY") == "truncated":
        resolved["mpesa.PUBLIC_KEY"] = keys.portal_public_key()[:120]
    return resolved


@pytest.mark.parametrize(("row", "changes", "expected"), TABLE, ids=[row for row, _, _ in TABLE])
def test_config_problems(row: str, changes: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    values = production(**_resolve(changes))

    problems = config_problems(**values)

    assert [(p.id, p.setting) for p in problems] == sorted(expected)
    secrets = [values["secret_key"], *(str(values["mpesa"][k]) for k in ("API_KEY", "SECURITY_CREDENTIAL"))]
    secrets += [values["mpesa"]["CALLBACK_PATH_TOKEN"]]
    for problem in problems:
        assert problem.message and str(problem).startswith(f"{problem.id} {problem.setting}: ")
        for secret in secrets:  # a message says what is wrong, never the value
            assert len(secret) < 8 or secret not in str(problem), (problem, secret)


def test_the_public_key_may_be_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "mpesa-public-key.txt"
    key_file.write_text(keys.portal_public_key() + "\n", encoding="ascii")
    assert config_problems(**production(**{"mpesa.PUBLIC_KEY": str(key_file)})) == []

    key_file.write_text("garbage", encoding="ascii")
    assert [p.id for p in config_problems(**production(**{"mpesa.PUBLIC_KEY": str(key_file)}))] == ["kulipa.E005"]


def test_the_timeout_message_keeps_the_documented_minimum() -> None:
    (seconds,) = config_problems(**production(**{"mpesa.C2B_READ_TIMEOUT_SECONDS": 30.0}))
    (millis,) = config_problems(**production(**{"mpesa.TIMEOUT_MS": "30000", "mpesa.C2B_READ_TIMEOUT_SECONDS": 30.0}))

    assert "30 s is shorter than the 120 s" in seconds.message
    assert "30000 ms is shorter than the 120000 ms" in millis.message


def test_simulator_with_debug_off_is_pointed_out_by_check_deploy_only() -> None:
    simulator = {"ENVIRONMENT": "simulator"}

    assert [p.id for p in deploy_warnings(debug=False, mpesa=simulator)] == ["kulipa.W001"]
    assert deploy_warnings(debug=True, mpesa=simulator) == []
    assert deploy_warnings(debug=False, mpesa={"ENVIRONMENT": "live"}) == []


@pytest.mark.parametrize(
    ("debug", "api_key", "expected"),
    [(True, "", "simulator"), (True, keys.API_KEY, "sandbox"), (False, "", ""), (False, keys.API_KEY, "")],
)
def test_the_simulator_is_the_default_only_in_development_without_a_key(
    debug: bool, api_key: str, expected: str
) -> None:
    assert config.default_mpesa_environment(debug=debug, api_key=api_key) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("admin/", "admin/"), ("/gestao", "gestao/"), ("loja/gestao/", "loja/gestao/"), (" x-1_~. ", "x-1_~./")],
)
def test_admin_path_is_normalized(value: str, expected: str) -> None:
    assert config.normalize_admin_path(value) == expected


@pytest.mark.parametrize("value", ["", "/", "ges tao/", "a//b", "<script>/"])
def test_admin_path_refuses_what_is_no_path(value: str) -> None:
    with pytest.raises(ValueError, match="KULIPA_ADMIN_PATH"):
        config.normalize_admin_path(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", None),
        ("X-Forwarded-Proto", ("HTTP_X_FORWARDED_PROTO", "https")),
        ("X-Forwarded-Proto: https", ("HTTP_X_FORWARDED_PROTO", "https")),
        ("X-Forwarded-Ssl=on", ("HTTP_X_FORWARDED_SSL", "on")),
    ],
)
def test_proxy_ssl_header(value: str, expected: tuple[str, str] | None) -> None:
    assert config.proxy_ssl_header(value) == expected


def test_proxy_ssl_header_refuses_a_malformed_name() -> None:
    with pytest.raises(ValueError, match="DJANGO_SECURE_PROXY_SSL_HEADER"):
        config.proxy_ssl_header("X Forwarded Proto")


def test_csp_extra_sources() -> None:
    assert config.csp_extra_sources("img-src https://cdn.example.com;  connect-src https://a https://b ;") == {
        "img-src": ["https://cdn.example.com"],
        "connect-src": ["https://a", "https://b"],
    }
    with pytest.raises(ValueError, match="KULIPA_CSP_EXTRA"):
        config.csp_extra_sources("script-src-attr 'unsafe-inline'")
    with pytest.raises(ValueError, match="KULIPA_CSP_EXTRA"):
        config.csp_extra_sources("img-src")


def test_problems_read_as_one_line_each() -> None:
    problems = [Problem("kulipa.E001", SECRET, "not set"), Problem("kulipa.E004", "MPESA_API_KEY", "not set")]

    text = config.format_problems(problems)

    assert text.splitlines()[1:] == ["  kulipa.E001 DJANGO_SECRET_KEY: not set", "  kulipa.E004 MPESA_API_KEY: not set"]
