"""How simulated people react to the messages they receive.

The hidden dynamics are written in their own terms, not the attention model's:

- **load**: the weighted count of messages a person received within their own recovery window,
  divided by their tolerance, is the *pressure*; attention falls off it along a logistic curve;
- **trust**: the share of good experiences among a person's last ten messages, smoothed by a
  personal prior (relevant, well-spaced messages are good; irrelevant ones, floods and anything
  arriving during an open support request are bad);
- **hazards**: the chance that a marketing message draws an unsubscribe or a complaint is a
  logistic function of pressure, trust, interest, activity tier and open support requests.

Every reaction draws its uniforms from a stream keyed by (seed, recipient, campaign, step, n-th
receipt of that step), so one touch meets the same luck under every policy (common random
numbers). Named worlds (``WORLDS``) vary the dynamics to check that conclusions are robust.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from scheduler.campaign import Campaign
from scheduler.simulation.population import DeclaredValues, Person, Population, Tier

MEMORY = 10  # experiences that make up trust
PRIOR_WEIGHT = 4.0  # how many experiences the personal prior counts for
CHANNEL_LOAD = {"email": 1.0, "sms": 1.5}
TRANSACTIONAL_LOAD = 0.3
RELEVANT_FLOOR = 0.25  # chance a touch of no interest still feels relevant
WELL_SPACED = 1.2  # pressure up to which a message does not feel like one too many
ATTEND_BASE: dict[Tier, float] = {"dormant": 0.03, "casual": 0.22, "engaged": 0.55}
OPEN_DELAY_HOURS: dict[Tier, float] = {"dormant": 20.0, "casual": 8.0, "engaged": 3.0}


@dataclass(frozen=True)
class WorldSpec:
    """One variant of the hidden dynamics."""

    name: str
    description: str
    tolerance_scale: float = 1.0  # >1: people put up with more messages
    load_sensitivity: float = 1.0  # how steeply hazards climb with pressure
    trust_weight: float = 1.0  # 0: trust changes nothing
    declared_values: DeclaredValues = "noisy"


WORLDS: dict[str, WorldSpec] = {
    spec.name: spec
    for spec in (
        WorldSpec("default", "the reference audience"),
        WorldSpec("light-fatigue", "people tolerate half again the volume", tolerance_scale=1.5, load_sensitivity=0.8),
        WorldSpec(
            "heavy-fatigue", "people tolerate two thirds of the volume", tolerance_scale=0.67, load_sensitivity=1.2
        ),
        WorldSpec("wrong-values", "declared values are unrelated to true value", declared_values="unrelated"),
        WorldSpec("no-trust", "trust has no effect on responses or hazards", trust_weight=0.0),
    )
}


def world_spec(name: str) -> WorldSpec:
    """The named world; ``ValueError`` names the known ones."""
    try:
        return WORLDS[name]
    except KeyError:
        raise ValueError(f"unknown world {name!r}; known: {', '.join(WORLDS)}") from None


@dataclass(frozen=True, slots=True)
class Draws:
    """The uniforms one touch's reactions use, in [0, 1)."""

    attend: float
    attend_delay: float
    click: float
    click_delay: float
    reply: float
    convert: float
    convert_delay: float
    unsubscribe: float
    complaint: float
    quit_delay: float
    experience: float


def draws_for(seed: int, recipient_id: str, campaign_id: str, step_id: str, nth: int) -> Draws:
    """The uniforms for the ``nth`` receipt of a step by a recipient (identical in every policy)."""
    key = f"{seed}\x1f{recipient_id}\x1f{campaign_id}\x1f{step_id}\x1f{nth}".encode()
    digest = hashlib.blake2b(key, digest_size=48).digest()
    values = [int.from_bytes(digest[i : i + 4], "little") / 2**32 for i in range(0, 44, 4)]
    return Draws(*values)


@dataclass(frozen=True, slots=True)
class TouchInfo:
    """What the world knows about the touch a message carries."""

    campaign_id: str
    step_id: str
    channel: str
    kind: str
    topics: tuple[str, ...]
    goal: str | None

    @classmethod
    def of(cls, campaign: Campaign | None, campaign_id: str, step_id: str, channel: str, kind: str) -> TouchInfo:
        """The touch of a message, from its campaign (which may have been removed since)."""
        step = campaign.step(step_id) if campaign is not None else None
        return cls(
            campaign_id=campaign_id,
            step_id=step_id,
            channel=channel,
            kind=kind,
            topics=tuple(step.topics) if step is not None else (),
            goal=campaign.exit.goal if campaign is not None else None,
        )


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def attention_under_load(pressure: float) -> float:
    """Share of normal responsiveness left at a given pressure (1: at tolerance)."""
    return 1.0 - _logistic(3.0 * (pressure - 1.4)) * 0.9


