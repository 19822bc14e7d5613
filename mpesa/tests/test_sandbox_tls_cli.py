"""TLS with the generated certificate, and the ``mpesa-sandbox`` command line (in a subprocess)."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mpesa.config import Ports
from mpesa.sandbox import DEFAULT_API_KEY, ThreadedSandbox, run_in_thread
from mpesa.sandbox.keys import load_or_create_tls_files
from mpesa.sandbox.testing import fast_settings, find_free_port_offset, payment_body
from mpesa.token import encrypt_api_key, load_public_key

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]


def command() -> list[str]:
    script = Path(sys.executable).parent / "mpesa-sandbox"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mpesa.sandbox.cli"]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def tls_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedSandbox]:
    with run_in_thread(fast_settings(tls=True, state_dir=tmp_path_factory.mktemp("tls"))) as running:
        yield running


async def test_tls_with_the_generated_certificate(tls_sandbox: ThreadedSandbox) -> None:
    assert tls_sandbox.base_url == "https://127.0.0.1"
    assert tls_sandbox.ca_file is not None and tls_sandbox.ca_file.name == "tls-cert.pem"
    headers = {"Authorization": f"Bearer {tls_sandbox.bearer_token()}"}
    context = ssl.create_default_context(cafile=str(tls_sandbox.ca_file))
    async with httpx.AsyncClient(verify=context, headers=headers, timeout=20) as client:
        response = await client.post(tls_sandbox.url("c2b"), json=payment_body())
        assert (response.status_code, response.json()["output_ResponseCode"]) == (201, "INS-0")
        by_name = await client.get(tls_sandbox.control_url.replace("127.0.0.1", "localhost") + "/config")
        assert by_name.status_code == 200


async def test_tls_passes_strict_verification(tls_sandbox: ThreadedSandbox) -> None:
    context = ssl.create_default_context(cafile=str(tls_sandbox.ca_file))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    async with httpx.AsyncClient(verify=context, timeout=20) as client:
        assert (await client.get(f"{tls_sandbox.control_url}/config")).status_code == 200


async def test_tls_is_not_trusted_without_the_certificate(tls_sandbox: ThreadedSandbox) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{tls_sandbox.control_url}/config")


def test_tls_files_are_reused(tmp_path: Path) -> None:
    first = load_or_create_tls_files(tmp_path)
    cert = first.cert.read_bytes()
    assert load_or_create_tls_files(tmp_path).cert.read_bytes() == cert
    assert first.key.stat().st_mode & 0o077 == 0


def test_public_key_command(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "private_key.pem"
    run = [*command(), "public-key", "--private-key", str(key_file)]
    first = subprocess.run(run, capture_output=True, text=True, check=True, env=environment(), timeout=60)
    lines = first.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("MIICIj")  # RSA 4096, like the portal's
    assert load_public_key(lines[0]).key_size == 4096
    assert key_file.stat().st_mode & 0o077 == 0
    second = subprocess.run(run, capture_output=True, text=True, check=True, env=environment(), timeout=60)
    assert second.stdout == first.stdout  # created once, then reused


def wait_for_port(port: int, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"mpesa-sandbox exited with {process.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"port {port} never accepted a connection")


def test_serve_subprocess_answers_a_c2b(tmp_path: Path) -> None:
    key_file = tmp_path / "private_key.pem"
    public_key = subprocess.run(
        [*command(), "public-key", "--private-key", str(key_file)],
        capture_output=True,
        text=True,
        check=True,
        env=environment(),
        timeout=60,
    ).stdout.strip()
    offset = find_free_port_offset()
    ports = Ports().shifted(offset)
    process = subprocess.Popen(
        [*command(), "serve", "--port-offset", str(offset), "--private-key", str(key_file), "--answer-delay", "0"],
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for port in (ports.c2b, ports.customer_name):
            wait_for_port(port, process)
        token = encrypt_api_key(DEFAULT_API_KEY, load_public_key(public_key))
        response = httpx.post(
            f"http://127.0.0.1:{ports.c2b}/ipg/v1x/c2bPayment/singleStage/",
            json=payment_body(),
            headers={"Authorization": f"Bearer {token}"},
            timeout=20,
        )
        assert (response.status_code, response.json()["output_ResponseCode"]) == (201, "INS-0")
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert DEFAULT_API_KEY in stdout
    assert public_key in stdout.splitlines()
    assert f"http://127.0.0.1:{ports.c2b}/ipg/v1x/c2bPayment/singleStage/" in stdout
    assert DEFAULT_API_KEY not in stderr and token not in stderr  # logs never carry credentials
    assert "258841234501" not in stderr  # MSISDNs are masked in logs
