from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from kulipa.catalog.services import demo_catalog_load


class Command(BaseCommand):
    help = "Load (or reset) the ~20 demo products. Safe to run again: products are matched by slug."

    def handle(self, *args: Any, **options: Any) -> None:
        result = demo_catalog_load()
        self.stdout.write(self.style.SUCCESS(f"Demo catalogue: {result.created} created, {result.updated} updated."))
