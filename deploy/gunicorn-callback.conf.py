"""gunicorn configuration of the M-Pesa callback listener (docs/callback-listener.md).

Serves only /api/mpesa/callback and /api/mpesa/callback/<token> (kulipa.callback_listener), over TLS, on the port
of MPESA_CALLBACK_URL (or KULIPA_CALLBACK_PORT), with the same environment as the shop and its worker:

    KULIPA_CALLBACK_TLS_CERT=/etc/letsencrypt/live/loja.example.co.mz/fullchain.pem \\
    KULIPA_CALLBACK_TLS_KEY=/etc/letsencrypt/live/loja.example.co.mz/privkey.pem \\
    MPESA_CALLBACK_URL=https://loja.example.co.mz:12345/api/mpesa/callback/<token> \\
    .venv/bin/gunicorn -c deploy/gunicorn-callback.conf.py

Settings are read and checked here, before anything listens: a missing certificate, a port the gateway would
not call, or any problem the shop's own configuration gate finds (kulipa.core.config) stops the start with a
sentence. Anything below can be overridden on the command line or with GUNICORN_CMD_ARGS (e.g. ``--workers 4``).
"""

import os
import ssl
import sys

# Forced, not defaulted: a shared environment file may say kulipa.settings (the whole shop).
os.environ["DJANGO_SETTINGS_MODULE"] = "kulipa.callback_listener.settings"

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from kulipa.callback_listener.conf import listener_config
from kulipa.core.checks import refuse_unsafe_configuration

try:
    _listener = listener_config()
    refuse_unsafe_configuration()  # the shop's gate (kulipa.core.config), before anything listens
except ImproperlyConfigured as exc:
    sys.exit(f"kulipa-callback: not started: {exc}")

wsgi_app = "kulipa.callback_listener.wsgi:application"
bind = [_listener.bind]
certfile = str(_listener.certfile)
keyfile = str(_listener.keyfile)

# Callbacks are few and small; each is stored and acknowledged at once (the worker confirms it later).
workers = 2
worker_class = "gthread"
threads = 4
timeout = 30
graceful_timeout = 20
keepalive = 5

# Only the proxies Kulipa trusts may set X-Forwarded-Proto (and, for kulipa.core.net, X-Forwarded-For).
forwarded_allow_ips = ",".join(settings.TRUSTED_PROXIES)

accesslog = "-"
errorlog = "-"
proc_name = "kulipa-callback"
# gunicorn's runtime control socket defaults to one path per user: the shop's gunicorn may own it.
control_socket_disable = True


def ssl_context(config, default_ssl_context_factory):  # type: ignore[no-untyped-def]
    """gunicorn's context (certfile/keyfile loaded), TLS 1.2 at least."""
    context = default_ssl_context_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
