"""Signed, opaque unsubscribe tokens (one module for the mail headers and the endpoint).

A token names a touchpoint and a scope (a channel, or ``all`` for every marketing channel); it
carries no personal data. Format: ``<key id>.<payload>.<signature>``, each part base64url,
signed with HMAC-SHA256 under the key with that id, so keys can be rotated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class UnsubscribeClaim:
    """What a valid token says."""

    touchpoint_id: int
    scope: str


class TokenSigner:
    """Signs with the current key; verifies with any known key."""

    def __init__(self, keys: dict[str, bytes], current: str) -> None:
        if current not in keys:
            raise ValueError(f"no key with id {current!r}")
        self.keys = keys
        self.current = current

    def sign(self, touchpoint_id: int, scope: str) -> str:
        """A token for unsubscribing from ``scope`` through the touch ``touchpoint_id``."""
        payload = _b64(f"{touchpoint_id}:{scope}".encode())
        signature = self._mac(self.current, payload)
        return f"{self.current}.{payload}.{signature}"

    def verify(self, token: str) -> UnsubscribeClaim | None:
        """The claim of a genuine token, else None (forged, truncated or unknown key)."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] not in self.keys:
            return None
        key_id, payload, signature = parts
        if not hmac.compare_digest(signature, self._mac(key_id, payload)):
            return None
        try:
            touchpoint, scope = _unb64(payload).decode().split(":", 1)
            return UnsubscribeClaim(int(touchpoint), scope)
        except (ValueError, UnicodeDecodeError):
            return None

    def _mac(self, key_id: str, payload: str) -> str:
        digest = hmac.digest(self.keys[key_id], f"{key_id}.{payload}".encode(), hashlib.sha256)
        return _b64(digest[:20])
