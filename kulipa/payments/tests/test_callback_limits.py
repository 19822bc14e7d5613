"""The callback endpoint's abuse limits, over HTTP: a rate limit per client address and, in async mode, the secret
path token required. A refused callback changes nothing and is counted (``CallbackRejection``, and the limits-hit
metric for the rate limit)."""

from __future__ import annotations

import json
import secrets
from typing import Any

from django.test import Client
from prometheus_client import REGISTRY

from kulipa.payments.models import CallbackDelivery, CallbackRejection, PaymentAttempt, PaymentEvent
from kulipa.payments.tests.conftest import Simulator, checkout, product, shop_mpesa_settings, wait_for

State = PaymentAttempt.State
CALLBACK = "/api/mpesa/callback"
TOKEN = "pathT0ken42"


def limit_hits(limit: str) -> float:
    return REGISTRY.get_sample_value("kulipa_limits_hit_total", {"limit": limit}) or 0.0


def sender() -> str:
    """An address of its own per test (documentation range): the counts live in a cache shared across tests."""
    return f"2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}"


def declined_attempt() -> PaymentAttempt:
    order = checkout(Client(), {product(stock=1).pk: 1}, msisdn="258840000003")
    return wait_for(lambda: order.payment_attempts.filter(state=State.DECLINED).first(), what="declined")


def result(attempt: PaymentAttempt) -> dict[str, str]:
    """A success result for ``attempt`` (forged: the simulator never paid it)."""
    return {
        "input_OriginalConversationID": attempt.conversation_id or "0" * 32,
        "input_TransactionID": "FORGED123",
        "input_ThirdPartyReference": attempt.third_party_reference,
        "input_ResultCode": "INS-0",
        "input_ResultDesc": "Request processed successfully",
    }


def post(body: dict[str, str], *, ip: str, path: str = CALLBACK) -> Any:
    return Client(REMOTE_ADDR=ip).post(path, json.dumps(body), content_type="application/json")


def test_callbacks_over_the_rate_limit_get_429_in_the_gateways_terms_and_change_nothing(
    sim: Simulator, settings: Any
) -> None:
    attempt = declined_attempt()
    # An hour's window: the count cannot roll over between the requests of the test.
    settings.MPESA = shop_mpesa_settings(sim.sandbox, CALLBACK_RATE_LIMIT="3/h")
    noisy, other = sender(), sender()
    hits = limit_hits("callback_ip")

    for _ in range(3):
        assert post(result(attempt), ip=noisy).status_code == 200
    stored = CallbackDelivery.objects.count()
    events = PaymentEvent.objects.count()
    refused = post(result(attempt), ip=noisy)

    assert refused.status_code == 429
    assert refused.json() == {
        "output_ResponseCode": "INS-16",
        "output_ResponseDesc": "Unable to handle the request due to a temporary overloading",
    }
    assert 0 < int(refused["Retry-After"]) <= 3600
    assert CallbackDelivery.objects.count() == stored == 3
    assert PaymentEvent.objects.count() == events
    assert CallbackRejection.objects.get(reason="rate_limited").count == 1
    assert limit_hits("callback_ip") == hits + 1
    # The right token does not get past the limit either; another address is not limited.
    settings.MPESA = shop_mpesa_settings(sim.sandbox, CALLBACK_RATE_LIMIT="3/h", CALLBACK_PATH_TOKEN=TOKEN)
    assert post(result(attempt), ip=noisy, path=f"{CALLBACK}/{TOKEN}").status_code == 429
    assert post(result(attempt), ip=other, path=f"{CALLBACK}/{TOKEN}").status_code == 200
    assert CallbackRejection.objects.get(reason="rate_limited").count == 2
    assert limit_hits("callback_ip") == hits + 2
    wait_for(lambda: not CallbackDelivery.objects.filter(processed_at=None).exists(), what="processed")
    assert CallbackDelivery.objects.count() == 4
    assert PaymentAttempt.objects.get(pk=attempt.pk).state == State.DECLINED


def test_the_rate_limit_counts_refused_callbacks_too(sim: Simulator, settings: Any) -> None:
    """Guessing the token is limited like anything else from that address."""
    settings.MPESA = shop_mpesa_settings(sim.sandbox, CALLBACK_RATE_LIMIT="2/h", CALLBACK_PATH_TOKEN=TOKEN)
    guesser = sender()
    body = {"input_ResultCode": "INS-0", "input_ThirdPartyReference": "KNOSUCHREF000000"}
    assert post(body, ip=guesser, path=f"{CALLBACK}/guess1").status_code == 404
    assert post(body, ip=guesser, path=f"{CALLBACK}/guess2").status_code == 404
    assert post(body, ip=guesser, path=f"{CALLBACK}/{TOKEN}").status_code == 429
    assert CallbackRejection.objects.get(reason="bad_token").count == 2
    assert CallbackRejection.objects.get(reason="rate_limited").count == 1
    assert not CallbackDelivery.objects.exists()


def test_async_mode_takes_no_callback_on_the_tokenless_path(sim: Simulator, settings: Any) -> None:
    """Without ``CALLBACK_PATH_TOKEN``, async mode refuses every callback (the allow-list does not replace it);
    sync mode still takes them on the tokenless path (they are only hints there)."""
    attempt = declined_attempt()
    ip = sender()
    settings.MPESA = shop_mpesa_settings(sim.sandbox, MODE="async", CALLBACK_ALLOWED_IPS=[ip])
    assert post(result(attempt), ip=ip).status_code == 404
    assert post(result(attempt), ip=ip, path=f"{CALLBACK}/anything").status_code == 404
    assert not CallbackDelivery.objects.exists()
    assert CallbackRejection.objects.get(reason="no_token").count == 1
    assert CallbackRejection.objects.get(reason="bad_token").count == 1

    settings.MPESA = shop_mpesa_settings(sim.sandbox, MODE="async", CALLBACK_PATH_TOKEN=TOKEN)
    assert post(result(attempt), ip=ip).status_code == 404
    assert post(result(attempt), ip=ip, path=f"{CALLBACK}/{TOKEN}").status_code == 200

    settings.MPESA = shop_mpesa_settings(sim.sandbox, MODE="sync")
    assert post(result(attempt), ip=ip).status_code == 200
    wait_for(lambda: not CallbackDelivery.objects.filter(processed_at=None).exists(), what="processed")
    assert CallbackDelivery.objects.count() == 2
    assert PaymentAttempt.objects.get(pk=attempt.pk).state == State.DECLINED
