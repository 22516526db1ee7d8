"""SMS keywords: which texts are STOP, START or HELP, and the replies they get."""

from __future__ import annotations

import pytest

from scheduler.api.keywords import (
    DEFAULT_REPLIES,
    EVENT_TYPES,
    Keyword,
    classify,
    from_opt_out_type,
    reply_message,
    reply_text,
)

STOPS = ["STOP", "stop", "Stop", " stop ", "STOP.", "stop!!", "STOPALL", "StopAll", "UNSUBSCRIBE", "cancel",
         "End", "quit", "QUIT?", "\tstop\n", "«STOP»", "stop 🙏"]  # fmt: skip
STARTS = ["START", "start", "Unstop", "UNSTOP!", "yes", "YES.", " Yes "]
HELPS = ["HELP", "help", "Help?", "INFO", "info.", "  info  "]
ORDINARY = ["", "   ", "!!!", "stop it", "please stop", "STOPP", "st op", "yes please", "helpful", "starts",
            "Not now", "ST0P", "stop_all"]  # fmt: skip


@pytest.mark.parametrize("body", STOPS)
def test_stop_words_are_stop_in_any_case_and_punctuation(body: str) -> None:
    """Every STOP word, whatever its case and surrounding spaces or punctuation, is STOP."""
    assert classify(body) is Keyword.STOP


@pytest.mark.parametrize("body", STARTS)
def test_start_words_are_start(body: str) -> None:
    """START, UNSTOP and YES restore consent."""
    assert classify(body) is Keyword.START


@pytest.mark.parametrize("body", HELPS)
def test_help_words_are_help(body: str) -> None:
    """HELP and INFO ask for help."""
    assert classify(body) is Keyword.HELP


@pytest.mark.parametrize("body", ORDINARY)
def test_other_texts_are_ordinary_messages(body: str) -> None:
    """A text that is more, less or other than one keyword is not a keyword."""
    assert classify(body) is None


def test_keywords_map_to_consent_events() -> None:
    """STOP withdraws consent, START grants it, HELP is recorded as a help request."""
    assert EVENT_TYPES == {
        Keyword.STOP: "consent_withdrawn",
        Keyword.START: "consent_granted",
        Keyword.HELP: "help_requested",
    }


@pytest.mark.parametrize(
    ("value", "keyword"),
    [("STOP", Keyword.STOP), ("start", Keyword.START), ("HELP", Keyword.HELP), ("", None), (None, None),
     ("UNKNOWN", None)],
)  # fmt: skip
def test_twilio_opt_out_type_names_the_keyword(value: str | None, keyword: Keyword | None) -> None:
    """Twilio's OptOutType parameter is read as the keyword it names."""
    assert from_opt_out_type(value) is keyword


def test_replies_default_to_sensible_texts() -> None:
    """Without settings, HELP answers "Reply STOP to unsubscribe." and STOP says how to come back."""
    assert reply_text(Keyword.HELP, {}) == "Reply STOP to unsubscribe."
    assert "START" in (reply_text(Keyword.STOP, {}) or "")
    assert reply_text(Keyword.START, {}) == DEFAULT_REPLIES[Keyword.START]


def test_replies_come_from_the_channel_settings_and_empty_means_silent() -> None:
    """A configured text replaces the default; an empty one sends no reply."""
    settings = {"help_text": "Acme: call 555-0100. Reply STOP to stop.", "stop_text": "", "start_text": "  "}
    assert reply_text(Keyword.HELP, settings) == "Acme: call 555-0100. Reply STOP to stop."
    assert reply_text(Keyword.STOP, settings) is None
    assert reply_text(Keyword.START, settings) is None


def test_a_reply_is_transactional_with_a_key_derived_from_the_inbound_message() -> None:
    """The reply's idempotency key depends only on the inbound message id."""
    first = reply_message(Keyword.HELP, text="hi", to="+14155550100", channel="sms", inbound_id="SM1", recipient_id="r")
    again = reply_message(
        Keyword.HELP, text="hi", to="+14155550100", channel="sms", inbound_id="SM1", recipient_id=None
    )
    other = reply_message(Keyword.HELP, text="hi", to="+14155550100", channel="sms", inbound_id="SM2", recipient_id="r")
    assert first.idempotency_key == again.idempotency_key != other.idempotency_key
    assert (first.kind, first.channel, first.to, first.text) == ("transactional", "sms", "+14155550100", "hi")
