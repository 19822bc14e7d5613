"""What a deployment must get right, as data: every problem of a configuration, listed at once.

:func:`config_problems` is a pure function of the settings' values (no Django, no I/O but reading a public-key or
CA file the settings name). It is the single source for three gates, so they can never disagree:

* the system check ``kulipa.E0xx`` (``kulipa.core.checks``): every management command that runs checks — the
  worker (``manage.py run_huey``), ``migrate``, ``check --deploy`` — stops with all problems listed;
* ``kulipa/wsgi.py``: the web server refuses to load the application (``ImproperlyConfigured`` listing them);
* the table test in ``kulipa/core/tests/test_config.py``.

Messages name the environment variable and say what is wrong and what to do; they never repeat a secret.

Also here, because ``kulipa/settings.py`` and ``kulipa/devserver.py`` share them: the rule that picks the M-Pesa
environment when none is given, the ``.env`` reader, and small parsers of values read from the environment.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import rsa

from mpesa.errors import ConfigurationError, ValidationError
from mpesa.token import encrypt_api_key, load_public_key
from mpesa.validation import validate_short_code

# --- M-Pesa environments -----------------------------------------------------------------------------------------
SIMULATOR = "simulator"
"""The local simulator (``mpesa.sandbox``), started by ``make run`` and by the tests. Never chosen silently in
production: only when ``MPESA_ENVIRONMENT=simulator`` or, with ``DJANGO_DEBUG`` on, when no API key is set."""
SANDBOX = "sandbox"
"""Vodacom's test gateway (api.sandbox.vm.co.mz): real protocol, no real money."""
LIVE = "live"
"""Vodacom's production gateway (api.vm.co.mz): real money."""
MPESA_ENVIRONMENTS = (SIMULATOR, SANDBOX, LIVE)

MIN_C2B_READ_TIMEOUT_SECONDS = 120.0
"""= ``kulipa.payments.conf.MIN_C2B_READ_TIMEOUT`` (answers after more than 90 s have been measured)."""
CALLBACK_PORTS = range(11000, 19001)
"""Vodacom posts async results only to HTTPS on a port in 11000–19000 (the integration plan; the simulator agrees)."""
MIN_CALLBACK_TOKEN_LENGTH = 32
_CALLBACK_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")

SANDBOX_SERVICE_PROVIDER_CODE = "171717"
"""The short code of Vodacom's sandbox: never a merchant's own code in production."""
SIMULATOR_API_KEY = "kulipa-sandbox-api-key-000000001"
"""= ``mpesa.sandbox.DEFAULT_API_KEY``: public on purpose, so refused as a real key."""
DOCUMENTED_EXAMPLE_VALUES = frozenset({"MPesa2018", "Mpesa2019"})
"""The initiator and credential of Vodacom's documentation and the simulator: refused for the live gateway."""

# --- Django's secret key ---------------------------------------------------------------------------------------
MIN_SECRET_KEY_LENGTH = 50
MIN_SECRET_KEY_UNIQUE_CHARACTERS = 5
DEV_SECRET_KEY = "dev-only-insecure-key-change-me-in-production-0123456789"
"""The key used when ``DJANGO_SECRET_KEY`` is not set: fine for ``make run``, refused with ``DJANGO_DEBUG=0``."""
EXAMPLE_SECRET_KEY = "change-me-to-at-least-50-random-characters-see-docs-configuration"
"""The placeholder in ``.env.example``: copying the file unchanged must not start a shop."""
_PLACEHOLDER_MARKERS = ("change-me", "changeme", "replace-me", "your-secret", "example")
_DJANGO_INSECURE_PREFIX = "django-insecure"

