"""Payment log lines as production writes them (JSON, UTC), captured while a real payment and a real reversal go
through the simulator: one line per state change carrying the order number, the reference and the outcome, and the
customer's full number in no line at all."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client

from kulipa.core.logs import UTCJSONFormatter
from kulipa.orders.models import Order
from kulipa.payments import services, tasks
from kulipa.payments.models import Reversal
from kulipa.payments.tests.conftest import Simulator, checkout, product, wait_for

MSISDN = "258840000001"
LOCAL_FORM = MSISDN[3:]  # 840000001
MASKED = "25884****001"

# The simulator runs inside the test process and plays Vodacom's side; its own lines (and its web server's access
# log) are not the shop's. Everything else — shop, Django, huey, httpx, the mpesa client — is captured.
NOT_THE_SHOP = ("mpesa.sandbox", "aiohttp")
CAPTURED_LOGGERS = ("", "django", "huey")  # root, and the loggers that do not propagate to it (kulipa.core.logs)


class Captured:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines() if line.strip()]

    def state_changes(self) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == "payment_state"]


@pytest.fixture
def captured() -> Iterator[Captured]:
    """Every log line of the shop, formatted by the production JSON formatter."""
    capture = Captured()
    handler = logging.StreamHandler(capture.stream)
    handler.setFormatter(UTCJSONFormatter())
    handler.addFilter(lambda record: not record.name.startswith(NOT_THE_SHOP))
    loggers = [logging.getLogger(name) for name in CAPTURED_LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield capture
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def _when(line: dict[str, Any]) -> datetime:
    when = datetime.fromisoformat(line["time"])
    assert line["time"].endswith("+00:00") and when.utcoffset() == timedelta(0), line["time"]
    return when


def _wait_lines(captured: Captured, predicate: Callable[[list[dict[str, Any]]], bool], what: str) -> None:
    wait_for(lambda: predicate(captured.state_changes()), what=what)


def test_a_paid_payment_logs_each_state_change_with_order_reference_and_outcome(
    sim: Simulator, captured: Captured
) -> None:
    order = checkout(Client(), {product(price="250.00", stock=2).pk: 1}, msisdn="84 000 0001")
    wait_for(lambda: Order.objects.get(pk=order.pk).status == Order.Status.PAID, what="paid")
    attempt = order.payment_attempts.get()
    _wait_lines(captured, lambda lines: any(line["outcome"] == "succeeded" for line in lines), "the paid line")

    changes = [line for line in captured.state_changes() if line["record"] == "attempt"]
    assert [(line["previous"], line["outcome"]) for line in changes] == [
        ("queued", "pushing"),
        ("pushing", "succeeded"),
    ]
    for line in changes:
        assert line["level"] == "INFO" and line["logger"] == "kulipa.payments.transitions"
        assert line["order"] == order.short_reference == f"K{order.pk:07d}"
        assert line["reference"] == attempt.third_party_reference
        assert line["msisdn"] == MASKED
        assert attempt.third_party_reference in line["message"] and order.short_reference in line["message"]
        _when(line)
    assert changes[-1]["result_code"] == "INS-0"
    assert _when(changes[0]) <= _when(changes[1])

    text = captured.text()
    assert MSISDN not in text and LOCAL_FORM not in text
    assert all(_when(line) for line in captured.lines())  # every captured line: UTC, ISO 8601 with offset


def test_a_reversal_logs_its_state_changes_too(sim: Simulator, captured: Captured) -> None:
    order = checkout(Client(), {product(price="300.00", stock=2).pk: 1}, msisdn=MSISDN)
    wait_for(lambda: Order.objects.get(pk=order.pk).status == Order.Status.PAID, what="paid")
    attempt = order.payment_attempts.get()

    reversal = services.payment_reversal_request(attempt_id=attempt.pk, requested_by="financeiro", reason="partido")
    tasks.queue_reversal(reversal.pk)  # as the back office does after the request commits
    wait_for(lambda: Reversal.objects.get(pk=reversal.pk).state == Reversal.State.SUCCEEDED, what="reversed")
    _wait_lines(
        captured,
        lambda lines: any(line.get("record") == "reversal" and line["outcome"] == "succeeded" for line in lines),
        "the reversal's line",
    )

    changes = [line for line in captured.state_changes() if line["record"] == "reversal"]
    assert [(line["previous"], line["outcome"]) for line in changes] == [
        ("requested", "sending"),
        ("sending", "succeeded"),
    ]
    for line in changes:
        assert line["order"] == order.short_reference
        assert line["reference"] == reversal.reference
        assert line["payment_reference"] == attempt.third_party_reference
        assert line["amount"] == "300.00"
        _when(line)
    assert changes[-1]["result_code"] == "INS-0"
    assert MSISDN not in captured.text()
