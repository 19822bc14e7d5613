"""``kulipa.callback_listener.wsgi:application``: the callback listener (see the package docstring).

DJANGO_SETTINGS_MODULE is forced, not defaulted: an environment file shared with the shop sets it to
``kulipa.settings``, and this application must never become the whole shop on the callback port. Like
``kulipa/wsgi.py`` it refuses to load when the configuration fails the checks of ``kulipa.core.config``.
"""

import os

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

from kulipa.core.checks import refuse_unsafe_configuration

SETTINGS_MODULE = "kulipa.callback_listener.settings"

os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
application = get_wsgi_application()
if settings.ROOT_URLCONF != "kulipa.callback_listener.urls":  # settings were configured before this import
    raise ImproperlyConfigured(f"the callback listener needs DJANGO_SETTINGS_MODULE={SETTINGS_MODULE}")
refuse_unsafe_configuration()
