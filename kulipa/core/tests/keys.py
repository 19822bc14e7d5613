"""Keys for configuration tests, generated once per test process (never real credentials)."""

from __future__ import annotations

import functools
import secrets

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mpesa.token import public_key_to_portal_format


@functools.cache
def portal_public_key() -> str:
    """An RSA public key in the portal's format (one base64 line of DER)."""
    return public_key_to_portal_format(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())


@functools.cache
def ec_public_key_pem() -> str:
    """A well-formed public key that is not RSA."""
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def secret_key() -> str:
    return secrets.token_urlsafe(50)


def callback_token() -> str:
    return secrets.token_urlsafe(32)


API_KEY = "k7Qm2Xa9Lp4Rt8Vz1Nc6Hb3Jd5Fg0We2"
"""32 letters and digits, like the portal's."""
SERVICE_PROVIDER_CODE = "900579"
INITIATOR = "KulipaOps"
CREDENTIAL = "Cr3d-5f8a9c2e"
