"""``deploy/try-here``: the production set-up of docs/deploy.md on this machine, with the simulator as the gateway.

Starts what the systemd units start — ``kulipa-prepare`` (migrate, collectstatic), ``kulipa-web`` (gunicorn from
deploy/gunicorn.conf.py), two ``kulipa-worker`` (run_huey) and, for async mode, ``kulipa-callback`` (gunicorn from
deploy/gunicorn-callback.conf.py, TLS on a port in 11000–19000) — with ``DJANGO_DEBUG=0`` and every production
check on, against PostgreSQL and Redis. The M-Pesa simulator serves the real ports over TLS with its own API key
and public key, as Vodacom's sandbox would (``MPESA_ENVIRONMENT=sandbox``, ``MPESA_BASE_URL=https://127.0.0.1``).

Then a customer buys over HTTP in sync mode, and again in async mode with the result delivered to the callback
listener over TLS; each order must turn paid, ``/readyz`` must answer 200 and ``/metrics`` must count the payments.
Exit status 0 and "all good" when so. Only differences from a real server: no nginx (so no HTTPS redirect and no
secure-only cookies on the plain-HTTP web port), a throw-away database ``kulipa_try_here`` and Redis db 11.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WEB = "http://127.0.0.1:8070"
CALLBACK_PORT = 14443
SIM_CONTROL = "https://127.0.0.1:18352"  # every simulator port also answers /sandbox
PHONE = "258840000001"  # the simulator's "customer approves" number


def say(text: str) -> None:
    print(f"· {text}", flush=True)


def wait_until(check: Callable[[], bool], *, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"try-here: {what}: not after {timeout:.0f} s")


class Processes:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs, self.running = env, logs, dict[str, subprocess.Popen[bytes]]()

    def start(self, name: str, *argv: str, env: dict[str, str] | None = None) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self.running[name] = subprocess.Popen(
            argv, cwd=ROOT, env=env or self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self, *names: str) -> None:
        for name in names or list(self.running):
            process = self.running.pop(name, None)
            if process and process.poll() is None:
                os.killpg(process.pid, signal.SIGINT if name.startswith("worker") else signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()

    def check_alive(self) -> None:
        for name, process in self.running.items():
            if process.poll() is not None:
                raise SystemExit(f"try-here: {name} exited ({process.returncode}); see {self.logs / name}.log")


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "python"), "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(f"try-here: manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout + done.stderr


def buy(client: httpx.Client) -> str:
    """Home → add the first product → checkout page → pay. Returns the order page's path."""
    home = client.get(f"{WEB}/").text
    product_id = re.search(r'name="product_id" value="(\d+)"', home)
    assert product_id, "no product on the home page"
    token = client.cookies.get("csrftoken") or ""
    client.post(
        f"{WEB}/carrinho/adicionar/", data={"product_id": product_id[1], "quantity": "1", "csrfmiddlewaretoken": token}
    )
    page = client.get(f"{WEB}/checkout/").text
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
    fields.update(customer_name="Cliente de Teste", msisdn=PHONE, csrfmiddlewaretoken=client.cookies["csrftoken"])
    placed = client.post(f"{WEB}/checkout/", data=fields, follow_redirects=False)
    assert placed.status_code in (302, 303), f"checkout answered {placed.status_code}: {placed.text[:500]}"
    return placed.headers["location"]


def wait_paid(client: httpx.Client, order_path: str, *, what: str) -> float:
    started = time.monotonic()

    def paid() -> bool:
        answer = client.get(f"{WEB}{order_path}estado/")
        assert answer.status_code == 200, f"{answer.status_code} {answer.url} {answer.text[:300]}"
        return answer.json().get("paid") is True

    wait_until(paid, what=what, timeout=90)
    return time.monotonic() - started


_SHOWN_METRICS = (
    "kulipa_payment_attempts{",
    "kulipa_push_duration_seconds_count",
    "kulipa_pushes_pending ",
    "kulipa_reconcile_backlog ",
    "kulipa_callbacks_received{",
)


def metric_lines(token: str) -> list[str]:
    text = httpx.get(f"{WEB}/metrics", headers={"Authorization": f"Bearer {token}"}).text
    return [line for line in text.splitlines() if line.startswith(_SHOWN_METRICS) and not line.endswith(" 0.0")]


@contextmanager
def tempdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kulipa-try-") as name:
        yield Path(name)


