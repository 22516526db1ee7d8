"""Learning κ from answered touches: the estimate recovers the fatigue slope that produced the
answers, ignores how responsive each recipient is, and stays put without evidence; the
unsubscribe rate is observed over expected, steadied by a prior."""

from __future__ import annotations

import math
import random

import pytest

from scheduler.calibration import AnsweredTouch, KappaFit, fit_kappa, fit_unsubscribe_ratio

LIMITS = {"low": 0.05, "high": 5.0, "min_touches": 100, "min_answered": 20.0}


def audience(
    true_kappa: float,
    *,
    logged_kappa: float | list[float] = 0.5,
    recipients: int = 600,
    touches: int = 10,
    seed: int = 1,
    responsive_get_more: bool = False,
) -> list[AnsweredTouch]:
    """Answers drawn from p = base · exp(−true_kappa · F), logged with the p̂ of another κ.

    Each recipient has a base rate of their own. With ``responsive_get_more`` the responsive
    ones meet more fatigue (as when they are sent more), which fools a pooled estimate.
    """
    rng = random.Random(seed)
    found: list[AnsweredTouch] = []
    for index in range(recipients):
        base = rng.uniform(0.05, 0.6)
        # A model that does not know the recipient predicts a common rate: the level is wrong.
        guess = 0.2
        for number in range(touches):
            fatigue = rng.uniform(0.0, 3.0)
            if responsive_get_more:
                fatigue = base * 5 + rng.uniform(0.0, 1.0)
            kappa = logged_kappa if isinstance(logged_kappa, float) else logged_kappa[number % len(logged_kappa)]
            engaged = 1.0 if rng.random() < base * math.exp(-true_kappa * fatigue) else 0.0
            found.append(AnsweredTouch(f"r{index}", fatigue, guess * math.exp(-kappa * fatigue), kappa, engaged))
    return found


def fit(touches: list[AnsweredTouch], **overrides: float) -> KappaFit:
    options = {"configured": 0.5, "reference": 1.0, "prior_sd": 100.0, **LIMITS, **overrides}
    result = fit_kappa(touches, **options)  # type: ignore[arg-type]
    assert result is not None
    return result


@pytest.mark.parametrize("true_kappa", [0.3, 1.0, 1.8])
def test_estimate_recovers_the_slope_that_made_the_answers(true_kappa: float) -> None:
    """Answers falling off with fatigue at κ give an estimate of κ within three standard errors."""
    result = fit(audience(true_kappa))
    assert abs(result.estimate - true_kappa) < 3 * result.standard_error
    assert result.standard_error < 0.25


def test_responsive_recipients_meeting_more_fatigue_do_not_bias_the_estimate() -> None:
    """Comparing touches within each recipient: the more responsive being more fatigued does
    not read as fatigue mattering less."""
    touches = audience(1.0, responsive_get_more=True, recipients=1500)
    result = fit(touches)
    assert abs(result.estimate - 1.0) < 3 * result.standard_error
    pooled = sum(t.engaged * t.fatigue for t in touches) / sum(t.engaged for t in touches)
    predicted = sum(t.predicted * t.fatigue for t in touches) / sum(t.predicted for t in touches)
    assert pooled > predicted  # a pooled comparison would have said fatigue helps


def test_touches_logged_under_changing_kappa_give_the_same_estimate() -> None:
    """The κ in force when each touch was decided is taken out of its p̂ before fitting."""
    steady = fit(audience(1.2, logged_kappa=0.5))
    changing = fit(audience(1.2, logged_kappa=[0.3, 0.5, 0.9, 1.4]))
    assert changing.estimate == pytest.approx(steady.estimate, abs=1e-6)


def test_used_kappa_scales_the_configured_one_by_the_steepness() -> None:
    """An audience twice as sensitive as the reference doubles the configured κ."""
    result = fit(audience(2.0, recipients=1500), configured=0.5, reference=1.0)
    assert result.steepness == pytest.approx(result.estimate / 1.0)
    assert result.kappa == pytest.approx(0.5 * result.steepness)
    assert 0.8 < result.kappa < 1.2


