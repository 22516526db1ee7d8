"""``tact run``: ticks driven by APScheduler 3, campaign hot reload, the HTTP API, graceful SIGTERM.

Touchpoints live in our tables, never in APScheduler's job store: the scheduler holds two
in-memory interval jobs (tick, reload) and nothing else. The API (uvicorn) serves from the
same event loop; on SIGTERM ``/readyz`` turns false at once, the in-flight tick commits,
then the API stops.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from scheduler import metrics
from scheduler.engine import Engine
from scheduler.errors import DatabaseUnavailable, StoreError, TactError
from scheduler.runtime import tune_gc

if TYPE_CHECKING:
    import uvicorn

    from scheduler.api import ApiState

log = structlog.get_logger("tact.daemon")

RELOAD_INTERVAL_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 30.0
"""Longest pause between ticks while the database is unreachable."""


class Daemon:
    """Runs an engine until told to stop, then drains: no new claims, in-flight batch committed."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.api_state: ApiState | None = None
        """The API's view of the daemon; None while the API is off."""
        self.draining = False
        self._tick_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._failures = 0
        self._resume_at = 0.0
        # Statements sent straight through the driver raise its own errors, not SQLAlchemy's.
        self._database_errors: tuple[type[BaseException], ...] = (
            StoreError, sa.exc.DBAPIError, engine.store.engine.dialect.loaded_dbapi.Error,
        )  # fmt: skip

    async def tick(self) -> None:
        """One daemon tick (skipped while draining, when the previous one still runs, or while
        backing off after failures)."""
        loop = asyncio.get_running_loop()
        if self.draining or self._tick_lock.locked() or loop.time() < self._resume_at:
            return
        async with self._tick_lock:
            try:
                await self.engine.atick(
                    collect=False,
                    max_batches=self.engine.settings.engine.max_batches_per_tick,
                    should_stop=lambda: self.draining,
                )
            except self._database_errors as error:
                # The database is down or restarting: wait longer each time (pool_pre_ping
                # reconnects once it answers); /readyz says 503 meanwhile. Claimed rows keep
                # their leases and are claimed again when those run out.
                self._back_off("database_unavailable", error=str(error))
            except Exception:
                log.exception("tick_failed")
                self._back_off("tick_failed")
            else:
                if self._failures:
                    log.info("ticks_resumed", after_failures=self._failures)
                self._failures = 0

    def _back_off(self, event: str, **fields: str) -> None:
        self._failures += 1
        delay = min(BACKOFF_MAX_SECONDS, 0.5 * 2 ** min(self._failures, 16))
        self._resume_at = asyncio.get_running_loop().time() + delay
        log.warning(event, failures=self._failures, retry_in=delay, **fields)

    async def reload(self) -> None:
        """Reload campaigns when a file under the campaigns directory changed."""
        if self.draining or not self.engine.catalog.changed():
            return
        try:
            await asyncio.to_thread(self.engine.reload_campaigns)
        except Exception:
            log.exception("reload_failed")

    def request_stop(self, reason: str) -> None:
        """Begin draining (signal handlers call this)."""
        if not self.draining:
            log.info("draining", reason=reason)
        self.draining = True
        if self.api_state is not None:
            self.api_state.draining = True
        self._stop.set()

    async def serve(self) -> None:
        """Run until SIGTERM or SIGINT; return after the drain."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signal.Signals(signum).name)
        self.engine.offload_db = True
        interval = self.engine.settings.engine.tick_interval.total_seconds()
        scheduler = AsyncIOScheduler(event_loop=loop, timezone=UTC)
        scheduler.add_job(
            self.tick, "interval", seconds=interval, id="tick", max_instances=1,
            coalesce=True, next_run_time=datetime.now(UTC),
        )  # fmt: skip
        scheduler.add_job(
            self.reload, "interval", seconds=RELOAD_INTERVAL_SECONDS, id="reload",
            max_instances=1, coalesce=True,
        )  # fmt: skip
        api = self._start_api()
        scheduler.start()
        log.info(
            "daemon_started",
            database=self.engine.settings.database.url.split("@")[-1],
            campaigns=sorted(self.engine.catalog.campaigns),
            channels=self.engine.adapter_names,
            tick_interval=interval,
        )
        await self._stop.wait()
        await self._drain()  # before the scheduler's shutdown, which would cancel the running tick
        scheduler.shutdown(wait=False)
        if api is not None:
            server, serving = api
            server.should_exit = True
            await serving
        await self.engine.aclose()
        self.engine.store.close()
        log.info("daemon_stopped")

    async def _drain(self) -> None:
        """Wait for the in-flight tick to commit, up to ``engine.shutdown_grace``; past it, give
        the batch's leases up so other replicas take it over at once, and stop."""
        grace = self.engine.settings.engine.shutdown_grace.total_seconds()
        try:
            await asyncio.wait_for(self._tick_lock.acquire(), grace)
        except TimeoutError:
            self.engine.stopping = True
            released = await asyncio.to_thread(self.engine.store.release_leases, self.engine.owner)
            log.warning("drain_timeout", grace=grace, released=released)
        else:
            self._tick_lock.release()

    def _start_api(self) -> tuple[uvicorn.Server, asyncio.Task[None]] | None:
        settings = self.engine.settings.api
        if not settings.enabled:
            return None
        # FastAPI and uvicorn load only when the API is on: they add about half a second to
        # every start, which a replica restarted after a crash would otherwise wait for.
        import uvicorn

        from scheduler.api import ApiState, EmbeddedServer, create_app

        self.api_state = ApiState(self.engine, draining=self.draining)
        config = uvicorn.Config(
            create_app(self.engine, state=self.api_state), host=settings.host, port=settings.port,
            log_config=None, access_log=False, lifespan="off", server_header=False,
        )  # fmt: skip
        try:  # bound here, before any tick, so a taken port stops the start with a clear error
            listening = socket.create_server((settings.host, settings.port), reuse_port=False)
        except OSError as error:
            raise TactError(
                f"cannot serve the API on {settings.host}:{settings.port}: {error.strerror or error}; "
                "change [api] port, or set [api] enabled = false"
            ) from None
        engine = self.engine
        metrics.set_queue_probe(lambda: engine.store.queue_stats(engine.clock()))
        server = EmbeddedServer(config)
        serving = asyncio.create_task(server.serve(sockets=[listening]), name="tact-api")
        log.info("api_started", host=settings.host, port=settings.port)
        return server, serving


def wait_for_engine(build: Callable[[], Engine]) -> Engine:
    """Build the engine, waiting while the database does not answer (backing off 0.5 s
    doubling to 30 s, ``database_unavailable``): replicas started while PostgreSQL restarts
    wait for it rather than exit and be restarted in a loop. SIGTERM meanwhile exits 0."""
    failures = 0

    def stop(signum: int, frame: object) -> None:
        log.info("stopped_waiting_for_database", signal=signal.Signals(signum).name)
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            try:
                return build()
            except DatabaseUnavailable as error:
                failures += 1
                delay = min(BACKOFF_MAX_SECONDS, 0.5 * 2 ** min(failures - 1, 16))
                log.warning("database_unavailable", failures=failures, retry_in=delay, error=str(error))
                time.sleep(delay)
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_daemon(engine: Engine) -> None:
    """Run the daemon in this process until it is stopped."""
    tune_gc()
    asyncio.run(Daemon(engine).serve())
