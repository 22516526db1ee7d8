"""The ``tact`` command line run as a process against a workspace on disk (SPEC sections 3, 10)."""

from __future__ import annotations

import csv
import io
import json
import re
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from tests.acceptance.conftest import sqlite_only

if TYPE_CHECKING:
    from tests.acceptance.conftest import Workspace

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_RECIPIENTS = EXAMPLES / "recipients.csv"
EXAMPLE_EVENTS = EXAMPLES / "events.jsonl"
FIRST_TICK = "2026-11-23T15:00:00Z"  # the walkthrough's first tick (see conftest.py)

SEND_LOG_COLUMNS = [
    "id", "at", "touchpoint_id", "recipient_id", "campaign_id", "step_id", "channel", "adapter",
    "decision", "reason", "deferred_until", "asset", "expectation", "fatigue", "engagement_p",
    "relevance", "value", "net_value", "threshold", "propensity", "provider_message_id", "error",
    "latency_ms", "attempt",
]  # fmt: skip

# The first touches the walkthrough's tick sends: (recipient, campaign, step).
FIRST_TOUCHES = {
    ("r-1001", "trial-onboarding", "welcome"),
    ("r-1002", "trial-onboarding", "welcome"),
    ("r-1005", "trial-onboarding", "welcome"),
    ("r-1004", "order-followup", "confirmation"),
}

MISSPELLED_KEY_LINE = 12
MISSPELLED_KEY_CAMPAIGN = """\
#:schema ./campaign.schema.json
# A campaign whose only step misspells "channel".
id = "typo"
name = "Typo"
kind = "marketing"

[trigger]
event = "signed_up"

[[steps]]
id = "welcome"
chanel = "email"
after = "0m"
subject = "Welcome"
text = "Hello"
value = 0.5
"""

UNDEFINED_VARIABLE_LINE = 13
UNDEFINED_VARIABLE_CAMPAIGN = """\
id = "undefined-variable"
name = "Undefined variable"
kind = "marketing"

[trigger]
event = "signed_up"

[[steps]]
id = "welcome"
after = "0m"
channel = "email"
subject = "Welcome"
text = "Hello {{ recipient.no_such_var }}, welcome aboard."
value = 0.5
"""

SYNTAX_ERROR_LINE = 2  # the string that never closes
SYNTAX_ERROR_CAMPAIGN = """\
id = "broken"
name = "Broken
kind = "marketing"
"""

DIAGNOSTIC = re.compile(r"^(?P<path>.+?):(?P<line>\d+):(?P<column>\d+): (?P<message>.+)$")


def diagnostics_for(path: Path, stderr: str) -> list[tuple[int, int, str]]:
    """The ``path:line:col: message`` lines of ``stderr`` that name ``path``."""
    found = []
    for line in stderr.splitlines():
        match = DIAGNOSTIC.match(line.strip())
        if match and Path(match["path"]).resolve() == path.resolve():
            found.append((int(match["line"]), int(match["column"]), match["message"]))
    return found


def squeeze(text: str) -> str:
    """``text`` with every run of whitespace made one space (terminal wrapping undone)."""
    return " ".join(text.split())


def write_campaign(directory: Path, name: str, text: str) -> Path:
    """Write a campaign file and return its path."""
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def log_rows(workspace: Workspace, *filters: str) -> list[dict[str, str]]:
    """``tact log --format csv`` with ``filters``, parsed."""
    result = workspace.ok("log", "--format", "csv", *filters)
    return list(csv.DictReader(io.StringIO(result.stdout)))


# -- validate ----------------------------------------------------------------------------------


@sqlite_only  # no database: nothing here opens one
def test_validate_accepts_the_shipped_campaigns(workspace: Workspace) -> None:
    """``tact validate`` exits 0 on the campaigns that ship with Tact."""
    result = workspace.tact("validate")

    assert result.returncode == 0, result.stderr
    assert "5 campaign file(s)" in result.stdout