# --- admin path -------------------------------------------------------------------------------------------------
_ADMIN_PATH = re.compile(r"^[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]+$")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the configuration: the check id, the environment variable, what is wrong and what to
    do. ``str()`` is the line shown to the operator."""

    id: str
    setting: str
    message: str

    def __str__(self) -> str:
        return f"{self.id} {self.setting}: {self.message}"


def format_problems(problems: Sequence[Problem]) -> str:
    """The message of the ``ImproperlyConfigured`` raised by ``kulipa/wsgi.py``: one problem per line."""
    lines = [f"Kulipa will not start: {len(problems)} configuration problem(s) (see docs/configuration.md)"]
    lines += [f"  {problem}" for problem in problems]
    return "\n".join(lines)


# --- the checks ---------------------------------------------------------------------------------------------------
def config_problems(
    *, debug: bool, secret_key: str, allowed_hosts: Sequence[str], mpesa: Mapping[str, object]
) -> list[Problem]:
    """Every problem of this configuration, in a stable order; ``[]`` when it is fit to run.

    Always checked (a value that can never work): ``MPESA_ENVIRONMENT`` and ``MPESA_MODE`` spelled wrong, a C2B
    timeout under :data:`MIN_C2B_READ_TIMEOUT_SECONDS` or given twice differently, a malformed callback IP list.
    With ``debug`` off also: the secret key, the allowed hosts, and — unless the environment is the simulator — the
    M-Pesa credentials, base URL and CA file; the callback secret and URL in any environment.
    """
    problems: list[Problem] = []
    environment = _text(mpesa.get("ENVIRONMENT")).lower()
    mode = _text(mpesa.get("MODE")).lower() or "sync"
    if environment and environment not in MPESA_ENVIRONMENTS:
        problems.append(Problem("kulipa.E003", "MPESA_ENVIRONMENT", f"{environment!r} is not one of {_choices()}"))
    if mode not in ("sync", "async"):
        problems.append(Problem("kulipa.E009", "MPESA_MODE", f"{mode!r} is neither 'sync' nor 'async'"))
    problems += _timeout_problems(mpesa)
    problems += _allowed_ips_problems(mpesa.get("CALLBACK_ALLOWED_IPS"))
    if debug:
        return _sorted(problems)

    problems += _secret_key_problems(secret_key)
    if not [host for host in allowed_hosts if host.strip()]:
        problems.append(
            Problem(
                "kulipa.E002",
                "DJANGO_ALLOWED_HOSTS",
                "empty: list the shop's host names, comma-separated (e.g. loja.example.co.mz)",
            )
        )
    if not environment:
        problems.append(
            Problem(
                "kulipa.E003",
                "MPESA_ENVIRONMENT",
                f"not set: with DJANGO_DEBUG=0 say which gateway takes the money ({_choices()})",
            )
        )
    elif environment in (SANDBOX, LIVE):
        problems += _gateway_problems(environment, mpesa)
    problems += _callback_problems(mode, mpesa)
    return _sorted(problems)


def deploy_warnings(*, debug: bool, mpesa: Mapping[str, object]) -> list[Problem]:
    """What ``check --deploy`` should point out without refusing to run (``kulipa.W0xx``)."""
    if not debug and _text(mpesa.get("ENVIRONMENT")).lower() == SIMULATOR:
        return [
            Problem(
                "kulipa.W001",
                "MPESA_ENVIRONMENT",
                "'simulator' with DJANGO_DEBUG=0: payments go to the local simulator and no money moves",
            )
        ]
    return []


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda problem: problem.id)


def _choices() -> str:
    return ", ".join(MPESA_ENVIRONMENTS)


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def _secret_key_problems(secret_key: str) -> list[Problem]:
    key = secret_key or ""
    lowered = key.lower()
    how = 'generate one with: python -c "import secrets; print(secrets.token_urlsafe(50))"'
    reason = ""
    if not key or key == DEV_SECRET_KEY:
        reason = "not set (the development default is in use)"
    elif key == EXAMPLE_SECRET_KEY or any(marker in lowered for marker in _PLACEHOLDER_MARKERS):
        reason = "is a placeholder (the .env.example value, or a 'change-me' kind of key)"
    elif lowered.startswith(_DJANGO_INSECURE_PREFIX):
        reason = f"starts with {_DJANGO_INSECURE_PREFIX!r}: it was generated for development"
    elif len(key) < MIN_SECRET_KEY_LENGTH:
        reason = f"{len(key)} characters; at least {MIN_SECRET_KEY_LENGTH} are needed"
    elif len(set(key)) < MIN_SECRET_KEY_UNIQUE_CHARACTERS:
        reason = f"fewer than {MIN_SECRET_KEY_UNIQUE_CHARACTERS} different characters"
    return [Problem("kulipa.E001", "DJANGO_SECRET_KEY", f"{reason}; {how}")] if reason else []


def _timeout_problems(mpesa: Mapping[str, object]) -> list[Problem]:
    timeout_ms = mpesa.get("TIMEOUT_MS")
    seconds = _number(mpesa.get("C2B_READ_TIMEOUT_SECONDS"))
    if timeout_ms is not None:
        ms = _number(timeout_ms)
        if ms is None:
            return [Problem("kulipa.E012", "MPESA_TIMEOUT_MS", f"{timeout_ms!r} is not a number of milliseconds")]
        if seconds is not None and abs(seconds - ms / 1000) > 1e-6:
            return [
                Problem(
                    "kulipa.E012",
                    "MPESA_TIMEOUT_MS",
                    f"{ms:g} ms disagrees with MPESA_C2B_READ_TIMEOUT_SECONDS={seconds:g}; set only one of them",
                )
            ]
        name, given, shown = "MPESA_TIMEOUT_MS", ms / 1000, f"{ms:g} ms"
    else:
        if seconds is None:
            return []
        name, given, shown = "MPESA_C2B_READ_TIMEOUT_SECONDS", seconds, f"{seconds:g} s"
    if given < MIN_C2B_READ_TIMEOUT_SECONDS:
        minimum = int(MIN_C2B_READ_TIMEOUT_SECONDS)
        unit = f"{minimum * 1000} ms" if name == "MPESA_TIMEOUT_MS" else f"{minimum} s"
        return [
            Problem(
                "kulipa.E012",
                name,
                f"{shown} is shorter than the {unit} a C2B push must be allowed: the gateway holds the call "
                "while the customer types the PIN and answers after more than 90 s have been measured",
            )
        ]
    return []


def _number(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(str(value))
    except ValueError:
        return None


def _allowed_ips_problems(value: object) -> list[Problem]:
    if not value:
        return []
    items = [value] if isinstance(value, str) else list(value) if isinstance(value, list | tuple) else [value]
    bad = []
    for item in items:
        try:
            ipaddress.ip_address(str(item).strip())
        except ValueError:
            bad.append(str(item))
    if bad:
        return [
            Problem(
                "kulipa.E013",
                "MPESA_CALLBACK_ALLOWED_IPS",
                f"not IP addresses: {', '.join(repr(b) for b in bad)} (comma-separated addresses, no ranges)",
            )
        ]
    return []


def _gateway_problems(environment: str, mpesa: Mapping[str, object]) -> list[Problem]:
    """Credentials, base URL and CA file for Vodacom's sandbox or live gateway."""
    problems: list[Problem] = []
    api_key = _text(mpesa.get("API_KEY"))
    public_key_problem, public_key = _public_key(_text(mpesa.get("PUBLIC_KEY")))
    if public_key_problem:
        problems.append(Problem("kulipa.E005", "MPESA_PUBLIC_KEY", public_key_problem))

    api_key_problem = ""
    if not api_key:
        api_key_problem = "not set: paste your application's API key from the M-Pesa developer portal"
    elif api_key == SIMULATOR_API_KEY:
        api_key_problem = "is the local simulator's public key, not one from the M-Pesa developer portal"
    elif not _printable_token(api_key):
        api_key_problem = "contains spaces, quotes or other characters an API key does not have; paste the key alone"
    elif len(api_key) < 16:
        api_key_problem = f"{len(api_key)} characters; the portal's API keys are 32"
    elif public_key is not None:
        try:
            encrypt_api_key(api_key, public_key)
        except ConfigurationError:
            api_key_problem = "cannot be encrypted with MPESA_PUBLIC_KEY (too long for that key)"
    if api_key_problem:
        problems.append(Problem("kulipa.E004", "MPESA_API_KEY", api_key_problem))

    code = _text(mpesa.get("SERVICE_PROVIDER_CODE"))
    if not code:
        problems.append(Problem("kulipa.E006", "MPESA_SERVICE_PROVIDER_CODE", "not set: your M-Pesa short code"))
    else:
        try:
            validate_short_code(code)
        except ValidationError:
            problems.append(
                Problem("kulipa.E006", "MPESA_SERVICE_PROVIDER_CODE", f"{code!r} is not a short code (5 or 6 digits)")
            )
        else:
            if environment == LIVE and code == SANDBOX_SERVICE_PROVIDER_CODE:
                problems.append(
                    Problem(
                        "kulipa.E006",
                        "MPESA_SERVICE_PROVIDER_CODE",
                        f"{code} is the sandbox's test code; the live gateway needs your own short code",
                    )
                )

    for check_id, name, key, what in (
        ("kulipa.E007", "MPESA_INITIATOR_IDENTIFIER", "INITIATOR_IDENTIFIER", "initiator identifier"),
        ("kulipa.E008", "MPESA_SECURITY_CREDENTIAL", "SECURITY_CREDENTIAL", "security credential"),
    ):
        value = _text(mpesa.get(key))
        if not value:
            problems.append(
                Problem(check_id, name, f"not set: the {what} Vodacom issued for reversals (refunds need it)")
            )
        elif not _printable_token(value):
            problems.append(Problem(check_id, name, "contains spaces, quotes or unprintable characters"))
        elif environment == LIVE and value in DOCUMENTED_EXAMPLE_VALUES:
            problems.append(
                Problem(check_id, name, f"is the example from Vodacom's documentation, not your live {what}")
            )

    base_url = _text(mpesa.get("BASE_URL"))
    if base_url:
        parsed = urlsplit(base_url)
        if parsed.scheme != "https" or not parsed.hostname or parsed.port is not None or parsed.path.strip("/"):
            problems.append(
                Problem(
                    "kulipa.E014",
                    "MPESA_BASE_URL",
                    "must be https://host only (no port, no path): the bearer token would otherwise travel in "
                    "the clear or to the wrong place; leave it empty to use MPESA_ENVIRONMENT's host",
                )
            )
    ca_bundle = _text(mpesa.get("CA_BUNDLE"))
    if ca_bundle and not Path(ca_bundle).is_file():
        problems.append(Problem("kulipa.E015", "MPESA_CA_BUNDLE", f"no such file: {ca_bundle}"))
    return problems


