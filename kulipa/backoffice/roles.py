"""The staff roles: Django groups and the permissions each holds.

* **suporte** sees orders, payments, reversals, attention items and the audit log, and may ask M-Pesa again
  about a payment (``recheck_payment``);
* **financeiro** has all of that, and reverses payments, resolves attention items (dismissing them, or
  force-confirming an order: a permission of its own) and exports payments.

Migration 0002 creates the groups (with its own frozen copy of this table); :func:`roles_ensure` puts them back
(``ensure_demo_users``, tests after a flush). The permission itself is checked by ``kulipa.backoffice.services``
on every action, never only by hiding a button.
"""

from __future__ import annotations

from django.apps import apps
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group, Permission
from django.db import DEFAULT_DB_ALIAS

SUPPORT = "suporte"
FINANCE = "financeiro"

VIEWED: tuple[tuple[str, str], ...] = (
    ("orders", "order"),
    ("orders", "orderline"),
    ("inventory", "stockreservation"),
    ("payments", "paymentattempt"),
    ("payments", "paymentevent"),
    ("payments", "reversal"),
    ("payments", "attentionitem"),
    ("payments", "callbackdelivery"),
    ("backoffice", "staffaction"),
)
"""(app label, model) that both roles may view."""

_SUPPORT_PERMS = (
    *((app, f"view_{model}") for app, model in VIEWED),
    ("backoffice", "recheck_payment"),
)
ROLES: dict[str, tuple[tuple[str, str], ...]] = {
    SUPPORT: _SUPPORT_PERMS,
    FINANCE: (
        *_SUPPORT_PERMS,
        ("backoffice", "reverse_payment"),
        ("backoffice", "resolve_attention"),
        ("backoffice", "force_confirm_payment"),
        ("backoffice", "export_payments"),
    ),
}
"""Group name → its permissions as (app label, codename)."""


def roles_ensure(*, using: str = DEFAULT_DB_ALIAS) -> dict[str, Group]:
    """Create the groups of :data:`ROLES` and give them their permissions (adding, never removing). Idempotent.

    The permissions are created first: after a test database flush they may not exist yet."""
    for label in sorted({app for perms in ROLES.values() for app, _ in perms}):
        create_permissions(apps.get_app_config(label), verbosity=0, using=using)
    groups: dict[str, Group] = {}
    for name, perms in ROLES.items():
        group, _ = Group.objects.using(using).get_or_create(name=name)
        group.permissions.add(
            *(
                Permission.objects.using(using).get(content_type__app_label=app, codename=codename)
                for app, codename in perms
            )
        )
        groups[name] = group
    return groups