@sqlite_only  # no database: nothing here opens one
def test_validate_names_a_misspelled_key_at_its_line(workspace: Workspace) -> None:
    """A misspelled step key fails validation with ``path:line:col`` at the typo."""
    path = write_campaign(workspace.root, "typo.toml", MISSPELLED_KEY_CAMPAIGN)
    assert "chanel" in MISSPELLED_KEY_CAMPAIGN.splitlines()[MISSPELLED_KEY_LINE - 1]

    result = workspace.tact("validate", path)

    assert result.returncode == 1
    naming_the_typo = [d for d in diagnostics_for(path, result.stderr) if "chanel" in d[2]]
    assert naming_the_typo, result.stderr
    line, column, _ = naming_the_typo[0]
    assert line == MISSPELLED_KEY_LINE
    assert column >= 1


@sqlite_only  # no database: nothing here opens one
def test_validate_checks_the_configured_campaigns_dir(workspace: Workspace) -> None:
    """Without a path, ``tact validate`` checks every file of the configured campaigns_dir."""
    path = write_campaign(workspace.campaigns, "typo.toml", MISSPELLED_KEY_CAMPAIGN)

    result = workspace.tact("validate")

    assert result.returncode == 1
    assert any("chanel" in message for _, _, message in diagnostics_for(path, result.stderr))


@sqlite_only  # no database: nothing here opens one
def test_validate_names_an_undefined_template_variable(workspace: Workspace) -> None:
    """Inline text using an unknown recipient variable fails with ``path:line:col`` naming it."""
    path = write_campaign(workspace.root, "undefined.toml", UNDEFINED_VARIABLE_CAMPAIGN)
    assert "no_such_var" in UNDEFINED_VARIABLE_CAMPAIGN.splitlines()[UNDEFINED_VARIABLE_LINE - 1]

    result = workspace.tact("validate", path)

    assert result.returncode == 1
    naming_it = [d for d in diagnostics_for(path, result.stderr) if "no_such_var" in d[2]]
    assert naming_it, result.stderr
    assert naming_it[0][0] == UNDEFINED_VARIABLE_LINE


@sqlite_only  # no database: nothing here opens one
def test_validate_reports_a_toml_syntax_error_with_line_and_column(workspace: Workspace) -> None:
    """A TOML syntax error fails validation at the line of the unterminated string."""
    path = write_campaign(workspace.root, "syntax.toml", SYNTAX_ERROR_CAMPAIGN)

    result = workspace.tact("validate", path)

    assert result.returncode == 1
    found = diagnostics_for(path, result.stderr)
    assert found, result.stderr
    line, column, message = found[0]
    assert line == SYNTAX_ERROR_LINE
    assert column >= 1
    assert "syntax" in message.lower()


# -- version and help --------------------------------------------------------------------------


@sqlite_only  # no database: nothing here opens one
def test_version_prints_the_installed_version(workspace: Workspace) -> None:
    """``tact version`` prints the distribution's version."""
    result = workspace.ok("version", with_config=False)

    assert result.stdout.strip() == f"tact {package_version('tact')}"


@sqlite_only  # no database: nothing here opens one
def test_help_lists_the_commands(workspace: Workspace) -> None:
    """``tact --help`` lists every command a user needs."""
    result = workspace.ok("--help", with_config=False)

    listed = set(re.findall(r"^\W*([a-z]+)\s", result.stdout, flags=re.MULTILINE))
    expected = {"run", "tick", "validate", "recipients", "events", "enroll", "explain", "log"}
    assert expected | {"db", "version"} <= listed


# -- the walkthrough: import, tick, replay -----------------------------------------------------


def test_recipients_import_reports_the_count_and_stores_them(walked_template: Workspace, walked: Workspace) -> None:
    """Importing the example CSV reports six recipients and stores them normalised."""
    output = walked_template.results["recipients"].stdout

    assert re.search(r"\b6 imported\b", output), output
    stored = dict(walked.sql("SELECT id, phone FROM recipient"))
    assert sorted(stored) == [f"r-100{n}" for n in range(1, 7)]
    assert stored["r-1001"] == "+12125550142"
    (attributes,) = walked.sql("SELECT attributes FROM recipient WHERE id = 'r-1001'")[0]
    assert json.loads(attributes)["first_name"] == "Maya"
    assert walked.sql("SELECT status FROM consent WHERE recipient_id = 'r-1003' AND channel = 'sms'") == [
        ("opted_out",)
    ]