def _printable_token(value: str) -> bool:
    return value.isascii() and value.isprintable() and not any(ch in value for ch in " \t'\"")


def _public_key(value: str) -> tuple[str, rsa.RSAPublicKey | None]:
    """``(problem, loaded key)``: the key loaded exactly as the client will load it, or why it does not load."""
    if not value:
        return "not set: paste the portal's 'Public Key' (one base64 line) or give the path of a file holding it", None
    looks_like_key = value.startswith(("MII", "-----BEGIN"))
    if not looks_like_key and "/" in value and not Path(value).is_file():
        return f"names no file ({value}) and is not a key either", None
    try:
        return "", load_public_key(read_public_key(value))
    except OSError as exc:
        return f"the file it names cannot be read ({exc.strerror or exc})", None
    except (ConfigurationError, UnicodeDecodeError) as exc:
        return f"{exc}", None


def read_public_key(value: str) -> str:
    """``MPESA_PUBLIC_KEY`` as the key's text: the value itself, or the content of the file it names.

    A value that looks like a key (``MII…`` or PEM) is the key; anything else that names an existing file is read.
    """
    text = value.strip()
    if text and not text.startswith(("MII", "-----BEGIN")) and len(text) < 4096 and Path(text).is_file():
        return Path(text).read_text(encoding="ascii").strip()
    return text


