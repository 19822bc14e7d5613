"""Benchmark-only: the shop plus ONE view that calls M-Pesa's C2B inside the checkout request, as a typical
WooCommerce-style plugin does. Never in the shop's own URLs: only ``benchmarks.inrequest.settings`` (used by
``benchmarks/pending.py`` as ``DJANGO_SETTINGS_MODULE``) routes to it."""
