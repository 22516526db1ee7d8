"""What a policy run achieved: per-recipient tallies, summaries by value tier, weekly series and
paired bootstrap comparisons.

Tallies are kept per recipient so that the comparison between two policies can be paired: the
same person met the same luck under both (common random numbers), so resampling recipients
gives a confidence interval for the difference that is much tighter than for either policy.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import quantiles
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from scheduler.attention import decayed
from scheduler.simulation.population import ValueTier
from scheduler.simulation.world import Reaction, WorldSpec

if TYPE_CHECKING:
    from scheduler.engine import Engine
    from scheduler.simulation.runner import PolicyRun, SimulationOptions

POLICIES = ("fixed", "cap", "value")
VALUE_TIERS: tuple[ValueTier, ...] = ("top20", "next30", "rest")


@dataclass
class Tally:
    """Counters of one policy run, per recipient (by index) and per week."""

    recipients: int
    start: datetime
    days: int
    marketing_sends: list[int] = field(init=False)
    transactional_sends: list[int] = field(init=False)
    engaged: list[int] = field(init=False)
    conversions: list[int] = field(init=False)
    conversion_value: list[float] = field(init=False)
    unsubscribes: list[int] = field(init=False)
    complaints: list[int] = field(init=False)
    violations: int = 0
    weekly: dict[str, list[int]] = field(init=False)

    def __post_init__(self) -> None:
        n, weeks = self.recipients, self.weeks
        self.marketing_sends, self.transactional_sends = [0] * n, [0] * n
        self.engaged, self.conversions, self.conversion_value = [0] * n, [0] * n, [0.0] * n
        self.unsubscribes, self.complaints = [0] * n, [0] * n
        self.weekly = {name: [0] * weeks for name in ("sends", "engagement", "conversions", "unsubscribes")}

    @property
    def end(self) -> datetime:
        """When the run stops: reactions timed later are not counted."""
        return self.start + timedelta(days=self.days)

    @property
    def weeks(self) -> int:
        """Weeks the series cover (the last one may be partial)."""
        return max(1, -(-self.days // 7))

    def week_of(self, at: datetime) -> int:
        """The index of the week ``at`` falls in."""
        return min(self.weeks - 1, max(0, (at - self.start) // timedelta(weeks=1)))

    def counted(self, at: datetime | None) -> bool:
        """Whether a reaction at ``at`` happened within the run."""
        return at is not None and at < self.end

    def add(self, index: int, reaction: Reaction, sent_at: datetime) -> None:
        """Count one received message of recipient ``index`` and what it led to."""
        week = self.week_of(sent_at)
        if reaction.marketing:
            self.marketing_sends[index] += 1
            self.weekly["sends"][week] += 1
        else:
            self.transactional_sends[index] += 1
        if reaction.violation:
            self.violations += 1
        if reaction.engaged:
            self.engaged[index] += 1
            self.weekly["engagement"][week] += 1
        if reaction.conversion_at is not None and self.counted(reaction.conversion_at):
            self.conversions[index] += 1
            self.conversion_value[index] += reaction.conversion_value
            self.weekly["conversions"][self.week_of(reaction.conversion_at)] += 1
        if reaction.unsubscribe_at is not None and self.counted(reaction.unsubscribe_at):
            self.unsubscribes[index] += 1
            self.weekly["unsubscribes"][self.week_of(reaction.unsubscribe_at)] += 1
        if self.counted(reaction.complaint_at):
            self.complaints[index] += 1


@dataclass(frozen=True)
class Metrics:
    """The headline figures of one policy for one group of recipients."""

    recipients: int
    sends: int
    transactional_sends: int
    sends_per_recipient_week: float
    engagement: int
    engagement_per_send: float
    conversions: int
    value_weighted_conversions: float
    unsubscribes: int
    complaints: int
    unsubscribes_per_1000: float
    complaints_per_1000: float
    mean_final_asset: float
    mean_final_trust: float


def summarize(tally: Tally, indices: Sequence[int], assets: Sequence[float], trusts: Sequence[float]) -> Metrics:
    """Metrics over the recipients at ``indices`` (``assets`` and ``trusts`` are per recipient)."""
    count = len(indices)
    sends = sum(tally.marketing_sends[i] for i in indices)
    engagement = sum(tally.engaged[i] for i in indices)
    unsubscribes = sum(tally.unsubscribes[i] for i in indices)
    complaints = sum(tally.complaints[i] for i in indices)
    recipient_weeks = count * tally.days / 7
    per_1000 = 1000 / count if count else 0.0
    return Metrics(
        recipients=count,
        sends=sends,
        transactional_sends=sum(tally.transactional_sends[i] for i in indices),
        sends_per_recipient_week=sends / recipient_weeks if recipient_weeks else 0.0,
        engagement=engagement,
        engagement_per_send=engagement / sends if sends else 0.0,
        conversions=sum(tally.conversions[i] for i in indices),
        value_weighted_conversions=sum(tally.conversion_value[i] for i in indices),
        unsubscribes=unsubscribes,
        complaints=complaints,
        unsubscribes_per_1000=unsubscribes * per_1000,
        complaints_per_1000=complaints * per_1000,
        mean_final_asset=_mean([assets[i] for i in indices]),
        mean_final_trust=_mean([trusts[i] for i in indices]),
    )


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


@dataclass(frozen=True)
class Spread:
    """Mean and quartiles of a distribution."""

    mean: float
    q1: float
    median: float
    q3: float


def spread(values: Sequence[float]) -> Spread:
    """Mean and quartiles (all equal for fewer than two values)."""
    if not values:
        return Spread(0.0, 0.0, 0.0, 0.0)
    if len(values) < 2:
        return Spread(values[0], values[0], values[0], values[0])
    q1, median, q3 = quantiles(values, n=4, method="inclusive")
    return Spread(_mean(values), q1, median, q3)


def asset_by_tier(assets: Sequence[float], tiers: Sequence[ValueTier]) -> dict[ValueTier, Spread]:
    """The model's asset distribution within each value tier."""
    return {tier: spread([a for a, t in zip(assets, tiers, strict=True) if t == tier]) for tier in VALUE_TIERS}


