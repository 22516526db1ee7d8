"""Operations endpoints, without auth: ``/healthz`` (alive), ``/readyz`` (fit to take traffic)
and ``/metrics`` (Prometheus).

``/readyz`` answers 503 while the database does not answer, before the campaigns have loaded,
and once the daemon drains after SIGTERM, so load balancers stop routing to it; the body names
each check and whether it passed.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from scheduler import metrics
from scheduler.api.deps import ApiState, api_state, blocking

__all__ = ["DATABASE_CHECK_TIMEOUT_SECONDS", "router"]

DATABASE_CHECK_TIMEOUT_SECONDS = 5.0
"""A database slower than this to answer ``SELECT 1`` counts as not answering."""

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    """The process is alive."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """Whether the daemon is fit to take traffic, check by check."""

    status: Literal["ready", "not_ready"]
    checks: dict[str, bool] = Field(description="database, campaigns, not_draining: true when passed.")
    failed: list[str] = Field(description="The checks that did not pass.")


@router.get("/healthz", summary="Liveness")
async def healthz() -> Health:
    """200 while the process runs."""
    return Health()


async def _database_answers(state: ApiState) -> bool:
    try:
        return await asyncio.wait_for(blocking(state.engine.store.ping), DATABASE_CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return False


@router.get(
    "/readyz",
    summary="Readiness",
    response_model=Readiness,
    responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Readiness, "description": "A check failed."}},
)
async def readyz(state: Annotated[ApiState, Depends(api_state)]) -> JSONResponse:
    """200 when the database answers, the campaigns have loaded and the daemon is not draining."""
    checks = {
        "database": await _database_answers(state),
        "campaigns": state.engine.catalog.loaded_once,
        "not_draining": not state.draining,
    }
    failed = [name for name, passed in checks.items() if not passed]
    body = Readiness(status="not_ready" if failed else "ready", checks=checks, failed=failed)
    code = status.HTTP_503_SERVICE_UNAVAILABLE if failed else status.HTTP_200_OK
    return JSONResponse(body.model_dump(), status_code=code)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics_exposition() -> Response:
    """The metrics in the Prometheus text format."""
    # In a worker thread: a collector may read the database.
    content, content_type = await blocking(metrics.exposition)
    return Response(content=content, media_type=content_type)
