"""The HTTPS callback listener, for real, and the callback allow-list behind a reverse proxy.

The listener runs as production runs it: ``gunicorn -c deploy/gunicorn-callback.conf.py`` in a subprocess, with a
certificate from a test CA (trustme), on a port in 11000-19000, on the test database, next to a huey worker
subprocess (``manage.py run_huey``) that confirms what it stores. The simulator of this module trusts that CA and
applies the gateway's rule for callback URLs (HTTPS, port 11000-19000), so a payment confirmed here went over TLS.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trustme
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from huey.contrib.djhuey import HUEY

from kulipa.catalog.models import Product
from kulipa.payments import gateway
from kulipa.payments.models import CallbackDelivery, PaymentAttempt, PaymentEvent
from kulipa.payments.tests.conftest import (
    Simulator,
    checkout,
    product,
    shop_mpesa_settings,
    wait_for,
    wait_status,
)
from kulipa.payments.tests.test_callbacks import all_deliveries_processed, forged, post_callback
from mpesa.sandbox import RuntimeConfig, ThreadedSandbox, run_in_thread
from mpesa.sandbox.testing import fast_settings

PROJECT_DIR = Path(__file__).resolve().parents[3]
GUNICORN = Path(sys.executable).with_name("gunicorn")
TOKEN = "listener-path-token-0123456789-abcdef"  # production's gate wants 32 characters or more
GATEWAY = "198.51.100.7"
"""The gateway's address as a proxy in front reports it (TEST-NET-2: never a real peer here)."""
OTHER = "203.0.113.9"
PUSH_WINDOW = 15.0
MSISDN = "258840000000"  # the simulator waits for the phone page (approve/decline) on numbers ending in 00
State = PaymentAttempt.State

# Every test here on committed data (the subprocesses read it), so pytest-django keeps them together and the
# listener starts once for the module.
pytestmark = pytest.mark.django_db(transaction=True)


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA and a certificate it signed for 127.0.0.1 and localhost (certificate + chain, key: PEM files)."""
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(ca=directory / "ca.pem", cert=directory / "cert.pem", key=directory / "key.pem")
    ca.cert_pem.write_to_path(str(files.ca))
    files.cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(files.key))
    return files


@pytest.fixture(scope="module")
def sandbox(tls: TlsFiles) -> Iterator[ThreadedSandbox]:
    """This module's simulator (it overrides the session one for ``sim``): it trusts the test CA when it calls
    back, and refuses callback URLs the gateway would refuse (not HTTPS, port outside 11000-19000)."""
    runtime = RuntimeConfig(
        answer_delay=0.0,
        push_window=PUSH_WINDOW,
        long_wait=2.0,
        allow_insecure_callbacks=False,
        callback_backoff=0.01,
        callback_backoff_max=0.05,
        callback_timeout=10.0,
    )
    with run_in_thread(fast_settings(runtime=runtime, callback_ca_file=tls.ca)) as running:
        yield running
        gateway.reset()


def database_url_for_subprocesses() -> str:
    """The URL of the test database (its name, not the configured one), for the subprocesses."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    if db["ENGINE"] == "django.db.backends.postgresql":
        user = f"{quote(str(db['USER']), safe='')}:{quote(str(db['PASSWORD']), safe='')}"
        return f"postgres://{user}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"
    raise AssertionError(f"no URL for database engine {db['ENGINE']}")


def free_callback_port() -> int:
    """A port in 11000-19000 that nothing listens on right now (the listener retries another if it loses a race)."""
    for _ in range(100):
        port = random.randrange(11000, 19001)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 11000-19000")