def main() -> None:
    from mpesa.sandbox.keys import load_or_create_private_key, load_or_create_tls_files
    from mpesa.token import public_key_to_portal_format

    database_url = os.environ.get("DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/kulipa_try_here")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/11")
    with tempdir() as work:
        say(f"working in {work} (logs there)")
        keys = work / "gateway"
        keys.mkdir()
        private_key = load_or_create_private_key(keys / "private-key.pem")
        tls = load_or_create_tls_files(keys)
        api_key = secrets.token_hex(16)
        path_token = secrets.token_urlsafe(32)
        metrics_token = secrets.token_urlsafe(24)
        env = {
            **os.environ,
            "KULIPA_ENV_FILE": "",
            "KULIPA_VAR_DIR": str(work / "var"),
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(60),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            # No nginx here: the web port is plain HTTP on loopback.
            "DJANGO_SECURE_SSL_REDIRECT": "0",
            "DJANGO_SECURE_COOKIES": "0",
            "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
            "DJANGO_SECURE_HSTS_PRELOAD": "1",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "MPESA_ENVIRONMENT": "sandbox",
            "MPESA_BASE_URL": "https://127.0.0.1",
            "MPESA_CA_BUNDLE": str(tls.cert),
            "MPESA_API_KEY": api_key,
            "MPESA_PUBLIC_KEY": public_key_to_portal_format(private_key.public_key()),
            "MPESA_SERVICE_PROVIDER_CODE": "171717",
            "MPESA_INITIATOR_IDENTIFIER": "Initiator2026",
            "MPESA_SECURITY_CREDENTIAL": "Credential2026",
            "MPESA_MODE": "sync",
            "MPESA_CALLBACK_PATH_TOKEN": path_token,
            "MPESA_CALLBACK_URL": f"https://127.0.0.1:{CALLBACK_PORT}/api/mpesa/callback/{path_token}",
            "KULIPA_CALLBACK_TLS_CERT": str(tls.cert),
            "KULIPA_CALLBACK_TLS_KEY": str(tls.key),
            "KULIPA_METRICS_TOKEN": metrics_token,
            "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics"),
            "GUNICORN_BIND": WEB.removeprefix("http://"),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("DJANGO_SETTINGS_MODULE", None)
        processes = Processes(env, work)
        try:
            run(env, processes, work, api_key=api_key, metrics_token=metrics_token, keys=keys, ca=tls.cert)
        finally:
            processes.stop()


def run(
    env: dict[str, str], processes: Processes, work: Path, *, api_key: str, metrics_token: str, keys: Path, ca: Path
) -> None:
    say("simulator on the real ports over TLS (plays Vodacom's sandbox)")
    processes.start(
        "gateway",
        str(BIN / "mpesa-sandbox"),
        "serve",
        "--tls",
        "--private-key",
        str(keys / "private-key.pem"),
        "--api-key",
        api_key,
        "--initiator-identifier",
        env["MPESA_INITIATOR_IDENTIFIER"],
        "--security-credential",
        env["MPESA_SECURITY_CREDENTIAL"],
        "--answer-delay",
        "1",
        "--callback-ca-file",
        str(ca),
    )
    sim = httpx.Client(verify=str(ca))
    wait_until(lambda: sim.get(f"{SIM_CONTROL}/sandbox").status_code == 200, what="simulator up")

    say("database: dropping and creating kulipa_try_here; manage.py check --deploy (expect only W008, W012 and W016:")
    say("  plain HTTP on loopback here, where nginx would terminate TLS)")
    subprocess.run(["dropdb", "--if-exists", "-h", "127.0.0.1", "-U", "postgres", "kulipa_try_here"], check=False)
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", "kulipa_try_here"], check=True)
    print(manage(env, "check", "--deploy").strip())

    say("kulipa-prepare: migrate, collectstatic, demo catalog")
    (work / "metrics").mkdir(exist_ok=True)
    manage(env, "migrate", "--noinput")
    manage(env, "collectstatic", "--noinput")
    manage(env, "load_demo_catalog")

    for mode in ("sync", "async"):
        env["MPESA_MODE"] = mode
        say(
            f"--- {mode} mode: kulipa-web (gunicorn), kulipa-worker@1 and @2"
            + (", kulipa-callback" if mode == "async" else "")
        )
        processes.start("web", str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py", env=dict(env))
        for n in (1, 2):
            processes.start(f"worker{n}", str(BIN / "python"), "manage.py", "run_huey", env=dict(env))
        if mode == "async":
            processes.start("callback", str(BIN / "gunicorn"), "-c", "deploy/gunicorn-callback.conf.py", env=dict(env))
            sim.post(
                f"{SIM_CONTROL}/sandbox/config", json={"callback_url": env["MPESA_CALLBACK_URL"]}
            ).raise_for_status()
            wait_until(
                lambda: httpx.get(f"https://127.0.0.1:{CALLBACK_PORT}/", verify=str(ca)).status_code == 404,
                what="callback listener up",
            )
        wait_until(lambda: httpx.get(f"{WEB}/readyz").status_code == 200, what="/readyz 200")
        processes.check_alive()
        say(f"/readyz: {httpx.get(f'{WEB}/readyz').text}")

        with httpx.Client() as customer:
            order = buy(customer)
            seconds = wait_paid(customer, order, what=f"order {order} paid in {mode} mode")
        say(f"{mode}: order {order} paid {seconds:.1f} s after checkout")
        if mode == "async":
            deliveries = sim.get(f"{SIM_CONTROL}/sandbox/callbacks").json()["deliveries"]
            listener = f"https://127.0.0.1:{CALLBACK_PORT}/"
            assert any(d["url"].startswith(listener) and d["state"] == "delivered" for d in deliveries), deliveries
            say("async: the simulator delivered the result to the callback listener over TLS")
        say("metrics:\n  " + "\n  ".join(metric_lines(metrics_token)))
        processes.stop("callback", "worker1", "worker2", "web")
    print("all good")


if __name__ == "__main__":
    main()
