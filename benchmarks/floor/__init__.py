"""The framework floor of the checkout benchmark: one view that INSERTs one row in a transaction.

Benchmark-only: :mod:`benchmarks.floor.settings` adds this app and ``/_floor/`` on top of the production settings
and URLs, and the checkout benchmark starts gunicorn with it, so the shop and the floor are the same server. Nothing
in ``kulipa`` knows about it; a real deployment (``kulipa.settings``) has no such URL.
"""
