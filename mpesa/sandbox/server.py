"""Starting and stopping a simulator on the running event loop: six aiohttp sites, one per operation port.

Each port serves its operation plus the control API and phone pages (``/sandbox/...``). The C2B port is the
canonical one for the latter, e.g. ``http://127.0.0.1:18352/sandbox/phone/258840000000``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import shutil
import ssl
import tempfile
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from mpesa.config import ENDPOINTS, Operation, Ports
from mpesa.sandbox.callbacks import CallbackSender
from mpesa.sandbox.control import Control
from mpesa.sandbox.keys import TlsFiles, ephemeral_private_key, load_or_create_private_key, load_or_create_tls_files
from mpesa.sandbox.operations import Gateway
from mpesa.sandbox.settings import SandboxSettings, all_ports
from mpesa.sandbox.state import SandboxState
from mpesa.sandbox.store import Store
from mpesa.token import encrypt_api_key

logger = logging.getLogger("mpesa.sandbox")

BACKLOG = 8192
MAX_BODY_BYTES = 64 * 1024
_RANDOM_OFFSETS = range(2000, 13000)
"""Puts the ports in 20345–32323: above the real ones, below Linux's ephemeral range (32768+)."""
_OFFSET_ATTEMPTS = 40


def raise_open_file_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit (each held C2B request is a socket). Returns the new limit."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            logger.warning("could not raise the open file limit above %s", soft)
    return soft


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):  # noqa: S104 - a wildcard bind is reached through loopback
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class Sandbox:
    """A running simulator. Create it with :func:`start`; stop it with :meth:`close` (on the same loop)."""

    def __init__(
        self,
        state: SandboxState,
        runners: list[web.AppRunner],
        ports: Ports,
        port_offset: int,
        tls_files: TlsFiles | None,
        temp_dir: Path | None,
    ) -> None:
        self._state = state
        self._runners = runners
        self._temp_dir = temp_dir
        self.settings = state.settings
        self.ports = ports
        self.port_offset = port_offset
        self.tls_files = tls_files
        scheme = "https" if tls_files else "http"
        self.base_url = f"{scheme}://{_url_host(self.settings.host)}"
        """Scheme and host without a port, as ``mpesa.config.Config.base_url`` wants it."""
        self.control_url = f"{self.base_url}:{ports.c2b}/sandbox"

    @property
    def api_key(self) -> str:
        return self.settings.api_key

    @property
    def public_key(self) -> str:
        """The public key in the portal's format: one base64 line of DER SubjectPublicKeyInfo."""
        return self._state.public_key

    @property
    def private_key(self) -> rsa.RSAPrivateKey:
        return self._state.private_key

    @property
    def service_provider_code(self) -> str:
        return self.settings.service_provider_code

    @property
    def ca_file(self) -> Path | None:
        """The certificate to pass as CA bundle when serving TLS, else ``None``."""
        return self.tls_files.cert if self.tls_files else None

    @property
    def store(self) -> Store:
        """The live transaction store (only touch it from the simulator's loop)."""
        return self._state.store

    @property
    def state(self) -> SandboxState:
        return self._state

    def url(self, operation: Operation | str) -> str:
        """The full URL of an operation (``Operation.C2B`` or ``"c2b"``), with the trailing slash, e.g.
        ``http://127.0.0.1:18352/ipg/v1x/c2bPayment/singleStage/``."""
        operation = Operation(operation)
        return f"{self.base_url}:{self.ports.for_operation(operation)}{ENDPOINTS[operation][1]}"

    def phone_url(self, msisdn: str) -> str:
        return f"{self.control_url}/phone/{msisdn}"

    def bearer_token(self) -> str:
        """A valid ``Authorization: Bearer`` value for this simulator's API key."""
        return encrypt_api_key(self.api_key, self._state.private_key.public_key())

    async def close(self) -> None:
        """Stop listening, cut off requests still held (after ``shutdown_timeout``), stop deliveries."""
        await asyncio.gather(*(runner.cleanup() for runner in self._runners))
        self._runners.clear()
        await self._state.close()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None


def _ssl_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(files.cert), str(files.key))
    return context


def _build_app(gateway: Gateway, control: Control, operation: Operation) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    gateway.add_routes(app, operation)
    control.add_routes(app)
    return app


async def _listen(state: SandboxState, ports: Ports, ssl_context: ssl.SSLContext | None) -> list[web.AppRunner]:
    gateway, control = Gateway(state), Control(state)
    runners: list[web.AppRunner] = []
    try:
        for operation in Operation:
            runner = web.AppRunner(
                _build_app(gateway, control, operation),
                access_log=None,  # access lines would carry MSISDNs in query strings
                shutdown_timeout=state.settings.shutdown_timeout,
            )
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(
                runner,
                state.settings.host,
                ports.for_operation(operation),
                backlog=BACKLOG,
                ssl_context=ssl_context,
                reuse_address=True,
            )
            await site.start()
    except BaseException:
        for runner in runners:
            await runner.cleanup()
        raise
    return runners


def _private_key(settings: SandboxSettings) -> rsa.RSAPrivateKey:
    if settings.private_key_path is None:
        return ephemeral_private_key()
    return load_or_create_private_key(settings.private_key_path)


async def start(settings: SandboxSettings | None = None) -> Sandbox:
    """Start a simulator on the running loop and return it once every port listens.

    Raises ``OSError`` when a port is taken (with ``port_offset=None``, random offsets are tried first) and
    :class:`~mpesa.sandbox.settings.SandboxConfigError` for refused settings.
    """
    settings = settings or SandboxSettings()
    raise_open_file_limit()
    private_key = _private_key(settings)
    temp_dir: Path | None = None
    tls_files: TlsFiles | None = None
    if settings.tls:
        directory = settings.state_dir or (settings.private_key_path.parent if settings.private_key_path else None)
        if directory is None:
            temp_dir = directory = Path(tempfile.mkdtemp(prefix="mpesa-sandbox-"))
        tls_files = load_or_create_tls_files(directory)
    ssl_context = _ssl_context(tls_files) if tls_files else None
    ca_file = str(settings.callback_ca_file) if settings.callback_ca_file else None
    state = SandboxState(settings, private_key, CallbackSender(ca_file=ca_file))
    offsets = (
        [settings.port_offset] if settings.port_offset is not None else random.sample(_RANDOM_OFFSETS, _OFFSET_ATTEMPTS)
    )
    try:
        for attempt, offset in enumerate(offsets, start=1):
            ports = Ports().shifted(offset)
            try:
                runners = await _listen(state, ports, ssl_context)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or attempt == len(offsets):
                    raise
                continue
            break
    except BaseException:
        await state.close()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    sandbox = Sandbox(state, runners, ports, offset, tls_files, temp_dir)
    state.info = {
        "base_url": sandbox.base_url,
        "control_url": sandbox.control_url,
        "port_offset": offset,
        "ports": {operation.value: ports.for_operation(operation) for operation in Operation},
        "urls": {operation.value: sandbox.url(operation) for operation in Operation},
        "phone_url": f"{sandbox.control_url}/phone/<msisdn>",
        "service_provider_code": settings.service_provider_code,
        "public_key": sandbox.public_key,
        "tls": settings.tls,
        "ca_file": str(sandbox.ca_file) if sandbox.ca_file else None,
    }
    logger.info("M-Pesa sandbox listening on %s ports %s", sandbox.base_url, all_ports(ports))
    return sandbox