@dataclass(frozen=True)
class Interval:
    """A difference (treatment − baseline, summed over recipients) with a bootstrap interval."""

    difference: float
    low: float
    high: float
    baseline: float
    treatment: float

    def as_dict(self) -> dict[str, float]:
        """The interval as JSON-ready numbers."""
        return {
            "difference": self.difference,
            "low": self.low,
            "high": self.high,
            "baseline": self.baseline,
            "treatment": self.treatment,
        }


def paired_bootstrap(
    treatment: Sequence[float], baseline: Sequence[float], *, rounds: int = 1000, seed: int = 0, scale: float = 1.0
) -> Interval:
    """95 % percentile interval of Σ(treatment − baseline) × ``scale``, resampling recipients."""
    differences = [t - b for t, b in zip(treatment, baseline, strict=True)]
    count = len(differences)
    total = sum(differences) * scale
    if count == 0:
        return Interval(0.0, 0.0, 0.0, 0.0, 0.0)
    totals = _resampled_sums(differences, rounds, seed)
    totals.sort()
    low = totals[int(0.025 * (rounds - 1))] * scale
    high = totals[int(0.975 * (rounds - 1))] * scale
    return Interval(total, low, high, sum(baseline) * scale, sum(treatment) * scale)


def _resampled_sums(values: Sequence[float], rounds: int, seed: int) -> list[float]:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with matplotlib
        rng = random.Random(seed)
        return [sum(rng.choices(values, k=len(values))) for _ in range(rounds)]
    generator = np.random.default_rng(seed)
    array = np.asarray(values, dtype=float)
    sums: list[float] = []
    for _ in range(rounds):
        sums.append(float(array[generator.integers(0, len(array), len(array))].sum()))
    return sums


@dataclass(frozen=True)
class Comparison:
    """The value policy against the best cap point, paired over recipients."""

    baseline: str
    treatment: str
    value_weighted_conversions: Interval
    unsubscribes_and_complaints_per_1000: Interval
    rounds: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "baseline": self.baseline,
            "treatment": self.treatment,
            "rounds": self.rounds,
            "value_weighted_conversions": self.value_weighted_conversions.as_dict(),
            "unsubscribes_and_complaints_per_1000": self.unsubscribes_and_complaints_per_1000.as_dict(),
        }


