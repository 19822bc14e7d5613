"""The web server's entry point (``kulipa.wsgi:application`` for gunicorn or waitress).

Refuses to load — ``ImproperlyConfigured`` listing every problem — when the configuration fails the checks of
``kulipa.core.config`` (with ``DJANGO_DEBUG=0``: missing or malformed M-Pesa credentials, a weak secret key, an
unprotected callback, …), so a misconfigured shop never serves a single request.
"""

import os

from django.core.wsgi import get_wsgi_application

from kulipa.core.checks import refuse_unsafe_configuration

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kulipa.settings")
application = get_wsgi_application()
refuse_unsafe_configuration()
