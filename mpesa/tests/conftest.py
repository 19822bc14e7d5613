"""A real simulator, in a background thread, on random free ports; the clients talk to it over real sockets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mpesa import Config, Timeouts
from mpesa.sandbox import ThreadedSandbox, run_in_thread
from mpesa.sandbox.testing import fast_settings


@pytest.fixture(scope="session")
def sandbox() -> Iterator[ThreadedSandbox]:
    with run_in_thread(fast_settings()) as running:
        yield running


@pytest.fixture
def fresh_sandbox(sandbox: ThreadedSandbox) -> ThreadedSandbox:
    """The shared simulator, reset: no transactions, fast default delays."""
    httpx.post(f"{sandbox.control_url}/reset").raise_for_status()
    set_sandbox_config(sandbox, answer_delay=0, push_window=2, long_wait=2)
    return sandbox


def set_sandbox_config(sandbox: ThreadedSandbox, **values: Any) -> None:
    httpx.put(f"{sandbox.control_url}/config", json=values).raise_for_status()


def sandbox_transactions(sandbox: ThreadedSandbox) -> list[dict[str, Any]]:
    response = httpx.get(f"{sandbox.control_url}/transactions")
    response.raise_for_status()
    transactions: list[dict[str, Any]] = response.json()["transactions"]
    return transactions


def client_config(sandbox: ThreadedSandbox, **overrides: Any) -> Config:
    values: dict[str, Any] = {
        "api_key": sandbox.api_key,
        "public_key": sandbox.public_key,
        "service_provider_code": "171717",
        "base_url": sandbox.base_url,
        "ports": sandbox.ports,
        "initiator_identifier": "MPesa2018",
        "security_credential": "Mpesa2019",
        "timeouts": Timeouts(connect=5, read=10, c2b_read=20),
        "retry_backoff": 0.01,
    }
    values.update(overrides)
    return Config(**values)
