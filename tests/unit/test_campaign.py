"""Campaign files: the model, the loader's ``line:col`` diagnostics, conditions and cron."""

from __future__ import annotations

import textwrap
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler.campaign import (
    Campaign,
    Condition,
    SendWindow,
    Step,
    Trigger,
    cron_trigger,
    load_campaign,
    load_campaigns,
    matches,
)
from scheduler.errors import CampaignError, Diagnostic

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "campaigns"
CHANNELS = {"email", "sms"}
# a campaign whose only step still needs its body (text or template)
ONE_STEP = """
[trigger]
event = "signed_up"
[[steps]]
id = "a"
channel = "email"
"""


def write(directory: Path, body: str, name: str = "promo.toml") -> Path:
    """Write a campaign file (dedented) and return its path."""
    path = directory / name
    path.write_text(textwrap.dedent(body).lstrip("\n"), encoding="utf-8")
    return path


def problems(path: Path, **options: Any) -> list[Diagnostic]:
    """The diagnostics loading ``path`` raises (failing the test if it loads)."""
    with pytest.raises(CampaignError) as raised:
        load_campaign(path, **options)
    return raised.value.diagnostics


def only(path: Path, **options: Any) -> Diagnostic:
    """The single diagnostic loading ``path`` raises."""
    found = problems(path, **options)
    assert len(found) == 1, found
    return found[0]


# -- shipped examples and defaults ----------------------------------------------------------


def test_shipped_examples_load_without_errors() -> None:
    """Every example campaign in campaigns/ loads with the email and sms channels."""
    campaigns, errors = load_campaigns(ROOT / "campaigns", channels=CHANNELS)
    assert errors == []
    assert set(campaigns) == {"trial-onboarding", "weekly-digest", "order-followup", "newsletter", "upgrade-offer"}


def test_trial_onboarding_example_reads_as_written() -> None:
    """The trial-onboarding example parses durations, the window and skip_if."""
    campaign = load_campaign(ROOT / "campaigns" / "trial-onboarding.toml", channels=CHANNELS)
    assert campaign.trigger.event == "signed_up"
    assert campaign.exit.goal == "purchased"
    assert campaign.send_window is not None
    assert campaign.send_window.start == time(9, 0)
    assert campaign.send_window.weekday_numbers() == frozenset(range(5))
    first_board = campaign.step("first-board")
    assert first_board is not None
    assert first_board.after == timedelta(days=1)
    assert first_board.skip_if == ["activated"]
    assert {step.channel for step in campaign.steps} == CHANNELS


def test_weekly_digest_example_is_a_scheduled_segment() -> None:
    """The weekly digest enrolls a segment on a Monday schedule and re-enrolls."""
    campaign = load_campaign(ROOT / "campaigns" / "weekly-digest.toml")
    assert campaign.trigger.schedule == "0 9 * * MON"
    assert campaign.trigger.reenroll is True
    assert campaign.trigger.segment is not None
    assert matches(campaign.trigger.segment, {"plan": "team"})
    assert not matches(campaign.trigger.segment, {"plan": "trial"})


def test_id_defaults_to_file_stem_and_name_to_id(tmp_path: Path) -> None:
    """Without `id` and `name`, the file stem names the campaign."""
    path = write(tmp_path, ONE_STEP + 'text = "hi"\n')
    campaign = load_campaign(path)
    assert (campaign.id, campaign.name, campaign.source) == ("promo", "promo", path)
    assert (campaign.kind, campaign.priority, campaign.policy) == ("marketing", 50, "value")


def test_loading_a_file_twice_gives_equal_campaigns() -> None:
    """Campaigns loaded from unchanged files compare equal, compiled templates included."""
    path = ROOT / "campaigns" / "trial-onboarding.toml"
    assert load_campaign(path) == load_campaign(path)
    assert load_campaign(path) != load_campaign(ROOT / "campaigns" / "weekly-digest.toml")


def test_step_lookup_by_id() -> None:
    """`step` and `step_index` find a step by id and return None for unknown ids."""
    campaign = load_campaign(ROOT / "campaigns" / "order-followup.toml")
    assert campaign.step_index("shipping-and-setup") == 1
    assert campaign.step("confirmation") is campaign.steps[0]
    assert campaign.step("nope") is None and campaign.step_index("nope") is None


