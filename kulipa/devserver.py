"""``make run``: one command that starts the whole shop on a laptop.

Migrates, loads the demo catalog, creates the demo logins, starts the M-Pesa sandbox simulator (when the M-Pesa
environment is the simulator: ``MPESA_ENVIRONMENT=simulator``, or by default in development without an API key),
the huey worker and the web server, prints where everything is, and stops all of it on Ctrl-C. Every child gets the
same environment (``.env`` read as the settings read it), so the worker and the web server talk to the same sandbox.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from kulipa.core.config import SIMULATOR, default_mpesa_environment, normalize_admin_path, read_env_file

PROJECT_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("KULIPA_VAR_DIR", PROJECT_DIR / "var"))
BIN = Path(sys.executable).parent

DEMO_ADMIN = ("admin@kulipa.test", "kulipa-admin")
DEMO_CUSTOMER = ("cliente@kulipa.test", "kulipa-cliente")
DEMO_SUPPORT = ("suporte@kulipa.test", "kulipa-suporte")
DEMO_FINANCE = ("financeiro@kulipa.test", "kulipa-financeiro")
SANDBOX_API_KEY = os.environ.get("MPESA_SANDBOX_API_KEY", "kulipa-sandbox-api-key-000000001")
SANDBOX_INITIATOR = "MPesa2018"
SANDBOX_CREDENTIAL = "Mpesa2019"


def _manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, str(PROJECT_DIR / "manage.py"), *args], check=True, env=env, cwd=PROJECT_DIR)


def _wait_for_port(
    port: int, *, host: str = "127.0.0.1", timeout: float = 30.0, process: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"a child process exited early (code {process.returncode}); see the output above")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _mpesa_environment(env: dict[str, str]) -> str:
    """As ``kulipa/settings.py`` decides it: ``MPESA_ENVIRONMENT``, else by ``DJANGO_DEBUG`` and ``MPESA_API_KEY``."""
    explicit = env.get("MPESA_ENVIRONMENT", "").strip().lower()
    debug = env.get("DJANGO_DEBUG", "").strip().lower() in {"", "1", "true", "yes", "on"}
    return explicit or default_mpesa_environment(debug=debug, api_key=env.get("MPESA_API_KEY", ""))


def main() -> None:
    read_env_file(PROJECT_DIR)  # what the children will read, so the decisions below agree with theirs
    port = int(os.environ.get("PORT", "8000"))
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "kulipa.settings")
    env.setdefault("PYTHONUNBUFFERED", "1")
    children: list[subprocess.Popen[bytes]] = []

    if not _port_free(port):
        raise SystemExit(f"port {port} is taken: stop what runs there or start with PORT=8001 make run")

    print("· preparing the database", flush=True)
    _manage("migrate", "--noinput", "-v", "0", env=env)
    _manage("load_demo_catalog", env=env)
    _manage(
        "ensure_demo_users",
        DEMO_ADMIN[0],
        DEMO_ADMIN[1],
        DEMO_CUSTOMER[0],
        DEMO_CUSTOMER[1],
        "--support",
        *DEMO_SUPPORT,
        "--finance",
        *DEMO_FINANCE,
        env=env,
    )

    environment = _mpesa_environment(env)
    sandbox = environment == SIMULATOR
    offset = int(env.get("MPESA_PORT_OFFSET", "0"))
    phone_url = ""
    if sandbox:
        key_file = VAR_DIR / "sandbox" / "private_key.pem"
        if not _port_free(18352 + offset):
            raise SystemExit(
                f"port {18352 + offset} (M-Pesa C2B) is taken: another sandbox runs? Set MPESA_PORT_OFFSET=100"
            )
        sim = subprocess.Popen(
            [
                str(BIN / "mpesa-sandbox"),
                "serve",
                "--port-offset",
                str(offset),
                "--api-key",
                SANDBOX_API_KEY,
                "--private-key",
                str(key_file),
                "--initiator-identifier",
                SANDBOX_INITIATOR,
                "--security-credential",
                SANDBOX_CREDENTIAL,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        children.append(sim)
        _wait_for_port(18352 + offset, process=sim)
        public_key = subprocess.run(
            [str(BIN / "mpesa-sandbox"), "public-key", "--private-key", str(key_file)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        phone_url = f"http://127.0.0.1:{18352 + offset}/sandbox/phone/"
        env.update(
            MPESA_API_KEY=SANDBOX_API_KEY,
            MPESA_PUBLIC_KEY=public_key,
            MPESA_BASE_URL="http://127.0.0.1",
            MPESA_ENVIRONMENT=SIMULATOR,
            MPESA_INITIATOR_IDENTIFIER=SANDBOX_INITIATOR,
            MPESA_SECURITY_CREDENTIAL=SANDBOX_CREDENTIAL,
            MPESA_SANDBOX_PHONE_URL=phone_url,
        )

    worker = subprocess.Popen([sys.executable, str(PROJECT_DIR / "manage.py"), "run_huey"], env=env, cwd=PROJECT_DIR)
    children.append(worker)
    web = subprocess.Popen(
        [
            str(BIN / "waitress-serve"),
            "--listen",
            f"127.0.0.1:{port}",
            "--threads",
            "16",
            "--ident",
            "kulipa",
            "kulipa.wsgi:application",
        ],
        env=env,
        cwd=PROJECT_DIR,
    )
    children.append(web)
    _wait_for_port(port, process=web)

    admin_path = normalize_admin_path(env.get("KULIPA_ADMIN_PATH", "") or "admin/")
    lines = [
        "",
        "Kulipa is running.",
        f"  Shop        http://127.0.0.1:{port}/",
        f"  Admin       http://127.0.0.1:{port}/{admin_path}   {DEMO_ADMIN[0]} / {DEMO_ADMIN[1]}",
        f"  Support     {DEMO_SUPPORT[0]} / {DEMO_SUPPORT[1]}   (staff, group suporte: sees payments, re-checks)",
        f"  Finance     {DEMO_FINANCE[0]} / {DEMO_FINANCE[1]}   (staff, group financeiro: also reverses, resolves,"
        " exports)",
        f"  Customer    {DEMO_CUSTOMER[0]} / {DEMO_CUSTOMER[1]} (or check out as a guest)",
    ]
    if sandbox:
        lines += [
            f"  Phone page  {phone_url}258840000000   (M-Pesa sandbox: numbers ending in 00 wait for you here)",
            "  Pay with 258840000001 (paid), ...02 (insufficient balance), ...03 (cancelled), ...00 (approve on the"
            " phone page). Scenario table: mpesa/sandbox/README.md",
        ]
    else:
        lines.append(f"  M-Pesa      Vodacom's {environment or '?'} gateway (MPESA_ENVIRONMENT)")
    lines += ["Ctrl-C stops everything.", ""]
    print("\n".join(lines), flush=True)

    def stop(*_: object) -> None:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in reversed(children):
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        for child in children:
            if child.poll() is not None:
                print(f"a child process stopped (code {child.returncode}); shutting down", flush=True)
                stop()
        time.sleep(1)


if __name__ == "__main__":
    main()