def _callback_problems(mode: str, mpesa: Mapping[str, object]) -> list[Problem]:
    problems: list[Problem] = []
    token = _text(mpesa.get("CALLBACK_PATH_TOKEN"))
    how = 'generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
    if mode == "async" and not token:
        problems.append(
            Problem(
                "kulipa.E010",
                "MPESA_CALLBACK_PATH_TOKEN",
                f"not set: in async mode anyone could post results to the callback; {how}",
            )
        )
    elif token and len(token) < MIN_CALLBACK_TOKEN_LENGTH:
        problems.append(
            Problem(
                "kulipa.E010",
                "MPESA_CALLBACK_PATH_TOKEN",
                f"{len(token)} characters; at least {MIN_CALLBACK_TOKEN_LENGTH} are needed; {how}",
            )
        )
    elif token and not _CALLBACK_TOKEN.fullmatch(token):
        problems.append(
            Problem(
                "kulipa.E010",
                "MPESA_CALLBACK_PATH_TOKEN",
                f"only letters, digits, '-' and '_' fit in the callback URL's path; {how}",
            )
        )

    url = _text(mpesa.get("CALLBACK_URL"))
    if not url:
        if mode == "async":
            problems.append(
                Problem(
                    "kulipa.E011",
                    "MPESA_CALLBACK_URL",
                    "not set: in async mode give the URL registered with Vodacom, "
                    "https://<host>:<port 11000-19000>/api/mpesa/callback/<MPESA_CALLBACK_PATH_TOKEN>",
                )
            )
        return problems
    reasons = _callback_url_problems(url, token)
    if reasons:
        problems.append(Problem("kulipa.E011", "MPESA_CALLBACK_URL", "; ".join(reasons)))
    return problems