MIXED_RECIPIENTS = (
    "id,email,first_name\nr-2001,ann@example.com,Ann\nr-2002,not-an-email,Bob\nr-2003,cid@example.com,Cid\n"
)
BAD_RECIPIENT_LINE = 3


def test_recipients_import_keeps_good_rows_and_names_the_bad_line(workspace: Workspace) -> None:
    """A CSV with one invalid email exits 1 naming that row's line; the good rows are stored."""
    (workspace.root / "mixed.csv").write_text(MIXED_RECIPIENTS, encoding="utf-8")

    result = workspace.tact("recipients", "import", "mixed.csv")

    assert result.returncode == 1
    reports = re.findall(r"mixed\.csv:(\d+): ([^:]+):", squeeze(result.stderr))
    assert len(reports) == 1, result.stderr
    line, reason = reports[0]
    assert int(line) == BAD_RECIPIENT_LINE
    assert "email" in reason
    assert re.search(r"\b2 imported\b", result.stdout), result.stdout
    assert workspace.sql("SELECT id FROM recipient ORDER BY id") == [("r-2001",), ("r-2003",)]


def test_each_rejected_row_is_reported_on_one_line(workspace: Workspace) -> None:
    """A rejected row's report stays on one line however long the file's path is."""
    path = workspace.root / ("recipients-exported-from-the-crm-on-a-long-day" * 2 + ".csv")
    path.write_text(MIXED_RECIPIENTS, encoding="utf-8")

    result = workspace.tact("recipients", "import", path)

    reports = [line for line in result.stderr.splitlines() if line.startswith(f"{path}:")]
    assert len(reports) == 1, result.stderr
    assert reports[0].startswith(f"{path}:{BAD_RECIPIENT_LINE}: ")
    assert "not-an-email" in reports[0]


def test_first_tick_sends_the_first_touches_through_the_file_adapter(
    walked_template: Workspace, walked: Workspace
) -> None:
    """The first tick sends each enrolled recipient's first step as a JSON line in the outbox."""
    assert re.search(r"\b4 imported\b", walked_template.results["events"].stdout)
    assert "decisions=4" in squeeze(walked_template.results["tick"].stdout)

    sent = walked.outbox("email")
    assert {(m["recipient_id"], m["campaign_id"], m["step_id"]) for m in sent} == FIRST_TOUCHES
    assert len(sent) == len(FIRST_TOUCHES)
    welcome = next(m for m in sent if m["recipient_id"] == "r-1001")
    assert welcome["to"] == "maya.chen@example.com"
    assert welcome["subject"] == "Welcome to Lumen, Maya"
    assert welcome["text"].strip()
    assert walked.outbox("sms") == []


def test_marketing_email_carries_the_unsubscribe_headers(walked: Workspace) -> None:
    """Marketing email has List-Unsubscribe and one-click headers; transactional email does not."""
    sent = walked.outbox("email")

    for message in sent:
        headers = message["headers"]
        if message["kind"] == "marketing":
            assert re.fullmatch(r"<https?://\S+>", headers["List-Unsubscribe"])
            assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        else:
            assert "List-Unsubscribe" not in headers
    assert {m["kind"] for m in sent} == {"marketing", "transactional"}


def test_tick_summary_is_one_line(walked_template: Workspace) -> None:
    """``tact tick`` prints its summary on a single line, whatever the terminal."""
    output = walked_template.results["tick"].stdout

    assert len(output.strip().splitlines()) == 1, output


