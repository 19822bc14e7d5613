"""/metrics as Prometheus sees it: behind a bearer token, counting what happened — a payment through the real
simulator, callbacks accepted and rejected, the backlog — and adding up what other processes recorded."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from kulipa.inventory.models import StockReservation
from kulipa.observability.tests.conftest import TOKEN, parse, scrape, value
from kulipa.payments.models import CallbackDelivery, PaymentAttempt
from kulipa.payments.tests.conftest import Simulator, checkout, place, product, wait_status

ROOT = Path(__file__).resolve().parents[3]
CALLBACK = "/api/mpesa/callback"


def get_metrics(authorization: str | None = None) -> int:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return Client().get("/metrics", HTTP_HOST="10.20.30.40:8000", headers=headers).status_code


@pytest.mark.django_db
def test_metrics_do_not_exist_without_the_token(settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    assert get_metrics() == 404  # production without a token: no /metrics at all
    assert get_metrics("Bearer ") == 404
    settings.METRICS_TOKEN = TOKEN
    assert get_metrics() == 404
    assert get_metrics("Bearer wrong-token") == 404
    assert get_metrics(f"Bearer {TOKEN}x") == 404
    assert get_metrics(f"Basic {TOKEN}") == 404
    assert get_metrics(f"Bearer {TOKEN}") == 200
    assert get_metrics(f"bearer {TOKEN}") == 200


@pytest.mark.django_db
def test_an_empty_shop_reports_zeros_for_every_state(metrics_token: str) -> None:
    samples = scrape()
    for window in ("1h", "24h"):
        for state in PaymentAttempt.State.values:
            assert value(samples, "kulipa_payment_attempts", window=window, state=state) == 0
        for state in CallbackDelivery.State.values:
            assert value(samples, "kulipa_callbacks_received", window=window, state=state) == 0
    for state in PaymentAttempt.IN_FLIGHT:
        assert value(samples, "kulipa_pushes_pending", state=state) == 0
    assert value(samples, "kulipa_pushes_pending_oldest_seconds") == 0
    assert value(samples, "kulipa_reconcile_backlog") == 0
    assert value(samples, "kulipa_reservations_expired") == 0
    assert value(samples, "kulipa_scrape_source_up", source="database") == 1
    assert value(samples, "kulipa_scrape_source_up", source="queue") == 1
    assert value(samples, "kulipa_queue_pending_tasks") is not None


def test_a_payment_through_the_simulator_is_counted(sim: Simulator, metrics_token: str) -> None:
    before = scrape()
    client = Client()
    order = checkout(client, {product(stock=2).pk: 1}, msisdn="258840000001")
    wait_status(client, order, status="paid")

    after = scrape()
    assert value(after, "kulipa_payment_attempts", window="1h", state="succeeded") == 1
    assert value(after, "kulipa_payment_attempts", window="24h", state="succeeded") == 1
    assert sum(value(after, "kulipa_pushes_pending", state=s) or 0 for s in PaymentAttempt.IN_FLIGHT) == 0
    latency = "kulipa_push_duration_seconds_count"
    assert (value(after, latency, outcome="success") or 0) - (value(before, latency, outcome="success") or 0) == 1
    seconds = "kulipa_push_duration_seconds_sum"
    assert (value(after, seconds, outcome="success") or 0) > (value(before, seconds, outcome="success") or 0)


@pytest.mark.django_db
def test_pushes_pending_backlog_and_expired_reservations(metrics_token: str) -> None:
    order, attempt = place({product(stock=3).pk: 1}, push=False)
    samples = scrape()
    assert value(samples, "kulipa_pushes_pending", state="queued") == 1
    assert (value(samples, "kulipa_pushes_pending_oldest_seconds") or 0) > 0
    assert value(samples, "kulipa_payment_attempts", window="1h", state="queued") == 1
    assert value(samples, "kulipa_reconcile_backlog") == 0
    assert value(samples, "kulipa_reservations_expired") == 0

    # The push's answer was lost and its status query is two minutes overdue; the stock hold lapsed meanwhile.
    past = timezone.now() - timedelta(minutes=2)
    PaymentAttempt.objects.filter(pk=attempt.pk).update(state=PaymentAttempt.State.UNKNOWN, next_check_at=past)
    StockReservation.objects.filter(order=order).update(expires_at=past)
    samples = scrape()
    assert value(samples, "kulipa_pushes_pending", state="queued") == 0
    assert value(samples, "kulipa_pushes_pending", state="unknown") == 1
    assert value(samples, "kulipa_reconcile_backlog") == 1
    assert 110 < (value(samples, "kulipa_reconcile_backlog_oldest_seconds") or 0) < 600
    assert value(samples, "kulipa_reservations_expired") == 1


@pytest.mark.django_db
def test_payment_attempts_are_counted_in_the_last_hour_and_the_last_day(metrics_token: str) -> None:
    item = product(stock=5)
    ages = {"now": timedelta(0), "two hours": timedelta(hours=2), "two days": timedelta(days=2)}
    for age in ages.values():
        _order, attempt = place({item.pk: 1}, push=False)
        PaymentAttempt.objects.filter(pk=attempt.pk).update(
            state=PaymentAttempt.State.DECLINED, created_at=timezone.now() - age
        )
    samples = scrape()
    assert value(samples, "kulipa_payment_attempts", window="1h", state="declined") == 1
    assert value(samples, "kulipa_payment_attempts", window="24h", state="declined") == 2


@pytest.mark.django_db
def test_callbacks_received_rejected_and_refused(metrics_token: str, settings: Any) -> None:
    _order, attempt = place({product(stock=3).pk: 1}, push=False)
    client = Client()
    accepted = client.post(
        CALLBACK,
        data={
            "input_ThirdPartyReference": attempt.third_party_reference,
            "input_ResultCode": "INS-0",
            "input_TransactionID": "TX123",
        },
        content_type="application/json",
    )
    assert accepted.status_code == 200
    assert client.post(CALLBACK, data=b"not json", content_type="application/json").status_code == 400
    unknown = {"input_ThirdPartyReference": "KNOSUCHREFERENCE1", "input_ResultCode": "INS-0"}
    assert client.post(CALLBACK, data=unknown, content_type="application/json").status_code == 404
    assert client.post(CALLBACK, data=unknown, content_type="application/json").status_code == 404
    before = scrape()
    settings.MPESA = {**settings.MPESA, "CALLBACK_PATH_TOKEN": "right-token"}
    assert client.post(f"{CALLBACK}/wrong-token", data=unknown, content_type="application/json").status_code == 404

    samples = scrape()
    received = "kulipa_callbacks_received"
    assert value(samples, received, window="1h", state="queued") == 1  # waits for a worker to confirm it
    assert value(samples, received, window="1h", state="rejected") == 3
    assert value(samples, received, window="24h", state="rejected") == 3
    assert value(samples, "kulipa_callbacks_rejected_total", reason="not_json") == 1
    assert value(samples, "kulipa_callbacks_rejected_total", reason="unknown_reference") == 2
    rejected = "kulipa_callbacks_rejected_total"
    # Refused before anything was stored (wrong path token): counted in the same table, under its own reason.
    assert (value(samples, rejected, reason="bad_token") or 0) - (value(before, rejected, reason="bad_token") or 0) == 1


SUBPROCESS_WORKER = """
from kulipa.observability import metrics
from mpesa import Outcome, Result
from mpesa.config import Operation
metrics.limit_hit(limit="checkout_ip")
metrics.push_answered(result=Result(operation=Operation.C2B, outcome=Outcome.SUCCESS, elapsed=12.5))
"""


@pytest.mark.django_db
def test_metrics_of_other_processes_are_added_up(metrics_token: str, settings: Any, tmp_path: Path) -> None:
    """Two processes (say a gunicorn worker and a huey consumer) started with PROMETHEUS_MULTIPROC_DIR record into
    that directory; the web process serving /metrics adds them up."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    for _ in range(2):
        subprocess.run(
            [sys.executable, "-c", SUBPROCESS_WORKER], env=env, cwd=ROOT, check=True, timeout=60, capture_output=True
        )
    settings.PROMETHEUS_MULTIPROC_DIR = str(directory)

    samples = scrape()
    assert value(samples, "kulipa_limits_hit_total", limit="checkout_ip") == 2
    assert value(samples, "kulipa_push_duration_seconds_count", outcome="success") == 2
    assert value(samples, "kulipa_push_duration_seconds_sum", outcome="success") == 25.0
    assert value(samples, "kulipa_push_duration_seconds_bucket", outcome="success", le="10.0") == 0
    assert value(samples, "kulipa_push_duration_seconds_bucket", outcome="success", le="15.0") == 2
    # What the database knows is still there, once.
    assert value(samples, "kulipa_pushes_pending", state="queued") == 0


def test_openmetrics_when_asked_for(metrics_token: str, db: None) -> None:
    response = Client().get(
        "/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0"
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.decode().rstrip().endswith("# EOF")
    assert parse(Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode())
