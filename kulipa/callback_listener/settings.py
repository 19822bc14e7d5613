"""Settings of the callback listener: the shop's (``kulipa.settings``, so the same database, queue and M-Pesa
configuration) with a URLconf of only the callback routes and without the middleware that serves static files."""

from kulipa.settings import *  # noqa: F403
from kulipa.settings import MIDDLEWARE as SHOP_MIDDLEWARE

ROOT_URLCONF = "kulipa.callback_listener.urls"
MIDDLEWARE = [m for m in SHOP_MIDDLEWARE if m != "whitenoise.middleware.WhiteNoiseMiddleware"]
