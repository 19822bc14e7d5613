from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from kulipa.accounts.models import User
from kulipa.backoffice.roles import FINANCE, SUPPORT, roles_ensure

DEMO_SUPPORT = ("suporte@kulipa.test", "kulipa-suporte")
DEMO_FINANCE = ("financeiro@kulipa.test", "kulipa-financeiro")


class Command(BaseCommand):
    help = (
        "Create (or reset the password of) the demo admin, the demo customer, and the demo staff of the two roles "
        "(suporte, financeiro: staff, not superusers, each in its group). Idempotent."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("admin_email")
        parser.add_argument("admin_password")
        parser.add_argument("customer_email")
        parser.add_argument("customer_password")
        parser.add_argument("--support", nargs=2, metavar=("EMAIL", "PASSWORD"), default=list(DEMO_SUPPORT))
        parser.add_argument("--finance", nargs=2, metavar=("EMAIL", "PASSWORD"), default=list(DEMO_FINANCE))

    def handle(self, *args: Any, **options: Any) -> None:
        for email, password, staff in (
            (options["admin_email"], options["admin_password"], True),
            (options["customer_email"], options["customer_password"], False),
        ):
            user, _ = User.objects.get_or_create(email=email, defaults={"first_name": "Demo"})
            user.is_staff = user.is_superuser = staff
            user.set_password(password)
            user.save()
        groups = roles_ensure()
        for (email, password), role in ((options["support"], SUPPORT), (options["finance"], FINANCE)):
            user, _ = User.objects.get_or_create(email=email, defaults={"first_name": "Demo"})
            user.is_staff = True
            user.is_superuser = False
            user.set_password(password)
            user.save()
            user.groups.set([groups[role]])
