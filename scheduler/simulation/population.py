"""A synthetic audience with hidden traits, and the events it produces on its own.

Everything here is drawn once from the seed, before any policy runs, so every policy meets the
same people and the same outside events (sign-ups, orders, support requests). The traits are
the simulated truth the engine never sees: true value, activity tier, interests, preferred hour,
how many messages a person tolerates and how fast they recover. They are deliberately not the
attention model's own quantities (docs/attention-model.md describes those).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from scheduler.campaign import Campaign, matches

Tier = Literal["dormant", "casual", "engaged"]
ValueTier = Literal["top20", "next30", "rest"]
DeclaredValues = Literal["noisy", "unrelated"]

TIMEZONES: tuple[tuple[str, float], ...] = (
    ("America/New_York", 0.22),
    ("Europe/Paris", 0.16),
    ("America/Los_Angeles", 0.12),
    ("Europe/London", 0.12),
    ("America/Chicago", 0.10),
    ("Europe/Berlin", 0.09),
    ("Asia/Tokyo", 0.07),
    ("Australia/Sydney", 0.06),
    ("America/Sao_Paulo", 0.06),
)
PLANS: tuple[tuple[str, float], ...] = (("trial", 0.25), ("free", 0.35), ("pro", 0.30), ("team", 0.10))
TIERS: tuple[tuple[Tier, float], ...] = (("dormant", 0.30), ("casual", 0.45), ("engaged", 0.25))
PLAN_VALUE = {"trial": 1.0, "free": 0.5, "pro": 1.6, "team": 3.0}
# Beta(a, b) of a person's affinity for one topic, by activity tier.
INTEREST_SHAPE: dict[Tier, tuple[float, float]] = {"dormant": (1.0, 6.0), "casual": (2.0, 4.0), "engaged": (3.0, 2.5)}
BASE_AFFINITY = 0.25  # a topic the population was not generated with
FIRST_NAMES = ("Ana", "Ben", "Chloé", "Dev", "Emma", "Farid", "Grace", "Hugo", "Inès", "Jon", "Kenji", "Lea", "Mia")
COMPANIES = ("Northwind", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Acme", "Stark", "Wayne", "Tyrell")


@dataclass(slots=True)
class Person:
    """One simulated recipient: what the engine is told, and the hidden truth it is not."""

    id: str
    index: int
    email: str
    phone: str | None
    sms_opted_in: bool
    timezone: str
    plan: str
    first_name: str
    company: str
    true_value: float
    declared_value: float
    tier: Tier
    interests: dict[str, float]
    preferred_hour: int
    tolerance: float  # marketing messages per recovery window before pressure exceeds 1
    recovery_hours: float  # how far back the person still feels earlier messages
    trust_prior: float  # share of good experiences the person starts out assuming
    support_per_week: float
    support_spells: list[tuple[datetime, datetime]] = field(default_factory=list)

    def interest_in(self, topics: Sequence[str]) -> float:
        """Mean affinity for the touch's topics (unknown topics count at the base affinity)."""
        if not topics:
            return BASE_AFFINITY
        return sum(self.interests.get(topic, BASE_AFFINITY) for topic in topics) / len(topics)

    def support_open(self, at: datetime) -> bool:
        """Whether a support request of this person is open at ``at``."""
        return any(opened <= at < resolved for opened, resolved in self.support_spells)

    def record(self) -> dict[str, Any]:
        """The recipient record the engine receives."""
        record: dict[str, Any] = {
            "id": self.id,
            "email": self.email,
            "timezone": self.timezone,
            "value": round(self.declared_value, 4),
            "plan": self.plan,
            "first_name": self.first_name,
            "company": self.company,
            "consent": {"email": "opted_in"},
        }
        if self.phone is not None:
            record["phone"] = self.phone
            record["consent"]["sms"] = "opted_in" if self.sms_opted_in else "unknown"
        return record


@dataclass
class Population:
    """The audience, its value tiers, and the outside events it produces during the run."""

    people: list[Person]
    start: datetime
    end: datetime
    exogenous_events: list[dict[str, Any]]
    value_tiers: list[ValueTier]

    def __post_init__(self) -> None:
        self.by_id = {person.id: person for person in self.people}

    def recipient_records(self) -> list[dict[str, Any]]:
        """Recipient records for ``Engine.upsert_recipients``."""
        return [person.record() for person in self.people]

    def ids(self) -> list[str]:
        """Recipient ids, in index order."""
        return [person.id for person in self.people]

    def top20_indices(self) -> list[int]:
        """Indices of the 20 % with the highest true value."""
        return [i for i, tier in enumerate(self.value_tiers) if tier == "top20"]


def _pick(rng: random.Random, table: Sequence[tuple[Any, float]]) -> Any:
    values = [value for value, _ in table]
    weights = [weight for _, weight in table]
    return rng.choices(values, weights)[0]


def campaign_topics(campaigns: Iterable[Campaign]) -> list[str]:
    """Every topic the campaigns' steps name, sorted (so generation does not depend on load order)."""
    return sorted({topic for campaign in campaigns for step in campaign.steps for topic in step.topics})


