"""Fixtures of the health and metrics tests: the real simulator of the payments tests (re-exported: fixtures of
another app's conftest are not visible here), a metrics token, and a scrape parsed into samples."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from kulipa.observability import checks
from kulipa.payments.tests.conftest import sandbox, sim  # noqa: F401

TOKEN = "s3cret-metrics-token-for-tests"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(autouse=True)
def fresh_gateway_answers() -> Iterator[None]:
    """Each test asks the gateway itself (the readiness probe keeps answers for a few seconds)."""
    checks.forget_gateway()
    yield
    checks.forget_gateway()


@pytest.fixture
def metrics_token(settings: Any) -> str:
    settings.METRICS_TOKEN = TOKEN
    settings.PROMETHEUS_MULTIPROC_DIR = ""
    return TOKEN


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape(client: Client | None = None, *, token: str = TOKEN) -> Samples:
    """GET /metrics with the bearer token, as Prometheus does; the samples by (name, labels)."""
    response = (client or Client()).get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/plain")
    return parse(response.content.decode())


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample ``name{labels}``; ``None`` when the scrape has no such series."""
    return samples.get((name, tuple(sorted(labels.items()))))