# -- diagnostics ----------------------------------------------------------------------------


def test_misspelled_key_points_at_the_key_with_a_suggestion(tmp_path: Path) -> None:
    """An unknown key is reported at its own line:col with the closest known key."""
    path = write(
        tmp_path,
        """
        [trigger]
        event = "signed_up"

        [[steps]]
        id = "one"
        channel = "email"
        text = "hi"

        [[steps]]
        id = "two"
          chanel = "email"
        text = "hi again"
        """,
    )
    found = problems(path)
    assert found[0] == Diagnostic(path, 11, 3, "unknown key 'chanel' in steps[2] (did you mean 'channel'?)")
    assert str(found[0]).startswith(f"{path}:11:3: unknown key 'chanel'")


def test_misspelled_operator_in_an_inline_table(tmp_path: Path) -> None:
    """A typo inside an inline condition table points into the line."""
    path = write(
        tmp_path,
        """
        [trigger]
        event = "signed_up"
        [audience]
        country = { inn = ["US"] }
        [[steps]]
        id = "a"
        channel = "email"
        text = "hi"
        """,
    )
    assert only(path) == Diagnostic(path, 4, 13, "unknown key 'inn' in audience.country (did you mean 'in'?)")


def test_bad_duration_points_at_the_value(tmp_path: Path) -> None:
    """A duration that does not parse is reported at its value."""
    path = write(
        tmp_path,
        """
        [trigger]
        event = "signed_up"
        [[steps]]
        id = "a"
        after = "2 days"
        channel = "sms"
        text = "hi"
        """,
    )
    found = only(path)
    assert (found.line, found.column) == (5, 9)
    assert found.message.startswith("steps[1].after: invalid duration '2 days'")


def test_unknown_channel_is_an_error_only_when_channels_are_given(tmp_path: Path) -> None:
    """A step's channel must be one of the configured channels."""
    path = write(
        tmp_path,
        """
        [trigger]
        event = "signed_up"
        [[steps]]
        id = "a"
        channel = "emial"
        text = "hi"
        """,
    )
    found = only(path, channels=CHANNELS)
    assert (found.line, found.column) == (5, 11)
    assert "unknown channel 'emial'" in found.message
    assert "did you mean 'email'?" in found.message
    assert load_campaign(path).steps[0].channel == "emial"


def test_invalid_timezone_suggests_a_real_one(tmp_path: Path) -> None:
    """An unknown IANA zone is reported with the closest real name."""
    path = write(
        tmp_path,
        """
        [trigger]
        event = "signed_up"
        [send_window]
        timezone = "America/New_Yrok"
        [[steps]]
        id = "a"
        channel = "email"
        text = "hi"
        """,
    )
    found = only(path)
    assert (found.line, found.column) == (4, 12)
    assert "unknown time zone 'America/New_Yrok'" in found.message
    assert "did you mean 'America/New_York'?" in found.message


SEGMENT_CAMPAIGN = """
[trigger]
segment = {{ plan = "pro" }}
schedule = "{schedule}"
[[steps]]
id = "a"
channel = "email"
text = "hi"
"""


def test_bad_cron_schedule_points_at_the_schedule(tmp_path: Path) -> None:
    """A cron expression APScheduler rejects is reported at `schedule`."""
    path = write(tmp_path, SEGMENT_CAMPAIGN.format(schedule="61 9 * * MON"))
    found = only(path)
    assert (found.line, found.column) == (3, 12)
    assert found.message.startswith("trigger.schedule: invalid schedule '61 9 * * MON'")


def test_cron_schedule_needs_five_fields(tmp_path: Path) -> None:
    """A schedule with the wrong number of fields says how many it needs."""
    path = write(tmp_path, SEGMENT_CAMPAIGN.format(schedule="@weekly"))
    assert "has 5 fields" in only(path).message


def test_duplicate_step_ids_point_at_the_second_id(tmp_path: Path) -> None:
    """A repeated step id is reported at the repeat, naming the first use."""
    path = write(
        tmp_path,
        """
        [trigger]
        event = "signed_up"
        [[steps]]
        id = "a"
        channel = "email"
        text = "1"
        [[steps]]
        id = "a"
        channel = "email"
        text = "2"
        """,
    )
    assert only(path) == Diagnostic(path, 8, 6, "steps[2].id: duplicate step id 'a' (already used by steps[1])")