def _callback_url_problems(url: str, token: str) -> list[str]:
    """What is wrong with the callback URL, described by its parts (its path holds the secret token)."""
    try:
        parsed = urlsplit(url)
        port = parsed.port
    except ValueError:
        return ["not a URL: expected https://<host>:<port 11000-19000>/api/mpesa/callback/<token>"]
    reasons = []
    if parsed.scheme != "https":
        reasons.append(f"scheme is {parsed.scheme or 'missing'!r}; Vodacom posts results only over https")
    if not parsed.hostname:
        reasons.append("has no host name")
    if parsed.username or parsed.password:
        reasons.append("must not carry a user name or password")
    if port is None:
        reasons.append("has no port; Vodacom posts results only to a port in 11000-19000 (e.g. https://host:14443/…)")
    elif port not in CALLBACK_PORTS:
        reasons.append(f"port {port} is outside 11000-19000, the only ports Vodacom posts results to")
    if token and parsed.path.rstrip("/").rsplit("/", 1)[-1] != token:
        reasons.append("its path does not end with MPESA_CALLBACK_PATH_TOKEN, so the shop would answer 404")
    return reasons


# --- choosing the M-Pesa environment ------------------------------------------------------------------------------
def default_mpesa_environment(*, debug: bool, api_key: str) -> str:
    """The environment when ``MPESA_ENVIRONMENT`` is not set.

    Development (``debug`` on): the local simulator without an API key, Vodacom's sandbox with one. Production:
    none (``""``) — the operator must say, and :func:`config_problems` refuses to start until they do.
    """
    if not debug:
        return ""
    return SANDBOX if api_key.strip() else SIMULATOR


