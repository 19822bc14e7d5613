"""An offline simulator of the Vodacom M-Pesa OpenAPI (Mozambique, v1x) for development and tests.

It plays the gateway on the real ports (optionally shifted), checks bearer tokens with its own RSA 4096 key, holds
C2B requests open while a simulated customer answers (scenario chosen by the MSISDN's last two digits, see
:mod:`mpesa.sandbox.scenarios`), keeps an in-memory transaction store for status queries and reversals, and can
answer asynchronously with result callbacks. See ``mpesa/sandbox/README.md``.

Programmatic use, on a running loop::

    sandbox = await start(SandboxSettings(port_offset=None))   # random free ports
    ...
    await sandbox.close()

or from synchronous code / tests, with its own loop in a background thread::

    with run_in_thread(SandboxSettings(port_offset=None, runtime=RuntimeConfig(answer_delay=0))) as sandbox:
        sandbox.api_key, sandbox.public_key          # what a client is configured with
        sandbox.base_url, sandbox.ports              # "http://127.0.0.1", mpesa.config.Ports
        sandbox.control_url                          # "http://127.0.0.1:<c2b port>/sandbox"
        sandbox.ca_file                              # certificate to trust with tls=True, else None

This package never imports Django.
"""

from mpesa.sandbox.faults import Faults, ResponseFault
from mpesa.sandbox.scenarios import SCENARIOS, Scenario, scenario_for
from mpesa.sandbox.server import Sandbox, start
from mpesa.sandbox.settings import (
    DEFAULT_API_KEY,
    DEFAULT_INITIATOR_IDENTIFIER,
    DEFAULT_SECURITY_CREDENTIAL,
    DEFAULT_SERVICE_PROVIDER_CODE,
    RuntimeConfig,
    SandboxConfigError,
    SandboxSettings,
    validate_callback_url,
)
from mpesa.sandbox.threaded import ThreadedSandbox, run_in_thread

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_INITIATOR_IDENTIFIER",
    "DEFAULT_SECURITY_CREDENTIAL",
    "DEFAULT_SERVICE_PROVIDER_CODE",
    "SCENARIOS",
    "Faults",
    "ResponseFault",
    "RuntimeConfig",
    "Sandbox",
    "SandboxConfigError",
    "SandboxSettings",
    "Scenario",
    "ThreadedSandbox",
    "run_in_thread",
    "scenario_for",
    "start",
    "validate_callback_url",
]