def test_missing_template_file(tmp_path: Path) -> None:
    """A template path that does not exist is reported at the `template` value."""
    path = write(tmp_path, ONE_STEP + 'template = "templates/nope.html.j2"\n')
    found = only(path)
    assert (found.line, found.column) == (6, 12)
    assert "template file 'templates/nope.html.j2' not found" in found.message


def test_template_path_must_stay_in_the_campaign_folder(tmp_path: Path) -> None:
    """Templates outside the campaign's folder are refused."""
    path = write(tmp_path, ONE_STEP + 'template = "../secret.txt"\n')
    assert "must be relative to the campaign's folder" in only(path).message


def test_undefined_variable_in_subject_points_at_the_subject_key(tmp_path: Path) -> None:
    """A subject using a missing variable is reported at `subject`, naming the variable."""
    path = write(tmp_path, ONE_STEP + 'subject = "Hi {{ recipient.first_nme }}"\ntext = "hi"\n')
    found = only(path)
    assert (found.line, found.column) == (6, 1)
    assert found.message.startswith("steps[1].subject: undefined variable 'recipient.first_nme'")
    assert "first_name" in found.message


def test_undefined_variable_in_template_file_names_file_and_line(tmp_path: Path) -> None:
    """A template file using a missing variable is reported at the step's `template` key."""
    (tmp_path / "body.txt.j2").write_text("Hello\n{{ cupon_code }}\n", encoding="utf-8")
    path = write(tmp_path, ONE_STEP + 'template = "body.txt.j2"\n')
    found = only(path)
    assert (found.line, found.column) == (6, 1)
    expected = "steps[1].template: undefined variable 'cupon_code' (body.txt.j2, line 2)"
    assert found.message == expected


def test_sample_recipient_can_be_replaced(tmp_path: Path) -> None:
    """Templates are checked against the given sample recipient."""
    path = write(tmp_path, ONE_STEP + 'text = "Your code: {{ recipient.coupon }}"\n')
    assert "recipient.coupon" in only(path).message
    assert load_campaign(path, sample_recipient={"coupon": "SAVE10"}).id == "promo"


def test_jinja_syntax_error_is_reported_in_the_template_file() -> None:
    """A Jinja syntax error carries the template file's path and line."""
    found = only(FIXTURES / "bad" / "broken-template.toml")
    assert found.path == FIXTURES / "bad" / "templates" / "unclosed.html.j2"
    assert found.line == 3
    assert found.message.startswith("template syntax error:")


def test_jinja_syntax_error_in_inline_text(tmp_path: Path) -> None:
    """A Jinja syntax error in inline text points at the `text` value."""
    path = write(tmp_path, ONE_STEP + 'text = "{{ oops"\n')
    found = only(path)
    assert (found.path, found.line, found.column) == (path, 6, 8)
    assert found.message.startswith("steps[1].text: template syntax error")


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    """A TOML syntax error is reported at the line and column tomllib gives."""
    path = write(tmp_path, 'name = "x"\npriority = \n')
    found = only(path)
    assert (found.line, found.column) == (2, 12)
    assert found.message == "TOML syntax error: Invalid value"


def test_toml_syntax_error_at_end_of_document(tmp_path: Path) -> None:
    """An error at the end of the file points at its last line."""
    path = write(tmp_path, 'name = "x"\ntext = "unterminated')
    found = only(path)
    assert found.line == 2
    assert found.message == "TOML syntax error: Unterminated string"


@pytest.mark.parametrize(
    "body",
    ['template = "a.txt"\ntext = "hi"\n', ""],
    ids=["both", "neither"],
)
def test_step_needs_exactly_one_of_template_and_text(tmp_path: Path, body: str) -> None:
    """A step with both `template` and `text`, or neither, is reported at its header."""
    (tmp_path / "a.txt").write_text("hi", encoding="utf-8")
    path = write(tmp_path, ONE_STEP + body)
    found = only(path)
    assert (found.line, found.column) == (3, 1)
    assert "exactly one of `template`" in found.message


