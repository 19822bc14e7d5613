"""/healthz and /readyz as a load balancer sees them: by IP address, over plain HTTP, answered with a small JSON
body naming each check. The queue and the gateway are real: huey's configured storage, a closed TCP port, the
simulator."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from kulipa.observability import checks
from mpesa.config import Ports
from mpesa.sandbox import ThreadedSandbox

PROBE_HOST = "10.20.30.40:8000"
"""How a load balancer reaches a process: its address, which is not in ALLOWED_HOSTS."""

ROOT = Path(__file__).resolve().parents[3]


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def probe(path: str) -> tuple[int, dict[str, Any]]:
    response = Client().get(path, HTTP_HOST=PROBE_HOST)
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    return response.status_code, json.loads(response.content)


def test_healthz_answers_probes_by_address_over_http_without_the_database(settings: Any) -> None:
    # No django_db mark: any database access in this test raises.
    settings.SECURE_SSL_REDIRECT = True  # production: every other page redirects to https
    status, body = probe("/healthz")
    assert (status, body) == (200, {"status": "alive"})
    # The same address on any other page is refused by the host check, and plain HTTP is redirected.
    assert Client().get("/", HTTP_HOST=PROBE_HOST).status_code in (301, 400)
    assert Client().post("/healthz", HTTP_HOST=PROBE_HOST).status_code == 405


@pytest.mark.django_db
def test_readyz_is_ready_when_database_and_queue_answer(settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.READYZ_GATEWAY = "off"
    status, body = probe("/readyz")
    assert status == 200, body
    assert body["status"] == "ready"
    assert body["checks"]["database"]["result"] == "ok"
    assert body["checks"]["queue"]["result"] == "ok"
    assert body["checks"]["gateway"] == {"result": "skipped"}


@pytest.mark.django_db
def test_readyz_asks_the_gateway_once_per_few_seconds(sandbox: ThreadedSandbox, settings: Any) -> None:
    from kulipa.payments.tests.conftest import shop_mpesa_settings

    settings.MPESA = shop_mpesa_settings(sandbox)
    settings.READYZ_GATEWAY = "required"
    settings.READYZ_GATEWAY_CACHE_SECONDS = 60
    status, body = probe("/readyz")
    assert status == 200, body
    assert body["checks"]["gateway"]["result"] == "ok"
    assert "cached" not in body["checks"]["gateway"]
    status, body = probe("/readyz")
    assert status == 200
    assert body["checks"]["gateway"]["result"] == "ok"
    assert body["checks"]["gateway"]["cached"] is True


def unreachable_gateway(settings: Any) -> None:
    """Real credentials (so the gateway is configured), its host the local machine, its C2B port closed."""
    settings.MPESA = {
        **settings.MPESA,
        "API_KEY": "a-real-looking-api-key",
        "PUBLIC_KEY": "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtest",
        "BASE_URL": "http://127.0.0.1",
        "PORT_OFFSET": closed_port() - Ports().c2b,
    }


@pytest.mark.django_db
def test_readyz_is_not_ready_when_the_configured_gateway_is_unreachable(settings: Any) -> None:
    unreachable_gateway(settings)
    settings.READYZ_GATEWAY = "required"
    status, body = probe("/readyz")
    assert status == 503, body
    assert body["status"] == "not ready"
    assert body["checks"]["gateway"]["result"] == "fail"
    assert body["checks"]["gateway"]["error"] == "refused"
    assert body["checks"]["database"]["result"] == "ok"
    assert body["checks"]["queue"]["result"] == "ok"
    # Nothing in the body names the gateway's address or any credential.
    text = json.dumps(body)
    assert "127.0.0.1" not in text and "api-key" not in text


@pytest.mark.django_db
def test_readyz_only_reports_the_gateway_when_told_so(settings: Any) -> None:
    unreachable_gateway(settings)
    settings.READYZ_GATEWAY = "report"
    status, body = probe("/readyz")
    assert status == 200, body
    gateway = body["checks"]["gateway"]
    assert (gateway["result"], gateway["error"], gateway["required"]) == ("fail", "refused", False)


def test_readyz_default_checks_the_gateway_only_with_real_credentials() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MPESA_API_KEY", "KULIPA_READYZ_GATEWAY")}
    code = "from django.conf import settings; print(settings.READYZ_GATEWAY)"

    def run(**extra: str) -> str:
        return subprocess.run(
            [sys.executable, "-c", code],
            env={**env, "DJANGO_SETTINGS_MODULE": "kulipa.settings", **extra},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()

    assert run() == "off"
    assert run(MPESA_API_KEY="live-key") == "required"
    assert run(MPESA_API_KEY="live-key", KULIPA_READYZ_GATEWAY="report") == "report"


SUBPROCESS_PROBE = """
import json, django
django.setup()
from django.test import Client
client = Client()
ready = client.get("/readyz", HTTP_HOST="10.20.30.40")
metrics = client.get("/metrics", HTTP_HOST="10.20.30.40", HTTP_AUTHORIZATION="Bearer t0ken")
print(json.dumps({"ready": [ready.status_code, json.loads(ready.content)],
                  "metrics": [metrics.status_code, metrics.content.decode()]}))
"""


def test_readyz_is_not_ready_when_the_queue_storage_is_unreachable(tmp_path: Path) -> None:
    """A process started with REDIS_URL pointing at a closed port (settings and huey are built at start, so in a
    process of its own): /readyz says 503 and names the queue; /metrics still answers, without the queue's
    numbers (and without the database's: its fresh SQLite file has no tables)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR", "KULIPA_READYZ_GATEWAY")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="kulipa.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="x" * 50,
        KULIPA_VAR_DIR=str(tmp_path),
        REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0",
        KULIPA_METRICS_TOKEN="t0ken",
        MPESA_API_KEY="",
    )
    done = subprocess.run(
        [sys.executable, "-c", SUBPROCESS_PROBE], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    status, body = answer["ready"]
    assert status == 503, body
    assert body["checks"]["queue"]["result"] == "fail"
    assert body["checks"]["queue"]["error"] == "ConnectionError"
    assert body["checks"]["database"]["result"] == "ok"
    assert "127.0.0.1" not in json.dumps(body)
    status, text = answer["metrics"]
    assert status == 200
    assert 'kulipa_scrape_source_up{source="queue"} 0.0' in text
    assert 'kulipa_scrape_source_up{source="database"} 0.0' in text
    assert "kulipa_queue_pending_tasks" not in text


def test_a_hanging_check_is_waited_for_at_most_its_timeout_and_never_piles_up() -> None:
    """A black-holed address does not answer at all: the probe gives up after the timeout, and the next probe
    waits on the same outstanding call instead of starting another thread."""
    release = threading.Event()
    calls = []

    def hangs() -> str:
        calls.append(1)
        release.wait(30)
        return "answered"

    bounded = checks._Bounded("test")
    with pytest.raises(TimeoutError):
        bounded.run(hangs, timeout=0.05)
    with pytest.raises(TimeoutError):
        bounded.run(hangs, timeout=0.05)
    assert len(calls) == 1
    release.set()
    outstanding = bounded._future
    assert outstanding is not None and outstanding.result(5) == "answered"
    assert bounded.run(hangs, timeout=5) == "answered"  # a new call, now that the first one finished
    assert len(calls) == 2
