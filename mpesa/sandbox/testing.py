"""Helpers for tests that talk to a simulator: fast settings and request bodies. No pytest dependency."""

from __future__ import annotations

import dataclasses
import itertools
import os
import random
import socket
from typing import Any

from mpesa.config import Ports
from mpesa.sandbox.settings import DEFAULT_SERVICE_PROVIDER_CODE, RuntimeConfig, SandboxSettings, all_ports

_counter = itertools.count(1)


def fast_settings(**overrides: Any) -> SandboxSettings:
    """Random free ports, no answer delay, short push window and long wait (2 s), near-instant callback retries.

    ``overrides`` may name :class:`SandboxSettings` fields or :class:`RuntimeConfig` fields
    (``fast_settings(push_window=30, tls=True)``).
    """
    runtime_fields = {f.name for f in dataclasses.fields(RuntimeConfig)}
    runtime = RuntimeConfig(
        answer_delay=0.0,
        push_window=2.0,
        long_wait=2.0,
        callback_backoff=0.01,
        callback_backoff_max=0.05,
        callback_timeout=5.0,
    ).updated({k: v for k, v in overrides.items() if k in runtime_fields})
    values: dict[str, Any] = {"port_offset": None, "runtime": runtime}
    values.update({k: v for k, v in overrides.items() if k not in runtime_fields})
    return SandboxSettings(**values)


def unique_reference(prefix: str = "R") -> str:
    """An alphanumeric reference (<= 20 chars) not used before in this process."""
    return f"{prefix}{os.getpid() % 10000}x{next(_counter)}"[:20]


def payment_body(
    msisdn: str = "258841234501", amount: str = "10", *, service_provider_code: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A valid C2B/B2C body with a fresh ThirdPartyReference; ``extra`` overrides or adds fields."""
    body: dict[str, Any] = {
        "input_TransactionReference": "T12344C",
        "input_CustomerMSISDN": msisdn,
        "input_Amount": amount,
        "input_ThirdPartyReference": unique_reference(),
        "input_ServiceProviderCode": service_provider_code or DEFAULT_SERVICE_PROVIDER_CODE,
    }
    body.update(extra)
    return body


def find_free_port_offset(host: str = "127.0.0.1", attempts: int = 50) -> int:
    """An offset whose six shifted ports can be bound right now (for starting ``mpesa-sandbox serve`` in a
    subprocess; in-process, ``SandboxSettings(port_offset=None)`` does this and retries by itself)."""
    for _ in range(attempts):
        offset = random.randrange(2000, 13000)
        sockets: list[socket.socket] = []
        try:
            for port in all_ports(Ports().shifted(offset)):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind((host, port))
            return offset
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free block of ports found")
