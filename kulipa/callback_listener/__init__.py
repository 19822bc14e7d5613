"""The M-Pesa callback listener: a WSGI application that serves only ``/api/mpesa/callback`` and
``/api/mpesa/callback/<token>`` (the routes of ``kulipa.payments.urls`` whose view is ``mpesa_callback``).

The gateway calls back on an HTTPS port in 11000-19000. Serving the whole shop there would put the admin and the
customer pages on a second public port; this application answers 404 to everything else and serves no static
files. Run it with ``gunicorn -c deploy/gunicorn-callback.conf.py`` (TLS from ``CALLBACK_TLS_CERT`` /
``CALLBACK_TLS_KEY``), see docs/callback-listener.md.

* :mod:`.wsgi` — the application (``kulipa.callback_listener.wsgi:application``), on :mod:`.settings`;
* :mod:`.settings` — the shop's settings with :mod:`.urls` as URLconf and without the static files middleware;
* :mod:`.conf` — where to listen and with which certificate, checked before the server starts.
"""