def test_no_prior_spread_keeps_the_configured_kappa() -> None:
    """With ``prior_sd = 0`` the answers cannot move κ."""
    result = fit(audience(2.0), prior_sd=0.0)
    assert result.kappa == 0.5
    assert result.steepness == 1.0


def test_weak_evidence_is_shrunk_toward_the_reference() -> None:
    """Fewer answers pull the learned steepness closer to 1 than many do."""
    strong = fit(audience(2.0, recipients=1500), prior_sd=0.2)
    weak = fit(audience(2.0, recipients=60), prior_sd=0.2)
    assert weak.standard_error > strong.standard_error
    assert abs(weak.steepness - 1) < abs(weak.estimate - 1)
    assert strong.steepness > weak.steepness > 1


def test_bounds_hold_the_used_kappa() -> None:
    """However steep the answers say fatigue is, κ stays within the bounds."""
    result = fit(audience(3.0), high=0.9)
    assert result.estimate > 2
    assert result.kappa == 0.9


def test_too_little_evidence_learns_nothing() -> None:
    """Too few touches or answers, or one fatigue for all, leave κ alone."""
    few = audience(1.0, recipients=5)
    assert fit_kappa(few, configured=0.5, reference=1.0, prior_sd=1.0, **LIMITS) is None  # type: ignore[arg-type]
    silent = [AnsweredTouch(t.recipient, t.fatigue, t.predicted, t.kappa, 0.0) for t in audience(1.0)]
    assert fit_kappa(silent, configured=0.5, reference=1.0, prior_sd=1.0, **LIMITS) is None  # type: ignore[arg-type]
    flat = [AnsweredTouch(t.recipient, 1.0, t.predicted, t.kappa, t.engaged) for t in audience(1.0)]
    assert fit_kappa(flat, configured=0.5, reference=1.0, prior_sd=1.0, **LIMITS) is None  # type: ignore[arg-type]


def test_unsubscribe_ratio_is_observed_over_expected_with_the_prior_pseudo_count() -> None:
    """The ratio counts the prior as that many expected events at ratio 1 on both sides."""
    expected = [0.01] * 4000  # 40 expected
    observed = [1.0] * 10 + [0.0] * 3990  # 10 seen
    fit = fit_unsubscribe_ratio(expected, observed, prior_count=20.0, low=0.1, high=10.0, min_touches=1000)
    assert fit is not None
    assert fit.ratio == pytest.approx(30 / 60)
    assert (fit.observed, fit.expected, fit.touches) == (10.0, pytest.approx(40.0), 4000)
    bare = fit_unsubscribe_ratio(expected, observed, prior_count=0.0, low=0.1, high=10.0, min_touches=1000)
    assert bare is not None and bare.ratio == pytest.approx(0.25)


def test_unsubscribe_ratio_is_held_within_its_bounds_and_needs_enough_sends() -> None:
    """No unsubscribe at all cannot take the base rate below the lower bound; too few sends, or
    misaligned inputs, give no fit."""
    expected = [0.05] * 2000
    silent = fit_unsubscribe_ratio(expected, [0.0] * 2000, prior_count=0.0, low=0.1, high=10.0, min_touches=1000)
    assert silent is not None and silent.ratio == 0.1
    loud = fit_unsubscribe_ratio(expected, [1.0] * 2000, prior_count=0.0, low=0.1, high=10.0, min_touches=1000)
    assert loud is not None and loud.ratio == 10.0
    scarce = fit_unsubscribe_ratio(expected[:999], [0.0] * 999, prior_count=20.0, low=0.1, high=10.0, min_touches=1000)
    assert scarce is None
    with pytest.raises(ValueError, match="aligned"):
        fit_unsubscribe_ratio(expected, [0.0], prior_count=20.0, low=0.1, high=10.0, min_touches=1)
