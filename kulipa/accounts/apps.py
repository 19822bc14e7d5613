from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AccountsConfig(AppConfig):
    name = "kulipa.accounts"
    verbose_name = _("Contas")

    def ready(self) -> None:
        from kulipa.accounts import throttle  # noqa: F401  (connects the lockout counter to django-axes' signal)
