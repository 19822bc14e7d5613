"""``mpesa-sandbox``: run the simulator, or print its public key.

``mpesa-sandbox serve`` listens until SIGINT/SIGTERM; ``mpesa-sandbox public-key`` prints the key a client is
configured with (one base64 line) and nothing else. Exit status 2 means a refused option.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from mpesa.config import ENDPOINTS, Operation
from mpesa.sandbox.keys import load_or_create_private_key
from mpesa.sandbox.scenarios import SCENARIOS
from mpesa.sandbox.server import Sandbox, start
from mpesa.sandbox.settings import (
    DEFAULT_API_KEY,
    DEFAULT_INITIATOR_IDENTIFIER,
    DEFAULT_SECURITY_CREDENTIAL,
    DEFAULT_SERVICE_PROVIDER_CODE,
    RuntimeConfig,
    SandboxConfigError,
    SandboxSettings,
)
from mpesa.token import public_key_to_portal_format

DEFAULT_STATE_DIR = Path(".mpesa-sandbox")
DEFAULT_PRIVATE_KEY = DEFAULT_STATE_DIR / "private_key.pem"


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default in ``--help``."""


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mpesa-sandbox", description="Offline M-Pesa OpenAPI (Mozambique) simulator")
    commands = parser.add_subparsers(dest="command", required=True)

    key = commands.add_parser(
        "public-key", help="print the public key in the portal's format", formatter_class=_Formatter
    )
    key.add_argument("--private-key", type=Path, default=DEFAULT_PRIVATE_KEY, help="created when missing")

    serve = commands.add_parser("serve", help="serve every operation on its port", formatter_class=_Formatter)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port-offset", type=int, default=0, help="added to every real port (default 0)")
    serve.add_argument("--api-key", default=DEFAULT_API_KEY)
    serve.add_argument("--private-key", type=Path, default=DEFAULT_PRIVATE_KEY, help="created when missing")
    serve.add_argument("--service-provider-code", default=DEFAULT_SERVICE_PROVIDER_CODE)
    serve.add_argument("--initiator-identifier", default=DEFAULT_INITIATOR_IDENTIFIER)
    serve.add_argument("--security-credential", default=DEFAULT_SECURITY_CREDENTIAL)
    serve.add_argument("--tls", action="store_true", help="HTTPS with a self-signed certificate next to the key")
    serve.add_argument("--callback-url", help="answer C2B at once and POST the result here (async mode)")
    serve.add_argument(
        "--allow-insecure-callbacks",
        action="store_true",
        help="development: accept any http(s) callback URL, not only HTTPS on ports 11000-19000",
    )
    serve.add_argument("--callback-ca-file", type=Path, help="extra CA to trust for HTTPS callbacks")
    defaults = RuntimeConfig()
    serve.add_argument(
        "--answer-delay",
        type=_non_negative,
        default=defaults.answer_delay,
        metavar="SECONDS",
        help="how long the simulated customer takes to answer (automatic scenarios)",
    )
    serve.add_argument(
        "--push-window",
        type=_non_negative,
        default=defaults.push_window,
        metavar="SECONDS",
        help="how long a prompt waits before INS-9 (scenarios 00 and 04)",
    )
    serve.add_argument(
        "--long-wait",
        type=_non_negative,
        default=defaults.long_wait,
        metavar="SECONDS",
        help="scenario 09's wait before success (beyond a 90 s client timeout)",
    )
    serve.add_argument(
        "--callback-attempts", type=int, default=defaults.callback_attempts, help="deliveries tried per callback"
    )
    serve.add_argument(
        "--callback-backoff",
        type=_non_negative,
        default=defaults.callback_backoff,
        metavar="SECONDS",
        help="wait before the first retry, doubled after each failure",
    )
    serve.add_argument(
        "--callback-backoff-max", type=_non_negative, default=defaults.callback_backoff_max, metavar="SECONDS"
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _settings(args: argparse.Namespace) -> SandboxSettings:
    runtime = RuntimeConfig(
        answer_delay=args.answer_delay,
        push_window=args.push_window,
        long_wait=args.long_wait,
        callback_url=args.callback_url,
        allow_insecure_callbacks=args.allow_insecure_callbacks,
        callback_attempts=args.callback_attempts,
        callback_backoff=args.callback_backoff,
        callback_backoff_max=args.callback_backoff_max,
    )
    return SandboxSettings(
        host=args.host,
        port_offset=args.port_offset,
        api_key=args.api_key,
        private_key_path=args.private_key,
        service_provider_code=args.service_provider_code,
        initiator_identifier=args.initiator_identifier,
        security_credential=args.security_credential,
        tls=args.tls,
        runtime=runtime,
        callback_ca_file=args.callback_ca_file,
    )


def banner(sandbox: Sandbox) -> str:
    """What ``serve`` prints on start: URLs, credentials and how to use them."""
    s = sandbox.settings
    lines = ["M-Pesa OpenAPI sandbox simulator (offline)", ""]
    for operation in Operation:
        method, _ = ENDPOINTS[operation]
        lines.append(f"  {operation.value:<14} {method:<5} {sandbox.url(operation)}")
    lines += [
        "",
        f"  phone page     {sandbox.phone_url('258840000000')}  (numbers ending 00 wait for you here)",
        f"  control API    {sandbox.control_url}/  (no token; see mpesa/sandbox/README.md)",
        "",
        f"API key:                {s.api_key}",
        f"Service provider code:  {s.service_provider_code}   (B2B sandbox receiver 979797)",
        f"Initiator identifier:   {s.initiator_identifier}",
        f"Security credential:    {s.security_credential}",
        f"Port offset:            {sandbox.port_offset}",
    ]
    if sandbox.ca_file:
        lines.append(f"TLS certificate (pass as CA bundle): {sandbox.ca_file.resolve()}")
    if s.runtime.callback_url:
        lines.append(f"Async mode: results are POSTed to {s.runtime.callback_url}")
    r = s.runtime
    lines += [
        f"Delays: answer {r.answer_delay:g} s, push window {r.push_window:g} s, long wait {r.long_wait:g} s",
        "Scenarios (last two digits of the customer MSISDN): "
        + ", ".join(f"{k} {v.name}" for k, v in SCENARIOS.items()),
        "",
        "Public key (portal format, one line):",
        sandbox.public_key,
        "",
        f"Client settings: base_url={sandbox.base_url} port offset {sandbox.port_offset}, the API key and public "
        "key above.",
        "Ready. Ctrl-C to stop.",
    ]
    return "\n".join(lines)


async def _serve(settings: SandboxSettings) -> None:
    sandbox = await start(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(banner(sandbox), flush=True)
    try:
        await stop.wait()
    finally:
        print("Stopping.", flush=True)
        await sandbox.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "public-key":
        try:
            key = load_or_create_private_key(args.private_key)
        except (ValueError, OSError) as exc:
            print(f"mpesa-sandbox: {exc}", file=sys.stderr)
            return 2
        print(public_key_to_portal_format(key.public_key()))
        return 0
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        settings = _settings(args)
    except SandboxConfigError as exc:
        print(f"mpesa-sandbox: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(settings))
    except SandboxConfigError as exc:
        print(f"mpesa-sandbox: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"mpesa-sandbox: cannot listen: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
