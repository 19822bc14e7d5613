"""Asynchronous result deliveries: the POSTs the gateway makes to the merchant's result URL in async mode.

A delivery is retried with exponential backoff (``backoff * 2**n``, capped at ``backoff_max``) while the receiver
answers non-2xx or cannot be reached, at most ``attempts`` times. :class:`Faults` injects what real networks do:
the same result delivered several times, deliveries lost, deliveries late.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import logging
import ssl
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from mpesa.sandbox.faults import Faults
from mpesa.sandbox.settings import RuntimeConfig

logger = logging.getLogger("mpesa.sandbox.callbacks")


@dataclass(slots=True)
class Delivery:
    """One callback copy and what happened to it (the ``GET /sandbox/callbacks`` log)."""

    id: int
    url: str
    payload: dict[str, Any]
    copy: int
    state: str = "pending"
    """``pending``, ``delivered``, ``failed`` (attempts exhausted) or ``dropped`` (fault injected)."""
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "copy": self.copy,
            "state": self.state,
            "conversation_id": self.payload.get("input_OriginalConversationID"),
            "result_code": self.payload.get("input_ResultCode"),
            "payload": self.payload,
            "attempts": list(self.attempts),
        }


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


class CallbackSender:
    """Sends deliveries on the running loop. Create and close it on the simulator's loop."""

    def __init__(self, *, ca_file: str | None = None) -> None:
        context = ssl.create_default_context()
        if ca_file is not None:
            context.load_verify_locations(cafile=ca_file)
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=200))
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self.log: list[Delivery] = []
        self.faults = Faults()

    def submit(self, url: str, payload: dict[str, Any], config: RuntimeConfig, *, drop: bool = False) -> None:
        """Queue the deliveries of one result, applying the current faults. ``drop`` logs it as lost instead."""
        for copy in range(1, self.faults.duplicate_callbacks + 1):
            delivery = Delivery(next(self._ids), url, payload, copy)
            self.log.append(delivery)
            if drop or self.faults.drop_callbacks > 0:
                if not drop:
                    self.faults.drop_callbacks -= 1
                delivery.state = "dropped"
                logger.info("callback %s for %s dropped (fault)", delivery.id, payload["input_ThirdPartyReference"])
                continue
            task = asyncio.create_task(self._deliver(delivery, config, self.faults.delay_callbacks))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, delivery: Delivery, config: RuntimeConfig, extra_delay: float) -> None:
        if extra_delay:
            await asyncio.sleep(extra_delay)
        timeout = aiohttp.ClientTimeout(total=config.callback_timeout)
        for attempt in range(1, config.callback_attempts + 1):
            record: dict[str, Any] = {"attempt": attempt, "at": _now()}
            delivery.attempts.append(record)
            try:
                async with self._session.post(delivery.url, json=delivery.payload, timeout=timeout) as response:
                    await response.read()
                    record["status"] = response.status
                    if 200 <= response.status < 300:
                        delivery.state = "delivered"
                        return
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                record["error"] = f"{type(exc).__name__}: {exc}"[:200]
            if attempt < config.callback_attempts:
                backoff = min(config.callback_backoff * 2 ** (attempt - 1), config.callback_backoff_max)
                await asyncio.sleep(backoff)
        delivery.state = "failed"
        logger.warning("callback %s gave up after %s attempts", delivery.id, config.callback_attempts)

    def reset(self) -> None:
        """Stop every delivery in flight, forget the log and the faults."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        self.log.clear()
        self.faults = Faults()

    async def close(self) -> None:
        tasks = list(self._tasks)
        self.reset()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._session.close()
