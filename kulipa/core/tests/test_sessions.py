"""kulipa/core/sessions.py: database sessions saved in one statement, new keys not looked up first — and still
never one visitor's session written over another's."""

from __future__ import annotations

import pytest
from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.models import Session
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from kulipa.core.sessions import SessionStore

pytestmark = pytest.mark.django_db(transaction=True)


def _sql(ctx: CaptureQueriesContext) -> list[str]:
    return [q["sql"].split()[0] for q in ctx.captured_queries]


def test_a_new_session_is_one_insert_and_a_change_one_update():
    session = SessionStore()
    session["cart"] = {"1": 2}
    with CaptureQueriesContext(connection) as created:
        session.save()
    session["cart"] = {"1": 3}
    with CaptureQueriesContext(connection) as changed:
        session.save()

    assert _sql(created) == ["INSERT"]
    assert _sql(changed) == ["UPDATE"]
    assert SessionStore(session_key=session.session_key).load() == {"cart": {"1": 3}}


def test_a_key_already_taken_is_never_written_over(monkeypatch):
    ana = SessionStore()
    ana["cart"] = {"7": 1}
    ana.save()
    keys = iter([ana.session_key, "b" * 32])  # the random draw repeats Ana's key once
    monkeypatch.setattr(SessionStore, "_get_new_session_key", lambda self: next(keys))

    rui = SessionStore()
    rui["cart"] = {"9": 5}
    rui.save()

    assert rui.session_key == "b" * 32
    assert SessionStore(session_key=ana.session_key).load() == {"cart": {"7": 1}}
    assert SessionStore(session_key=rui.session_key).load() == {"cart": {"9": 5}}


def test_inside_a_transaction_a_refused_key_does_not_abort_the_callers_work(monkeypatch):
    ana = SessionStore()
    ana.save()
    keys = iter([ana.session_key, "c" * 32])
    monkeypatch.setattr(SessionStore, "_get_new_session_key", lambda self: next(keys))

    with transaction.atomic():
        rui = SessionStore()
        rui.save()  # the taken key fails inside a savepoint; the transaction goes on
        assert Session.objects.filter(session_key="c" * 32).exists()

    assert Session.objects.count() == 2


def test_a_session_deleted_meanwhile_is_not_brought_back():
    session = SessionStore()
    session["cart"] = {"1": 1}
    session.save()
    Session.objects.filter(session_key=session.session_key).delete()  # e.g. logged out in another tab

    session["cart"] = {"1": 2}
    with pytest.raises(UpdateError):
        session.save()
    assert not Session.objects.exists()
