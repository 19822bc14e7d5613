"""The staff roles: the groups migration 0002 creates and exactly their permissions, and the demo logins in them."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from kulipa import devserver
from kulipa.accounts.management.commands import ensure_demo_users
from kulipa.accounts.models import User
from kulipa.backoffice import roles
from kulipa.backoffice.models import StaffAction

MIGRATION = importlib.import_module("kulipa.backoffice.migrations.0002_roles")

VIEWS = {
    "orders.view_order",
    "orders.view_orderline",
    "inventory.view_stockreservation",
    "payments.view_paymentattempt",
    "payments.view_paymentevent",
    "payments.view_reversal",
    "payments.view_attentionitem",
    "payments.view_callbackdelivery",
    "backoffice.view_staffaction",
}
EXPECTED = {
    "suporte": VIEWS | {"backoffice.recheck_payment"},
    "financeiro": VIEWS
    | {
        "backoffice.recheck_payment",
        "backoffice.reverse_payment",
        "backoffice.resolve_attention",
        "backoffice.force_confirm_payment",
        "backoffice.export_payments",
    },
}


def permissions_of(name: str) -> set[str]:
    group = Group.objects.get(name=name)
    return {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")}


@pytest.mark.django_db
def test_the_groups_exist_after_migrate_with_exactly_their_permissions() -> None:
    # Non-transactional tests run before any flush: this is the database as ``migrate`` left it.
    assert set(Group.objects.values_list("name", flat=True)) >= set(EXPECTED)
    for name, expected in EXPECTED.items():
        assert permissions_of(name) == expected, name
    assert {f"backoffice.{codename}" for codename, _ in StaffAction._meta.permissions} < EXPECTED["financeiro"]


@pytest.mark.django_db
def test_the_migration_can_run_again_and_changes_nothing() -> None:
    state = MigrationExecutor(connection).loader.project_state(("backoffice", "0002_roles"))
    editor = SimpleNamespace(connection=connection)
    MIGRATION.roles_create(state.apps, editor)
    MIGRATION.roles_create(state.apps, editor)
    assert Group.objects.filter(name__in=EXPECTED).count() == 2
    for name, expected in EXPECTED.items():
        assert permissions_of(name) == expected


def test_the_roles_module_describes_what_the_migration_created() -> None:
    assert {name: set(perms) for name, perms in roles.ROLES.items()} == {
        name: set(perms) for name, perms in MIGRATION.ROLES.items()
    }
    assert {name: {f"{a}.{c}" for a, c in perms} for name, perms in roles.ROLES.items()} == EXPECTED


@pytest.mark.django_db(transaction=True)
def test_roles_are_put_back_after_a_flush_and_reversing_the_migration_removes_them() -> None:
    call_command("migrate", "backoffice", "0001", verbosity=0)
    assert not Group.objects.filter(name__in=EXPECTED).exists()
    call_command("migrate", "backoffice", verbosity=0)
    for name, expected in EXPECTED.items():
        assert permissions_of(name) == expected
    Group.objects.all().delete()
    Permission.objects.filter(content_type__app_label="backoffice").delete()
    roles.roles_ensure()
    for name, expected in EXPECTED.items():
        assert permissions_of(name) == expected


@pytest.mark.django_db
def test_what_each_role_may_do() -> None:
    support = User.objects.create_user("s@test.kulipa", "x", is_staff=True)
    support.groups.add(Group.objects.get(name="suporte"))
    finance = User.objects.create_user("f@test.kulipa", "x", is_staff=True)
    finance.groups.add(Group.objects.get(name="financeiro"))
    support = User.objects.get(pk=support.pk)
    finance = User.objects.get(pk=finance.pk)
    assert support.has_perm("backoffice.recheck_payment") and support.has_perm("payments.view_paymentevent")
    for perm in (
        "backoffice.reverse_payment",
        "backoffice.resolve_attention",
        "backoffice.force_confirm_payment",
        "backoffice.export_payments",
    ):
        assert not support.has_perm(perm)
        assert finance.has_perm(perm)
    for user in (support, finance):  # views only: nothing is changed through the admin's forms
        assert not user.has_perm("orders.change_order") and not user.has_perm("payments.change_reversal")


@pytest.mark.django_db
def test_demo_users_include_one_staff_member_per_role() -> None:
    call_command("ensure_demo_users", "admin@kulipa.test", "kulipa-admin", "cliente@kulipa.test", "kulipa-cliente")
    call_command("ensure_demo_users", "admin@kulipa.test", "kulipa-admin", "cliente@kulipa.test", "kulipa-cliente")
    for (email, password), group in ((devserver.DEMO_SUPPORT, "suporte"), (devserver.DEMO_FINANCE, "financeiro")):
        user = User.objects.get(email=email)
        assert user.is_staff and not user.is_superuser and user.is_active
        assert user.check_password(password)
        assert list(user.groups.values_list("name", flat=True)) == [group]
    admin = User.objects.get(email="admin@kulipa.test")
    customer = User.objects.get(email="cliente@kulipa.test")
    assert admin.is_superuser and admin.check_password("kulipa-admin")
    assert not customer.is_staff and customer.check_password("kulipa-cliente")
    assert User.objects.count() == 4
    assert (ensure_demo_users.DEMO_SUPPORT, ensure_demo_users.DEMO_FINANCE) == (
        devserver.DEMO_SUPPORT,
        devserver.DEMO_FINANCE,
    )


@pytest.mark.django_db
def test_demo_staff_logins_can_be_chosen() -> None:
    call_command(
        "ensure_demo_users",
        "a@test.kulipa",
        "pw-admin-1",
        "c@test.kulipa",
        "pw-cliente-1",
        "--support",
        "s@test.kulipa",
        "pw-s-1",
        "--finance",
        "f@test.kulipa",
        "pw-f-1",
    )
    assert User.objects.get(email="s@test.kulipa").groups.get().name == "suporte"
    assert User.objects.get(email="f@test.kulipa").check_password("pw-f-1")
