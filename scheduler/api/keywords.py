"""SMS keywords: what an inbound text asks for, and the answer it gets.

A text that is nothing but one of these words (any case, surrounding spaces and punctuation
ignored) is a keyword; anything else is an ordinary inbound message:

========================================  ==========  =====================  ==============
Words                                     Keyword     Event recorded         Reply key
========================================  ==========  =====================  ==============
STOP, STOPALL, UNSUBSCRIBE, CANCEL, END,  ``stop``    ``consent_withdrawn``  ``stop_text``
QUIT
START, UNSTOP, YES                        ``start``   ``consent_granted``    ``start_text``
HELP, INFO                                ``help``    ``help_requested``     ``help_text``
========================================  ==========  =====================  ==============

START only undoes an opt-out: from a sender who has not opted out of SMS, those words are an
ordinary message (a "yes" answering a question is no subscription).

The replies come from the SMS channel's table; an empty text sends no reply (for example when
Twilio's Advanced Opt-Out already answers these words)::

    [channels.sms]
    help_text = "Acme alerts. Reply STOP to unsubscribe."
    stop_text = ""
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from adapters.base import Message

__all__ = [
    "DEFAULT_REPLIES",
    "EVENT_TYPES",
    "REPLY_KEYS",
    "REPLY_KEY_PREFIX",
    "Keyword",
    "classify",
    "from_opt_out_type",
    "reply_message",
    "reply_text",
]


class Keyword(StrEnum):
    """What a keyword text asks for."""

    STOP = "stop"
    START = "start"
    HELP = "help"


_WORDS: dict[str, Keyword] = {
    **dict.fromkeys(("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"), Keyword.STOP),
    **dict.fromkeys(("START", "UNSTOP", "YES"), Keyword.START),
    **dict.fromkeys(("HELP", "INFO"), Keyword.HELP),
}
_EDGES = re.compile(r"^[\W_]+|[\W_]+$")

EVENT_TYPES: dict[Keyword, str] = {
    Keyword.STOP: "consent_withdrawn",
    Keyword.START: "consent_granted",
    Keyword.HELP: "help_requested",
}
"""The event an inbound keyword is recorded as (an ordinary text is ``inbound_message``)."""

REPLY_KEYS: dict[Keyword, str] = {
    Keyword.STOP: "stop_text",
    Keyword.START: "start_text",
    Keyword.HELP: "help_text",
}
"""The channel setting holding each keyword's reply."""

REPLY_KEY_PREFIX = "keyword-reply:"
"""How the idempotency key of every keyword reply begins (the inbound message id follows)."""

DEFAULT_REPLIES: dict[Keyword, str] = {
    Keyword.STOP: "You are unsubscribed and will get no more messages from us. Reply START to resubscribe.",
    Keyword.START: "You are subscribed again. Reply STOP to unsubscribe.",
    Keyword.HELP: "Reply STOP to unsubscribe.",
}


def classify(body: str) -> Keyword | None:
    """The keyword a text is, or None for an ordinary message."""
    word = _EDGES.sub("", body).upper()
    return _WORDS.get(word)


def from_opt_out_type(value: str | None) -> Keyword | None:
    """The keyword Twilio's Advanced Opt-Out names in ``OptOutType`` (``STOP``, ``START``,
    ``HELP``), if any."""
    if not value:
        return None
    try:
        return Keyword(value.strip().lower())
    except ValueError:
        return None


def reply_text(keyword: Keyword, channel_settings: Mapping[str, Any]) -> str | None:
    """The reply configured for ``keyword`` (or the default); None when set to be silent."""
    configured = channel_settings.get(REPLY_KEYS[keyword])
    text = DEFAULT_REPLIES[keyword] if configured is None else str(configured).strip()
    return text or None


def reply_message(
    keyword: Keyword, *, text: str, to: str, channel: str, inbound_id: str, recipient_id: str | None
) -> Message:
    """The transactional SMS answering the inbound message ``inbound_id``; its idempotency key
    derives from that id, so every attempt at one answer carries the same key."""
    return Message(
        touchpoint_id="",
        idempotency_key=REPLY_KEY_PREFIX + inbound_id,
        channel=channel,
        to=to,
        recipient_id=recipient_id or "",
        campaign_id="keywords",
        step_id=keyword.value,
        kind="transactional",
        subject=None,
        text=text,
    )
