"""The configuration gate as Django system checks, and the same gate for the WSGI application.

:func:`configuration_check` (``kulipa.E0xx``, Error level, no deploy tag) runs with every management command that
runs checks: ``run_huey`` (the worker), ``migrate``, ``runserver``, ``check`` — each stops and lists every problem.
:func:`simulator_warning` (``kulipa.W001``) runs with ``check --deploy`` only. :func:`refuse_unsafe_configuration`
is what ``kulipa/wsgi.py`` calls: the web server never serves with a configuration the checks refuse.
The problems themselves come from the pure :func:`kulipa.core.config.config_problems`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from kulipa.core.config import Problem, config_problems, deploy_warnings, format_problems

TAG = "kulipa"


def current_problems() -> list[Problem]:
    """:func:`~kulipa.core.config.config_problems` of the running settings."""
    return config_problems(
        debug=bool(settings.DEBUG),
        secret_key=str(settings.SECRET_KEY),
        allowed_hosts=list(settings.ALLOWED_HOSTS),
        mpesa=settings.MPESA,
    )


@checks.register(TAG)
def configuration_check(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    return [checks.Error(f"{problem.setting}: {problem.message}", id=problem.id) for problem in current_problems()]


@checks.register(TAG, deploy=True)
def simulator_warning(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    return [
        checks.Warning(f"{problem.setting}: {problem.message}", id=problem.id)
        for problem in deploy_warnings(debug=bool(settings.DEBUG), mpesa=settings.MPESA)
    ]


def refuse_unsafe_configuration() -> None:
    """Raise ``ImproperlyConfigured`` listing every problem, if there is any."""
    problems = current_problems()
    if problems:
        raise ImproperlyConfigured(format_problems(problems))
