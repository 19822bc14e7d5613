"""The bearer token: the API key, RSA-encrypted with the portal's public key (PKCS#1 v1.5), base64-encoded.

Every working SDK uses PKCS#1 v1.5 rather than OAEP (reference §3.2). The padding is randomised, so two tokens for
the same key differ and both are valid; a client computes one and reuses it.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mpesa.errors import ConfigurationError

_PEM_HEADER = "-----BEGIN"


def load_public_key(value: str | bytes) -> rsa.RSAPublicKey:
    """Load the public key as the portal issues it (one base64 line of DER SubjectPublicKeyInfo) or as PEM.

    Raises :class:`ConfigurationError` with a message a person can act on when the key does not load.
    """
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    text = text.strip()
    if not text:
        raise ConfigurationError("public key is empty: paste the 'Public Key' from the M-Pesa developer portal")
    try:
        if text.startswith(_PEM_HEADER):
            key = serialization.load_pem_public_key(text.encode("ascii"))
        else:
            der = base64.b64decode("".join(text.split()), validate=True)
            key = serialization.load_der_public_key(der)
    except (ValueError, binascii.Error, TypeError) as exc:
        raise ConfigurationError(
            "public key does not load: expected the portal's base64 line (it starts with 'MII') or a PEM block"
        ) from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigurationError("public key is not an RSA key")
    return key


def public_key_to_portal_format(key: rsa.RSAPublicKey) -> str:
    """The inverse of :func:`load_public_key`: one base64 line of DER SubjectPublicKeyInfo."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def encrypt_api_key(api_key: str, public_key: rsa.RSAPublicKey) -> str:
    """The value after ``Bearer `` in the Authorization header."""
    if not api_key:
        raise ConfigurationError("api key is empty")
    try:
        ciphertext = public_key.encrypt(api_key.encode("utf-8"), padding.PKCS1v15())
    except ValueError as exc:
        raise ConfigurationError("api key is too long for this public key") from exc
    return base64.b64encode(ciphertext).decode("ascii")


def decrypt_token(token: str, private_key: rsa.RSAPrivateKey) -> str | None:
    """The API key inside a bearer token, or ``None`` when it was not made with the matching public key.

    Used by the sandbox simulator, which plays the gateway's side.
    """
    try:
        ciphertext = base64.b64decode(token.strip(), validate=True)
        return private_key.decrypt(ciphertext, padding.PKCS1v15()).decode("utf-8")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
