from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from kulipa.accounts.models import User


class Command(BaseCommand):
    help = "Create (or reset the password of) the demo admin and the demo customer. Idempotent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("admin_email")
        parser.add_argument("admin_password")
        parser.add_argument("customer_email")
        parser.add_argument("customer_password")

    def handle(self, *args: Any, **options: Any) -> None:
        for email, password, staff in (
            (options["admin_email"], options["admin_password"], True),
            (options["customer_email"], options["customer_password"], False),
        ):
            user, _ = User.objects.get_or_create(email=email, defaults={"first_name": "Demo"})
            user.is_staff = user.is_superuser = staff
            user.set_password(password)
            user.save()