# --- parsers for values read from the environment -----------------------------------------------------------------
def normalize_admin_path(value: str) -> str:
    """``KULIPA_ADMIN_PATH`` as a URL prefix: ``"/gestao"`` → ``"gestao/"``. Raises ``ValueError`` when it is empty
    or holds characters a path segment should not."""
    path = value.strip().strip("/")
    if not path or not _ADMIN_PATH.fullmatch(path):
        raise ValueError(f"KULIPA_ADMIN_PATH={value!r}: use letters, digits, '-', '_', '.', '~' and '/' (e.g. gestao/)")
    return f"{path}/"


def proxy_ssl_header(value: str) -> tuple[str, str] | None:
    """``DJANGO_SECURE_PROXY_SSL_HEADER`` → Django's ``SECURE_PROXY_SSL_HEADER``.

    ``"X-Forwarded-Proto"`` → ``("HTTP_X_FORWARDED_PROTO", "https")``; ``"X-Forwarded-Proto: https"`` names the
    value too; empty → ``None`` (no proxy is trusted: the default). Raises ``ValueError`` for a malformed name.
    """
    text = value.strip()
    if not text:
        return None
    name, _, expected = text.partition(":") if ":" in text else text.partition("=")
    name, expected = name.strip(), expected.strip() or "https"
    if not _HEADER_NAME.fullmatch(name):
        raise ValueError(f"DJANGO_SECURE_PROXY_SSL_HEADER={value!r}: expected a header name like X-Forwarded-Proto")
    return "HTTP_" + name.upper().replace("-", "_"), expected


CSP_DIRECTIVES_EXTENSIBLE = (
    "default-src",
    "script-src",
    "style-src",
    "img-src",
    "font-src",
    "connect-src",
    "media-src",
    "frame-src",
    "form-action",
    "worker-src",
    "manifest-src",
)


def csp_extra_sources(value: str) -> dict[str, list[str]]:
    """``KULIPA_CSP_EXTRA`` → sources to add per directive.

    ``"img-src https://cdn.example.com; connect-src https://api.example.com"`` →
    ``{"img-src": ["https://cdn.example.com"], "connect-src": ["https://api.example.com"]}``. Raises ``ValueError``
    for a directive that cannot be extended this way or a directive without sources.
    """
    extra: dict[str, list[str]] = {}
    for part in value.split(";"):
        words = part.split()
        if not words:
            continue
        directive, sources = words[0].lower(), words[1:]
        if directive not in CSP_DIRECTIVES_EXTENSIBLE or not sources:
            raise ValueError(
                f"KULIPA_CSP_EXTRA: {part.strip()!r}; expected '<directive> <source> …' with one of "
                + ", ".join(CSP_DIRECTIVES_EXTENSIBLE)
            )
        extra.setdefault(directive, []).extend(sources)
    return extra


# --- the .env file --------------------------------------------------------------------------------------------------
def env_file_path(project_dir: Path) -> Path | None:
    """The ``.env`` file to read: ``KULIPA_ENV_FILE`` when set (empty: none), else ``<project>/.env``."""
    named = os.environ.get("KULIPA_ENV_FILE")
    if named is None:
        return project_dir / ".env"
    return Path(named) if named.strip() else None


def read_env_file(project_dir: Path) -> Path | None:
    """Load the ``.env`` file into ``os.environ`` without overriding what the real environment already says.

    Returns the file read, or ``None``. A missing default ``.env`` is fine (development needs none); a file named
    by ``KULIPA_ENV_FILE`` that does not exist is an error (``FileNotFoundError``), not silently nothing.
    """
    import environ  # type: ignore[import-untyped]  # django-environ ships no type hints

    path = env_file_path(project_dir)
    if path is None:
        return None
    if not path.is_file():
        if "KULIPA_ENV_FILE" in os.environ:
            raise FileNotFoundError(f"KULIPA_ENV_FILE={path}: no such file")
        return None
    environ.Env.read_env(str(path), overwrite=False)
    return path
