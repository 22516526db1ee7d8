"""The FastAPI application: ``/v1`` (bearer-token API), provider webhooks, unsubscribe pages,
and the operations endpoints. The OpenAPI document is served at ``/openapi.json``."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import TYPE_CHECKING

import sqlalchemy as sa
import structlog
from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from scheduler.api import ops, unsubscribe, v1, webhooks
from scheduler.api.deps import ApiState
from scheduler.errors import StoreError

if TYPE_CHECKING:
    from scheduler.engine import Engine

__all__ = ["create_app"]

log = structlog.get_logger("tact.api")

DESCRIPTION = """\
Tact decides, before every drip-campaign touch, whether it is worth the recipient's attention.

`/v1/*` needs `Authorization: Bearer <token>` with a token configured under `[api.tokens]`.
Provider webhooks are verified by each provider's own signature; unsubscribe links carry a
signed token; `/healthz`, `/readyz` and `/metrics` are open.
"""


def _version() -> str:
    try:
        return package_version("tact")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A database that cannot be reached or is locked is a 503 (worth a retry), not a 500."""
    log.error("api_database_error", path=request.url.path, error=str(getattr(exc, "orig", None) or exc))
    return JSONResponse(
        {"detail": "the database is unavailable; try again later"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "5"},
    )


def create_app(engine: Engine, *, state: ApiState | None = None) -> FastAPI:
    """The API serving ``engine``; ``state`` is the daemon's (a fresh one when not given)."""
    app = FastAPI(title="Tact", version=_version(), description=DESCRIPTION)
    app.state.tact = state if state is not None else ApiState(engine)
    app.include_router(v1.router)
    app.include_router(webhooks.router)
    app.include_router(unsubscribe.router)
    app.include_router(ops.router)
    app.add_exception_handler(StoreError, _database_unavailable)
    app.add_exception_handler(sa.exc.OperationalError, _database_unavailable)
    return app
