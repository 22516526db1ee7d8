"""Read queries the HTTP API needs beyond what the store offers: send-log pages by cursor, and
a recipient's profile with its attention state and pending touches.

``GET /v1/send-log`` pages by id (keyset pagination): a page is the rows matching the filters
with an id above the previous page's last, in id order, so pages neither repeat nor skip rows
however many are appended while a client walks them. The cursor handed to clients is opaque.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from scheduler.attention import AttentionState, decayed, engagement_rate, from_row
from scheduler.decision import RecipientView, Touch, decide, in_holdout
from scheduler.store import Row, Store, send_log_t

if TYPE_CHECKING:
    from scheduler.config import Settings
    from scheduler.engine import Engine

__all__ = ["InvalidCursor", "decode_cursor", "encode_cursor", "recipient_outlook", "send_log_page"]

_CURSOR_PREFIX = "sl1:"

_EQUALITY_FILTERS = {
    "campaign": send_log_t.c.campaign_id,
    "recipient": send_log_t.c.recipient_id,
    "decision": send_log_t.c.decision,
    "reason": send_log_t.c.reason,
}

_PROFILE_FIELDS = (
    "id", "email", "phone", "timezone", "locale", "value", "attributes", "suppressed_at", "suppressed_reason",
    "created_at", "updated_at",
)  # fmt: skip
_ENROLLMENT_FIELDS = ("id", "campaign_id", "state", "enrolled_at", "ended_at", "exit_reason", "converted_at")
_TOUCHPOINT_FIELDS = ("id", "campaign_id", "step_id", "channel", "scheduled_at", "due_at", "attempts")
_NUMBERS = ("asset", "expectation", "fatigue", "engagement_p", "relevance", "value", "net_value", "threshold")


class InvalidCursor(ValueError):
    """A cursor this API did not hand out."""


def encode_cursor(last_id: int) -> str:
    """The opaque cursor of the page after the row with id ``last_id``."""
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The last id a cursor stands for; raise `InvalidCursor` for anything else."""
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        raise InvalidCursor(cursor) from None
    if not text.startswith(_CURSOR_PREFIX) or not text[len(_CURSOR_PREFIX) :].isdigit():
        raise InvalidCursor(cursor)
    return int(text[len(_CURSOR_PREFIX) :])


def send_log_page(store: Store, filters: Mapping[str, Any], *, after_id: int | None, limit: int) -> list[Row]:
    """Up to ``limit`` send_log rows matching ``filters`` (the keys of ``Store.send_log_rows``),
    with ids above ``after_id``, in id order."""
    query = sa.select(send_log_t)
    for key, column in _EQUALITY_FILTERS.items():
        if filters.get(key):
            query = query.where(column == filters[key])
    if filters.get("since"):
        query = query.where(send_log_t.c.at >= filters["since"])
    if filters.get("until"):
        query = query.where(send_log_t.c.at < filters["until"])
    if after_id is not None:
        query = query.where(send_log_t.c.id > after_id)
    query = query.order_by(send_log_t.c.id).limit(limit)
    with store.engine.connect() as connection:
        return [dict(row) for row in connection.execute(query).mappings()]


def recipient_outlook(engine: Engine, recipient_id: str, *, recent: int) -> Row | None:
    """A recipient as ``GET /v1/recipients/{id}`` shows it, or None when unknown.

    The profile with consent for every configured channel (the configured default where no
    record says anything), the attention state decayed to now, each pending touch with what
    would become of it were it due now (as ``tact explain`` reports it), and the ``recent``
    newest decisions.
    """
    profile = engine.store.recipient_profile(recipient_id)
    if profile is None:
        return None
    now = engine.clock()
    settings = engine.settings
    params = settings.attention
    stored = profile["attention"]
    state = decayed(from_row(stored) if stored else AttentionState.initial(params), now, params)
    consent = {channel: row["status"] for channel, row in profile["consent"].items()}
    view = RecipientView(
        id=recipient_id, timezone=profile["timezone"], value=profile["value"],
        consent=consent, suppressed=profile["suppressed_at"] is not None,
    )  # fmt: skip
    enrollments = {row["id"]: row for row in profile["enrollments"]}
    channels = dict.fromkeys([*settings.channels, *profile["consent"]])
    return {
        **{name: profile[name] for name in _PROFILE_FIELDS},
        "consent": {channel: _consent(profile["consent"].get(channel), channel, settings) for channel in channels},
        "attention": {
            "as_of": now,
            "updated_at": state.updated_at,
            "asset": state.asset,
            "expectation": state.expectation,
            "fatigue": state.fatigue,
            "engagement_rate": {
                c: engagement_rate(state, c, params) for c in dict.fromkeys([*settings.channels, *state.engagement])
            },
            "interests": dict(state.interests),
            "open_request": state.open_request,
            "last_inbound_at": state.last_inbound_at,
            "complained_at": state.complained_at,
            "awaiting_outcome": sum(1 for outcome in state.outcomes if outcome.pending),
            "holdout": in_holdout(recipient_id, params.holdout),
        },
        "enrollments": [{name: row[name] for name in _ENROLLMENT_FIELDS} for row in profile["enrollments"]],
        "pending": [
            {
                **{name: touchpoint[name] for name in _TOUCHPOINT_FIELDS},
                "if_due_now": _if_due_now(engine, touchpoint, enrollments, view, state, now),
            }
            for touchpoint in profile["pending"]
        ],
        "recent_decisions": list(
            engine.store.send_log_rows({"recipient": recipient_id}, limit=recent, descending=True)
        ),
    }


def _consent(row: Row | None, channel: str, settings: Settings) -> Row:
    if row is None:
        return {"status": settings.consent.default_for(channel), "source": None, "at": None, "default": True}
    return {"status": row["status"], "source": row["source"], "at": row["at"], "default": False}


def _if_due_now(
    engine: Engine,
    touchpoint: Row,
    enrollments: Mapping[int, Row],
    view: RecipientView,
    state: AttentionState,
    now: datetime,
) -> Row:
    campaign = engine.catalog.get(touchpoint["campaign_id"])
    step = campaign.step(touchpoint["step_id"]) if campaign else None
    if campaign is None or step is None:
        return {"decision": "drop", "reason": "step_removed", "deferred_until": None}
    enrollment = enrollments.get(touchpoint["enrollment_id"], {})
    touch = Touch(
        campaign=campaign, step=step, scheduled_at=touchpoint["scheduled_at"],
        enrollment_state=enrollment.get("state", "active"), seen_events=enrollment.get("seen_events") or (),
        key=touchpoint["idempotency_key"],
    )  # fmt: skip
    decision = decide(touch, view, state, now, engine.settings)
    return {
        "decision": decision.decision,
        "reason": decision.reason,
        "deferred_until": decision.deferred_until,
        **{name: getattr(decision.numbers, name) for name in _NUMBERS},
    }
