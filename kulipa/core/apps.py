from django.apps import AppConfig


class CoreConfig(AppConfig):
    """Registers the configuration checks (``kulipa.core.checks``); ``kulipa.core`` has no models or templates."""

    name = "kulipa.core"
    label = "kulipa_core"
    verbose_name = "Kulipa core"

    def ready(self) -> None:
        from kulipa.core import checks  # noqa: F401  (registers the system checks)
