"""Running the policies: one real engine per policy, on a simulated clock, in parallel processes.

Each run builds a fresh engine on an in-memory SQLite database with memory adapters, loads the
same synthetic population and outside events, then ticks every simulated hour. After each tick
the messages the adapters received meet the population (``world.py``), and the reactions go back
to the engine as events timed in the future; the engine applies each once the clock reaches it.

Policies: ``fixed`` (the attention model and caps off: every step at its scheduled time, send
windows and quiet hours still apply), ``cap`` (fixed plus a frequency cap, over a small grid;
the best point has the most value-weighted conversions, ties broken by fewer unsubscribes and
complaints) and ``value`` (the attention model as configured). The holdout is an evaluation
device of a live deployment, so the simulation turns it off (``attention.holdout = 0``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from adapters import Message
from adapters.memory import MemoryAdapter
from scheduler.durations import parse_duration
from scheduler.engine import Engine, IngestReport
from scheduler.errors import TactError
from scheduler.simulation.metrics import (
    POLICIES,
    PolicyResult,
    SimulationResult,
    Spread,
    Tally,
    asset_by_tier,
    compare,
    decision_counts,
    learned_kappa,
    learned_unsubscribe,
    model_assets,
    summarize,
)
from scheduler.simulation.population import ValueTier, generate_population
from scheduler.simulation.world import TouchInfo, World, world_spec

__all__ = [
    "DEFAULT_CAP_GRID",
    "CapPoint",
    "PolicyResult",
    "PolicyRun",
    "SimulationOptions",
    "SimulationResult",
    "policy_runs",
    "run_policy",
    "run_simulation",
]

DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class CapPoint:
    """One frequency cap: marketing emails and SMS per 7 days, and the minimum gap between any two."""

    email: int
    min_gap: str
    sms: int

    @property
    def label(self) -> str:
        """A short name, e.g. ``cap 2/7d gap 20h``."""
        return f"cap {self.email}/7d gap {self.min_gap}"

    def caps(self) -> dict[str, Any]:
        """The ``[caps]`` settings of this point."""
        return {"enabled": True, "window": "7d", "min_gap": self.min_gap,
                "per_channel": {"email": self.email, "sms": self.sms}}  # fmt: skip


DEFAULT_CAP_GRID: tuple[CapPoint, ...] = tuple(
    CapPoint(email, gap, min(email, 2)) for email, gap in ((1, "20h"), (2, "20h"), (3, "48h"))
)


def _default_jobs() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


@dataclass
class SimulationOptions:
    """What to simulate. Every random draw derives from ``seed``."""

    recipients: int = 5000
    days: int = 90
    seed: int = 1
    start: datetime = DEFAULT_START
    campaigns_dir: Path | None = None
    config_path: Path | None = None
    world: str = "default"
    policies: Sequence[str] = POLICIES
    jobs: int = field(default_factory=_default_jobs)
    value_overrides: dict[str, Any] = field(default_factory=dict)
    cap_grid: Sequence[CapPoint] = DEFAULT_CAP_GRID
    database: Path | None = None  # keep the value policy's run here (holdout as configured)


@dataclass(frozen=True)
class PolicyRun:
    """One engine run: a policy, and for ``cap`` one grid point."""

    policy: str
    label: str
    caps: dict[str, Any]
    attention: dict[str, Any]
    cap: CapPoint | None = None


def policy_runs(options: SimulationOptions) -> list[PolicyRun]:
    """The runs the options ask for, heaviest first (so parallel workers finish together)."""
    unknown = [p for p in options.policies if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown policy {unknown[0]!r}; known: {', '.join(POLICIES)}")
    runs: list[PolicyRun] = []
    fixed_attention = {"enabled": False, "holdout": 0}
    if "fixed" in options.policies:
        runs.append(PolicyRun("fixed", "fixed", {"enabled": False}, fixed_attention))
    if "value" in options.policies:
        # A kept database is for `tact report`, which compares the model with its holdout.
        holdout = {} if options.database else {"holdout": 0}
        runs.append(PolicyRun("value", "value", {}, {"enabled": True, **holdout, **options.value_overrides}))
    if "cap" in options.policies:
        if not options.cap_grid:
            raise ValueError("the cap policy needs at least one cap grid point")
        for point in sorted(options.cap_grid, key=lambda p: (-p.email, p.min_gap)):
            runs.append(PolicyRun("cap", point.label, point.caps(), fixed_attention, point))
    return runs


def run_simulation(options: SimulationOptions, progress: Progress | None = None) -> SimulationResult:
    """Run every policy of ``options``; ``progress(description, fraction)`` hears how far it got.

    With ``jobs > 1`` the runs go to worker processes started with ``spawn``: a script calling
    this must guard its entry point with ``if __name__ == "__main__":``. Raises ``TactError`` for
    an unknown world or policy and for a broken configuration or campaigns directory.
    """
    try:
        spec = world_spec(options.world)
        runs = policy_runs(options)
    except ValueError as exc:
        raise TactError(str(exc)) from None
    began = time.perf_counter()
    check_setup(options)
    if options.jobs <= 1 or len(runs) == 1:
        results = []
        with _quiet_engine_logs():
            for number, run in enumerate(runs):
                report = _serial_reporter(progress, number, len(runs))
                results.append(run_policy(options, run, report))
    else:
        results = _run_parallel(options, runs, progress)
    results.sort(key=lambda r: _display_key(r.run))
    caps = [r for r in results if r.run.policy == "cap"]
    best = max(caps, key=_cap_score) if caps else None
    value = next((r for r in results if r.run.policy == "value"), None)
    comparison = compare(value, best, seed=options.seed) if value is not None and best is not None else None
    if progress is not None:
        progress("done", 1.0)
    return SimulationResult(options, spec, results, best, comparison, time.perf_counter() - began)


def check_setup(options: SimulationOptions) -> None:
    """Fail in the calling process, with the real error, on a broken config or campaigns directory."""
    with _quiet_engine_logs(logging.CRITICAL):  # the error is raised, and said once, by the caller
        engine = build_policy_engine(options.config_path, options.campaigns_dir, caps={}, attention={})
        try:
            report = engine.catalog.reload()
        finally:
            engine.close()
    if report.errors:
        raise report.errors[0]
    if not engine.catalog.campaigns:
        raise TactError(f"no campaigns to simulate in {engine.catalog.directory}")


def _display_key(run: PolicyRun) -> tuple[int, int, float]:
    gap = parse_duration(run.cap.min_gap).total_seconds() if run.cap else 0.0
    return POLICIES.index(run.policy), run.cap.email if run.cap else 0, gap


def _cap_score(result: PolicyResult) -> tuple[float, int]:
    losses = result.overall.unsubscribes + result.overall.complaints
    return result.overall.value_weighted_conversions, -losses


def _serial_reporter(progress: Progress | None, number: int, total: int) -> Progress | None:
    if progress is None:
        return None

    def report(label: str, fraction: float) -> None:
        progress(f"{label} ({number + 1}/{total})", (number + fraction) / total)

    return report


# -- parallel runs ---------------------------------------------------------------------------

_worker_queue: Any = None


def _worker_setup(progress_queue: Any) -> None:
    global _worker_queue
    from scheduler.config import LoggingSettings
    from scheduler.logs import configure_logging
    from scheduler.runtime import tune_gc

    _worker_queue = progress_queue
    configure_logging(LoggingSettings(level="warning"))
    tune_gc()
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="orphan-watch", daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A worker whose simulation was killed ends too, busy or idle (an idle pool worker would
    otherwise wait for work forever)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _run_in_worker(options: SimulationOptions, run: PolicyRun, index: int) -> PolicyResult:
    def report(label: str, fraction: float) -> None:
        _worker_queue.put((index, label, fraction))

    return run_policy(options, run, report)


def _run_parallel(
    options: SimulationOptions, runs: Sequence[PolicyRun], progress: Progress | None
) -> list[PolicyResult]:
    context = multiprocessing.get_context("spawn")  # no fork of a process that may run threads
    progress_queue = context.Queue()
    fractions = [0.0] * len(runs)
    workers = min(options.jobs, len(runs))
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_worker_setup, initargs=(progress_queue,)
    ) as pool:
        futures: list[Future[PolicyResult]] = [
            pool.submit(_run_in_worker, options, run, index) for index, run in enumerate(runs)
        ]
        pending: set[Future[PolicyResult]] = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                for future in finished:
                    fractions[futures.index(future)] = 1.0
                    future.result()  # a failed run stops the simulation here
                label = _drain(progress_queue, fractions)
                if progress is not None:
                    done = sum(1 for f in futures if f.done())
                    progress(f"{label} ({done}/{len(runs)} runs done)", sum(fractions) / len(runs))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        return [future.result() for future in futures]


def _drain(progress_queue: Any, fractions: list[float]) -> str:
    label = "starting"
    while True:
        try:
            index, label, fraction = progress_queue.get_nowait()
        except queue.Empty:
            return label
        fractions[index] = max(fractions[index], fraction)


@contextmanager
def _quiet_engine_logs(level: int = logging.WARNING) -> Iterator[None]:
    """Engine logs at ``level`` and above only, for the duration of an in-process run."""
    previous = structlog.get_config().get("wrapper_class")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))
    try:
        yield
    finally:
        structlog.configure(wrapper_class=previous)


# -- one run ---------------------------------------------------------------------------------


def run_policy(options: SimulationOptions, run: PolicyRun, report: Progress | None = None) -> PolicyResult:
    """Run one policy from a fresh engine and database; return its tallies and metrics."""
    began = time.perf_counter()
    spec = world_spec(options.world)
    start, hours = options.start.astimezone(UTC), options.days * 24
    kept = options.database if run.policy == "value" else None
    engine = build_policy_engine(
        options.config_path, options.campaigns_dir, caps=run.caps, attention=run.attention,
        database_url=f"sqlite:///{kept}" if kept else "sqlite://",
    )  # fmt: skip
    measure_at_end = _fit_at_end_only(engine, options.days)
    try:
        population = generate_population(
            options.recipients, options.seed, engine.catalog, start=start, days=options.days,
            declared_values=spec.declared_values,
        )  # fmt: skip
        world = World(population, spec, options.seed)
        tally = Tally(len(population.people), start, options.days)
        engine.clock = lambda: start
        _require_accepted("recipient", engine.upsert_recipients(population.recipient_records()))
        _require_accepted("event", engine.record_events(population.exogenous_events))
        touches: dict[tuple[str, str, str], TouchInfo] = {}
        asset_weeks: list[dict[ValueTier, Spread]] = []
        for hour in range(hours):
            now = start + timedelta(hours=hour)
            engine.clock = lambda now=now: now  # type: ignore[misc]
            engine.tick(at=now, collect=False)
            events: list[dict[str, Any]] = []
            for message in sent_since_last_tick(engine):
                key = (message.campaign_id, message.step_id, message.kind)
                touch = touches.get(key)
                if touch is None:
                    campaign = engine.catalog.get(message.campaign_id)
                    touch = touches[key] = TouchInfo.of(campaign, *key[:2], message.channel, message.kind)
                person = population.by_id[message.recipient_id]
                reaction = world.react(person, int(message.touchpoint_id), touch, now)
                tally.add(person.index, reaction, now)
                events.extend(e for e in reaction.events if e["at"] < tally.end)
            if events:
                engine.record_events(events)
            elapsed = hour + 1
            if elapsed % (7 * 24) == 0 or elapsed == hours:
                instant = start + timedelta(hours=elapsed)
                asset_weeks.append(
                    asset_by_tier(model_assets(engine, population.ids(), instant), population.value_tiers)
                )
            if report is not None and elapsed % 24 == 0:
                report(run.label, elapsed / hours)
        assets = model_assets(engine, population.ids(), tally.end)
        decisions = decision_counts(engine)
        if measure_at_end:
            engine.learn(tally.end)
        learned = learned_kappa(engine)
        risks = learned_unsubscribe(engine)
    finally:
        engine.close()
    trusts = [world.trust(person) for person in population.people]
    everyone = list(range(len(population.people)))
    return PolicyResult(
        run=run,
        overall=summarize(tally, everyone, assets, trusts),
        top20=summarize(tally, population.top20_indices(), assets, trusts),
        decisions=decisions,
        consent_violations=tally.violations,
        weekly=tally.weekly,
        asset_weeks=asset_weeks,
        value_per_recipient=tally.conversion_value,
        losses_per_recipient=[u + c for u, c in zip(tally.unsubscribes, tally.complaints, strict=True)],
        seconds=time.perf_counter() - began,
        learned_kappa=learned,
        learned_unsubscribe=risks,
    )


def _fit_at_end_only(engine: Engine, days: int) -> bool:
    """When learning only measures (no mode is ``"apply"``), a fit never changes a decision and
    the report shows only the last one: fit once, at the end of the run, instead of every
    simulated day (which costs a long value run about a tenth of its time). Return whether the
    caller must fit."""
    attention = engine.settings.attention
    modes = {attention.kappa_learning, attention.unsubscribe_learning}
    if not attention.enabled or "apply" in modes or modes == {"off"}:
        return False
    once = attention.model_copy(update={"learn_interval": timedelta(days=days + 1)})
    engine.settings = engine.settings.model_copy(update={"attention": once})
    return True


def build_policy_engine(
    config_path: Path | None,
    campaigns_dir: Path | None,
    *,
    caps: dict[str, Any],
    attention: dict[str, Any],
    database_url: str = "sqlite://",
) -> Engine:
    """A fresh engine on a database (in memory by default) with memory adapters and the run's
    overrides."""
    # No sweep of stored outcome windows: decisions and the asset snapshots settle them on read.
    overrides: dict[str, Any] = {"caps": caps, "attention": attention, "engine": {"resolve_interval": "3650d"}}
    if campaigns_dir is not None:
        overrides["campaigns_dir"] = str(campaigns_dir)
    engine = Engine.from_config(
        config_path, database_url=database_url, channels={"email": "memory", "sms": "memory"}, **overrides
    )
    # Nobody reads simulated messages and templates were checked at load: skipping the bodies
    # halves a run's time, and every decision is taken exactly as with real bodies.
    engine.render_bodies = False
    return engine


def sent_since_last_tick(engine: Engine) -> list[Message]:
    """The messages the memory adapters received since the last call (they are then cleared)."""
    messages: list[Message] = []
    for channel in engine.adapters:
        adapter = engine.adapter(channel)
        if isinstance(adapter, MemoryAdapter):
            messages.extend(adapter.sent)
            adapter.clear()
    return messages


def _require_accepted(kind: str, report: IngestReport) -> None:
    if report.rejected:
        index, reason, message = report.rejected[0]
        raise TactError(f"simulated {kind} {index} rejected ({reason}): {message}")
