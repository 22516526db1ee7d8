"""``tact run`` as a real process: due touches go out, campaigns hot-reload, SIGTERM drains.

The daemon runs on the wall clock, so these campaigns are transactional and have no send
window: whatever the hour, a due touch is sent at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.acceptance.conftest import Daemon, Workspace

    StartDaemon = Callable[[Workspace], Daemon]

WELCOME = """\
id = "welcome"
name = "Welcome"
kind = "transactional"

[trigger]
event = "signed_up"

[[steps]]
id = "hello"
after = "0m"
channel = "email"
subject = "Hello {{ recipient.first_name }}"
text = "Hello {{ recipient.first_name }}, welcome aboard."
value = 0.9
"""

BROKEN_KEY_LINE = 11
WELCOME_BROKEN = WELCOME.replace('channel = "email"', 'chanel = "email"').replace(
    'subject = "Hello', 'subject = "Broken hello'
)

NURTURE_STEPS = {
    "intro": ('after = "0m"', "Intro"),
    # Far enough ahead that the test rewrites the file while this touch is still pending.
    "reminder": ('after = "15s"', "Reminder"),
    "outro": ('after = "0m"', "Outro"),
}


def nurture_campaign(step_ids: list[str]) -> str:
    """A three-step journey triggered by ``trial_started``, keeping only ``step_ids``."""
    text = 'id = "nurture"\nname = "Nurture"\nkind = "transactional"\n\n'
    text += '[trigger]\nevent = "trial_started"\n'
    for step_id in step_ids:
        after, subject = NURTURE_STEPS[step_id]
        text += (
            f'\n[[steps]]\nid = "{step_id}"\n{after}\nchannel = "email"\n'
            f'subject = "{subject}"\ntext = "{subject} for {{{{ recipient.first_name }}}}"\n'
            "value = 0.6\n"
        )
    return text


@pytest.fixture
def daemon_workspace(bare_workspace: Workspace) -> Workspace:
    """A workspace with the test campaigns and two recipients imported."""
    workspace = bare_workspace
    (workspace.campaigns / "welcome.toml").write_text(WELCOME, encoding="utf-8")
    (workspace.campaigns / "nurture.toml").write_text(
        nurture_campaign(["intro", "reminder", "outro"]), encoding="utf-8"
    )
    recipients = workspace.root / "recipients.csv"
    recipients.write_text(
        "id,email,first_name\nr-1,ann@example.com,Ann\nr-2,bob@example.com,Bob\n",
        encoding="utf-8",
    )
    workspace.ok("recipients", "import", recipients)
    return workspace


def import_event(workspace: Workspace, event_id: str, recipient_id: str, event_type: str) -> None:
    """Import one event that happened a minute ago (so its touches are due at once)."""
    at = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    path = workspace.root / f"{event_id}.jsonl"
    record = {"id": event_id, "recipient_id": recipient_id, "type": event_type, "at": at}
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    workspace.ok("events", "import", path)


def sent_steps(workspace: Workspace, recipient_id: str) -> list[str]:
    """Step ids of the messages the outbox holds for ``recipient_id``, in order."""
    return [m["step_id"] for m in workspace.outbox("email") if m["recipient_id"] == recipient_id]


def test_daemon_sends_due_touches_and_stops_cleanly_on_sigterm(
    start_daemon: StartDaemon, daemon_workspace: Workspace
) -> None:
    """The daemon sends due touches, logs JSON lines, and on SIGTERM exits 0 holding no lease."""
    import_event(daemon_workspace, "e-1", "r-1", "signed_up")
    daemon = start_daemon(daemon_workspace)

    daemon.wait_for(
        lambda: "hello" in sent_steps(daemon_workspace, "r-1"),
        what="the welcome email in the outbox",
    )
    status = daemon.stop()

    assert status == 0, daemon.describe()
    # Every stderr line is a JSON object (structlog's and the libraries' alike).
    entries = [json.loads(line) for line in daemon.stderr().splitlines() if line.strip()]
    events = [entry["event"] for entry in entries]
    assert "daemon_started" in events
    assert events[-1] == "daemon_stopped"
    assert all({"event", "level", "timestamp"} <= set(entry) for entry in entries)
    assert daemon_workspace.sql("SELECT count(*) FROM touchpoint WHERE lease_owner IS NOT NULL") == [(0,)]
    assert daemon_workspace.sql(
        "SELECT recipient_id, step_id, decision FROM send_log WHERE campaign_id = 'welcome'"
    ) == [("r-1", "hello", "sent")]
    welcome = next(m for m in daemon_workspace.outbox("email") if m["step_id"] == "hello")
    assert welcome["subject"] == "Hello Ann"


def test_broken_campaign_file_keeps_the_last_good_version_running(
    start_daemon: StartDaemon, daemon_workspace: Workspace
) -> None:
    """A campaign file broken while the daemon runs is reported with path:line:col and ignored."""
    import_event(daemon_workspace, "e-1", "r-1", "signed_up")
    daemon = start_daemon(daemon_workspace)
    daemon.wait_for(
        lambda: "hello" in sent_steps(daemon_workspace, "r-1"),
        what="the first welcome email",
    )
    campaign_file = daemon_workspace.campaigns / "welcome.toml"
    campaign_file.write_text(WELCOME_BROKEN, encoding="utf-8")
    assert "chanel" in WELCOME_BROKEN.splitlines()[BROKEN_KEY_LINE - 1]

    invalid = daemon.wait_for(
        lambda: daemon.logged("campaign_invalid"),
        what="campaign_invalid in the daemon's log",
    )
    import_event(daemon_workspace, "e-2", "r-2", "signed_up")
    daemon.wait_for(
        lambda: "hello" in sent_steps(daemon_workspace, "r-2"),
        what="the welcome email of a recipient who signed up after the file broke",
    )
    status = daemon.stop()

    assert status == 0, daemon.describe()
    errors = [str(entry.get("error", "")) for entry in invalid]
    assert any(f"welcome.toml:{BROKEN_KEY_LINE}:" in error and "chanel" in error for error in errors), errors
    second = [m for m in daemon_workspace.outbox("email") if m["recipient_id"] == "r-2"]
    assert [m["subject"] for m in second] == ["Hello Bob"]


@pytest.mark.slow
def test_removing_a_step_drops_its_pending_touchpoints(start_daemon: StartDaemon, daemon_workspace: Workspace) -> None:
    """A reload that removes a step drops its pending touchpoints (step_removed); the rest runs."""
    import_event(daemon_workspace, "e-1", "r-1", "trial_started")
    daemon = start_daemon(daemon_workspace)
    daemon.wait_for(
        lambda: "intro" in sent_steps(daemon_workspace, "r-1"),
        what="the intro email",
    )
    daemon.wait_for(
        lambda: daemon_workspace.sql(
            "SELECT state FROM touchpoint WHERE campaign_id = 'nurture' AND step_id = 'reminder' AND state = 'pending'"
        ),
        what="the reminder to be scheduled",
    )
    loads_before = len(daemon.logged("campaigns_loaded"))
    (daemon_workspace.campaigns / "nurture.toml").write_text(nurture_campaign(["intro", "outro"]), encoding="utf-8")
    daemon.wait_for(
        lambda: len(daemon.logged("campaigns_loaded")) > loads_before,
        what="the changed campaign to be loaded",
    )

    dropped = daemon.wait_for(
        lambda: daemon_workspace.sql(
            "SELECT decision, reason FROM send_log WHERE campaign_id = 'nurture' AND step_id = 'reminder'"
        ),
        what="a send_log row for the removed step",
        timeout=30,
    )
    daemon.wait_for(
        lambda: "outro" in sent_steps(daemon_workspace, "r-1"),
        what="the step after the removed one",
    )
    status = daemon.stop()

    assert dropped == [("dropped", "step_removed")]
    assert sent_steps(daemon_workspace, "r-1") == ["intro", "outro"]
    assert status == 0, daemon.describe()


def read_fifo_line(path: Path, daemon: Daemon) -> dict[str, Any]:
    """Open the FIFO ``path`` for reading (releasing the daemon's blocked write), read one line."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    received = b""

    def one_line() -> bool:
        nonlocal received
        with contextlib.suppress(BlockingIOError):  # nothing written yet
            received += os.read(descriptor, 65536)
        return received.endswith(b"\n")

    try:
        daemon.wait_for(one_line, what="the message written to the outbox FIFO")
    finally:
        os.close(descriptor)
    return dict(json.loads(received))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a POSIX FIFO")
def test_logs_stay_json_lines_while_a_tick_outlasts_the_interval(
    start_daemon: StartDaemon, daemon_workspace: Workspace
) -> None:
    """A tick slower than tick_interval (a blocked outbox) leaves stderr all JSON lines."""
    outbox = daemon_workspace.outbox_path("email")
    outbox.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(outbox)  # writing blocks until a reader opens it: the first send stalls the tick
    import_event(daemon_workspace, "e-1", "r-1", "signed_up")
    daemon = start_daemon(daemon_workspace)
    daemon.wait_for(lambda: daemon.logged("daemon_started"), what="the daemon to start")
    time.sleep(3)  # three tick intervals pass while the first tick waits on the outbox

    message = read_fifo_line(outbox, daemon)
    daemon.wait_for(
        lambda: daemon_workspace.sql("SELECT decision FROM send_log WHERE campaign_id = 'welcome'"),
        what="the stalled send to be recorded",
    )
    status = daemon.stop()

    assert message["step_id"] == "hello"
    assert status == 0, daemon.describe()
    not_json = []
    for line in daemon.stderr().splitlines():
        try:
            json.loads(line)
        except ValueError:
            not_json.append(line)
    assert not_json == []