def test_replayed_events_are_known_and_a_second_tick_sends_nothing(walked: Workspace) -> None:
    """Importing the same events again reports them as known; the next tick sends nothing new."""
    replay = walked.ok("events", "import", EXAMPLE_EVENTS)
    walked.ok("tick", "--at", FIRST_TICK)

    assert re.search(r"\b0 imported\b", replay.stdout), replay.stdout
    assert re.search(r"\b4 already known\b", replay.stdout), replay.stdout
    assert len(walked.outbox("email")) == len(FIRST_TOUCHES)
    assert walked.sql("SELECT count(*) FROM send_log") == [(len(FIRST_TOUCHES),)]
    assert walked.sql("SELECT count(*) FROM event") == [(4,)]


THREE_STEPS = """\
id = "nurture"
name = "Nurture"
kind = "transactional"

[trigger]
event = "trial_started"
{steps}"""
STEP = """
[[steps]]
id = "{step_id}"
after = "{after}"
channel = "email"
subject = "{step_id}"
text = "{step_id} for {{{{ recipient.first_name }}}}"
value = 0.6
"""


def journey(*steps: tuple[str, str]) -> str:
    """A transactional campaign with the given (step id, after) steps."""
    body = "".join(STEP.format(step_id=step_id, after=after) for step_id, after in steps)
    return THREE_STEPS.format(steps=body)


def test_removing_a_middle_step_between_runs_keeps_the_rest_of_the_journey(
    bare_workspace: Workspace,
) -> None:
    """A step removed between two ``tact tick`` runs is dropped and the next step still follows."""
    workspace = bare_workspace
    campaign = workspace.campaigns / "nurture.toml"
    campaign.write_text(journey(("intro", "0m"), ("reminder", "1h"), ("outro", "1h")))
    (workspace.root / "people.csv").write_text("id,email,first_name\nr-1,a@example.com,Ann\n")
    (workspace.root / "events.jsonl").write_text(
        json.dumps({"id": "e-1", "recipient_id": "r-1", "type": "trial_started",
                    "at": "2026-01-05T10:00:00Z"}) + "\n"
    )  # fmt: skip
    workspace.ok("recipients", "import", "people.csv")
    workspace.ok("events", "import", "events.jsonl")
    workspace.ok("tick", "--at", "2026-01-05T10:00:00Z")

    campaign.write_text(journey(("intro", "0m"), ("outro", "1h")))
    workspace.ok("tick", "--at", "2026-01-05T11:01:00Z")

    assert workspace.sql("SELECT step_id, decision, reason FROM send_log ORDER BY id") == [
        ("intro", "sent", "transactional"),
        ("reminder", "dropped", "step_removed"),
    ]
    assert workspace.sql("SELECT count(*) FROM touchpoint WHERE step_id = 'outro'") == [(1,)]
    workspace.ok("tick", "--at", "2026-01-05T12:05:00Z")
    assert [m["step_id"] for m in workspace.outbox("email")] == ["intro", "outro"]


# -- log -----------------------------------------------------------------------------------------


def test_log_csv_has_the_send_log_columns_and_a_row_per_decision(walked: Workspace) -> None:
    """``tact log --format csv`` writes the documented columns and one row per decision."""
    result = walked.ok("log", "--format", "csv")

    reader = csv.reader(io.StringIO(result.stdout))
    header = next(reader)
    rows = list(reader)
    assert header == SEND_LOG_COLUMNS
    assert len(rows) == len(FIRST_TOUCHES)
    by_name = [dict(zip(header, row, strict=True)) for row in rows]
    assert {(r["recipient_id"], r["campaign_id"], r["step_id"]) for r in by_name} == FIRST_TOUCHES
    assert {r["decision"] for r in by_name} == {"sent"}
    assert all(r["adapter"] == "file" and r["channel"] == "email" for r in by_name)


def test_log_json_filters_by_campaign_and_decision(walked: Workspace) -> None:
    """``--format json`` with ``--campaign`` and ``--decision`` returns only the matching rows."""
    result = walked.ok("log", "--format", "json", "--campaign", "trial-onboarding", "--decision", "sent")

    rows = json.loads(result.stdout)
    assert sorted(r["recipient_id"] for r in rows) == ["r-1001", "r-1002", "r-1005"]
    assert {r["step_id"] for r in rows} == {"welcome"}
    assert all(set(r) == set(SEND_LOG_COLUMNS) for r in rows)