def hour_affinity(local_hour: int, preferred_hour: int) -> float:
    """Responsiveness by local hour: 1 at the preferred hour, 0.55 at the far side of the clock."""
    distance = abs(local_hour - preferred_hour) % 24
    distance = min(distance, 24 - distance)
    return 0.55 + 0.45 * math.exp(-((distance / 3.5) ** 2))


def trust_level(prior: float, experiences: Sequence[bool]) -> float:
    """Share of good experiences among the recent ones, with the prior counting as a few."""
    good = sum(experiences)
    return (prior * PRIOR_WEIGHT + good) / (PRIOR_WEIGHT + len(experiences))


def hazards(
    *,
    tier: Tier,
    pressure: float,
    trust: float,
    interest: float,
    support_open: bool,
    spec: WorldSpec,
) -> tuple[float, float]:
    """(unsubscribe, complaint) probabilities for one marketing message."""
    trust_term = spec.trust_weight * 3.0 * (trust - 0.6)
    load_term = spec.load_sensitivity * 1.2 * max(0.0, pressure - 0.8)
    unsubscribe_logit = -6.5 + load_term - trust_term + 1.5 * (0.4 - interest) + (0.8 if support_open else 0.0)
    complaint_logit = (
        -7.8 + load_term - trust_term + 2.0 * (0.4 - interest)
        + (1.2 if tier == "dormant" else 0.0) + (2.5 if support_open else 0.0)
    )  # fmt: skip
    return 0.2 * _logistic(unsubscribe_logit), 0.05 * _logistic(complaint_logit)


def attend_probability(
    *, tier: Tier, pressure: float, trust: float, hour_factor: float, channel: str, spec: WorldSpec
) -> float:
    """Chance a person opens an email (or reads an SMS with intent)."""
    trust_factor = 1.0 + spec.trust_weight * 1.2 * (trust - 0.6)
    base = ATTEND_BASE[tier] * (1.6 if channel == "sms" else 1.0)
    return min(0.95, max(0.0, base * hour_factor * attention_under_load(pressure) * trust_factor))


@dataclass
class Reaction:
    """What one received message led to: events for the engine, and tallies for the metrics."""

    events: list[dict[str, Any]] = field(default_factory=list)
    marketing: bool = True
    violation: bool = False
    engaged: bool = False
    conversion_at: datetime | None = None
    conversion_value: float = 0.0
    unsubscribe_at: datetime | None = None
    complaint_at: datetime | None = None


@dataclass(slots=True)
class _Memory:
    """A person's hidden, changing state."""

    loads: deque[tuple[datetime, float]] = field(default_factory=deque)
    experiences: deque[bool] = field(default_factory=lambda: deque(maxlen=MEMORY))
    quit_at: dict[str, datetime] = field(default_factory=dict)  # channel → unsubscribed at
    complained_at: datetime | None = None
    receipts: dict[tuple[str, str], int] = field(default_factory=dict)
    goals_reached: set[str] = field(default_factory=set)
    conversions: int = 0


