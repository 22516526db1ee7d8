"""Webhook signature checks: SendGrid ECDSA, Twilio HMAC-SHA1, Mailgun HMAC-SHA256 with single-use
tokens, Postmark basic auth, and the freshness window."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scheduler.api.signatures import (
    CredentialsRejected,
    ReplayCache,
    SignatureRejected,
    check_fresh,
    load_public_key,
    mailgun_signature,
    twilio_signature,
    verify_basic_auth,
    verify_mailgun,
    verify_sendgrid,
    verify_twilio,
)

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
STAMP = str(int(NOW.timestamp()))
BODY = b'[{"email":"ana@example.com","event":"delivered","sg_event_id":"e1"}]'


@pytest.fixture(scope="module")
def private_key() -> ec.EllipticCurvePrivateKey:
    """A P-256 key pair standing in for SendGrid's."""
    return ec.generate_private_key(ec.SECP256R1())


def der_b64(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def sign(key: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> str:
    return base64.b64encode(key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()


# -- SendGrid ----------------------------------------------------------------------------------


def test_a_sendgrid_signature_verifies_with_the_der_key(private_key: ec.EllipticCurvePrivateKey) -> None:
    """A signature over timestamp + body verifies with the base64 DER key SendGrid shows."""
    key = load_public_key(der_b64(private_key))
    verify_sendgrid(key, signature=sign(private_key, STAMP, BODY), timestamp=STAMP, body=BODY, now=NOW)


def test_a_pem_public_key_is_accepted(private_key: ec.EllipticCurvePrivateKey) -> None:
    """The same key written as PEM loads to an equal key."""
    pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert load_public_key(pem.decode()).public_numbers() == private_key.public_key().public_numbers()


@pytest.mark.parametrize(
    "text",
    [
        "not a key",
        base64.b64encode(b"random bytes").decode(),
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
    ],
)
def test_text_that_is_no_public_key_is_refused(text: str) -> None:
    """Garbage, random bytes and a broken PEM raise ValueError."""
    with pytest.raises(ValueError, match="public key"):
        load_public_key(text)


def test_keys_of_other_kinds_are_refused() -> None:
    """An RSA key or an ECDSA key on another curve is not a SendGrid key."""
    for other in (rsa.generate_private_key(65537, 2048), ec.generate_private_key(ec.SECP384R1())):
        der = other.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        with pytest.raises(ValueError, match="P-256"):
            load_public_key(base64.b64encode(der).decode())


@pytest.mark.parametrize(
    ("body", "timestamp"),
    [(BODY.replace(b"delivered", b"bounce"), STAMP), (BODY, str(int(STAMP) + 1)), (BODY + b" ", STAMP)],
    ids=["changed-body", "changed-timestamp", "appended-space"],
)
def test_a_sendgrid_signature_over_other_bytes_is_rejected(
    private_key: ec.EllipticCurvePrivateKey, body: bytes, timestamp: str
) -> None:
    """Changing the body or the timestamp header breaks the signature."""
    key = load_public_key(der_b64(private_key))
    with pytest.raises(SignatureRejected):
        verify_sendgrid(key, signature=sign(private_key, STAMP, BODY), timestamp=timestamp, body=body, now=NOW)


@pytest.mark.parametrize("age", [timedelta(minutes=6), timedelta(minutes=-2)], ids=["stale", "future"])
def test_a_genuine_sendgrid_signature_outside_the_window_is_rejected(
    private_key: ec.EllipticCurvePrivateKey, age: timedelta
) -> None:
    """A correctly signed request more than 5 minutes old, or over a minute ahead, is refused."""
    stamp = str(int((NOW - age).timestamp()))
    key = load_public_key(der_b64(private_key))
    with pytest.raises(SignatureRejected, match="timestamp"):
        verify_sendgrid(key, signature=sign(private_key, stamp, BODY), timestamp=stamp, body=BODY, now=NOW)


def test_sendgrid_without_headers_or_with_a_non_base64_signature_is_rejected(
    private_key: ec.EllipticCurvePrivateKey,
) -> None:
    """Missing headers mean missing credentials; a signature that is not base64 does not hold."""
    key = load_public_key(der_b64(private_key))
    with pytest.raises(CredentialsRejected):
        verify_sendgrid(key, signature=None, timestamp=STAMP, body=BODY, now=NOW)
    with pytest.raises(CredentialsRejected):
        verify_sendgrid(key, signature=sign(private_key, STAMP, BODY), timestamp=None, body=BODY, now=NOW)
    with pytest.raises(SignatureRejected):
        verify_sendgrid(key, signature="!!not base64!!", timestamp=STAMP, body=BODY, now=NOW)


# -- Twilio ------------------------------------------------------------------------------------

TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_PARAMS = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+12349013030"),
    ("Digits", "1234"),
    ("From", "+12349013030"),
    ("To", "+18005551212"),
]


def test_the_twilio_signature_matches_twilios_documented_example() -> None:
    """Auth token 12345 over Twilio's example URL and parameters gives the signature its docs show."""
    assert twilio_signature("12345", TWILIO_URL, TWILIO_PARAMS) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_a_twilio_signature_ignores_the_order_parameters_arrive_in() -> None:
    """Parameters are sorted by name before signing, so their order in the body does not matter."""
    verify_twilio("12345", signature="0/KCTR6DLpKmkAf8muzZqo1nDgQ=", url=TWILIO_URL, params=TWILIO_PARAMS[::-1])


@pytest.mark.parametrize(
    ("url", "params", "token"),
    [
        ("https://mycompany.com/myapp.php?foo=1&bar=3", TWILIO_PARAMS, "12345"),
        ("http://mycompany.com/myapp.php?foo=1&bar=2", TWILIO_PARAMS, "12345"),
        (TWILIO_URL, [*TWILIO_PARAMS[:-1], ("To", "+18005551213")], "12345"),
        (TWILIO_URL, [*TWILIO_PARAMS, ("Body", "STOP")], "12345"),
        (TWILIO_URL, TWILIO_PARAMS, "54321"),
    ],
    ids=["other-query", "other-scheme", "changed-param", "added-param", "other-token"],
)
def test_a_twilio_signature_for_anything_else_is_rejected(url: str, params: list[tuple[str, str]], token: str) -> None:
    """Another URL, another parameter or another auth token breaks the signature."""
    with pytest.raises(SignatureRejected):
        verify_twilio(token, signature="0/KCTR6DLpKmkAf8muzZqo1nDgQ=", url=url, params=params)


def test_twilio_without_a_signature_lacks_credentials() -> None:
    """No X-Twilio-Signature header is a 401 case, not a 403 one."""
    with pytest.raises(CredentialsRejected):
        verify_twilio("12345", signature=None, url=TWILIO_URL, params=TWILIO_PARAMS)


# -- Mailgun -----------------------------------------------------------------------------------


def test_the_mailgun_signature_is_hex_hmac_sha256_of_timestamp_and_token() -> None:
    """The signature is the hex HMAC-SHA256 of timestamp + token under the signing key."""
    expected = hmac.new(b"key-1", b"1770920772" + b"tok", hashlib.sha256).hexdigest()
    assert mailgun_signature("key-1", "1770920772", "tok") == expected


def test_a_mailgun_token_verifies_once() -> None:
    """A genuine signature verifies; the same token again is a replay."""
    seen = ReplayCache()
    signature = mailgun_signature("key-1", STAMP, "token-a")
    verify_mailgun("key-1", timestamp=STAMP, token="token-a", signature=signature, now=NOW, seen=seen)
    with pytest.raises(SignatureRejected, match="used before"):
        verify_mailgun("key-1", timestamp=STAMP, token="token-a", signature=signature, now=NOW, seen=seen)


def test_a_forged_mailgun_signature_does_not_use_up_the_token() -> None:
    """A wrong signature is refused without claiming its token, so the genuine request still passes."""
    seen = ReplayCache()
    with pytest.raises(SignatureRejected, match="does not match"):
        verify_mailgun("key-1", timestamp=STAMP, token="token-a", signature="0" * 64, now=NOW, seen=seen)
    signature = mailgun_signature("key-1", STAMP, "token-a")
    verify_mailgun("key-1", timestamp=STAMP, token="token-a", signature=signature, now=NOW, seen=seen)


def test_a_stale_mailgun_signature_is_rejected() -> None:
    """A genuine signature from an hour ago is refused."""
    stamp = str(int((NOW - timedelta(hours=1)).timestamp()))
    signature = mailgun_signature("key-1", stamp, "token-a")
    with pytest.raises(SignatureRejected, match="too old"):
        verify_mailgun("key-1", timestamp=stamp, token="token-a", signature=signature, now=NOW, seen=ReplayCache())


def test_mailgun_without_a_signature_object_lacks_credentials() -> None:
    """Missing timestamp, token or signature is a 401 case."""
    with pytest.raises(CredentialsRejected):
        verify_mailgun("key-1", timestamp=STAMP, token=None, signature="x", now=NOW, seen=ReplayCache())


def test_the_replay_cache_forgets_after_its_ttl_and_beyond_its_capacity() -> None:
    """Tokens expire after the ttl; the oldest go first when the cache is full; release forgets."""
    cache = ReplayCache(ttl=timedelta(minutes=5), capacity=2)
    assert cache.claim("a", NOW)
    assert not cache.claim("a", NOW + timedelta(minutes=4))
    assert cache.claim("a", NOW + timedelta(minutes=6))
    assert cache.claim("b", NOW + timedelta(minutes=6))
    assert cache.claim("c", NOW + timedelta(minutes=6))
    assert len(cache) == 2
    assert cache.claim("a", NOW + timedelta(minutes=6))  # evicted as the oldest
    cache.release("c")
    assert cache.claim("c", NOW + timedelta(minutes=6))


# -- Postmark ----------------------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_the_right_basic_auth_passes() -> None:
    """The configured user and password pass."""
    verify_basic_auth(basic("hooks", "s3cret:with-colon"), username="hooks", password="s3cret:with-colon")


@pytest.mark.parametrize(
    "header",
    [None, "", basic("hooks", "wrong"), basic("other", "s3cret"), "Bearer s3cret", "Basic !!!", "Basic aG9va3M="],
    ids=["absent", "empty", "wrong-password", "wrong-user", "other-scheme", "not-base64", "no-colon"],
)
def test_any_other_basic_auth_is_rejected_as_credentials(header: str | None) -> None:
    """Absent, malformed or wrong credentials are all refused with 401."""
    with pytest.raises(CredentialsRejected):
        verify_basic_auth(header, username="hooks", password="s3cret")


# -- freshness ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "fresh"),
    [(timedelta(0), True), (timedelta(minutes=-5), True), (timedelta(minutes=-5, seconds=-1), False),
     (timedelta(minutes=1), True), (timedelta(minutes=1, seconds=1), False)],
)  # fmt: skip
def test_freshness_allows_five_minutes_back_and_one_ahead(offset: timedelta, fresh: bool) -> None:
    """Timestamps up to 5 minutes old or 1 minute ahead pass; beyond, they are refused."""
    stamp = str(int((NOW + offset).timestamp()))
    if fresh:
        check_fresh(stamp, NOW)
    else:
        with pytest.raises(SignatureRejected):
            check_fresh(stamp, NOW)


def test_a_timestamp_that_is_no_number_is_refused() -> None:
    """A timestamp that is not a Unix time is refused."""
    with pytest.raises(SignatureRejected, match="Unix time"):
        check_fresh("yesterday", NOW)


def test_rejections_carry_their_http_status() -> None:
    """Missing or wrong credentials answer 401; signatures that do not hold answer 403."""
    assert (CredentialsRejected("x").status_code, SignatureRejected("x").status_code) == (401, 403)
