"""NV(t): what one touch is worth to one recipient at a candidate time. Pure: no I/O, no clock.

The parts (docs/attention-model.md): the chance the recipient engages ``p̂``, the benefit ``B``
if they do, the chance the touch costs the relationship (an unsubscribe) ``p_u`` times what is
then lost ``L``, and the expected move of the attention asset ``E[ΔA]``. The recipient's value R
scales benefit and costs alike: it says how much is at stake, not whether a touch is worth it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from scheduler.attention import AttentionState, asset_step, engagement_rate, half, relevance
from scheduler.config import AttentionSettings


@dataclass(frozen=True, slots=True)
class Estimate:
    """The parts of NV for one touch at one instant."""

    engagement_p: float  # p̂: chance of a positive answer
    relevance: float  # ρ: strongest interest among the touch's topics
    benefit: float  # B = p̂ · value · (0.25 + 0.75ρ) · R
    unsubscribe_p: float  # p_u: chance the touch ends the relationship on its channel
    loss: float  # L: what an unsubscribe costs
    asset_change: float  # E[ΔA]: the expected move of the asset
    net_value: float  # NV = B − p_u·L + λ_A·R·E[ΔA]


@dataclass(frozen=True, slots=True)
class TouchTerms:
    """What the value estimate needs to know about a touch."""

    channel: str
    topics: Sequence[str]
    value: float  # the step's declared value
    remaining: float  # declared value of this step and those after it in the sequence
    recipient_value: float  # R


def estimate(state: AttentionState, terms: TouchTerms, at: datetime, params: AttentionSettings) -> Estimate:
    """NV(at) and its parts; ``state`` is already decayed to ``at`` (or a rested copy of it)."""
    rho = relevance(state, terms.topics, params)
    asset = state.asset
    fatigue = state.fatigue
    novelty = 1.0
    last = _last_topic_send(state, terms.topics)
    if last is not None and at > last:
        novelty = 1 - params.novelty_drop * half(at - last, params.novelty_half_life)
    elif last is not None:
        novelty = 1 - params.novelty_drop
    dulled = math.exp(-params.kappa_for(terms.channel) * fatigue)
    p_hat = min(1.0, engagement_rate(state, terms.channel, params) * dulled * novelty * (0.5 + asset))
    worth = max(terms.recipient_value, 0.0)
    benefit = p_hat * terms.value * (0.25 + 0.75 * rho) * worth
    p_unsub = unsubscribe_p(terms.channel, fatigue, asset, rho, params)
    loss = worth * params.unsubscribe_loss * (asset + terms.remaining)
    # E[ΔA]: the asset's move if the touch earns a typical positive answer, or is ignored.
    engaged = asset_step(asset, state.expectation, params.positive_outcome, params) - asset
    ignored = asset_step(asset, state.expectation, params.outcome_value.get("ignored", 0.0), params) - asset
    asset_change = p_hat * engaged + (1 - p_hat) * ignored
    net = benefit - p_unsub * loss + params.lambda_asset * worth * asset_change
    return Estimate(
        engagement_p=p_hat,
        relevance=rho,
        benefit=benefit,
        unsubscribe_p=p_unsub,
        loss=loss,
        asset_change=asset_change,
        net_value=net,
    )


def unsubscribe_p(channel: str, fatigue: float, asset: float, rho: float, params: AttentionSettings) -> float:
    """p_u: the chance a touch on ``channel`` ends the relationship, at fatigue F, asset A and
    relevance ρ."""
    weight = params.fatigue_weight.get(channel, 1.0)
    base = params.unsubscribe_base_for(channel)
    return min(
        params.unsubscribe_max,
        base * math.exp(params.kappa_u * (fatigue + weight)) * (1.5 - asset) * (1.2 - 0.4 * rho),
    )


def rested(state: AttentionState) -> AttentionState:
    """The recipient as if fully rested: no fatigue, no topic sent recently."""
    return replace(state, fatigue=0.0, topic_last_sent={})


def _last_topic_send(state: AttentionState, topics: Sequence[str]) -> datetime | None:
    moments = [state.topic_last_sent[t] for t in topics if t in state.topic_last_sent]
    return max(moments) if moments else None
