"""``tact report --html`` on a simulated 90-day run: the page opens in headless Chromium with
no console errors and no network requests, shows its plots, and every figure in it matches
the database (recomputed here from the raw tables, not through the views)."""

from __future__ import annotations

import math
import sqlite3
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.acceptance.conftest import Workspace, expect_success, sqlite_only
from tests.browser import open_page, require_chromium

PLOTS = ("reasons", "campaigns", "assets", "engagement", "holdout", "feedback")
ENGAGEMENT = ("opened", "clicked", "replied", "converted")


class Figures(HTMLParser):
    """Collects the text of every element carrying ``data-figure``."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[str, str] = {}
        self._key: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._key = dict(attrs).get("data-figure")

    def handle_data(self, data: str) -> None:
        if self._key is not None:
            self.figures[self._key] = self.figures.get(self._key, "") + data

    def handle_endtag(self, tag: str) -> None:
        self._key = None


def pct(value: float) -> str:
    return f"{value:.2%}"


def expected_figures(database: Path) -> dict[str, str]:
    """Every figure the page should show, computed from send_log, event, enrollment, recipient
    and attention rows in Python."""
    connection = sqlite3.connect(database)
    try:
        log = connection.execute(
            "SELECT campaign_id, decision, reason, enrollment_id, touchpoint_id FROM send_log"
        ).fetchall()
        events = connection.execute("SELECT e.type, e.touchpoint_id, t.campaign_id FROM event e JOIN touchpoint t "
                                    "ON t.id = e.touchpoint_id").fetchall()  # fmt: skip
        enrollments = connection.execute("SELECT id, campaign_id, converted_at FROM enrollment").fetchall()
        goals = {cid for cid, goal in connection.execute("SELECT id, goal FROM campaign") if goal}
        values = dict(connection.execute("SELECT id, value FROM recipient").fetchall())
        assets = dict(connection.execute("SELECT recipient_id, asset FROM attention").fetchall())
    finally:
        connection.close()
    figures = {"decisions": f"{len(log):,}"}
    for decision, n in Counter(row[1] for row in log).items():
        figures[f"decisions.{decision}"] = f"{n:,}"
    engaged_touches = {tp for kind, tp, _ in events if kind in ENGAGEMENT}
    sent = [row for row in log if row[1] == "sent"]
    converted = Counter(cid for _, cid, when in enrollments if when is not None)
    for campaign in {row[0] for row in log}:
        figures |= {
            f"campaign.{campaign}.{decision}": f"{sum(1 for r in log if r[0] == campaign and r[1] == decision):,}"
            for decision in ("sent", "deferred", "dropped")
        }
        engaged = sum(1 for r in sent if r[0] == campaign and r[4] in engaged_touches)
        figures[f"campaign.{campaign}.engaged"] = f"{engaged:,}"
        for kind in ("unsubscribed", "complained"):
            figures[f"campaign.{campaign}.{kind}"] = f"{sum(1 for k, _, c in events if k == kind and c == campaign):,}"
        figures[f"campaign.{campaign}.converted"] = f"{converted[campaign]:,}"
    figures["unsubscribe_rate"] = pct(sum(1 for k, _, _ in events if k == "unsubscribed") / len(sent))
    figures["complaint_rate"] = pct(sum(1 for k, _, _ in events if k == "complained") / len(sent))
    ranked = sorted(values.values(), reverse=True)
    tiers: dict[str, list[str]] = {"top": [], "middle": [], "rest": []}
    for rid, value in values.items():
        share = sum(1 for v in ranked if v >= value) / len(ranked)  # CUME_DIST, descending
        tiers["top" if share <= 0.2 else "middle" if share <= 0.5 else "rest"].append(rid)
    for tier, members in tiers.items():
        figures[f"tier.{tier}.recipients"] = f"{len(members):,}"
        known = [assets[r] for r in members if r in assets]
        figures[f"tier.{tier}.mean_asset"] = f"{sum(known) / len(known):.3f}" if known else "–"
    campaign_of = {eid: cid for eid, cid, _ in enrollments}
    reached = {eid for eid, _, when in enrollments if when is not None}
    arms: dict[str, set[int]] = {"model": set(), "holdout": set()}
    for _, _, reason, eid, _ in log:
        arm = "holdout" if reason == "holdout" else "model" if reason in ("value_ok", "value_below_threshold",
                                                                          "fatigue", "explore") else None  # fmt: skip
        if arm and campaign_of.get(eid) in goals:
            arms[arm].add(eid)
    rates = {}
    for arm, arm_enrollments in arms.items():
        won = len(arm_enrollments & reached)
        rates[arm] = (won / len(arm_enrollments), len(arm_enrollments))
        figures |= {f"arm.{arm}.enrollments": f"{len(arm_enrollments):,}", f"arm.{arm}.converted": f"{won:,}"}
        figures[f"arm.{arm}.rate"] = pct(won / len(arm_enrollments))
    (model, n_model), (holdout, n_holdout) = rates["model"], rates["holdout"]
    spread = 1.96 * math.sqrt(model * (1 - model) / n_model + holdout * (1 - holdout) / n_holdout)
    figures["lift.difference"] = f"{model - holdout:+.2%}"
    figures["lift.interval"] = f"{model - holdout - spread:+.2%} to {model - holdout + spread:+.2%}"
    figures["lift.incremental"] = f"{(model - holdout) * n_model:+.1f} conversions"
    return figures


# SQLite only: ``simulate --database`` keeps its run in a new SQLite file, which is what the
# report reads; and the 300-recipient, 90-day simulation is the suite's longest test (about 35 s).
@sqlite_only
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_html_report_of_a_simulated_run(workspace: Workspace, tmp_path: Path) -> None:
    """The report of a simulated 90-day run loads offline in Chromium with its plots, and every
    figure in it matches the database."""
    require_chromium()
    expect_success(
        workspace.tact(
            "simulate", "--recipients", "300", "--days", "90", "--policies", "value", "--jobs", "1",
            "--database", workspace.database, timeout=480,
        )
    )  # fmt: skip
    page = tmp_path / "report.html"
    workspace.ok("report", "--html", page)
    shown = page.read_text(encoding="utf-8")
    assert "<script" not in shown and "http://" not in shown.replace("http://www.w3.org/", "")

    report = open_page(
        page,
        evaluate={
            "plots": "Array.from(document.querySelectorAll('figure[data-plot]'), f => f.dataset.plot)",
            "drawn": "Array.from(document.querySelectorAll('figure[data-plot] svg'), s => s.getBBox().height > 50)",
        },
        screenshot=True,
    )
    (tmp_path / "report.png").write_bytes(report.screenshot or b"")
    assert report.console_errors == []
    assert report.requests == []
    assert report.values["plots"] == list(PLOTS)
    assert report.values["drawn"] == [True] * len(PLOTS)
    assert (
        report.screenshot is not None and report.screenshot.startswith(b"\x89PNG") and len(report.screenshot) > 50_000
    )

    parser = Figures()
    parser.feed(shown)
    expected = expected_figures(workspace.database)
    assert parser.figures == expected
    assert int(expected["decisions"].replace(",", "")) > 5_000