@dataclass
class Listener:
    """The running listener and a way to talk to it over TLS (trusting only the test CA)."""

    port: int
    tls: TlsFiles
    log: Path

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def callback_url(self) -> str:
        return f"{self.base_url}/api/mpesa/callback/{TOKEN}"

    def client(self, *, source: str = "127.0.0.1") -> httpx.Client:
        """An HTTPS client connecting from ``source`` (any 127.x address reaches the listener on loopback)."""
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        transport = httpx.HTTPTransport(verify=context, local_address=source)
        return httpx.Client(base_url=self.base_url, transport=transport, timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _answers(listener: Listener) -> bool:
    try:
        with listener.client() as client:
            return client.get("/api/mpesa/callback").status_code == 405  # the route (POST only): Django runs
    except httpx.HTTPError:
        return False


def _started(process: subprocess.Popen[bytes], listener: Listener) -> bool:
    """Wait until ``listener`` answers over TLS (True) or its process has exited (False)."""
    wait_for(lambda: process.poll() is not None or _answers(listener), timeout=60, what="the listener answering")
    return process.poll() is None


@pytest.fixture(scope="module")
def listener(
    tls: TlsFiles, sandbox: ThreadedSandbox, django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Listener]:
    """``gunicorn -c deploy/gunicorn-callback.conf.py`` and ``manage.py run_huey``, both on the test database and
    a queue of their own, configured from the environment like production (DEBUG off, so the configuration gate of
    kulipa.core.config applies; async mode; the simulator as gateway at 127.0.0.1, which is also the trusted proxy;
    the gateway's address behind it is ``GATEWAY``)."""
    work = tmp_path_factory.mktemp("listener")
    queue_name = f"kulipa-listener-test-{secrets.token_hex(4)}"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("MPESA_", "HUEY_", "KULIPA_", "DJANGO_"))}
    base_env.update(
        PYTHONUNBUFFERED="1",
        KULIPA_ENV_FILE="",  # no .env: only what is given here
        DJANGO_SETTINGS_MODULE="kulipa.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        KULIPA_VAR_DIR=str(work / "var"),
        DATABASE_URL=database_url_for_subprocesses(),
        HUEY_NAME=queue_name,
        HUEY_SQLITE_PATH=str(work / "huey.sqlite3"),
        MPESA_ENVIRONMENT="simulator",  # the local simulator, asked for explicitly (its own API key)
        MPESA_PUBLIC_KEY=sandbox.public_key,
        MPESA_BASE_URL=sandbox.base_url,
        MPESA_PORT_OFFSET=str(sandbox.port_offset),
        MPESA_SERVICE_PROVIDER_CODE=sandbox.service_provider_code,
        MPESA_MODE="async",
        MPESA_CALLBACK_PATH_TOKEN=TOKEN,
        MPESA_CALLBACK_ALLOWED_IPS=f"127.0.0.1,{GATEWAY}",
        MPESA_PUSH_WINDOW_SECONDS=str(int(PUSH_WINDOW)),
        KULIPA_CALLBACK_TLS_CERT=str(tls.cert),
        KULIPA_CALLBACK_TLS_KEY=str(tls.key),
        KULIPA_CALLBACK_HOST="127.0.0.1",
        KULIPA_TRUSTED_PROXIES="127.0.0.1",
    )
    if django_settings.REDIS_URL:
        base_env["REDIS_URL"] = django_settings.REDIS_URL
    else:
        base_env.pop("REDIS_URL", None)
    worker_log, listener_log = work / "worker.log", work / "listener.log"
    children: list[subprocess.Popen[bytes]] = []

    def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            child = subprocess.Popen(
                command, cwd=PROJECT_DIR, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        children.append(child)
        return child

    try:
        running: Listener | None = None
        for _ in range(5):  # another process may take the port between the probe and gunicorn's bind
            port = free_callback_port()
            base_env["MPESA_CALLBACK_URL"] = f"https://127.0.0.1:{port}/api/mpesa/callback/{TOKEN}"
            process = spawn([str(GUNICORN), "-c", "deploy/gunicorn-callback.conf.py"], base_env, listener_log)
            running = Listener(port=port, tls=tls, log=listener_log)
            if _started(process, running):
                break
            running = None
        if running is None:
            raise AssertionError(f"the listener did not start:\n{listener_log.read_text(errors='replace')[-4000:]}")
        worker = spawn(
            [sys.executable, "manage.py", "run_huey", "--workers", "2", "--no-periodic", "--max-delay", "0.5"],
            base_env,
            worker_log,
        )

        def worker_started() -> bool:
            log = worker_log.read_text(errors="replace")
            if worker.poll() is not None:
                raise AssertionError(f"the worker exited:\n{log[-4000:]}")
            return "Huey consumer started" in log

        wait_for(worker_started, timeout=60, what="the worker consuming")
        yield running
    finally:
        for child in reversed(children):
            _stop(child)
        if django_settings.REDIS_URL:
            from huey import PriorityRedisHuey

            PriorityRedisHuey(queue_name, url=django_settings.REDIS_URL).flush()


@pytest.fixture
def over_tls(sim: Simulator, listener: Listener, settings: Any) -> Simulator:
    """Async mode: the shop's push is answered at once and the simulator calls the listener back over HTTPS."""
    settings.MPESA = shop_mpesa_settings(
        sim.sandbox,
        MODE="async",
        CALLBACK_PATH_TOKEN=TOKEN,
        CALLBACK_URL=listener.callback_url,
        PUSH_WINDOW_SECONDS=PUSH_WINDOW,
    )
    sim.configure(callback_url=listener.callback_url)
    return sim


def test_the_gateway_calls_back_over_tls_and_the_order_is_paid(over_tls: Simulator, listener: Listener) -> None:
    assert HUEY.immediate  # the test process pushes inline; the listener's worker is a separate process
    client = Client()
    item = product(stock=3)
    order = checkout(client, {item.pk: 1}, msisdn=MSISDN)
    attempt = wait_for(
        lambda: order.payment_attempts.filter(state=State.AWAITING_CALLBACK).first(), what="push accepted (async)"
    )
    prompt = wait_for(lambda: over_tls.prompts(MSISDN), what="the prompt on the phone")[0]
    assert prompt["third_party_reference"] == attempt.third_party_reference
    assert over_tls.callbacks() == []  # nothing to say until the customer answers
    over_tls.answer(MSISDN, prompt["conversation_id"], approve=True)

    try:
        wait_status(client, order, status="paid", timeout=30)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nlistener log:\n{listener.log_tail()}") from None
    [sent] = over_tls.callbacks()
    assert sent["url"] == listener.callback_url and sent["url"].startswith("https://127.0.0.1:")
    assert sent["state"] == "delivered" and [a.get("status") for a in sent["attempts"]] == [200]
    delivery = CallbackDelivery.objects.get()
    assert delivery.attempt_id == attempt.pk and delivery.remote_ip == "127.0.0.1"
    assert delivery.processed_at is not None
    assert order.payment_events.filter(kind=PaymentEvent.Kind.CALLBACK).count() == 1
    assert PaymentAttempt.objects.get(pk=attempt.pk).state == State.SUCCEEDED
    assert Product.objects.get(pk=item.pk).stock_on_hand == 2


@pytest.mark.parametrize(
    "path", ["/", "/carrinho/", "/checkout/", "/conta/entrar/", "/admin/login/", "/static/css/shop.css"]
)
def test_the_shop_is_not_served_on_the_callback_port(listener: Listener, path: str) -> None:
    assert Client().get(path).status_code in (200, 302)  # the shop has it on its own port...
    with listener.client() as client:
        response = client.get(path)
    assert response.status_code == 404  # ...the listener does not
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "Not Found"


def test_the_listener_answers_only_the_callback_and_only_over_tls(listener: Listener) -> None:
    with listener.client() as client:
        assert client.get(f"/api/mpesa/callback/{TOKEN}").status_code == 405  # the route: POST only
        assert client.post("/api/mpesa/callback/wrong-token", json={}).status_code == 404
        assert client.post("/api/mpesa/callback", json={}).status_code == 404  # the token is required
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{listener.port}/api/mpesa/callback/{TOKEN}", timeout=5)
    context = ssl.create_default_context()  # the system's CAs only: the test CA's certificate is not trusted
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(listener.callback_url, verify=context, timeout=5)


@pytest.mark.parametrize(
    ("source", "forwarded", "status", "stored_ip"),
    [
        ("127.0.0.1", GATEWAY, 400, GATEWAY),  # the trusted proxy vouches for the gateway: past the allow-list
        ("127.0.0.2", GATEWAY, 403, None),  # the same header straight from an untrusted peer
        ("127.0.0.1", OTHER, 403, None),  # the proxy is allowed itself, the client it reports is not
        ("127.0.0.1", f"{GATEWAY}, {OTHER}", 403, None),  # the gateway's address spoofed left of the real client
    ],
)
def test_the_listener_allow_list_behind_a_proxy(
    listener: Listener, source: str, forwarded: str, status: int, stored_ip: str | None
) -> None:
    """Through the real listener (KULIPA_TRUSTED_PROXIES=127.0.0.1, allow-list 127.0.0.1 and GATEWAY). The body is
    malformed on purpose: 400 shows the allow-list let it through (and it is stored with the client's address)
    without queueing any work."""
    with listener.client(source=source) as client:
        response = client.post(
            f"/api/mpesa/callback/{TOKEN}",
            json={"input_ThirdPartyReference": "KABC"},
            headers={"X-Forwarded-For": forwarded},
        )
    assert response.status_code == status, response.text
    assert list(CallbackDelivery.objects.values_list("remote_ip", flat=True)) == ([stored_ip] if stored_ip else [])


def test_allow_list_behind_a_trusted_proxy(sim: Simulator, settings: Any) -> None:
    """The shop's own port behind a reverse proxy: only a trusted proxy may say who the client is."""
    order = checkout(Client(), {product(stock=1).pk: 1}, msisdn="258840000003")
    attempt = wait_for(lambda: order.payment_attempts.filter(state=State.DECLINED).first(), what="declined")
    settings.MPESA = shop_mpesa_settings(sim.sandbox, CALLBACK_ALLOWED_IPS=[GATEWAY])
    settings.TRUSTED_PROXIES = ["10.0.0.0/24"]
    client = Client()

    def post(remote_addr: str, forwarded: str | None = None) -> int:
        extra = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
        return int(post_callback(client, forged(attempt), REMOTE_ADDR=remote_addr, **extra).status_code)

    assert post("10.0.0.1", GATEWAY) == 200  # through the proxy
    assert post("203.0.113.5", GATEWAY) == 403  # the same header from an untrusted address
    assert post("10.0.0.1") == 403  # the proxy on its own behalf
    assert post("10.0.0.1", f"{GATEWAY}, {OTHER}") == 403  # spoofed left of the real client
    assert post(GATEWAY, "10.0.0.1") == 200  # the gateway straight in: its own address, the header unread
    settings.TRUSTED_PROXIES = []
    assert post("10.0.0.1", GATEWAY) == 403  # no proxy trusted: the header is never read
    wait_for(lambda: all_deliveries_processed(2), what="both accepted deliveries processed")
    assert list(CallbackDelivery.objects.values_list("remote_ip", flat=True).order_by("pk")) == [GATEWAY, GATEWAY]
    assert PaymentAttempt.objects.get(pk=attempt.pk).state == State.DECLINED


# --- behind nginx: deploy/nginx/kulipa.conf, run as written (ports, certificate and upstream substituted) ---------
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
EXAMPLE = PROJECT_DIR / "deploy" / "nginx" / "kulipa.conf"


@dataclass
class Nginx:
    shop_port: int
    callback_port: int
    tls: TlsFiles

    def client(self, *, source: str = "127.0.0.1") -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        transport = httpx.HTTPTransport(verify=context, local_address=source)
        return httpx.Client(transport=transport, timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def render_example(*, tls: TlsFiles, http: int, https: int, callback: int, upstream: str) -> str:
    """The example with this machine's values; IPv6 listens dropped (not every test machine has IPv6)."""
    text = EXAMPLE.read_text()
    replacements = {
        "/etc/letsencrypt/live/loja.example.co.mz/fullchain.pem": str(tls.cert),
        "/etc/letsencrypt/live/loja.example.co.mz/privkey.pem": str(tls.key),
        "listen 80;": f"listen 127.0.0.1:{http};",
        "listen 443 ssl": f"listen 127.0.0.1:{https} ssl",
        "listen 12345 ssl": f"listen 127.0.0.1:{callback} ssl",
        "server 127.0.0.1:8000;": f"server {upstream};",
    }
    for old, new in replacements.items():
        assert old in text, f"{old!r} is no longer in {EXAMPLE}: update this test with the example"
        text = text.replace(old, new)
    return "\n".join(line for line in text.splitlines() if "listen [::]" not in line)


@pytest.fixture
def nginx(tls: TlsFiles, live_server: Any, tmp_path: Path) -> Iterator[Nginx]:
    """nginx in front of the live shop with the example configuration (skipped when nginx is not installed)."""
    if NGINX is None:
        missing = "nginx is not installed (apt-get install nginx-light): the example config is not exercised"
        if os.environ.get("KULIPA_REQUIRE_NGINX", "").strip().lower() in {"1", "true", "yes", "on"}:
            pytest.fail(f"KULIPA_REQUIRE_NGINX=1 but {missing}", pytrace=False)
        pytest.skip(missing)
    upstream = live_server.url.removeprefix("http://")
    running = Nginx(shop_port=free_port(), callback_port=free_callback_port(), tls=tls)
    (tmp_path / "kulipa.conf").write_text(
        render_example(
            tls=tls, http=free_port(), https=running.shop_port, callback=running.callback_port, upstream=upstream
        )
    )
    temp = "".join(
        f"{kind}_temp_path {tmp_path / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\nevents {{}}\n"
        f"http {{\naccess_log {tmp_path / 'access.log'};\n{temp}include {tmp_path / 'kulipa.conf'};\n}}\n"
    )
    command = [NGINX, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(tmp_path / "nginx.conf")]
    process = subprocess.Popen([*command, "-g", "daemon off;"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def listening() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"nginx exited: {process.stdout.read() if process.stdout else b''!r}")
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", running.callback_port)) == 0

    try:
        wait_for(listening, timeout=30, what="nginx listening")
        yield running
    finally:
        _stop(process)


def test_the_example_nginx_config_serves_the_shop_and_only_the_callback_on_the_callback_port(
    sim: Simulator, nginx: Nginx, settings: Any
) -> None:
    """nginx (the example, as written) → the shop: the callback port passes only the callback paths, and the
    allow-list sees the address nginx received the request from, not what the client wrote in X-Forwarded-For."""
    order = checkout(Client(), {product(stock=1).pk: 1}, msisdn="258840000003")
    attempt = wait_for(lambda: order.payment_attempts.filter(state=State.DECLINED).first(), what="declined")
    settings.TRUSTED_PROXIES = ["127.0.0.1"]  # nginx
    settings.MPESA = shop_mpesa_settings(sim.sandbox, CALLBACK_ALLOWED_IPS=["127.0.0.2"])  # "the gateway"
    shop, callbacks = f"https://127.0.0.1:{nginx.shop_port}", f"https://127.0.0.1:{nginx.callback_port}"

    with nginx.client() as client:
        assert client.get(f"{shop}/").status_code == 200
        assert client.get(f"{shop}/carrinho/").status_code == 200
        for path in ("/", "/carrinho/", "/admin/login/", "/static/css/shop.css"):
            assert client.get(f"{callbacks}{path}").status_code == 404, path
        assert client.get(f"{callbacks}/api/mpesa/callback").status_code == 405  # reaches the shop: POST only
    with nginx.client(source="127.0.0.2") as gateway_side:
        response = gateway_side.post(
            f"{callbacks}/api/mpesa/callback", json=forged(attempt), headers={"X-Forwarded-For": OTHER}
        )
        assert response.status_code == 200, response.text
    with nginx.client(source="127.0.0.3") as stranger:
        response = stranger.post(
            f"{callbacks}/api/mpesa/callback", json=forged(attempt), headers={"X-Forwarded-For": "127.0.0.2"}
        )
        assert response.status_code == 403
    wait_for(lambda: all_deliveries_processed(1), what="the accepted delivery processed")
    delivery = CallbackDelivery.objects.get()
    assert delivery.remote_ip == "127.0.0.2"
    assert delivery.headers["X-Forwarded-For"] == f"{OTHER}, 127.0.0.2"
    assert delivery.headers["X-Forwarded-Proto"] == "https"
