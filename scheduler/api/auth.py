"""Bearer-token auth for ``/v1/*``.

Tokens are configured by name under ``[api.tokens]`` (``crm = "a-long-random-token"``). A
request names its token in ``Authorization: Bearer <token>``; the token is compared with every
configured one in constant time, and the matching token's *name* identifies the caller in logs.
With no tokens configured, every ``/v1`` call is refused: the API is never open by default.
"""

from __future__ import annotations

import hmac
from typing import Annotated

import structlog
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from scheduler.api.deps import engine as engine_of

__all__ = ["Caller", "require_token"]

log = structlog.get_logger("tact.api")

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token configured under [api.tokens] in Tact's configuration.",
)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
NO_TOKENS_MESSAGE = (
    "the API has no tokens configured: add one under [api.tokens] in the configuration "
    "(name = token), or set TACT_API__TOKENS__<NAME>"
)


def _refuse(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers=_CHALLENGE)


def matching_token_name(given: str, tokens: dict[str, bytes]) -> str | None:
    """The name of the configured token equal to ``given``, or None.

    Every configured token is compared, whatever matched before, so the time taken does not
    depend on which token (if any) matched.
    """
    presented = given.encode()
    found: str | None = None
    for name, secret in tokens.items():
        if hmac.compare_digest(presented, secret) and found is None:
            found = name
    return found


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """Authenticate a ``/v1`` request; return the name of the token it presented.

    Refuses with 401 and ``WWW-Authenticate: Bearer`` when the header is missing or the token
    unknown, and when no tokens are configured at all.
    """
    configured = engine_of(request).settings.api.tokens
    if not configured:
        log.warning("api_auth_refused", path=request.url.path, problem="no_tokens_configured")
        raise _refuse(NO_TOKENS_MESSAGE)
    if credentials is None or not credentials.credentials:
        log.info("api_auth_refused", path=request.url.path, problem="missing")
        raise _refuse("missing bearer token: send Authorization: Bearer <token>")
    tokens = {name: secret.get_secret_value().encode() for name, secret in configured.items()}
    name = matching_token_name(credentials.credentials, tokens)
    if name is None:
        log.warning("api_auth_refused", path=request.url.path, problem="unknown_token")
        raise _refuse("invalid bearer token")
    return name


Caller = Annotated[str, Depends(require_token)]
"""A route parameter holding the name of the token that authenticated the request."""
