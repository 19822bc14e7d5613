"""Shared helpers: locks, state tables, money formatting, the language middleware, optional URLs, the client
address, and the configuration (``config.py``: what a deployment must get right; ``logs.py``: log format).

In INSTALLED_APPS only so that ``apps.py`` registers the configuration checks (``checks.py``); no models, no
templates. The template filter ``mzn`` lives in ``kulipa/catalog/templatetags/money.py`` (``{% load money %}``) and
calls :func:`kulipa.core.money.format_mzn`.
"""
