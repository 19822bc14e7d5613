import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mpesa import RESPONSE_CODES, Config, ConfigurationError, Outcome, outcome_for
from mpesa.token import decrypt_token, encrypt_api_key, load_public_key, public_key_to_portal_format


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_token_round_trip_with_the_portal_format(private_key: rsa.RSAPrivateKey) -> None:
    portal_line = public_key_to_portal_format(private_key.public_key())
    assert "\n" not in portal_line and portal_line.startswith("MII")
    token = encrypt_api_key("abc123apikey", load_public_key(portal_line))
    assert decrypt_token(token, private_key) == "abc123apikey"


def test_pem_and_wrapped_base64_keys_load_too(private_key: rsa.RSAPrivateKey) -> None:
    pem = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    assert load_public_key(pem).public_numbers() == private_key.public_key().public_numbers()
    line = public_key_to_portal_format(private_key.public_key())
    wrapped = "\n".join(line[i : i + 60] for i in range(0, len(line), 60))
    assert load_public_key(wrapped).public_numbers() == private_key.public_key().public_numbers()


def test_tokens_are_randomised_but_all_valid(private_key: rsa.RSAPrivateKey) -> None:
    key = private_key.public_key()
    first, second = encrypt_api_key("k", key), encrypt_api_key("k", key)
    assert first != second
    assert decrypt_token(first, private_key) == decrypt_token(second, private_key) == "k"


def test_a_token_for_another_key_does_not_decrypt(private_key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = encrypt_api_key("k", other.public_key())
    assert decrypt_token(token, private_key) != "k"
    assert decrypt_token("not base64!", private_key) is None


@pytest.mark.parametrize(
    "bad", ["", "not a key", base64.b64encode(b"garbage").decode(), "-----BEGIN PUBLIC KEY-----\nxx"]
)
def test_malformed_public_keys_fail_at_construction_with_a_clear_message(bad: str) -> None:
    from mpesa import Client

    config = Config(api_key="k", public_key=bad, service_provider_code="171717")
    with pytest.raises(ConfigurationError, match="public key"):
        Client(config)


def test_secrets_never_appear_in_reprs(private_key: rsa.RSAPrivateKey) -> None:
    from mpesa import Client

    config = Config(
        api_key="SECRET-API-KEY",
        public_key=public_key_to_portal_format(private_key.public_key()),
        service_provider_code="171717",
        initiator_identifier="INITIATOR",
        security_credential="CREDENTIAL",
    )
    with Client(config) as client:
        for text in (repr(config), repr(client)):
            assert "SECRET-API-KEY" not in text and "CREDENTIAL" not in text and "INITIATOR" not in text


def test_tls_verification_cannot_be_switched_off() -> None:
    with pytest.raises(ConfigurationError, match="TLS"):
        Config(api_key="k", public_key="x", service_provider_code="171717", verify=False)


def test_every_listed_code_has_an_outcome_class() -> None:
    # Every code the reference names (shared/reference/mpesa-openapi.md §4.1 and §4.2).
    named = {0, 1, 2, 4, 5, 6, 9, 10, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 28, 30, 31, 32, 35, 36}
    named |= {39, 40, 41, 42, 43, 50, 51, 52, 54, 55, 56, 57, 58, 989, 990, 991, 992, 993, 994, 995, 996, 997, 998}
    named |= {2001, 2002, 2006, 2051, 2057}
    assert {f"INS-{n}" for n in named} <= set(RESPONSE_CODES)
    assert all(isinstance(entry.outcome, Outcome) for entry in RESPONSE_CODES.values())


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        ("INS-0", Outcome.SUCCESS),
        ("INS-5", Outcome.DECLINED),
        ("INS-2006", Outcome.INSUFFICIENT_FUNDS),
        ("INS-6", Outcome.FAILED),
        ("INS-2051", Outcome.INVALID_REQUEST),
        ("INS-10", Outcome.INVALID_REQUEST),
        ("INS-2", Outcome.AUTH_ERROR),
        ("INS-9", Outcome.UNKNOWN),
        ("INS-16", Outcome.UNKNOWN),
        ("INS-23", Outcome.UNKNOWN),
        ("INS-1", Outcome.UNKNOWN),
    ],
)
def test_outcome_classes_follow_the_reference(code: str, outcome: Outcome) -> None:
    assert outcome_for(code, http_status=RESPONSE_CODES[code].http_status) is outcome


def test_unlisted_codes_are_judged_by_http_status() -> None:
    assert outcome_for("INS-4242", http_status=503) is Outcome.UNKNOWN
    assert outcome_for(None, http_status=None) is Outcome.UNKNOWN
    assert outcome_for(None, http_status=403) is Outcome.AUTH_ERROR
    assert outcome_for("INS-4242", http_status=400) is Outcome.INVALID_REQUEST
    assert outcome_for(None, http_status=200) is Outcome.UNKNOWN


@pytest.mark.parametrize("url", ["127.0.0.1", "ftp://host", "http://127.0.0.1:18352", "https://h/ipg"])
def test_base_url_is_scheme_and_host_only(url: str) -> None:
    with pytest.raises(ConfigurationError, match="base_url"):
        Config(api_key="k", public_key="x", service_provider_code="171717", base_url=url)