@pytest.mark.parametrize(
    ("trigger", "message"),
    [
        ('segment = { plan = "pro" }', "a `segment` needs a `schedule`"),
        ('schedule = "0 9 * * MON"', "a `schedule` needs a `segment`"),
        ('event = "x"\nschedule = "0 9 * * MON"\nsegment = { plan = "pro" }', "not both"),
        ("reenroll = true", "set `event`, or `segment` with `schedule`"),
    ],
)
def test_trigger_needs_an_event_or_a_scheduled_segment(tmp_path: Path, trigger: str, message: str) -> None:
    """The trigger is an event, or a segment with a schedule, and nothing else."""
    steps = '[[steps]]\nid = "a"\nchannel = "sms"\ntext = "x"\n'
    path = write(tmp_path, f"[trigger]\n{trigger}\n{steps}")
    found = only(path)
    assert (found.line, found.column) == (1, 1)
    assert message in found.message


def test_missing_key_points_at_the_enclosing_table(tmp_path: Path) -> None:
    """A missing required key is reported at its table's header."""
    path = write(
        tmp_path,
        """
        [trigger]
        event = "signed_up"

        [[steps]]
        id = "a"
        text = "x"
        """,
    )
    assert only(path) == Diagnostic(path, 4, 1, "missing required key 'channel' in steps[1]")


def test_misspelled_required_key_is_reported_once(tmp_path: Path) -> None:
    """A misspelled required key is one unknown-key problem, not also a missing key."""
    path = write(
        tmp_path,
        """
        [trigger]
        event = "signed_up"
        [[steps]]
        id = "a"
        chanel = "sms"
        text = "x"
        """,
    )
    assert only(path).message == "unknown key 'chanel' in steps[1] (did you mean 'channel'?)"


