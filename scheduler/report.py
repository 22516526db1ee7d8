"""``tact report``: a terminal summary and a self-contained HTML page of what Tact did.

The figures come from :mod:`scheduler.analytics`. In the HTML page every number sits in a
table cell carrying ``data-figure="<key>"``, so it can be checked against the database; the
plots draw the same numbers.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from scheduler.analytics import COMPLAINT_LIMIT, COMPLAINT_TARGET, TIERS, Report
from scheduler.plots import STYLE, svg, svg_figures

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Cell = tuple[str, str]  # (data-figure key, shown text)


def _pct(value: float) -> str:
    return f"{value:.2%}"


def _period(report: Report) -> str:
    if report.first_day is None:
        return "no decisions in the period"
    scope = f", campaign {report.filter.campaign}" if report.filter.campaign else ""
    return f"{report.first_day} to {report.last_day} (UTC days){scope}"


def _sections(report: Report) -> list[tuple[str, list[str], list[tuple[str, list[Cell]]]]]:
    """The report's tables: (title, column headers, rows of (label, cells))."""
    overview = [
        ("decisions", [("decisions", f"{sum(report.decisions.values()):,}")]),
        *((f"{name}", [(f"decisions.{name}", f"{n:,}")]) for name, n in sorted(report.decisions.items())),
        ("unsubscribes per send", [("unsubscribe_rate", _pct(report.unsubscribe_rate))]),
        ("complaints per send", [("complaint_rate", _pct(report.complaint_rate))]),
    ]
    campaigns = [
        (
            c.campaign_id,
            [
                (f"campaign.{c.campaign_id}.{key}", f"{getattr(c, key):,}")
                for key in ("sent", "deferred", "dropped", "engaged", "unsubscribed", "complained", "converted")
            ],
        )
        for c in report.campaigns
    ]
    tiers = [
        (
            tier,
            [
                (f"tier.{tier}.recipients", f"{report.tier_recipients.get(tier, 0):,}"),
                (f"tier.{tier}.mean_asset", _number(report.tier_mean_asset.get(tier))),
            ],
        )
        for tier in TIERS
    ]
    arms = [
        (
            arm.arm,
            [
                (f"arm.{arm.arm}.enrollments", f"{arm.enrollments:,}"),
                (f"arm.{arm.arm}.converted", f"{arm.converted:,}"),
                (f"arm.{arm.arm}.rate", _pct(arm.rate)),
            ],
        )
        for arm in sorted(report.arms.values(), key=lambda a: a.arm, reverse=True)
    ]
    lift = report.lift()
    if lift is not None:
        arms.append(
            (
                "model − holdout",
                [
                    ("lift.incremental", f"{lift.incremental:+.1f} conversions"),
                    ("lift.difference", f"{lift.difference:+.2%}"),
                    ("lift.interval", f"{lift.low:+.2%} to {lift.high:+.2%}"),
                ],
            )
        )
    return [
        ("Overview", ["figure", "value"], overview),
        (
            "Campaigns",
            ["campaign", "sent", "deferred", "dropped", "engaged", "unsubscribed", "complained", "converted"],
            campaigns,
        ),
        ("Value tiers (attention asset at each recipient's last update)", ["tier", "recipients", "mean asset"], tiers),
        (
            "Model against holdout (enrollments reaching the campaign goal)",
            ["arm", "enrollments", "converted", "rate"],
            arms,
        ),
    ]


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def render_text(report: Report, console: Console) -> None:
    """Print the summary tables and warnings."""
    console.print(f"Tact report: {_period(report)}", highlight=False)
    for title, headers, rows in _sections(report):
        table = Table(*headers, title=title, title_justify="left")
        for label, cells in rows:
            table.add_row(label, *(text for _, text in cells))
        console.print(table)
    console.print(
        f"Complaint rate {_pct(report.complaint_rate)} (keep under {COMPLAINT_TARGET:.1%}, never "
        f"{COMPLAINT_LIMIT:.1%}); unsubscribe rate {_pct(report.unsubscribe_rate)}.",
        highlight=False,
    )
    for warning in report.warnings():
        console.print(f"warning: {warning}", style="bold yellow", highlight=False)


def _html_table(title: str, headers: list[str], rows: Iterable[tuple[str, list[Cell]]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        f"<tr><th>{html.escape(label)}</th>"
        + "".join(f'<td data-figure="{html.escape(key)}">{html.escape(text)}</td>' for key, text in cells)
        + "</tr>"
        for label, cells in rows
    )
    return f"<h2>{html.escape(title)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_html(report: Report, path: Path) -> None:
    """Write one self-contained HTML file: tables, warnings and inline SVG plots."""
    from scheduler.report_plots import FIGURES

    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<title>Tact report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Tact report</h1>",
        f"<p>{html.escape(_period(report))}.</p>",
    ]
    parts.extend(f"<p class='warning'>{html.escape(w)}</p>" for w in report.warnings())
    for title, headers, rows in _sections(report):
        parts.append(_html_table(title, headers, rows))
    with svg_figures("tact-report"):
        for key, title, build in FIGURES:
            figure: Figure | None = build(report)
            if figure is not None:
                parts.append(f"<h2>{html.escape(title)}</h2><figure data-plot='{key}'>{svg(figure)}</figure>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
