"""Production settings (``kulipa.settings``, everything from the environment) plus the floor app and ``/_floor/``.

Only the checkout benchmark uses this (``DJANGO_SETTINGS_MODULE=benchmarks.floor.settings`` for gunicorn, the
workers and its setup commands); the configuration gate runs as for ``kulipa.settings``.
"""

from kulipa.settings import *  # noqa: F403
from kulipa.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "benchmarks.floor"]
ROOT_URLCONF = "benchmarks.floor.urls"

# Abuse limits off (docs/payments.md § Abuse limits: "" turns a window off, 0 a cap): the load generator places
# thousands of orders from one address. The environment cannot say "off" for a window (empty means the default).
LIMIT_CHECKOUTS_PER_SESSION = ""
LIMIT_CHECKOUTS_PER_IP = ""
LIMIT_RETRIES_PER_SESSION = ""
LIMIT_RETRIES_PER_IP = ""
LIMIT_PROMPTS_PER_PHONE = ""
LIMIT_ATTEMPTS_PER_ORDER = 0
LIMIT_UNITS_HELD_PER_SESSION = 0
LIMIT_UNITS_HELD_PER_PHONE = 0
LIMIT_UNITS_HELD_PER_IP = 0