def test_missing_trigger_and_steps_are_explained(tmp_path: Path) -> None:
    """A file without trigger or steps says what to add, at the top of the file."""
    path = write(tmp_path, 'name = "Empty"\n')
    messages = [(d.line, d.column, d.message.split(":")[0]) for d in problems(path)]
    assert messages == [(1, 1, "missing [trigger] table"), (1, 1, "missing [[steps]]")]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Problems in different places are all reported, in file order."""
    path = write(
        tmp_path,
        """
        kind = "marketting"
        [trigger]
        event = "signed_up"
        [[steps]]
        id = "a"
        channel = "email"
        subject = "{{ recipient.nam }}"
        text = "x"
        [[steps]]
        id = "b"
        after = "soon"
        channel = "email"
        text = "y"
        """,
    )
    found = problems(path)
    assert [d.line for d in found] == [1, 7, 11]
    assert "did you mean 'marketing'?" in found[0].message
    assert "recipient.nam" in found[1].message
    assert "invalid duration" in found[2].message


def test_out_of_range_numbers_and_wrong_types(tmp_path: Path) -> None:
    """Range and type errors read as plain sentences."""
    path = write(
        tmp_path,
        """
        priority = 120
        [trigger]
        event = "signed_up"
        [[steps]]
        id = "a"
        channel = "sms"
        text = "x"
        value = "high"
        topics = "tips"
        max_defer = 3
        """,
    )
    assert [d.message for d in problems(path)] == [
        "priority: must be at most 100",
        "steps[1].value: must be a number",
        'steps[1].topics: must be a list, e.g. ["a", "b"]',
        'steps[1].max_defer: must be a duration in quotes, e.g. "2d" or "1d12h"',
    ]


def test_positions_survive_multiline_strings_and_arrays(tmp_path: Path) -> None:
    """Strings that look like TOML and arrays over several lines do not shift positions."""
    path = write(
        tmp_path,
        '''
        [trigger]
        event = "signed_up"
        [[steps]]
        id = "a"
        channel = "sms"
        text = """
        [[steps]]  # not a table: this is the message
        chanel = 'x' ""\"
        topics = [
          "tips",  # a comment
          "news",
        ]
        [[steps]]
        id = "b"
        channel = "sms"
        text = 'literal # text'
        skip_if = "activated"
        ''',
    )
    assert only(path) == Diagnostic(path, 17, 11, 'steps[2].skip_if: must be a list, e.g. ["a", "b"]')


def test_source_is_not_a_file_key(tmp_path: Path) -> None:
    """`source` is set by the loader; writing it in the file is an unknown key."""
    path = write(tmp_path, 'source = "x"\n' + ONE_STEP + 'text = "x"\n')
    assert only(path) == Diagnostic(path, 1, 1, "unknown key 'source'")


def test_schema_comment_line_is_allowed(tmp_path: Path) -> None:
    """The `#:schema` directive is an ordinary TOML comment."""
    path = write(tmp_path, "#:schema ./campaign.schema.json\n" + ONE_STEP + 'text = "x"\n')
    assert load_campaign(path).id == "promo"


# -- send window ----------------------------------------------------------------------------


def test_send_window_times_and_days() -> None:
    """Times parse from "HH:MM", "24:00" means end of day, days map to Monday=0."""
    window = SendWindow.model_validate({"days": ["MON", "sun"], "start": "8:30", "end": "24:00"})
    assert (window.start, window.end) == (time(8, 30), None)
    assert window.weekday_numbers() == frozenset({0, 6})
    assert SendWindow().weekday_numbers() == frozenset(range(7))


WINDOW_CAMPAIGN = """
[trigger]
event = "signed_up"
[send_window]
start = "{start}"
end = "{end}"
[[steps]]
id = "a"
channel = "sms"
text = "x"
"""


def test_send_window_end_must_follow_start(tmp_path: Path) -> None:
    """A window that closes before it opens is an error at the [send_window] header."""
    path = write(tmp_path, WINDOW_CAMPAIGN.format(start="18:00", end="09:00"))
    found = only(path)
    assert found.line == 3
    assert "`end` must be later than `start`" in found.message


def test_send_window_rejects_bad_times(tmp_path: Path) -> None:
    """A time that is not "HH:MM" says how to write it."""
    path = write(tmp_path, WINDOW_CAMPAIGN.format(start="9am", end="18:00"))
    found = only(path)
    assert (found.line, found.column) == (4, 9)
    assert 'use 24-hour "HH:MM"' in found.message


# -- load_campaigns -------------------------------------------------------------------------


def test_load_campaigns_keeps_good_files_and_reports_broken_ones() -> None:
    """A broken file and a duplicate id are errors; the good campaign still loads."""
    campaigns, errors = load_campaigns(FIXTURES / "mixed", channels=CHANNELS)
    assert list(campaigns) == ["good-welcome"]
    assert campaigns["good-welcome"].name == "Good welcome"
    reported = [(e.diagnostics[0].path.name, e.diagnostics[0].message) for e in errors]
    assert reported[0][0] == "broken-tip.toml"
    assert reported[0][1].startswith("steps[1].after: invalid duration")
    assert reported[1][0] == "same-id.toml"
    assert reported[1][1].startswith("campaign id 'good-welcome' is already used by")
    assert errors[1].diagnostics[0].line == 1


def test_load_campaigns_reports_a_missing_directory(tmp_path: Path) -> None:
    """A campaigns directory that does not exist is one error, no campaigns."""
    campaigns, errors = load_campaigns(tmp_path / "nope")
    assert campaigns == {}
    assert errors[0].diagnostics[0].message == "campaigns directory not found"


# -- model built in code --------------------------------------------------------------------


def test_campaign_built_in_code_renders_inline_steps() -> None:
    """A campaign built without a file compiles its steps on first use."""
    campaign = Campaign(
        id="inline",
        name="Inline",
        trigger=Trigger(event="signed_up"),
        steps=[Step(id="s", channel="sms", text="Hi {{ recipient.first_name }}")],
    )
    message = campaign.compiled("s").render({"recipient": {"first_name": "Lin"}})
    assert message.text == "Hi Lin"
    assert campaign.model_dump()["steps"][0]["after"] == "0s"
    assert "source" not in campaign.model_dump()


# -- conditions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "fields", "expected"),
    [
        ("trial", {"plan": "trial"}, True),
        ("trial", {"plan": "pro"}, False),
        ("trial", {}, False),
        (True, {"plan": "true"}, True),
        (3, {"plan": "3"}, True),
        ({"in": ["pro", "team"]}, {"plan": "team"}, True),
        ({"in": ["pro", "team"]}, {}, False),
        ({"not_in": ["pro"]}, {"plan": "trial"}, True),
        ({"not_in": ["pro"]}, {}, True),
        ({"eq": "pro"}, {"plan": "pro"}, True),
        ({"ne": "pro"}, {"plan": "pro"}, False),
        ({"ne": "pro"}, {}, True),
        ({"gt": 10}, {"plan": 11}, True),
        ({"gt": 10}, {"plan": 10}, False),
        ({"gte": 10}, {"plan": "10"}, True),
        ({"lt": 10}, {"plan": "ten"}, False),
        ({"lte": 10}, {}, False),
        ({"gte": "2026-01-01"}, {"plan": "2026-02-01T00:00:00Z"}, True),
        ({"lt": "2026-01-01"}, {"plan": datetime(2025, 12, 31, tzinfo=UTC)}, True),
        ({"lt": date(2026, 1, 1)}, {"plan": "2026-01-02"}, False),
        ({"exists": True}, {"plan": "x"}, True),
        ({"exists": True}, {"plan": None}, False),
        ({"exists": False}, {}, True),
    ],
)
def test_matches_operators(condition: Any, fields: dict[str, Any], expected: bool) -> None:
    """Each operator holds as documented; a missing field fails all but ne/not_in/exists."""
    conditions = {"plan": Condition.model_validate(condition)}
    assert matches(conditions, fields) is expected


def test_matches_requires_every_condition() -> None:
    """All conditions must hold; no conditions match everyone."""
    conditions = {
        "plan": Condition.model_validate("pro"),
        "country": Condition.model_validate({"in": ["US", "CA"]}),
    }
    assert matches(conditions, {"plan": "pro", "country": "CA"})
    assert not matches(conditions, {"plan": "pro", "country": "FR"})
    assert matches({}, {})


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("{}", "exactly one operator"),
        ("{ gt = 1, lt = 5 }", "exactly one operator"),
        ('{ gt = "soon" }', "ISO date"),
        ('{ in = [["nested"]] }', "text, a number or true/false"),
    ],
)
def test_condition_rejects_malformed_tables(tmp_path: Path, condition: str, message: str) -> None:
    """A condition table needs exactly one operator with a sensible operand."""
    path = write(tmp_path, f"[audience]\nplan = {condition}\n" + ONE_STEP + 'text = "x"\n')
    found = only(path)
    assert found.line == 2
    assert message in found.message


# -- cron -----------------------------------------------------------------------------------

SUNDAY_NOON = datetime(2026, 1, 4, 12, 0, tzinfo=UTC)  # a Sunday


def fire_weekdays(expr: str, count: int = 7) -> list[str]:
    """The weekday names of the next ``count`` fire times after SUNDAY_NOON."""
    trigger = cron_trigger(expr, "UTC")
    previous: datetime | None = None
    now = SUNDAY_NOON
    names = []
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now)
        names.append(fire.strftime("%a"))
        previous, now = fire, fire + timedelta(seconds=1)
    return names


@pytest.mark.parametrize(
    ("expr", "weekdays"),
    [
        ("0 9 * * 1", ["Mon"] * 3),
        ("0 9 * * 0", ["Sun"] * 3),
        ("0 9 * * 7", ["Sun"] * 3),
        ("0 9 * * MON", ["Mon"] * 3),
        ("0 9 * * 5-7", ["Fri", "Sat", "Sun"]),
        ("0 9 * * 0,6", ["Sat", "Sun", "Sat"]),
        ("0 9 * * 1-5/2", ["Mon", "Wed", "Fri"]),
        ("0 9 * * sun-tue", ["Mon", "Tue", "Sun"]),
    ],
)
def test_cron_trigger_uses_standard_weekday_numbers(expr: str, weekdays: list[str]) -> None:
    """Day-of-week numbers mean what they mean in cron: 0 and 7 are Sunday, 1 is Monday."""
    assert fire_weekdays(expr, len(weekdays)) == weekdays


def test_cron_trigger_keeps_the_time_zone() -> None:
    """The trigger fires at the given local time."""
    fire = cron_trigger("0 9 * * *", "America/New_York").get_next_fire_time(None, SUNDAY_NOON)
    assert fire.astimezone(UTC) == datetime(2026, 1, 4, 14, 0, tzinfo=UTC)


@pytest.mark.parametrize("expr", ["0 9 * * 8", "0 9 * * fri-mon", "0 9 * * funday", "0 9 * *"])
def test_cron_trigger_rejects_bad_expressions(expr: str) -> None:
    """Invalid expressions raise ValueError."""
    with pytest.raises(ValueError, match="invalid"):
        cron_trigger(expr, "UTC")
