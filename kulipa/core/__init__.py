"""Shared helpers that are not a Django app: money formatting, the language middleware, optional URLs.

Not in INSTALLED_APPS on purpose (no models, no templates). The template filter ``mzn`` lives in
``kulipa/catalog/templatetags/money.py`` (``{% load money %}``) and calls :func:`kulipa.core.money.format_mzn`.
"""
