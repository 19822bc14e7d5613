"""The production web server as deployed: gunicorn started from deploy/gunicorn.conf.py, several worker processes
serving the shop from the test database, a graceful restart that drops no request, logs in UTC without query
strings."""

from __future__ import annotations

import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from kulipa.payments.tests.conftest import wait_for
from kulipa.payments.tests.workers import PROJECT_DIR, child_env

GUNICORN = Path(sys.executable).parent / "gunicorn"  # this environment's
CONFIG = PROJECT_DIR / "deploy" / "gunicorn.conf.py"
ACCESS = re.compile(
    r'^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) 127\.0\.0\.1 fwd=\S+ "(?P<method>[A-Z]+) (?P<path>\S+)" '
    r'(?P<status>\d{3}) \d+ \d+ms pid=<(?P<pid>\d+)> ".*"$'
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (live ones: a worker that exited and was reaped is gone)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


@dataclass
class Server:
    master: subprocess.Popen[bytes]
    url: str
    access_log: Path
    error_log: Path

    def served_by(self) -> list[int]:
        """The pid of the worker that served each request so far (the access log's ``pid=<…>``)."""
        pids = []
        for line in self.access_log.read_text().splitlines():
            match = ACCESS.match(line)
            assert match, f"access log line in an unexpected format: {line!r}"
            pids.append(int(match["pid"]))
        return pids


@pytest.fixture
def gunicorn(transactional_db: None, tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    access_log, error_log = tmp_path / "access.log", tmp_path / "error.log"
    env = child_env(
        sandbox=None,
        queue=None,
        # Production's configuration gate (kulipa.core.config) applies: a fit configuration, with the local
        # simulator asked for explicitly as the gateway.
        KULIPA_ENV_FILE="",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        DJANGO_SECURE_SSL_REDIRECT="0",  # plain HTTP on loopback, where the proxy would terminate TLS
        MPESA_ENVIRONMENT="simulator",
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS="2",
        GUNICORN_THREADS="2",
        GUNICORN_ACCESS_LOG=str(access_log),
        GUNICORN_CONTROL_SOCKET="",
        TZ="Africa/Maputo",  # the machine's zone: the logs must still be in UTC
    )
    with error_log.open("wb") as err:
        master = subprocess.Popen(
            [str(GUNICORN), "-c", str(CONFIG)], cwd=PROJECT_DIR, env=env, stdout=err, stderr=subprocess.STDOUT
        )
    server = Server(master, f"http://127.0.0.1:{port}", access_log, error_log)
    try:

        def up() -> bool:
            assert master.poll() is None, error_log.read_text()[-3000:]
            try:
                return httpx.get(server.url + "/", timeout=30).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout=90, interval=0.2, what="gunicorn serving /")
        yield server
    finally:
        if master.poll() is None:
            master.send_signal(signal.SIGTERM)
        try:
            master.wait(60)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait(10)


def get(url: str) -> int:
    """One request on a connection of its own (so the kernel may hand it to any worker)."""
    return httpx.get(url, headers={"Connection": "close"}, timeout=60).status_code


def test_two_worker_processes_serve_the_shop(gunicorn: Server) -> None:
    workers = children(gunicorn.master.pid)
    assert len(workers) == 2

    with ThreadPoolExecutor(8) as pool:

        def two_workers_served() -> bool:
            assert set(pool.map(get, [gunicorn.url + "/"] * 8)) == {200}
            return len(set(gunicorn.served_by())) == 2

        wait_for(two_workers_served, timeout=60, interval=0, what="requests served by both workers")
    assert set(gunicorn.served_by()) == workers  # the master's two children, nothing else

    # The access log is in UTC and leaves query strings (searches, phone numbers) out.
    assert get(gunicorn.url + "/?q=258841234567") == 200
    wait_for(lambda: "258841234567" not in gunicorn.access_log.read_text() and len(gunicorn.served_by()) > 0)
    log = gunicorn.access_log.read_text()
    assert "258841234567" not in log and '"GET /" 200' in log
    error_log = gunicorn.error_log.read_text()
    assert "2 workers × 2 threads" in error_log
    # Both logs in UTC, whatever the machine's zone (Maputo here: two hours off if a log used local time).
    stamps = re.findall(r"^(\S+) \[\d+\] \[INFO\] Booting worker", error_log, re.M)
    stamps += [m["time"] for m in map(ACCESS.match, log.splitlines()) if m]
    assert len(stamps) >= 3
    now = datetime.now(UTC)
    for stamp in stamps:
        assert abs(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z") - now) < timedelta(minutes=10), stamp

    gunicorn.master.send_signal(signal.SIGTERM)
    assert gunicorn.master.wait(60) == 0


def test_hup_replaces_every_worker_and_drops_no_request(gunicorn: Server) -> None:
    old = children(gunicorn.master.pid)
    statuses: list[int | str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                statuses.append(get(gunicorn.url + "/"))
            except httpx.HTTPError as exc:
                statuses.append(repr(exc))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(statuses) >= 5, timeout=30, what="requests flowing")
        gunicorn.master.send_signal(signal.SIGHUP)

        def replaced() -> bool:
            now = children(gunicorn.master.pid)
            return len(now) == 2 and not now & old and len(set(gunicorn.served_by()) - old) >= 1

        wait_for(replaced, timeout=90, interval=0.1, what="both workers replaced and a new one serving")
        served = len(statuses)
        wait_for(lambda: len(statuses) >= served + 5, timeout=30, what="requests after the restart")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert set(statuses) == {200}, [s for s in statuses if s != 200][:5]
