"""Running a simulator in a background thread with its own event loop, for synchronous code and tests::

from mpesa.sandbox import SandboxSettings, run_in_thread

with run_in_thread(SandboxSettings(port_offset=None)) as sandbox:
    sandbox.base_url, sandbox.ports, sandbox.api_key, sandbox.public_key, sandbox.control_url
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from mpesa.config import Operation, Ports
from mpesa.sandbox.server import Sandbox, start
from mpesa.sandbox.settings import SandboxSettings

T = TypeVar("T")


class ThreadedSandbox:
    """A :class:`~mpesa.sandbox.server.Sandbox` whose loop runs in a daemon thread. Close it (or use ``with``)."""

    def __init__(self, settings: SandboxSettings | None = None, *, start_timeout: float = 60.0) -> None:
        self._loop = asyncio.new_event_loop()
        started: Future[Sandbox] = Future()
        self._thread = threading.Thread(target=self._run, args=(settings, started), name="mpesa-sandbox", daemon=True)
        self._thread.start()
        try:
            self.sandbox = started.result(timeout=start_timeout)
        except BaseException:
            self._thread.join(timeout=start_timeout)
            raise
        self._closed = False

    def _run(self, settings: SandboxSettings | None, started: Future[Sandbox]) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            sandbox = self._loop.run_until_complete(start(settings))
        except BaseException as exc:
            started.set_exception(exc)
            self._loop.close()
            return
        started.set_result(sandbox)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    # the running simulator --------------------------------------------------------------------------------
    @property
    def api_key(self) -> str:
        return self.sandbox.api_key

    @property
    def public_key(self) -> str:
        return self.sandbox.public_key

    @property
    def base_url(self) -> str:
        return self.sandbox.base_url

    @property
    def ports(self) -> Ports:
        return self.sandbox.ports

    @property
    def port_offset(self) -> int:
        return self.sandbox.port_offset

    @property
    def control_url(self) -> str:
        return self.sandbox.control_url

    @property
    def service_provider_code(self) -> str:
        return self.sandbox.service_provider_code

    @property
    def ca_file(self) -> Path | None:
        return self.sandbox.ca_file

    def url(self, operation: Operation | str) -> str:
        return self.sandbox.url(operation)

    def phone_url(self, msisdn: str) -> str:
        return self.sandbox.phone_url(msisdn)

    def bearer_token(self) -> str:
        return self.sandbox.bearer_token()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run ``coro`` on the simulator's loop and return its result (e.g. to inspect ``sandbox.store``)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the simulator and its thread. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self.run(self.sandbox.close(), timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> ThreadedSandbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def run_in_thread(settings: SandboxSettings | None = None, *, start_timeout: float = 60.0) -> ThreadedSandbox:
    """Start a simulator in a background thread and return once every port listens."""
    return ThreadedSandbox(settings, start_timeout=start_timeout)
