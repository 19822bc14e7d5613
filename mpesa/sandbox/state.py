"""The state one simulator shares between its six operation ports: settings, store, deliveries, token checks."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from mpesa.sandbox.auth import TokenVerifier
from mpesa.sandbox.callbacks import CallbackSender
from mpesa.sandbox.settings import RuntimeConfig, SandboxSettings
from mpesa.sandbox.store import Store
from mpesa.token import public_key_to_portal_format


class SandboxState:
    def __init__(self, settings: SandboxSettings, private_key: rsa.RSAPrivateKey, sender: CallbackSender) -> None:
        self.settings = settings
        self.private_key = private_key
        self.public_key = public_key_to_portal_format(private_key.public_key())
        self.config: RuntimeConfig = dataclasses.replace(settings.runtime)
        self.store = Store()
        self.sender = sender
        self.tokens = TokenVerifier(private_key, settings.api_key)
        self.info: dict[str, Any] = {}
        """Ports and URLs, filled in once the sites listen (``GET /sandbox``)."""
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, task: asyncio.Task[None]) -> None:
        """Keep a background task alive until it ends (and cancel it on reset)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def reset(self) -> None:
        """Forget transactions, references, deliveries and faults; restore the configuration started with."""
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        self.store.clear()
        self.sender.reset()
        self.config = dataclasses.replace(self.settings.runtime)

    async def close(self) -> None:
        tasks = list(self._tasks)
        self.reset()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.sender.close()
