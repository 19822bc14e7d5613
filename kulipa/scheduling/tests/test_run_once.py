"""run_once: one winner per (name, slot), whoever asks and however many at once; period_start: the same slot for
the same instant on every machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from kulipa.orders.tests.factories import run_concurrently
from kulipa.scheduling.models import PeriodicRun
from kulipa.scheduling.services import KEEP, period_start, run_once

MINUTE = timedelta(minutes=1)
SLOT = datetime(2026, 3, 1, 10, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("at", "period", "start"),
    [
        (datetime(2026, 3, 1, 10, 15, 0, tzinfo=UTC), MINUTE, SLOT),
        (datetime(2026, 3, 1, 10, 15, 59, 999999, tzinfo=UTC), MINUTE, SLOT),
        (datetime(2026, 3, 1, 10, 16, 0, tzinfo=UTC), MINUTE, SLOT + MINUTE),
        # Maputo is UTC+2: the same instant, the same slot, given in UTC
        (datetime(2026, 3, 1, 12, 15, 30, tzinfo=ZoneInfo("Africa/Maputo")), MINUTE, SLOT),
        (datetime(2026, 3, 1, 10, 59, 59, tzinfo=UTC), timedelta(hours=1), datetime(2026, 3, 1, 10, tzinfo=UTC)),
        (datetime(2026, 3, 1, 10, 15, 14, tzinfo=UTC), timedelta(seconds=10), SLOT + timedelta(seconds=10)),
    ],
)
def test_period_start(at: datetime, period: timedelta, start: datetime) -> None:
    assert period_start(at, period=period) == start
    assert period_start(at, period=period).tzinfo is UTC


def test_period_start_refuses_a_naive_time_or_an_empty_period() -> None:
    with pytest.raises(ValueError, match="aware"):
        period_start(datetime(2026, 3, 1, 10, 15), period=MINUTE)  # noqa: DTZ001
    with pytest.raises(ValueError, match="positive"):
        period_start(SLOT, period=timedelta(0))


@pytest.mark.django_db
def test_one_run_per_name_and_slot() -> None:
    assert run_once(name="sweep", slot=SLOT) is True
    assert run_once(name="sweep", slot=SLOT) is False
    assert run_once(name="sweep", slot=SLOT + MINUTE) is True
    assert run_once(name="other", slot=SLOT) is True
    assert sorted(PeriodicRun.objects.values_list("name", "slot")) == [
        ("other", SLOT),
        ("sweep", SLOT),
        ("sweep", SLOT + MINUTE),
    ]
    assert PeriodicRun.objects.filter(runner__contains=":").count() == 3  # host:pid of the winner


@pytest.mark.django_db
def test_the_winner_prunes_its_old_runs_only() -> None:
    old = SLOT - KEEP - MINUTE
    assert run_once(name="sweep", slot=old)
    assert run_once(name="other", slot=old)
    assert run_once(name="sweep", slot=SLOT - KEEP)
    assert run_once(name="sweep", slot=SLOT)
    assert sorted(PeriodicRun.objects.values_list("name", "slot")) == [
        ("other", old),
        ("sweep", SLOT - KEEP),
        ("sweep", SLOT),
    ]


@pytest.mark.django_db
def test_inside_a_transaction_a_lost_claim_leaves_the_transaction_usable() -> None:
    from django.db import transaction

    assert run_once(name="sweep", slot=SLOT)
    with transaction.atomic():
        assert run_once(name="sweep", slot=SLOT) is False
        assert PeriodicRun.objects.count() == 1  # the failed INSERT rolled back to its savepoint only


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_of_one_slot_have_one_winner() -> None:
    n = 8
    for minute in range(3):
        slot = SLOT + minute * MINUTE

        def claim(_i: int, slot: datetime = slot) -> bool:
            return run_once(name="sweep", slot=slot)

        results = run_concurrently(claim, n)
        assert [kind for kind, _value in results] == ["ok"] * n, results
        assert sorted(value for _kind, value in results) == [False] * (n - 1) + [True]
    assert PeriodicRun.objects.filter(name="sweep").count() == 3