class World:
    """The population's reactions under one world spec; one instance per policy run."""

    def __init__(self, population: Population, spec: WorldSpec, seed: int) -> None:
        self.population = population
        self.spec = spec
        self.seed = seed
        self._memory = [_Memory() for _ in population.people]
        self._zones: dict[str, ZoneInfo] = {}

    def trust(self, person: Person) -> float:
        """The person's current hidden trust."""
        return trust_level(person.trust_prior, self._memory[person.index].experiences)

    def pressure(self, person: Person, at: datetime) -> float:
        """Load within the person's recovery window, relative to their tolerance."""
        loads = self._memory[person.index].loads
        horizon = at - timedelta(hours=person.recovery_hours)
        while loads and loads[0][0] <= horizon:
            loads.popleft()
        return sum(weight for _, weight in loads) / (person.tolerance * self.spec.tolerance_scale)

    def _local_hour(self, person: Person, at: datetime) -> int:
        zone = self._zones.get(person.timezone)
        if zone is None:
            zone = self._zones[person.timezone] = ZoneInfo(person.timezone)
        return at.astimezone(zone).hour

    def react(self, person: Person, touchpoint_id: int, touch: TouchInfo, at: datetime) -> Reaction:
        """The person's reaction to a message delivered at ``at``."""
        memory = self._memory[person.index]
        marketing = touch.kind == "marketing"
        channel = touch.channel
        key = (touch.campaign_id, touch.step_id)
        nth = memory.receipts[key] = memory.receipts.get(key, 0) + 1
        draws = draws_for(self.seed, person.id, touch.campaign_id, touch.step_id, nth)
        quit_at = memory.quit_at.get(channel)
        walked_away = _earliest(quit_at, memory.complained_at)
        left = walked_away is not None and walked_away <= at
        no_sms_consent = channel == "sms" and not person.sms_opted_in
        if marketing and (left or no_sms_consent):
            return Reaction(marketing=True, violation=True)
        reaction = Reaction(marketing=marketing)
        memory.loads.append((at, CHANNEL_LOAD.get(channel, 1.0) if marketing else TRANSACTIONAL_LOAD))
        pressure = self.pressure(person, at)
        trust = self.trust(person)
        interest = person.interest_in(touch.topics)
        support_open = person.support_open(at)
        hour_factor = hour_affinity(self._local_hour(person, at), person.preferred_hour)
        emit = _Emitter(reaction, person.id, touchpoint_id, channel, cutoff=walked_away)

        attend = attend_probability(
            tier=person.tier, pressure=pressure, trust=trust, hour_factor=hour_factor, channel=channel, spec=self.spec
        )
        if not marketing:
            attend = max(attend, 0.6)
        attended = draws.attend < attend
        seen_at = at + timedelta(hours=-math.log(1.0 - draws.attend_delay) * OPEN_DELAY_HOURS[person.tier])
        seen_at = min(seen_at, at + timedelta(hours=60 if channel == "email" else 20))
        if attended and channel == "email":
            emit("opened", seen_at)
        if attended and marketing:
            self._respond(person, memory, touch, draws, interest, pressure, seen_at, emit)
        if marketing:
            unsubscribe, complaint = hazards(
                tier=person.tier, pressure=pressure, trust=trust, interest=interest,
                support_open=support_open, spec=self.spec,
            )  # fmt: skip
            quit_time = (seen_at if attended else at) + timedelta(minutes=5 + 600 * draws.quit_delay)
            if channel == "email" and draws.complaint < complaint:
                emit("complained", quit_time)
                reaction.complaint_at = memory.complained_at = quit_time
            elif draws.unsubscribe < unsubscribe:
                emit("unsubscribed", quit_time)
                reaction.unsubscribe_at = memory.quit_at[channel] = quit_time
            good = reaction.engaged or (draws.experience < RELEVANT_FLOOR + interest and pressure <= WELL_SPACED)
            memory.experiences.append(good and not support_open)
            if support_open:
                memory.experiences.append(False)
        return reaction

    def _respond(
        self,
        person: Person,
        memory: _Memory,
        touch: TouchInfo,
        draws: Draws,
        interest: float,
        pressure: float,
        seen_at: datetime,
        emit: _Emitter,
    ) -> None:
        """Clicks, replies and conversions of a marketing message the person paid attention to."""
        reaction = emit.reaction
        if draws.reply < (0.04 if touch.channel == "sms" else 0.01) * (0.5 + interest):
            emit("replied", seen_at + timedelta(minutes=2 + 60 * draws.click_delay))
            reaction.engaged = True
        if draws.click >= (0.08 + 0.55 * interest) * attention_under_load(pressure):
            return
        clicked_at = seen_at + timedelta(minutes=1 + 30 * draws.click_delay)
        emit("clicked", clicked_at)
        reaction.engaged = True
        goal = touch.goal or "converted"
        if goal in memory.goals_reached and touch.goal is not None:
            return
        pull = person.true_value / (person.true_value + 1.0)
        chance = (0.03 + 0.3 * interest * pull) * 0.6**memory.conversions
        if draws.convert < chance:
            converted_at = clicked_at + timedelta(hours=48 * draws.convert_delay**2)
            emit(goal, converted_at)
            memory.conversions += 1
            memory.goals_reached.add(goal)
            reaction.conversion_at = converted_at
            reaction.conversion_value = person.true_value


def _earliest(*moments: datetime | None) -> datetime | None:
    known = [moment for moment in moments if moment is not None]
    return min(known) if known else None


class _Emitter:
    """Appends a reaction's events, leaving out those after the person walked away."""

    def __init__(
        self, reaction: Reaction, recipient_id: str, touchpoint_id: int, channel: str, cutoff: datetime | None
    ) -> None:
        self.reaction = reaction
        self.recipient_id = recipient_id
        self.touchpoint_id = touchpoint_id
        self.channel = channel
        self.cutoff = cutoff

    def __call__(self, kind: str, at: datetime) -> None:
        if self.cutoff is not None and at >= self.cutoff:
            return
        self.reaction.events.append(
            {
                "id": f"t{self.touchpoint_id}-{kind}",
                "recipient_id": self.recipient_id,
                "type": kind,
                "at": at,
                "channel": self.channel,
                "touchpoint_id": self.touchpoint_id,
            }
        )