def test_log_jsonl_filters_by_reason_and_recipient(walked: Workspace) -> None:
    """``--format jsonl`` with ``--reason`` or ``--recipient`` returns only the matching rows."""
    by_reason = walked.ok("log", "--format", "jsonl", "--reason", "transactional")
    by_recipient = walked.ok("log", "--format", "jsonl", "--recipient", "r-1002")

    reason_rows = [json.loads(line) for line in by_reason.stdout.splitlines()]
    recipient_rows = [json.loads(line) for line in by_recipient.stdout.splitlines()]
    assert [(r["recipient_id"], r["step_id"], r["reason"]) for r in reason_rows] == [
        ("r-1004", "confirmation", "transactional")
    ]
    assert [(r["recipient_id"], r["step_id"], r["reason"]) for r in recipient_rows] == [
        ("r-1002", "welcome", "value_ok")
    ]


def test_log_filters_by_since_and_until(walked: Workspace) -> None:
    """``--since`` keeps rows from an instant on; ``--until`` keeps rows before it."""
    walked.ok("tick", "--at", "2026-11-24T15:00:00Z")
    boundary = "2026-11-24T15:00:00Z"

    # Tuesday 15:00 UTC is also when the newsletter enrolls everyone: follow the trial here.
    later = log_rows(walked, "--since", boundary, "--campaign", "trial-onboarding")
    earlier = log_rows(walked, "--until", boundary)

    assert sorted(r["recipient_id"] for r in later) == ["r-1001", "r-1002", "r-1005"]
    assert {r["step_id"] for r in later} == {"first-board"}
    assert {(r["recipient_id"], r["campaign_id"], r["step_id"]) for r in earlier} == FIRST_TOUCHES
    assert len(earlier) == len(FIRST_TOUCHES)


def test_log_table_shows_the_filtered_rows(walked: Workspace) -> None:
    """The table format lists the rows the filters keep and no others."""
    result = walked.ok("log", "--campaign", "order-followup", env={"COLUMNS": "200"})

    assert "r-1004" in result.stdout
    assert "confirmation" in result.stdout
    assert "r-1001" not in result.stdout
    assert "welcome" not in result.stdout


def test_log_table_keeps_whole_values_when_piped(walked: Workspace) -> None:
    """Piped to another program, the table keeps campaign ids and reasons whole."""
    result = walked.ok("log", "--campaign", "trial-onboarding")

    assert "trial-onboarding" in result.stdout
    assert "value_ok" in result.stdout


# -- enroll ---------------------------------------------------------------------------------------


def test_enroll_by_hand_then_tick_sends_the_first_step(walked: Workspace) -> None:
    """``tact enroll`` puts a recipient in a campaign; the next tick sends the first step."""
    at = "2026-11-24T01:00:00Z"  # 10:00 on a Tuesday in Tokyo, the recipient's time zone

    enrolled = walked.ok("enroll", "trial-onboarding", "r-1003", "--at", at)
    walked.ok("tick", "--at", at)

    assert re.search(r"\benrolled 1\b", enrolled.stdout), enrolled.stdout
    sent = [m for m in walked.outbox("email") if m["recipient_id"] == "r-1003"]
    assert [(m["campaign_id"], m["step_id"], m["to"]) for m in sent] == [
        ("trial-onboarding", "welcome", "yui.tanaka@example.net")
    ]


def test_enroll_names_an_unknown_recipient_and_exits_1(walked: Workspace) -> None:
    """Enrolling an unknown recipient id exits 1 and names it."""
    result = walked.tact("enroll", "trial-onboarding", "r-9999")

    assert result.returncode == 1
    assert "r-9999" in result.stderr
    assert walked.sql("SELECT count(*) FROM enrollment WHERE recipient_id = 'r-9999'") == [(0,)]


