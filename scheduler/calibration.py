"""Learning how steeply fatigue dulls attention (κ) from the audience's own answers. Pure code.

Every sent marketing touch is logged with the fatigue ``F`` it met and the model's ``p̂``; its
answer is known once its outcome window has closed (a click or reply counts 1, an open alone
``open_credit``, nothing 0, as in the engagement counts). Undo the fatigue factor of the κ in
force when the touch was decided, ``base = p̂·exp(κ_then·F)``, and κ is right when the answered
touches met, on average, the fatigue the model expects of answered touches:

    Σ y·F / Σ y  =  Σ w·F / Σ w,    w = base · exp(−κ·F)

A level error of ``p̂`` (every touch answered half as often as predicted, say) cancels out of both
ratios: only how answers fall off with fatigue moves κ. The right side falls as κ rises, so one
bisection finds the root. Sends are chosen where fatigue is low, so F varies little among them
and the estimate is noisy: it is shrunk toward the configured κ by its standard error (a normal
prior of spread ``prior_sd``), then held within the bounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

ROOT_STEPS = 60
LEARNED_KAPPA_KEY = "attention.learned_kappa"  # in ``meta``: the last fit per channel, as JSON


@dataclass(frozen=True, slots=True)
class AnsweredTouch:
    """One sent marketing touch whose outcome is known."""

    recipient: str
    fatigue: float  # F when it was decided
    predicted: float  # p̂ when it was decided
    kappa: float  # κ in force when it was decided
    engaged: float  # 1 for a click or reply, the open credit for an open alone, else 0


@dataclass(frozen=True, slots=True)
class KappaFit:
    """The κ learned for one channel and the evidence behind it."""

    kappa: float  # what the model uses: the configured κ scaled by the steepness, within bounds
    steepness: float  # how much more steeply than the reference audience fatigue bites here
    estimate: float  # the κ that fits the answers alone
    standard_error: float
    touches: int
    answered: float  # Σ y
    observed_fatigue: float  # mean F of answered touches

    def as_dict(self) -> dict[str, float | int]:
        """JSON-ready form, as kept in ``meta``."""
        return {
            "kappa": round(self.kappa, 4),
            "steepness": round(self.steepness, 4),
            "estimate": round(self.estimate, 4),
            "standard_error": round(self.standard_error, 4),
            "touches": self.touches,
            "answered": round(self.answered, 1),
            "observed_fatigue": round(self.observed_fatigue, 4),
        }


def fit_kappa(
    touches: Sequence[AnsweredTouch],
    *,
    configured: float,
    reference: float,
    prior_sd: float,
    low: float,
    high: float,
    min_touches: int,
    min_answered: float,
) -> KappaFit | None:
    """κ for one channel from its answered touches; None when there is too little evidence
    (too few touches or answers, or every touch met the same fatigue)."""
    usable = [t for t in touches if t.predicted > 0 and t.fatigue >= 0]
    answered = sum(t.engaged for t in usable)
    if len(usable) < min_touches or answered < min_answered:
        return None
    fatigues = [t.fatigue for t in usable]
    if max(fatigues) - min(fatigues) < 1e-9:
        return None
    # log(base): the fatigue factor of the κ of the time taken out of p̂.
    by_recipient: dict[str, list[AnsweredTouch]] = {}
    for t in usable:
        by_recipient.setdefault(t.recipient, []).append(t)
    # Only a recipient answering some touches and not others, at different fatigue, says how
    # fatigue matters: comparing recipients would mistake the more responsive, who are sent
    # more and so are more fatigued, for a sign that fatigue does not dull attention.
    groups = [
        _Group([t.fatigue for t in g], [t.engaged for t in g], [math.log(t.predicted) + t.kappa * t.fatigue for t in g])
        for g in by_recipient.values()
        if any(t.engaged for t in g) and max(t.fatigue for t in g) > min(t.fatigue for t in g)
    ]  # fmt: skip
    if sum(g.answered for g in groups) < min_answered:
        return None
    observed = sum(t.engaged * t.fatigue for t in usable) / answered
    estimate = _root(groups, reference, -1.0, max(high, reference) + 5.0)
    _, slope, noise = _evaluate(groups, estimate)
    error = math.sqrt(noise) / slope if slope > 0 and noise > 0 else math.inf
    if prior_sd <= 0 or math.isinf(error):
        shrunk = reference
    else:
        weight = (1 / error**2) / (1 / error**2 + 1 / prior_sd**2)
        shrunk = reference + weight * (estimate - reference)
    steepness = max(shrunk, 0.0) / reference if reference > 0 else 1.0
    return KappaFit(
        kappa=min(high, max(low, configured * steepness)),
        steepness=steepness,
        estimate=estimate,
        standard_error=error,
        touches=len(usable),
        answered=answered,
        observed_fatigue=observed,
    )


@dataclass(slots=True)
class _Group:
    """One recipient's touches: fatigue, answer and log(base) of each."""

    fatigues: list[float]
    engaged: list[float]
    log_bases: list[float]
    answered: float = 0.0

    def __post_init__(self) -> None:
        self.answered = sum(self.engaged)


def _evaluate(groups: Sequence[_Group], kappa: float) -> tuple[float, float, float]:
    """At ``kappa``: the score Σ y·(F − expected F) over recipients (it rises with κ and is zero
    at the estimate), its slope, and the sum of squared per-recipient scores (the noise of a
    score whose answers hang together within a recipient)."""
    score = slope = noise = 0.0
    for group in groups:
        exponents = [b - kappa * f for b, f in zip(group.log_bases, group.fatigues, strict=True)]
        top = max(exponents)  # scaled by the largest: only ratios of weights matter
        weights = [math.exp(x - top) for x in exponents]
        total = sum(weights)
        mean = sum(w * f for w, f in zip(weights, group.fatigues, strict=True)) / total
        variance = sum(w * (f - mean) ** 2 for w, f in zip(weights, group.fatigues, strict=True)) / total
        own = sum(y * (f - mean) for y, f in zip(group.engaged, group.fatigues, strict=True))
        score += own
        slope += group.answered * variance
        noise += own * own
    return score, slope, noise


def _root(groups: Sequence[_Group], start: float, lower: float, upper: float) -> float:
    """Where the score is zero, within [lower, upper]: Newton steps kept inside a shrinking
    bracket (a step that would leave it bisects instead)."""
    if _evaluate(groups, lower)[0] >= 0:
        return lower
    if _evaluate(groups, upper)[0] <= 0:
        return upper
    kappa = min(max(start, lower), upper)
    for _ in range(ROOT_STEPS):
        score, slope, _ = _evaluate(groups, kappa)
        if score < 0:
            lower = kappa
        else:
            upper = kappa
        candidate = kappa - score / slope if slope > 0 else (lower + upper) / 2
        if not lower < candidate < upper:
            candidate = (lower + upper) / 2
        if abs(candidate - kappa) < 1e-6:
            return candidate
        kappa = candidate
    return kappa
