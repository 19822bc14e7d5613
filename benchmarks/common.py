"""Shared pieces: the simulator as a separate process, latency summaries, a tiny raw-asyncio HTTP client."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import http.client
import json
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from mpesa import Config
from mpesa.config import Ports
from mpesa.sandbox import DEFAULT_INITIATOR_IDENTIFIER, DEFAULT_SECURITY_CREDENTIAL, DEFAULT_SERVICE_PROVIDER_CODE
from mpesa.sandbox.settings import DEFAULT_API_KEY
from mpesa.sandbox.testing import find_free_port_offset

HOST = "127.0.0.1"
READY_TIMEOUT = 30.0
"""Seconds a freshly spawned simulator gets to accept connections on every port."""
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.05

_live: set[Simulator] = set()


def _stop_all() -> None:
    for sim in list(_live):
        sim.stop()


atexit.register(_stop_all)


def raise_open_file_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (thousands of client sockets live in this process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def _sandbox_command() -> list[str]:
    script = Path(sys.executable).with_name("mpesa-sandbox")
    if script.exists():
        return [str(script)]
    found = shutil.which("mpesa-sandbox")
    if found:
        return [found]
    return [sys.executable, "-m", "mpesa.sandbox.cli"]


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


class Simulator:
    """``mpesa-sandbox serve`` in a child process on a free port offset, zero answer delay.

    Ready once every port accepts and ``GET /sandbox`` reports the public key (polled, no fixed sleeps). Stopped
    with SIGTERM (then SIGKILL) on :meth:`stop`, on leaving the ``with`` block and at interpreter exit.
    """

    def __init__(self, *, private_key: Path, log_path: Path, extra_args: Sequence[str] = ()) -> None:
        self.private_key = private_key
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self.port_offset = 0
        self.ports = Ports()
        self.info: dict[str, Any] = {}
        self.api_key = DEFAULT_API_KEY

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        for _ in range(5):
            self.port_offset = find_free_port_offset(HOST)
            self.ports = Ports().shifted(self.port_offset)
            command = [
                *_sandbox_command(),
                "serve",
                "--host",
                HOST,
                "--port-offset",
                str(self.port_offset),
                "--answer-delay",
                "0",
                "--private-key",
                str(self.private_key),
                "--api-key",
                self.api_key,
                *self.extra_args,
            ]
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            _live.add(self)
            if self._wait_ready():
                return
            self.stop()
            if "cannot listen" not in self.log_tail():
                break  # not a port race: do not retry
        raise RuntimeError(f"mpesa-sandbox did not start; log tail:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if all(_port_accepts(p) for p in (self.ports.c2b, self.ports.query, self.ports.reversal)):
                with contextlib.suppress(OSError, ValueError):
                    info = self.control("GET", "/sandbox")
                    if info.get("public_key"):
                        self.info = info
                        return True
            time.sleep(POLL_INTERVAL)  # poll interval, not a wait for readiness
        return False

    def stop(self) -> None:
        process, self.process = self.process, None
        _live.discard(self)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ---------------------------------------------------------------------------------------------------
    @property
    def public_key(self) -> str:
        return str(self.info["public_key"])

    def control(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
        """A control API call on the C2B port (JSON in, JSON out)."""
        conn = http.client.HTTPConnection(HOST, self.ports.c2b, timeout=timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
            if response.status >= 400:
                raise RuntimeError(f"{method} {path}: HTTP {response.status} {data[:200]!r}")
            return json.loads(data)
        finally:
            conn.close()

    def client_config(self) -> Config:
        return Config(
            api_key=self.api_key,
            public_key=self.public_key,
            service_provider_code=DEFAULT_SERVICE_PROVIDER_CODE,
            base_url=f"http://{HOST}",
            ports=self.ports,
            initiator_identifier=DEFAULT_INITIATOR_IDENTIFIER,
            security_credential=DEFAULT_SECURITY_CREDENTIAL,
        )

    def memory_kb(self) -> dict[str, int]:
        """``VmRSS`` (resident now) and ``VmHWM`` (resident high-water mark) of the simulator, in kB."""
        values: dict[str, int] = {}
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0])
        return values


@dataclass
class RunContext:
    """What a benchmark function gets: the mode and a way to start simulators sharing one RSA key."""

    quick: bool
    workdir: Path
    private_key: Path
    database: str = "auto"
    """``--database``: sqlite, postgres, both, or auto (both when PostgreSQL answers) — for the benchmarks that
    run on a database (``checkout``)."""
    _count: int = field(default=0, repr=False)

    def simulator(self, *extra_args: str) -> Simulator:
        self._count += 1
        return Simulator(
            private_key=self.private_key,
            log_path=self.workdir / f"sandbox-{self._count}.log",
            extra_args=extra_args,
        )


Benchmark = Callable[[RunContext], dict[str, Any]]
"""A benchmark: takes the run context, returns a JSON-able dict with at least ``ok`` (bool)."""


def latency_summary(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max/mean in milliseconds (nearest-rank percentiles)."""
    if not seconds:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    ordered = sorted(seconds)

    def rank(q: float) -> float:
        index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
        return round(ordered[index] * 1000, 3)

    return {
        "p50_ms": rank(0.50),
        "p95_ms": rank(0.95),
        "p99_ms": rank(0.99),
        "max_ms": round(ordered[-1] * 1000, 3),
        "mean_ms": round(sum(ordered) / len(ordered) * 1000, 3),
    }


@dataclass
class RawResponse:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_request(
    port: int, method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes = b""
) -> RawResponse:
    """One HTTP/1.1 request on its own connection (``Connection: close``), read to EOF. No timeout of its own."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(build_request(port, method, path, headers=headers, body=body))
        await writer.drain()
        return parse_response(await reader.read())
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def build_request(
    port: int, method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_response(data: bytes) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/"):
        raise ValueError(f"not an HTTP response: {data[:80]!r}")
    return RawResponse(int(status_line[1]), body)


# --- CPU by process -------------------------------------------------------------------------------------------
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_stat() -> dict[int, tuple[int, str, float, float]]:
    """pid → (parent pid, command, own CPU seconds, CPU seconds of reaped children), from ``/proc/<pid>/stat``."""
    table: dict[int, tuple[int, str, float, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                raw = fh.read()
        except OSError:  # gone meanwhile
            continue
        command = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        # fields[0] is the state (stat's 3rd field): utime, stime, cutime, cstime are stat's 14th to 17th
        own = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        reaped = (int(fields[13]) + int(fields[14])) / _CLOCK_TICKS
        table[int(entry)] = (int(fields[1]), command, own, reaped)
    return table


def cpu_seconds(roots: dict[str, int], commands: Sequence[str] = ("postgres", "redis-server")) -> dict[str, float]:
    """CPU seconds used so far by each named process tree (``roots``: name → pid; the process, its live
    descendants and the children they reaped, such as gunicorn workers recycled by ``max_requests``), and by every
    process whose command is one of ``commands`` (servers not started by us). Take it before and after a phase
    and subtract: what each part of the system cost."""
    table = _proc_stat()
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_rest) in table.items():
        children.setdefault(ppid, []).append(pid)
    used: dict[str, float] = {}
    for name, root in roots.items():
        total, stack = 0.0, [root]
        while stack:
            pid = stack.pop()
            if pid in table:
                _ppid, _command, own, reaped = table[pid]
                total += own + reaped
                stack.extend(children.get(pid, []))
        used[name] = round(total, 2)
    for command in commands:
        used[command] = round(sum(own + reaped for _ppid, cmd, own, reaped in table.values() if cmd == command), 2)
    return used
