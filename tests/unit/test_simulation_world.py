"""The simulated audience: common random numbers, hidden dynamics and outside events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.campaign import Campaign
from scheduler.simulation.population import Person, Population, generate_population
from scheduler.simulation.world import (
    WORLDS,
    TouchInfo,
    World,
    attend_probability,
    draws_for,
    hazards,
    trust_level,
    world_spec,
)

START = datetime(2026, 1, 5, tzinfo=UTC)
NEWS = TouchInfo("news", "issue", "email", "marketing", ("tips",), None)


def _campaigns() -> list[Campaign]:
    def campaign(data: dict[str, object]) -> Campaign:
        return Campaign.model_validate({"name": data["id"], **data})

    return [
        campaign({"id": "onboarding", "kind": "marketing", "trigger": {"event": "signed_up"},
                  "steps": [{"id": "hi", "channel": "email", "text": "Hi", "topics": ["getting-started"],
                             "skip_if": ["activated"]}]}),
        campaign({"id": "orders", "kind": "transactional", "trigger": {"event": "order_placed"},
                  "steps": [{"id": "receipt", "channel": "email", "text": "Thanks"}]}),
        campaign({"id": "news", "kind": "marketing",
                  "trigger": {"segment": {"plan": {"eq": "pro"}}, "schedule": "0 9 * * MON"},
                  "steps": [{"id": "issue", "channel": "email", "text": "News", "topics": ["tips"]}]}),
    ]  # fmt: skip


def _population(count: int = 300, seed: int = 7) -> Population:
    return generate_population(count, seed, _campaigns(), start=START, days=28)


def _person(population: Population, tier: str) -> Person:
    return next(p for p in population.people if p.tier == tier and not p.support_spells)


def test_draws_are_identical_for_the_same_key() -> None:
    """The same (seed, recipient, campaign, step, n) gives the same uniforms every time."""
    assert draws_for(1, "u00001", "news", "issue", 3) == draws_for(1, "u00001", "news", "issue", 3)


def test_draws_differ_between_keys() -> None:
    """Another receipt, recipient or seed draws other uniforms."""
    base = draws_for(1, "u00001", "news", "issue", 1)
    assert base != draws_for(1, "u00001", "news", "issue", 2)
    assert base != draws_for(1, "u00002", "news", "issue", 1)
    assert base != draws_for(2, "u00001", "news", "issue", 1)
    assert all(0.0 <= value < 1.0 for value in (base.attend, base.click, base.unsubscribe, base.complaint))


def test_hazards_grow_with_load() -> None:
    """More pressure raises both the unsubscribe and the complaint probability."""
    spec = world_spec("default")
    light = hazards(tier="casual", pressure=0.5, trust=0.6, interest=0.3, support_open=False, spec=spec)
    heavy = hazards(tier="casual", pressure=2.5, trust=0.6, interest=0.3, support_open=False, spec=spec)
    assert heavy[0] > 2 * light[0]
    assert heavy[1] > 2 * light[1]


def test_hazards_shrink_with_trust() -> None:
    """A trusting person is less likely to unsubscribe or complain."""
    spec = world_spec("default")
    wary = hazards(tier="casual", pressure=1.0, trust=0.2, interest=0.3, support_open=False, spec=spec)
    trusting = hazards(tier="casual", pressure=1.0, trust=0.9, interest=0.3, support_open=False, spec=spec)
    assert trusting[0] < wary[0]
    assert trusting[1] < wary[1]


def test_open_support_request_raises_complaints() -> None:
    """Marketing during an open support request is far more likely to draw a complaint."""
    spec = world_spec("default")
    calm = hazards(tier="casual", pressure=1.0, trust=0.6, interest=0.3, support_open=False, spec=spec)
    waiting = hazards(tier="casual", pressure=1.0, trust=0.6, interest=0.3, support_open=True, spec=spec)
    assert waiting[1] > 5 * calm[1]


def test_no_trust_world_ignores_trust() -> None:
    """In the no-trust world, trust changes neither hazards nor responsiveness."""
    spec = world_spec("no-trust")
    low = dict(tier="casual", pressure=1.0, interest=0.3, support_open=False, spec=spec)
    assert hazards(trust=0.1, **low) == hazards(trust=0.9, **low)  # type: ignore[arg-type]
    attend = dict(tier="casual", pressure=1.0, hour_factor=1.0, channel="email", spec=spec)
    assert attend_probability(trust=0.1, **attend) == attend_probability(trust=0.9, **attend)  # type: ignore[arg-type]


def test_trust_follows_the_share_of_good_experiences() -> None:
    """Good experiences raise trust above the prior, bad ones lower it, within [0, 1]."""
    assert trust_level(0.6, [True] * 10) > 0.6 > trust_level(0.6, [False] * 10) >= 0.0
    assert trust_level(0.6, []) == pytest.approx(0.6)


def test_dormant_people_engage_far_less() -> None:
    """Over many identical touches, dormant people engage a fraction as often as engaged ones."""
    population = _population(2000)
    world = World(population, WORLDS["default"], seed=3)
    engaged = {"dormant": 0, "engaged": 0}
    for tier in engaged:
        people = [p for p in population.people if p.tier == tier][:300]
        for number, person in enumerate(people):
            at = START + timedelta(days=number % 20, hours=14)
            engaged[tier] += world.react(person, number, NEWS, at).engaged
    assert engaged["engaged"] > 4 * max(1, engaged["dormant"])


def test_flooding_lowers_hidden_trust() -> None:
    """Many messages in quick succession leave a person trusting less than a well-spaced few."""
    population = _population()
    person = _person(population, "casual")
    spaced, flooded = World(population, WORLDS["default"], 5), World(population, WORLDS["default"], 5)
    for number in range(8):
        spaced.react(person, number, NEWS, START + timedelta(days=7 * number, hours=14))
        flooded.react(person, number, NEWS, START + timedelta(hours=3 * number))
    assert flooded.trust(person) < spaced.trust(person)


def test_unsubscribed_channel_is_ignored_and_counted_as_a_violation() -> None:
    """After unsubscribing, further marketing on that channel draws nothing and is a violation."""
    population = _population()
    person = _person(population, "engaged")
    world = World(population, WORLDS["default"], 1)
    world._memory[person.index].quit_at["email"] = START
    reaction = world.react(person, 1, NEWS, START + timedelta(hours=1))
    assert reaction.violation
    assert reaction.events == []


def test_reaction_events_name_the_touch_and_come_later() -> None:
    """Every reaction event answers the touchpoint and is timed after the delivery."""
    population = _population(500)
    world = World(population, WORLDS["default"], 2)
    events = []
    for number, person in enumerate(population.people):
        events.extend(world.react(person, number, NEWS, START + timedelta(hours=14)).events)
    assert events
    assert all(event["at"] > START + timedelta(hours=14) for event in events)
    assert all(isinstance(event["touchpoint_id"], int) for event in events)
    assert len({event["id"] for event in events}) == len(events)


def test_exogenous_events_are_identical_across_generations() -> None:
    """Two populations from one seed produce the same people and the same outside events."""
    first, second = _population(seed=11), _population(seed=11)
    assert first.exogenous_events == second.exogenous_events
    assert [p.record() for p in first.people] == [p.record() for p in second.people]
    assert first.exogenous_events != _population(seed=12).exogenous_events


def test_exogenous_events_follow_the_campaign_triggers() -> None:
    """Sign-ups come from trial people, orders mostly from paying plans, all within the run."""
    population = _population(1000)
    plans = {p.id: p.plan for p in population.people}
    kinds = {event["type"] for event in population.exogenous_events}
    assert {"signed_up", "order_placed", "support_opened", "support_resolved"} <= kinds
    signups = [e for e in population.exogenous_events if e["type"] == "signed_up"]
    assert signups and all(plans[e["recipient_id"]] == "trial" for e in signups)
    assert all(START <= e["at"] < population.end for e in population.exogenous_events)


def test_wrong_values_world_breaks_the_declared_value() -> None:
    """Declared values track true value in the default world but not in wrong-values."""

    def rank_agreement(population: Population) -> float:
        people = population.people
        by_true = sorted(people, key=lambda p: p.true_value)[len(people) // 2 :]
        by_declared = sorted(people, key=lambda p: p.declared_value)[len(people) // 2 :]
        return len({p.id for p in by_true} & {p.id for p in by_declared}) / len(by_true)

    noisy = generate_population(2000, 4, _campaigns(), start=START, days=28)
    unrelated = generate_population(2000, 4, _campaigns(), start=START, days=28, declared_values="unrelated")
    assert rank_agreement(noisy) > 0.75
    assert rank_agreement(unrelated) < 0.6


def test_unknown_world_is_rejected() -> None:
    """Asking for a world that does not exist names the known ones."""
    with pytest.raises(ValueError, match="default"):
        world_spec("nope")


def test_interests_cover_the_campaign_topics() -> None:
    """Every person has an affinity for each topic the campaigns' steps name."""
    population = _population(50)
    assert set(population.people[0].interests) == {"getting-started", "tips"}