@dataclass
class PolicyResult:
    """What one run achieved, overall and for the top 20 % by true value."""

    run: PolicyRun
    overall: Metrics
    top20: Metrics
    decisions: dict[str, int]  # "decision:reason" → send_log rows
    consent_violations: int
    weekly: dict[str, list[int]]
    asset_weeks: list[dict[ValueTier, Spread]]
    value_per_recipient: list[float]
    losses_per_recipient: list[int]  # unsubscribes + complaints
    seconds: float
    learned_kappa: dict[str, dict[str, Any]] = field(default_factory=dict)  # per channel, at the end
    learned_unsubscribe: dict[str, dict[str, Any]] = field(default_factory=dict)  # per channel, at the end


@dataclass
class SimulationResult:
    """Every run, the best cap point, and the paired comparison of value against it."""

    options: SimulationOptions
    world: WorldSpec
    runs: list[PolicyResult]
    best_cap: PolicyResult | None
    comparison: Comparison | None
    seconds: float

    @property
    def cap_grid(self) -> list[PolicyResult]:
        """The cap runs, in grid order."""
        return [r for r in self.runs if r.run.policy == "cap"]

    def policies(self) -> dict[str, PolicyResult]:
        """One result per policy; ``cap`` is the best grid point."""
        found = {r.run.policy: r for r in self.runs if r.run.policy != "cap"}
        if self.best_cap is not None:
            found["cap"] = self.best_cap
        return {name: found[name] for name in POLICIES if name in found}


def model_assets(engine: Engine, recipient_ids: Sequence[str], at: datetime) -> list[float]:
    """Each recipient's attention asset as the model holds it at ``at`` (its start value if the
    model never touched them), as the engine's store holds it."""
    params = engine.settings.attention
    with engine.store.engine.connect() as connection:
        states = engine.store.attention_states(connection, recipient_ids)
    return [decayed(states[i], at, params).asset if i in states else params.asset_start for i in recipient_ids]


def decision_counts(engine: Engine) -> dict[str, int]:
    """The engine's send_log rows counted by ``decision:reason``."""
    query = sa.text("SELECT decision, reason, COUNT(*) FROM send_log GROUP BY decision, reason")
    with engine.store.engine.connect() as connection:
        rows = connection.execute(query).all()
    return {f"{decision}:{reason}": int(count) for decision, reason, count in sorted(rows)}


def learned_kappa(engine: Engine) -> dict[str, dict[str, Any]]:
    """The κ the engine learned per channel by the end of the run, with its evidence (empty when
    it learned nothing: the model off, learning off, or too few answered sends)."""
    fits = engine.learned_fits()
    return {channel: {k: v for k, v in fit.items() if k != "history"} for channel, fit in sorted(fits.items())}


def learned_unsubscribe(engine: Engine) -> dict[str, dict[str, Any]]:
    """The unsubscribe-rate ratio the engine learned per channel by the end of the run (empty
    when it learned nothing)."""
    fits = engine.learned_unsubscribe()
    return {channel: {k: v for k, v in fit.items() if k != "at"} for channel, fit in sorted(fits.items())}


def compare(treatment: PolicyResult, baseline: PolicyResult, *, seed: int, rounds: int = 1000) -> Comparison:
    """Treatment against baseline, paired per recipient: value-weighted conversions (totals) and
    unsubscribes plus complaints (per 1,000 recipients)."""
    count = len(treatment.value_per_recipient)
    return Comparison(
        baseline=baseline.run.label,
        treatment=treatment.run.label,
        value_weighted_conversions=paired_bootstrap(
            treatment.value_per_recipient, baseline.value_per_recipient, rounds=rounds, seed=seed
        ),
        unsubscribes_and_complaints_per_1000=paired_bootstrap(
            [float(x) for x in treatment.losses_per_recipient],
            [float(x) for x in baseline.losses_per_recipient],
            rounds=rounds,
            seed=seed + 1,
            scale=1000 / count if count else 0.0,
        ),
        rounds=rounds,
    )