def test_enroll_in_an_unknown_campaign_fails_with_a_message(walked: Workspace) -> None:
    """Enrolling in a campaign that is not loaded exits non-zero and names the campaign."""
    result = walked.tact("enroll", "no-such-campaign", "r-1003")

    assert result.returncode != 0
    assert "no-such-campaign" in squeeze(result.stderr)
    assert walked.sql("SELECT count(*) FROM enrollment WHERE recipient_id = 'r-1003'") == [(0,)]


# -- db upgrade -----------------------------------------------------------------------------------


def schema_of(workspace: Workspace) -> tuple[set[str], set[str], set[str]]:
    """The workspace database's table names, view names and ``send_log`` column names."""
    engine = sa.create_engine(workspace.database_url)
    try:
        inspector = sa.inspect(engine)
        columns = {column["name"] for column in inspector.get_columns("send_log")}
        return set(inspector.get_table_names()), set(inspector.get_view_names()), columns
    finally:
        engine.dispose()


def test_db_upgrade_creates_the_schema_in_a_new_database(unmigrated_workspace: Workspace) -> None:
    """``tact db upgrade``, run twice, creates the tables and analyst views in a database without them."""
    workspace = unmigrated_workspace
    if workspace.store == "sqlite":
        assert not workspace.database.exists()
    else:
        assert workspace.sql("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'") == [(0,)]

    workspace.ok("db", "upgrade")
    workspace.ok("db", "upgrade")

    tables, views, columns = schema_of(workspace)
    assert {"recipient", "consent", "attention", "enrollment", "touchpoint", "event", "send_log"} <= tables
    assert {"v_sends", "v_campaign_daily"} <= views
    assert set(SEND_LOG_COLUMNS) <= columns
    assert workspace.sql("SELECT count(*) FROM v_sends") == [(0,)]
    assert workspace.sql("SELECT count(*) FROM v_campaign_daily") == [(0,)]


# -- tick --at ------------------------------------------------------------------------------------


@sqlite_only  # no database: the instant is rejected before one is opened
@pytest.mark.parametrize(
    ("instant", "complaint"),
    [("yesterday", "ISO 8601"), ("2026-11-23T15:00:00", "offset")],
    ids=["not-a-timestamp", "naive"],
)
def test_tick_rejects_a_bad_instant(workspace: Workspace, instant: str, complaint: str) -> None:
    """``tact tick --at`` exits 2 on a malformed or offset-less timestamp, saying why."""
    result = workspace.tact("tick", "--at", instant)

    assert result.returncode == 2
    message = squeeze(result.stderr)
    assert instant in message
    assert complaint in message
    assert not workspace.database.exists()


# -- configuration --------------------------------------------------------------------------------


def with_unknown_database_key(workspace: Workspace) -> int:
    """Add ``urll`` to the config's ``[database]`` table; return the line it is on."""
    text = workspace.config.read_text(encoding="utf-8")
    text = text.replace("[database]\n", '[database]\nurll = "sqlite:///typo.db"\n', 1)
    workspace.config.write_text(text, encoding="utf-8")
    return text.splitlines().index('urll = "sqlite:///typo.db"') + 1


@sqlite_only  # no database: the configuration is rejected before one is opened
@pytest.mark.parametrize(
    "command",
    [
        ("log",),
        ("tick", "--at", FIRST_TICK),
        ("db", "upgrade"),
        ("explain", "r-1001"),
        ("enroll", "trial-onboarding", "r-1001"),
        ("recipients", "import", str(EXAMPLE_RECIPIENTS)),
        ("run",),
    ],
    ids=lambda command: "-".join(command[:2]).split("/")[0],
)
def test_unknown_config_key_exits_2_naming_it(workspace: Workspace, command: tuple[str, ...]) -> None:
    """A config file with an unknown key makes a command exit 2 with a message naming the key."""
    with_unknown_database_key(workspace)

    result = workspace.tact(*command, timeout=30)

    assert result.returncode == 2
    assert "urll" in result.stderr
    assert not workspace.database.exists()


