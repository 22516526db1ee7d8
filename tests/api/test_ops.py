"""Operations endpoints over HTTP against a real uvicorn server: liveness, readiness (database,
campaigns, draining) and Prometheus metrics, none of which needs a token."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from scheduler import Engine
from scheduler.api import ApiState
from tests.api.conftest import LiveServer


def test_healthz_answers_ok(anonymous: httpx.Client) -> None:
    """/healthz answers 200 {"status": "ok"} without a token."""
    response = anonymous.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ready_when_every_check_passes(anonymous: httpx.Client) -> None:
    """/readyz answers 200 when the database answers, campaigns are loaded and nothing drains."""
    response = anonymous.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"database": True, "campaigns": True, "not_draining": True},
        "failed": [],
    }


def test_readyz_turns_503_while_draining(engine: Engine, serve: Callable[..., LiveServer]) -> None:
    """Once the daemon drains, /readyz answers 503 naming the failed check, while /healthz stays 200."""
    state = ApiState(engine)
    server = serve(engine, state)
    with httpx.Client(base_url=server.base_url) as http:
        assert http.get("/readyz").status_code == 200
        state.draining = True
        response = http.get("/readyz")
        assert response.status_code == 503
        assert response.json()["status"] == "not_ready"
        assert response.json()["failed"] == ["not_draining"]
        assert http.get("/healthz").status_code == 200


def test_readyz_turns_503_before_campaigns_load(
    make_engine: Callable[..., Engine], serve: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """With a campaigns directory that never loaded, /readyz answers 503 naming the campaigns check."""
    server = serve(make_engine(campaigns_dir=str(tmp_path / "missing")))
    with httpx.Client(base_url=server.base_url) as http:
        response = http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["campaigns"]
    assert response.json()["checks"]["database"] is True


def test_metrics_are_served_in_the_prometheus_format_without_a_token(anonymous: httpx.Client) -> None:
    """/metrics answers 200 in the Prometheus text format, with no token."""
    response = anonymous.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "version=" in response.headers["content-type"]


def test_openapi_documents_the_operations_endpoints(anonymous: httpx.Client) -> None:
    """/openapi.json lists /healthz, /readyz and /metrics, with the readiness 503 body."""
    paths = anonymous.get("/openapi.json").json()["paths"]
    assert {"/healthz", "/readyz", "/metrics"} <= set(paths)
    assert "503" in paths["/readyz"]["get"]["responses"]


def test_an_unreachable_database_makes_readyz_and_v1_answer_503(
    sqlite_url: str, campaigns_dir: Path, serve: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """When the database cannot be opened, /readyz names the database check and /v1 answers 503, not 500."""
    engine = Engine.from_config(
        None,
        database_url=sqlite_url,
        channels={"email": "memory", "sms": "memory"},
        campaigns_dir=str(campaigns_dir),
        api={"tokens": {"crm": "secret-token"}},
    )
    try:
        server = serve(engine)
        engine.store.engine.dispose()
        for leftover in tmp_path.glob("tact.db*"):
            leftover.unlink()
        (tmp_path / "tact.db").mkdir()  # a directory where the file was: SQLite cannot open it
        with httpx.Client(base_url=server.base_url) as http:
            ready = http.get("/readyz")
            ingest = http.post("/v1/recipients", json=[{"id": "r1"}], headers={"Authorization": "Bearer secret-token"})
        assert ready.status_code == 503
        assert ready.json()["failed"] == ["database"]
        assert ingest.status_code == 503
        assert ingest.headers["retry-after"] == "5"
    finally:
        engine.close()
