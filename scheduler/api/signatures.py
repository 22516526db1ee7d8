"""Verifying provider webhooks: pure functions of the request's bytes, headers and a secret.

Each ``verify_*`` function returns ``None`` for a genuine request and raises otherwise::

    TactError
     └── WebhookRejected          status_code: the HTTP status the webhook answers
          ├── CredentialsRejected  401: no signature or credentials, or wrong credentials
          └── SignatureRejected    403: a signature that does not hold, a stale timestamp,
                                   a replayed token

How each provider signs (as their webhook documentation describes it):

- SendGrid: ECDSA P-256 with SHA-256 over the ``X-Twilio-Email-Event-Webhook-Timestamp``
  header followed by the raw body; the base64 DER signature is in
  ``X-Twilio-Email-Event-Webhook-Signature``; the public key is shown as base64 DER.
- Twilio: base64 HMAC-SHA1, keyed with the auth token, of the full URL Twilio requested
  followed by every POST parameter's name and value, sorted by name (``X-Twilio-Signature``).
- Mailgun: hex HMAC-SHA256, keyed with the webhook signing key, of ``timestamp + token``;
  all three travel in the body's ``signature`` object. Tokens must not repeat.
- Postmark: HTTP basic auth with the credentials written into the webhook's URL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from scheduler.errors import TactError

__all__ = [
    "MAX_AGE",
    "MAX_FUTURE",
    "CredentialsRejected",
    "ReplayCache",
    "SignatureRejected",
    "WebhookRejected",
    "check_fresh",
    "load_public_key",
    "mailgun_signature",
    "twilio_signature",
    "verify_basic_auth",
    "verify_mailgun",
    "verify_sendgrid",
    "verify_twilio",
]

MAX_AGE = timedelta(minutes=5)
"""A signed timestamp older than this is stale."""
MAX_FUTURE = timedelta(minutes=1)
"""A signed timestamp further ahead of our clock than this is refused (clock skew allowance)."""


class WebhookRejected(TactError):
    """A webhook request that is not verifiably from the provider."""

    status_code = 403

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class CredentialsRejected(WebhookRejected):
    """No signature or credentials were given, or the credentials are wrong (HTTP 401)."""

    status_code = 401


class SignatureRejected(WebhookRejected):
    """The signature does not hold, or its timestamp is stale, or its token was used (HTTP 403)."""

    status_code = 403


class ReplayCache:
    """Single-use tokens seen recently: each is remembered for ``ttl``, at most ``capacity`` at
    once (the oldest are forgotten first). A token older than ``ttl`` is refused as stale
    anyway, so forgetting it then loses nothing."""

    def __init__(self, ttl: timedelta = MAX_AGE + MAX_FUTURE, capacity: int = 100_000) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._expiry: OrderedDict[str, datetime] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, token: str, now: datetime) -> bool:
        """True the first time ``token`` is seen within ``ttl``; False for a replay."""
        with self._lock:
            while self._expiry:
                oldest, expires = next(iter(self._expiry.items()))
                if expires > now and len(self._expiry) < self.capacity:
                    break
                del self._expiry[oldest]
            if token in self._expiry:
                return False
            self._expiry[token] = now + self.ttl
            return True

    def release(self, token: str) -> None:
        """Forget ``token`` (its request failed after verification, so a retry may use it)."""
        with self._lock:
            self._expiry.pop(token, None)

    def __len__(self) -> int:
        return len(self._expiry)


def check_fresh(
    timestamp: str, now: datetime, *, max_age: timedelta = MAX_AGE, max_future: timedelta = MAX_FUTURE
) -> None:
    """Refuse a Unix ``timestamp`` older than ``max_age`` or more than ``max_future`` ahead."""
    try:
        signed_at = datetime.fromtimestamp(float(timestamp), UTC)
    except (ValueError, OverflowError, OSError):
        raise SignatureRejected("the signed timestamp is not a Unix time") from None
    if signed_at < now - max_age:
        raise SignatureRejected("the signed timestamp is too old")
    if signed_at > now + max_future:
        raise SignatureRejected("the signed timestamp is in the future")


# -- SendGrid ----------------------------------------------------------------------------------


def load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from base64 DER (as SendGrid shows it) or PEM; ValueError otherwise."""
    stripped = text.strip()
    try:
        if stripped.startswith("-----BEGIN"):
            key = load_pem_public_key(stripped.encode())
        else:
            key = load_der_public_key(base64.b64decode("".join(stripped.split()), validate=True))
    except (ValueError, binascii.Error, TypeError) as exc:
        raise ValueError(f"not a public key in base64 DER or PEM: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not an ECDSA P-256 public key")
    return key


def verify_sendgrid(
    public_key: ec.EllipticCurvePublicKey,
    *,
    signature: str | None,
    timestamp: str | None,
    body: bytes,
    now: datetime,
) -> None:
    """Check a SendGrid signed event webhook request."""
    if not signature or not timestamp:
        raise CredentialsRejected("missing X-Twilio-Email-Event-Webhook-Signature or -Timestamp")
    try:
        der = base64.b64decode(signature.strip(), validate=True)
    except binascii.Error:
        raise SignatureRejected("the signature is not base64") from None
    try:
        public_key.verify(der, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise SignatureRejected("the signature does not match the body") from None
    check_fresh(timestamp, now)


# -- Twilio ------------------------------------------------------------------------------------


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """The ``X-Twilio-Signature`` Twilio sends for a POST of ``params`` to ``url``."""
    data = url + "".join(name + value for name, value in sorted(params))
    return base64.b64encode(hmac.digest(auth_token.encode(), data.encode(), hashlib.sha1)).decode()


def verify_twilio(auth_token: str, *, signature: str | None, url: str, params: Iterable[tuple[str, str]]) -> None:
    """Check a Twilio webhook request against the URL Twilio was given for it."""
    if not signature:
        raise CredentialsRejected("missing X-Twilio-Signature")
    expected = twilio_signature(auth_token, url, params)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise SignatureRejected("the signature does not match the URL and parameters")


# -- Mailgun -----------------------------------------------------------------------------------


def mailgun_signature(signing_key: str, timestamp: str, token: str) -> str:
    """The signature Mailgun puts beside ``timestamp`` and ``token``."""
    return hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


def verify_mailgun(
    signing_key: str,
    *,
    timestamp: str | None,
    token: str | None,
    signature: str | None,
    now: datetime,
    seen: ReplayCache,
) -> None:
    """Check a Mailgun webhook's ``signature`` object; the token is claimed in ``seen`` only when
    the signature holds and the timestamp is fresh."""
    if not timestamp or not token or not signature:
        raise CredentialsRejected("missing signature.timestamp, signature.token or signature.signature")
    expected = mailgun_signature(signing_key, timestamp, token)
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
        raise SignatureRejected("the signature does not match the timestamp and token")
    check_fresh(timestamp, now)
    if not seen.claim(token, now):
        raise SignatureRejected("the token was used before")


# -- Postmark ----------------------------------------------------------------------------------


def verify_basic_auth(authorization: str | None, *, username: str, password: str) -> None:
    """Check an ``Authorization: Basic`` header against ``username`` and ``password``."""
    scheme, _, encoded = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise CredentialsRejected("missing basic auth credentials")
    try:
        given_user, colon, given_password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
    except binascii.Error:
        raise CredentialsRejected("malformed basic auth credentials") from None
    user_ok = hmac.compare_digest(given_user, username.encode())
    password_ok = hmac.compare_digest(given_password, password.encode())
    if not (colon and user_ok and password_ok):
        raise CredentialsRejected("wrong basic auth credentials")
