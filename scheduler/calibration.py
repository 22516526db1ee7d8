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

import numpy as np
import numpy.typing as npt

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
    groups = _Groups.of(usable)
    if groups is None or groups.answered.sum() < min_answered:
        return None
    observed = sum(t.engaged * t.fatigue for t in usable) / answered
    estimate = _root(groups, reference, -1.0, max(high, reference) + 5.0)
    _, slope, noise = groups.evaluate(estimate)
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


@dataclass(frozen=True, slots=True)
class _Groups:
    """The touches of the recipients who say something about fatigue, as arrays sorted by
    recipient: each one's touches are the slice ``starts[i]:starts[i + 1]``."""

    fatigue: npt.NDArray[np.float64]
    engaged: npt.NDArray[np.float64]
    log_base: npt.NDArray[np.float64]  # log p̂ with the fatigue factor of its time taken out
    member: npt.NDArray[np.intp]  # which group each touch belongs to
    starts: npt.NDArray[np.intp]
    answered: npt.NDArray[np.float64]  # per group: Σ y

    @classmethod
    def of(cls, touches: Sequence[AnsweredTouch]) -> _Groups | None:
        """Only a recipient answering some touches and not others, at different fatigue, says
        how fatigue matters: comparing recipients would mistake the more responsive, who are
        sent more and so are more fatigued, for a sign that fatigue does not dull attention."""
        by_recipient: dict[str, list[AnsweredTouch]] = {}
        for t in touches:
            by_recipient.setdefault(t.recipient, []).append(t)
        kept = [
            g for g in by_recipient.values()
            if any(t.engaged for t in g) and max(t.fatigue for t in g) > min(t.fatigue for t in g)
        ]  # fmt: skip
        if not kept:
            return None
        flat = [t for g in kept for t in g]
        fatigue = np.fromiter((t.fatigue for t in flat), np.float64, len(flat))
        engaged = np.fromiter((t.engaged for t in flat), np.float64, len(flat))
        predicted = np.fromiter((t.predicted for t in flat), np.float64, len(flat))
        kappa = np.fromiter((t.kappa for t in flat), np.float64, len(flat))
        sizes = np.fromiter((len(g) for g in kept), np.intp, len(kept))
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.intp)
        member = np.repeat(np.arange(len(kept), dtype=np.intp), sizes)
        answered = np.add.reduceat(engaged, starts)
        return cls(fatigue, engaged, np.log(predicted) + kappa * fatigue, member, starts, answered)

    def evaluate(self, kappa: float) -> tuple[float, float, float]:
        """At ``kappa``: the score Σ y·(F − expected F) over recipients (it rises with κ and is
        zero at the estimate), its slope, and the sum of squared per-recipient scores (the noise
        of a score whose answers hang together within a recipient)."""
        exponents = self.log_base - kappa * self.fatigue
        top = np.maximum.reduceat(exponents, self.starts)  # only ratios of weights matter
        weights = np.exp(exponents - top[self.member])
        total = np.add.reduceat(weights, self.starts)
        mean = np.add.reduceat(weights * self.fatigue, self.starts) / total
        apart = self.fatigue - mean[self.member]
        variance = np.add.reduceat(weights * apart * apart, self.starts) / total
        own = np.add.reduceat(self.engaged * apart, self.starts)
        return float(own.sum()), float((self.answered * variance).sum()), float((own * own).sum())


def _root(groups: _Groups, start: float, lower: float, upper: float) -> float:
    """Where the score is zero, within [lower, upper]: Newton steps kept inside a shrinking
    bracket (a step that would leave it bisects instead)."""
    if groups.evaluate(lower)[0] >= 0:
        return lower
    if groups.evaluate(upper)[0] <= 0:
        return upper
    kappa = min(max(start, lower), upper)
    for _ in range(ROOT_STEPS):
        score, slope, _ = groups.evaluate(kappa)
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


# -- the unsubscribe rate -----------------------------------------------------------------------

LEARNED_UNSUBSCRIBE_KEY = "attention.learned_unsubscribe"  # in ``meta``: the last fit per channel


@dataclass(frozen=True, slots=True)
class RiskFit:
    """How often one channel's sends really end a relationship, against the model's p_u.

    ``ratio`` scales the configured ``unsubscribe_base``: the observed count of unsubscribes
    and complaints over the count the configured model expected (Σ p_u), each side given
    ``prior_count`` expected events at ratio 1, so a few events cannot swing it."""

    ratio: float
    observed: float
    expected: float
    touches: int

    def as_dict(self) -> dict[str, float | int]:
        """JSON-ready form, as kept in ``meta``."""
        return {
            "ratio": round(self.ratio, 4),
            "observed": round(self.observed, 1),
            "expected": round(self.expected, 2),
            "touches": self.touches,
        }


def fit_unsubscribe_ratio(
    expected: Sequence[float],
    observed: Sequence[float],
    *,
    prior_count: float,
    low: float,
    high: float,
    min_touches: int,
) -> RiskFit | None:
    """The ratio for one channel from its sends: ``expected`` holds each send's p_u under the
    configured settings, ``observed`` 1 where it drew an unsubscribe or complaint, else 0.
    None when there are too few sends or nothing was expected."""
    if len(expected) != len(observed):
        raise ValueError("expected and observed must be aligned")
    total_expected = float(sum(expected))
    if len(expected) < min_touches or total_expected + prior_count <= 0:
        return None
    total_observed = float(sum(observed))
    ratio = (total_observed + prior_count) / (total_expected + prior_count)
    return RiskFit(
        ratio=min(high, max(low, ratio)),
        observed=total_observed,
        expected=total_expected,
        touches=len(expected),
    )
