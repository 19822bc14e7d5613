"""Key material of the simulated gateway: the RSA private key behind the "portal" public key, and a TLS certificate.

The private key is RSA 4096, like the real portal's (reference §3.1). It is created once and then reused, so a
client configured with the printed public key keeps working across restarts. The TLS certificate is self-signed for
``127.0.0.1``, ``localhost`` and ``::1``; a client trusts it by passing its path as the CA bundle.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

RSA_KEY_BITS = 4096
TLS_CERT_NAME = "tls-cert.pem"
TLS_KEY_NAME = "tls-key.pem"
_CERT_DAYS = 3650

_ephemeral_lock = threading.Lock()
_ephemeral_key: rsa.RSAPrivateKey | None = None


def generate_private_key() -> rsa.RSAPrivateKey:
    """A fresh RSA 4096 key (about a second of CPU)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)


def ephemeral_private_key() -> rsa.RSAPrivateKey:
    """One in-memory key per process, generated on first use: for tests that do not care which key is used."""
    global _ephemeral_key
    with _ephemeral_lock:
        if _ephemeral_key is None:
            _ephemeral_key = generate_private_key()
        return _ephemeral_key


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only, atomically (a half-written key must never be loaded)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def load_or_create_private_key(path: Path) -> rsa.RSAPrivateKey:
    """The RSA key stored at ``path`` (unencrypted PEM), created there first when the file does not exist.

    Raises ``ValueError`` when the file exists but does not hold an RSA private key.
    """
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{path} does not hold an RSA private key")
        return key
    key = generate_private_key()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_private(path, pem)
    return key


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """``cert`` doubles as the CA bundle a client passes to trust the simulator (it is self-signed)."""

    cert: Path
    key: Path


def _self_signed(hostnames: tuple[str, ...], addresses: tuple[str, ...]) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "M-Pesa sandbox simulator (local)")])
    now = datetime.datetime.now(datetime.UTC)
    san = [x509.DNSName(h) for h in hostnames] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        # A self-signed certificate used as its own trust anchor: marked as a CA so that strict verifiers
        # (Python 3.13+ sets VERIFY_X509_STRICT) accept it when it is passed as the CA bundle.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def load_or_create_tls_files(
    directory: Path,
    *,
    hostnames: tuple[str, ...] = ("localhost",),
    addresses: tuple[str, ...] = ("127.0.0.1", "::1"),
) -> TlsFiles:
    """The certificate and key in ``directory``, generated there when either file is missing."""
    files = TlsFiles(cert=directory / TLS_CERT_NAME, key=directory / TLS_KEY_NAME)
    if files.cert.exists() and files.key.exists():
        return files
    cert_pem, key_pem = _self_signed(hostnames, addresses)
    _write_private(files.key, key_pem)
    directory.mkdir(parents=True, exist_ok=True)
    files.cert.write_bytes(cert_pem)
    return files
