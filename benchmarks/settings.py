"""The production settings (``kulipa.settings``, every check included) with the abuse limits off, for the
benchmarks that place thousands of orders from one address (docs/payments.md § Abuse limits: an empty rate or 0
disables a limit; from the environment a rate is turned off with `off`)."""

from kulipa.settings import *  # noqa: F403

LIMIT_CHECKOUTS_PER_SESSION = ""
LIMIT_CHECKOUTS_PER_IP = ""
LIMIT_RETRIES_PER_SESSION = ""
LIMIT_RETRIES_PER_IP = ""
LIMIT_PROMPTS_PER_PHONE = ""
LIMIT_ATTEMPTS_PER_ORDER = 0
LIMIT_UNITS_HELD_PER_SESSION = 0
LIMIT_UNITS_HELD_PER_PHONE = 0
LIMIT_UNITS_HELD_PER_IP = 0
