"""The configuration gate on the real entry points, as separate processes with their own environment:

* each unsafe production configuration stops the web application (``import kulipa.wsgi``, and gunicorn), the worker
  (``manage.py run_huey``) and ``manage.py check --deploy``, each exiting non-zero and naming the variable;
* ``.env.example`` with its blanks filled in passes ``check --deploy`` with no issue at all (no warning either),
  loads as the WSGI application and starts the worker — whose log lines are JSON with UTC timestamps;
* ``.env.example`` as shipped (placeholders) does not start, naming each placeholder.

Every process gets a clean environment: none of the caller's DJANGO_/MPESA_/KULIPA_ variables, no ``.env`` but the
one a test names (``KULIPA_ENV_FILE``), a private ``KULIPA_VAR_DIR``.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from kulipa.core import config
from kulipa.core.tests import keys

PROJECT_DIR = Path(__file__).resolve().parents[3]
ENV_EXAMPLE = PROJECT_DIR / ".env.example"
PREFIXES = ("DJANGO_", "MPESA_", "KULIPA_", "HUEY_", "DATABASE_URL", "REDIS_URL")
TIMEOUT = 60

TOKEN = keys.callback_token()
PRODUCTION = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": keys.secret_key(),
    "DJANGO_ALLOWED_HOSTS": "loja.example.co.mz",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "DJANGO_SECURE_HSTS_PRELOAD": "1",
    "MPESA_ENVIRONMENT": "live",
    "MPESA_API_KEY": keys.API_KEY,
    "MPESA_SERVICE_PROVIDER_CODE": keys.SERVICE_PROVIDER_CODE,
    "MPESA_INITIATOR_IDENTIFIER": keys.INITIATOR,
    "MPESA_SECURITY_CREDENTIAL": keys.CREDENTIAL,
}
"""A valid production environment (plus ``MPESA_PUBLIC_KEY``, generated per run) without a ``.env``."""
ASYNC = {
    "MPESA_MODE": "async",
    "MPESA_CALLBACK_PATH_TOKEN": TOKEN,
    "MPESA_CALLBACK_URL": f"https://loja.example.co.mz:14443/api/mpesa/callback/{TOKEN}",
}
BLANKS = {
    "DJANGO_SECRET_KEY": keys.secret_key(),
    "MPESA_API_KEY": keys.API_KEY,
    "MPESA_SERVICE_PROVIDER_CODE": keys.SERVICE_PROVIDER_CODE,
    "MPESA_INITIATOR_IDENTIFIER": keys.INITIATOR,
    "MPESA_SECURITY_CREDENTIAL": keys.CREDENTIAL,
}
"""What a merchant fills in ``.env.example`` (plus ``MPESA_PUBLIC_KEY``); everything else stays as documented."""

WSGI = [sys.executable, "-c", "import kulipa.wsgi"]
WORKER = [sys.executable, "manage.py", "run_huey"]
CHECK_DEPLOY = [sys.executable, "manage.py", "check", "--deploy"]


def clean_env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIXES)}
    env.update(
        DJANGO_SETTINGS_MODULE="kulipa.settings",
        KULIPA_ENV_FILE="",
        KULIPA_VAR_DIR=str(tmp_path / "var"),
        PYTHONUNBUFFERED="1",
    )
    env.update(values)
    return env


def production(tmp_path: Path, **changes: str) -> dict[str, str]:
    values = {**PRODUCTION, "MPESA_PUBLIC_KEY": keys.portal_public_key(), **changes}
    return clean_env(tmp_path, **{k: v for k, v in values.items() if v is not None})


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL
    )


def filled_example(tmp_path: Path) -> Path:
    """``.env.example`` with the blanks a merchant fills in, written as a ``.env`` file."""
    fill = {**BLANKS, "MPESA_PUBLIC_KEY": keys.portal_public_key()}
    lines = []
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        name = line.split("=", 1)[0]
        lines.append(f"{name}={fill.pop(name)}" if not line.startswith("#") and name in fill else line)
    assert not fill, f".env.example lost these lines: {sorted(fill)}"
    path = tmp_path / "production.env"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


UNSAFE: list[tuple[str, dict[str, str], str]] = [
    ("no secret key", {"DJANGO_SECRET_KEY": ""}, "DJANGO_SECRET_KEY"),
    ("the .env.example secret key", {"DJANGO_SECRET_KEY": config.EXAMPLE_SECRET_KEY}, "DJANGO_SECRET_KEY"),
    ("a short secret key", {"DJANGO_SECRET_KEY": "s3cr3t-but-short"}, "DJANGO_SECRET_KEY"),
    ("no API key", {"MPESA_API_KEY": ""}, "MPESA_API_KEY"),
    ("a malformed API key", {"MPESA_API_KEY": "paste here"}, "MPESA_API_KEY"),
    ("a public key that is no RSA key", {"MPESA_PUBLIC_KEY": "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A"}, "MPESA_PUBLIC_KEY"),
    ("a malformed short code", {"MPESA_SERVICE_PROVIDER_CODE": "17-17"}, "MPESA_SERVICE_PROVIDER_CODE"),
    ("no initiator", {"MPESA_INITIATOR_IDENTIFIER": ""}, "MPESA_INITIATOR_IDENTIFIER"),
    ("no credential", {"MPESA_SECURITY_CREDENTIAL": ""}, "MPESA_SECURITY_CREDENTIAL"),
    ("async without callback secret", {**ASYNC, "MPESA_CALLBACK_PATH_TOKEN": ""}, "MPESA_CALLBACK_PATH_TOKEN"),
    ("callback over http", {**ASYNC, "MPESA_CALLBACK_URL": ASYNC["MPESA_CALLBACK_URL"].replace("https", "http")},
     "MPESA_CALLBACK_URL"),
    ("callback on port 443", {**ASYNC, "MPESA_CALLBACK_URL": ASYNC["MPESA_CALLBACK_URL"].replace(":14443", ":443")},
     "MPESA_CALLBACK_URL"),
    ("no M-Pesa environment", {"MPESA_ENVIRONMENT": ""}, "MPESA_ENVIRONMENT"),
]  # fmt: skip
"""One row per kind of unsafe configuration (each kind's variants are rows of the table test in test_config.py)."""


@pytest.mark.parametrize(("row", "changes", "setting"), UNSAFE, ids=[row for row, _, _ in UNSAFE])
def test_an_unsafe_configuration_stops_web_worker_and_check_deploy(
    tmp_path: Path, row: str, changes: dict[str, str], setting: str
) -> None:
    env = production(tmp_path, **changes)
    commands = {"wsgi": WSGI, "run_huey": WORKER, "check --deploy": CHECK_DEPLOY}
    with ThreadPoolExecutor(len(commands)) as pool:
        results = dict(zip(commands, pool.map(lambda args: run(args, env), commands.values()), strict=True))

    for name, done in results.items():
        output = done.stdout + done.stderr
        assert done.returncode != 0, f"{name} started with {row}:\n{output}"
        assert setting in output, f"{name} did not name {setting}:\n{output}"
    assert "ImproperlyConfigured" in results["wsgi"].stderr
    assert "SystemCheckError" in results["run_huey"].stderr and "kulipa.E0" in results["run_huey"].stderr
    for secret in (keys.API_KEY, keys.CREDENTIAL, TOKEN, PRODUCTION["DJANGO_SECRET_KEY"]):
        assert all(secret not in done.stdout + done.stderr for done in results.values()), "a secret was printed"


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    env = clean_env(tmp_path, DJANGO_DEBUG="0", MPESA_ENVIRONMENT="live", MPESA_TIMEOUT_MS="1000")

    done = run(CHECK_DEPLOY, env)

    assert done.returncode == 1
    for setting in (
        "DJANGO_SECRET_KEY",
        "DJANGO_ALLOWED_HOSTS",
        "MPESA_API_KEY",
        "MPESA_PUBLIC_KEY",
        "MPESA_SERVICE_PROVIDER_CODE",
        "MPESA_INITIATOR_IDENTIFIER",
        "MPESA_SECURITY_CREDENTIAL",
        "MPESA_TIMEOUT_MS",
    ):
        assert setting in done.stderr, setting


def test_gunicorn_refuses_to_serve_an_unsafe_configuration(tmp_path: Path) -> None:
    env = production(tmp_path, MPESA_API_KEY="")
    gunicorn = [str(Path(sys.executable).parent / "gunicorn"), "--bind", "127.0.0.1:0", "--workers", "1"]

    done = run([*gunicorn, "kulipa.wsgi:application"], env)

    assert done.returncode != 0
    assert "MPESA_API_KEY" in done.stderr and "kulipa.E004" in done.stderr


def test_the_documented_production_example_passes_check_deploy_without_a_warning(tmp_path: Path) -> None:
    env = clean_env(tmp_path, KULIPA_ENV_FILE=str(filled_example(tmp_path)))

    deploy = run(CHECK_DEPLOY, env)
    wsgi = run(WSGI, env)
    in_async_mode = run(CHECK_DEPLOY, {**env, **ASYNC})

    assert deploy.returncode == 0, deploy.stderr
    assert deploy.stdout.strip() == "System check identified no issues (0 silenced).", deploy.stdout
    assert deploy.stderr == ""
    assert wsgi.returncode == 0, wsgi.stderr
    assert in_async_mode.returncode == 0, in_async_mode.stderr
    assert in_async_mode.stdout.strip() == "System check identified no issues (0 silenced)."


def test_the_example_as_shipped_names_every_blank_to_fill(tmp_path: Path) -> None:
    env = clean_env(tmp_path, KULIPA_ENV_FILE=str(ENV_EXAMPLE))

    done = run(CHECK_DEPLOY, env)

    assert done.returncode == 1
    assert config.EXAMPLE_SECRET_KEY in ENV_EXAMPLE.read_text(encoding="utf-8")
    for setting in [*BLANKS, "MPESA_PUBLIC_KEY"]:
        assert f"{setting}:" in done.stderr, setting


def test_the_real_environment_wins_over_the_env_file(tmp_path: Path) -> None:
    env = clean_env(tmp_path, KULIPA_ENV_FILE=str(filled_example(tmp_path)), MPESA_ENVIRONMENT="staging")

    done = run(CHECK_DEPLOY, env)

    assert done.returncode == 1 and "'staging' is not one of" in done.stderr


def test_a_named_env_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    done = run(CHECK_DEPLOY, clean_env(tmp_path, KULIPA_ENV_FILE=str(tmp_path / "missing.env")))

    assert done.returncode == 1 and "missing.env" in done.stderr


def test_development_needs_no_configuration_at_all(tmp_path: Path) -> None:
    env = clean_env(tmp_path)

    done = run([sys.executable, "manage.py", "check"], env)
    show = "from django.conf import settings as s; print(s.MPESA['ENVIRONMENT'], s.DEBUG, s.LOG_FORMAT, s.ADMIN_PATH)"
    settings = run([sys.executable, "-c", f"import django; django.setup(); {show}"], env)

    assert done.returncode == 0, done.stderr
    assert settings.stdout.split() == ["simulator", "True", "text", "admin/"], settings.stderr


def test_a_limit_window_is_turned_off_with_off_and_an_empty_value_keeps_the_default(tmp_path: Path) -> None:
    env = clean_env(tmp_path, KULIPA_LIMIT_CHECKOUTS_PER_IP="off", KULIPA_LIMIT_RETRIES_PER_IP="")
    show = "from django.conf import settings as s; print(repr(s.LIMIT_CHECKOUTS_PER_IP), s.LIMIT_RETRIES_PER_IP)"

    settings = run([sys.executable, "-c", f"import django; django.setup(); {show}"], env)

    assert settings.stdout.split() == ["''", "30/10m"], settings.stderr


# --- the worker's log lines ---------------------------------------------------------------------------------------
@pytest.fixture
def worker(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """``run_huey`` with the documented production example (queue on SQLite in a private directory)."""
    env = clean_env(tmp_path, KULIPA_ENV_FILE=str(filled_example(tmp_path)), REDIS_URL="", DATABASE_URL="")
    process = subprocess.Popen(
        WORKER, cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def read_lines_until(process: subprocess.Popen[str], needle: str, timeout: float = TIMEOUT) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not selector.select(timeout=0.5):
                if process.poll() is not None:
                    break
                continue
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if needle in line:
                return lines
    raise AssertionError(f"{needle!r} never appeared; output:\n{''.join(lines)}")


def test_the_worker_logs_json_lines_in_utc(worker: subprocess.Popen[str]) -> None:
    lines = read_lines_until(worker, "Huey consumer started")

    records = [json.loads(line) for line in lines]
    started = next(r for r in records if "Huey consumer started" in r["message"])
    assert started["logger"].startswith("huey") and started["level"] == "INFO"
    for record in records:
        assert record["time"].endswith("+00:00"), record
        assert datetime.fromisoformat(record["time"]).utcoffset() == timedelta(0)


def test_gunicorn_lines_can_take_the_same_format(tmp_path: Path) -> None:
    """``kulipa.core.logs.gunicorn_logconfig_dict`` for gunicorn's ``logconfig_dict``: its lines JSON, in UTC."""
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(
        "from kulipa.core.logs import gunicorn_logconfig_dict\nlogconfig_dict = gunicorn_logconfig_dict()\n"
    )
    env = clean_env(tmp_path)
    gunicorn = [str(Path(sys.executable).parent / "gunicorn"), "-c", str(conf), "--bind", "127.0.0.1:0"]
    process = subprocess.Popen(
        [*gunicorn, "--workers", "1", "kulipa.wsgi:application"],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = read_lines_until(process, "Booting worker")
    finally:
        process.terminate()
        process.wait(timeout=20)

    records = [json.loads(line) for line in lines]
    assert any(r["logger"] == "gunicorn.error" and "Listening at" in r["message"] for r in records)
    assert all(r["time"].endswith("+00:00") for r in records)