def _person(index: int, rng: random.Random, topics: Sequence[str], declared: DeclaredValues) -> Person:
    plan = _pick(rng, PLANS)
    tier: Tier = _pick(rng, TIERS)
    true_value = PLAN_VALUE[plan] * rng.lognormvariate(-0.35, 0.9)
    # "unrelated": a CRM score that tracks nothing real
    noisy = declared == "noisy"
    declared_value = true_value * rng.lognormvariate(0.0, 0.35) if noisy else rng.lognormvariate(0.0, 0.9)
    shape_a, shape_b = INTEREST_SHAPE[tier]
    has_phone = rng.random() < 0.6
    return Person(
        id=f"u{index + 1:05d}",
        index=index,
        email=f"u{index + 1:05d}@sim.example.com",
        phone=f"+1415{2_000_000 + index:07d}" if has_phone else None,
        sms_opted_in=has_phone and rng.random() < 0.5,
        timezone=_pick(rng, TIMEZONES),
        plan=plan,
        first_name=rng.choice(FIRST_NAMES),
        company=rng.choice(COMPANIES),
        true_value=true_value,
        declared_value=declared_value,
        tier=tier,
        interests={topic: rng.betavariate(shape_a, shape_b) for topic in topics},
        preferred_hour=int(rng.gauss(13, 3.5)) % 24,
        tolerance=max(0.6, rng.lognormvariate(math.log(1.6), 0.45)),
        recovery_hours=min(240.0, max(24.0, rng.lognormvariate(math.log(96), 0.4))),
        trust_prior=rng.betavariate(6, 3),
        support_per_week=rng.choice((0.005, 0.01, 0.02, 0.03, 0.08)),
    )


def value_tiers(people: Sequence[Person]) -> list[ValueTier]:
    """Each person's tier by true value: the top 20 %, the next 30 %, the rest."""
    ranked = sorted(range(len(people)), key=lambda i: (-people[i].true_value, i))
    tiers: list[ValueTier] = ["rest"] * len(people)
    top, next_ = round(len(people) * 0.2), round(len(people) * 0.5)
    for rank, index in enumerate(ranked):
        tiers[index] = "top20" if rank < top else "next30" if rank < next_ else "rest"
    return tiers


def generate_population(
    count: int,
    seed: int,
    campaigns: Iterable[Campaign],
    *,
    start: datetime,
    days: int,
    declared_values: DeclaredValues = "noisy",
) -> Population:
    """Draw ``count`` people and the outside events of a ``days``-long run from ``seed``."""
    campaign_list = sorted(campaigns, key=lambda c: c.id)
    topics = campaign_topics(campaign_list)
    traits = random.Random(f"{seed}:traits")
    people = [_person(index, traits, topics, declared_values) for index in range(count)]
    end = start + timedelta(days=days)
    events = _Events(random.Random(f"{seed}:events"), start, end)
    for person in people:
        events.support(person)
    for campaign in campaign_list:
        if campaign.trigger.event is not None:
            events.triggers(campaign, people, campaign_list)
    events.rows.sort(key=lambda row: (row["at"], row["id"]))
    return Population(people, start, end, events.rows, value_tiers(people))


class _Events:
    """Builds the outside events: support spells, inbound messages and campaign triggers."""

    def __init__(self, rng: random.Random, start: datetime, end: datetime) -> None:
        self.rng = rng
        self.start = start
        self.end = end
        self.rows: list[dict[str, Any]] = []
        self.fired: set[tuple[str, str]] = set()

    def add(self, person: Person, kind: str, at: datetime, **extra: Any) -> None:
        if at >= self.end:
            return
        self.rows.append({"id": f"x{len(self.rows) + 1}", "recipient_id": person.id, "type": kind, "at": at, **extra})

    def _uniform(self, share: float) -> datetime:
        return self.start + (self.end - self.start) * self.rng.random() * share

    def support(self, person: Person) -> None:
        """Support spells (opened, resolved hours to days later) and stray inbound messages."""
        weeks = (self.end - self.start) / timedelta(weeks=1)
        at = self.start
        while True:
            at += timedelta(weeks=self.rng.expovariate(person.support_per_week))
            if at >= self.end:
                break
            resolved = at + timedelta(hours=min(240.0, self.rng.lognormvariate(math.log(20), 1.0)))
            person.support_spells.append((at, resolved))
            self.add(person, "support_opened", at)
            self.add(person, "support_resolved", resolved)
            at = resolved
        for _ in range(self._poisson(0.01 * weeks)):
            self.add(person, "inbound_message", self._uniform(1.0), channel="email")

    def _poisson(self, mean: float) -> int:
        count, total = 0, self.rng.expovariate(1.0)
        while total < mean:
            count += 1
            total += self.rng.expovariate(1.0)
        return count

    def triggers(self, campaign: Campaign, people: Sequence[Person], campaigns: Sequence[Campaign]) -> None:
        """The campaign's trigger event for the people who plausibly fire it."""
        event = campaign.trigger.event
        assert event is not None
        follow_ups = {name for c in campaigns for step in c.steps for name in step.skip_if}
        for person in people:
            if (event, person.id) in self.fired:
                continue  # two campaigns on one trigger share its occurrences
            self.fired.add((event, person.id))
            if event == "signed_up":
                if person.plan == "trial" and self.rng.random() < 0.95:
                    at = self._uniform(2 / 3)
                    self.add(person, event, at)
                    if "activated" in follow_ups and self.rng.random() < _ACTIVATION[person.tier]:
                        self.add(person, "activated", at + timedelta(hours=self.rng.uniform(18, 60)))
            elif event == "order_placed":
                rate = {"pro": 0.08, "team": 0.15}.get(person.plan, 0.01)  # orders per week
                weeks = (self.end - self.start) / timedelta(weeks=1)
                for _ in range(self._poisson(rate * weeks)):
                    self.add(person, event, self._uniform(1.0))
            elif matches(campaign.audience, person.record()) and self.rng.random() < 0.3:
                self.add(person, event, self._uniform(2 / 3))


_ACTIVATION: dict[Tier, float] = {"dormant": 0.1, "casual": 0.4, "engaged": 0.7}