@sqlite_only  # no database: nothing here opens one
def test_validate_reports_an_unknown_config_key(workspace: Workspace) -> None:
    """``tact validate`` checks the configuration too: an unknown key exits 1 naming it."""
    with_unknown_database_key(workspace)

    result = workspace.tact("validate")

    assert result.returncode == 1
    assert "urll" in result.stderr


@sqlite_only  # no database: nothing here opens one
def test_validate_places_an_unknown_config_key_at_its_line(workspace: Workspace) -> None:
    """``tact validate`` reports an unknown config key as ``config:line:col: message``."""
    line = with_unknown_database_key(workspace)

    result = workspace.tact("validate")

    found = diagnostics_for(workspace.config, result.stderr)
    assert [(row, "urll" in message) for row, _, message in found] == [(line, True)]


@sqlite_only  # about configuration precedence, seen through which SQLite file gets created
def test_environment_variable_overrides_the_database_url(workspace: Workspace) -> None:
    """``TACT_DATABASE__URL`` wins over the config file's ``[database] url``."""
    from_environment = workspace.root / "from-environment.db"

    workspace.ok("db", "upgrade", env={"TACT_DATABASE__URL": f"sqlite:///{from_environment}"})

    assert from_environment.is_file()
    assert not workspace.database.exists()


# -- explain --------------------------------------------------------------------------------------


def test_explain_shows_the_last_decisions(walked: Workspace) -> None:
    """``tact explain`` after a tick shows the recipient's last decisions and pending touch."""
    result = walked.ok("explain", "r-1001")

    text = squeeze(result.stdout)
    assert "r-1001" in text
    assert "trial-onboarding/welcome email: sent (value_ok)" in text
    assert "trial-onboarding/first-board (due 2026-11-24 15:00 UTC)" in text
    assert "net value" in text and "threshold 0" in text  # the value estimate's parts


@sqlite_only  # simulations run on in-memory SQLite databases of their own, not the workspace's
def test_simulate_prints_json_with_every_policy_and_writes_html(workspace: Workspace) -> None:
    """``tact simulate --json --html`` compares fixed, cap and value on a tiny population and
    writes a self-contained report."""
    report = workspace.root / "simulation.html"
    result = workspace.ok(
        "simulate", "--recipients", "40", "--days", "7", "--seed", "3", "--jobs", "1", "--json", "--html", report
    )

    data = json.loads(result.stdout)
    assert set(data["policies"]) == {"fixed", "cap", "value"}
    assert data["options"]["recipients"] == 40 and data["options"]["seed"] == 3
    for policy in data["policies"].values():
        assert {"sends_per_recipient_week", "engagement", "value_weighted_conversions"} <= set(policy["overall"])
        assert policy["consent_violations"] == 0
        assert 0 < policy["seconds"] <= data["options"]["seconds"]
    page = report.read_text(encoding="utf-8")
    assert "<svg" in page and "<script src" not in page


@sqlite_only  # no database: nothing here opens one
def test_simulate_rejects_an_unknown_policy(workspace: Workspace) -> None:
    """An unknown policy name is an error that names it."""
    result = workspace.tact("simulate", "--recipients", "10", "--days", "1", "--policies", "fixed,bogus")

    assert result.returncode == 2
    assert "bogus" in result.stderr


@sqlite_only  # no database: the campaigns directory is checked first
def test_simulate_names_a_missing_campaigns_directory_once(workspace: Workspace) -> None:
    """A missing campaigns directory is one ``error:`` line and exit 2, not log lines first."""
    missing = workspace.root / "no-such-campaigns"
    result = workspace.tact("simulate", "--campaigns", missing, "--recipients", "10", "--days", "1")

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {missing}:1:1: campaigns directory not found"]


def test_explain_an_unknown_recipient_exits_1(walked: Workspace) -> None:
    """``tact explain`` on an unknown id exits 1 and names it."""
    result = walked.tact("explain", "r-9999")

    assert result.returncode == 1
    assert "r-9999" in result.stderr
