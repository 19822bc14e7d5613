"""The benchmarks' production settings (:mod:`benchmarks.settings`: ``kulipa.settings`` with the abuse limits off)
plus the floor app and ``/_floor/``.

Only the checkout benchmark uses this (``DJANGO_SETTINGS_MODULE=benchmarks.floor.settings`` for gunicorn, the
workers and its setup commands); the configuration gate runs as for ``kulipa.settings``.
"""

from benchmarks.settings import *  # noqa: F403
from kulipa.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "benchmarks.floor"]
ROOT_URLCONF = "benchmarks.floor.urls"
