"""The plots of ``tact report --html``, drawn from a :class:`~scheduler.analytics.Report`."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any

from scheduler.analytics import COMPLAINT_LIMIT, COMPLAINT_TARGET, TIERS, Report

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TOP_REASONS = 8
TIER_COLOURS = {"top": "#c0392b", "middle": "#2980b9", "rest": "#7f8c8d"}


def _days(days: list[str]) -> list[Any]:
    """Days as matplotlib plots them on a date axis (its type stubs accept numbers only)."""
    return [date.fromisoformat(day) for day in days]


def reasons_figure(report: Report) -> Figure | None:
    """Decisions by reason per day, stacked; the smallest reasons pooled as "other"."""
    from matplotlib.figure import Figure

    days = sorted(report.reasons_by_day)
    if not days:
        return None
    totals: dict[str, int] = {}
    for cells in report.reasons_by_day.values():
        for reason, n in cells.items():
            totals[reason] = totals.get(reason, 0) + n
    shown = sorted(totals, key=lambda r: -totals[r])[:TOP_REASONS]
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    axes = figure.subplots()
    bottom = [0] * len(days)
    series = [(reason, [report.reasons_by_day[d].get(reason, 0) for d in days]) for reason in shown]
    if len(totals) > len(shown):
        series.append(("other", [sum(n for r, n in report.reasons_by_day[d].items() if r not in shown) for d in days]))
    x = _days(days)
    for label, counts in series:
        axes.bar(x, counts, bottom=bottom, label=label, width=0.9)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    axes.set_ylabel("decisions per day")
    axes.legend(fontsize=8, ncols=3)
    figure.autofmt_xdate()
    return figure


def campaigns_figure(report: Report) -> Figure | None:
    """Sends, engaged sends and unsubscribes per campaign."""
    from matplotlib.figure import Figure

    if not report.campaigns:
        return None
    figure = Figure(figsize=(11, 0.5 * len(report.campaigns) + 1.6), layout="constrained")
    grid = figure.subplots(1, 3, sharey=True)
    labels = [c.campaign_id for c in report.campaigns]
    for axes, key, colour in zip(
        grid, ("sent", "engaged", "unsubscribed"), ("#2c3e50", "#27ae60", "#c0392b"), strict=True
    ):
        axes.barh(labels, [getattr(c, key) for c in report.campaigns], color=colour)
        axes.set_title(key, fontsize=10)
    grid[0].invert_yaxis()  # first campaign on top; the axis is shared
    return figure


def assets_figure(report: Report) -> Figure | None:
    """The attention asset now by value tier, and its weekly mean at decision time by tier."""
    from matplotlib.figure import Figure

    if not any(sum(counts) for counts in report.asset_histogram.values()) and not report.asset_by_week:
        return None
    figure = Figure(figsize=(11, 4), layout="constrained")
    distribution, trend = figure.subplots(1, 2)
    buckets = len(next(iter(report.asset_histogram.values()), []))
    centres = [(i + 0.5) / buckets for i in range(buckets)]
    for tier in TIERS:
        counts = report.asset_histogram.get(tier, [])
        total = sum(counts)
        if total:
            distribution.plot(centres, [c / total for c in counts], marker="o", label=tier, color=TIER_COLOURS[tier])
    distribution.set_xlabel("attention asset at last update")
    distribution.set_ylabel("share of the tier's recipients")
    distribution.set_xlim(0, 1)
    distribution.legend(fontsize=8)
    weeks = sorted(report.asset_by_week)
    for tier in TIERS:
        points = [
            (date.fromisoformat(w), report.asset_by_week[w][tier]) for w in weeks if tier in report.asset_by_week[w]
        ]
        if points:
            trend.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=tier, color=TIER_COLOURS[tier])
    trend.set_ylabel("mean asset at decision, per week")
    trend.set_ylim(0, 1)
    trend.legend(fontsize=8)
    figure.autofmt_xdate()
    return figure


def engagement_figure(report: Report) -> Figure | None:
    """Weekly engagement per send, all recipients against the top value tier."""
    from matplotlib.figure import Figure

    weeks = sorted(report.engagement_by_week)
    if not weeks:
        return None
    figure = Figure(figsize=(11, 3.6), layout="constrained")
    axes = figure.subplots()
    for label, tiers, colour in (("all recipients", TIERS, "#2c3e50"), ("top tier", ("top",), TIER_COLOURS["top"])):
        shown, rates = [], []
        for week in weeks:
            cells = [report.engagement_by_week[week].get(t, (0, 0)) for t in tiers]
            sent = sum(s for s, _ in cells)
            if sent:
                shown.append(week)
                rates.append(sum(e for _, e in cells) / sent)
        axes.plot(_days(shown), rates, marker="o", label=label, color=colour)
    axes.set_ylabel("engaged sends / sends, per week")
    axes.set_ylim(bottom=0)
    axes.legend(fontsize=8)
    figure.autofmt_xdate()
    return figure


def holdout_figure(report: Report) -> Figure | None:
    """Conversion rate of the model's and the holdout's enrollments, with 95 % intervals."""
    from matplotlib.figure import Figure

    arms = [report.arms[name] for name in ("model", "holdout") if name in report.arms]
    if not arms:
        return None
    figure = Figure(figsize=(6, 3.4), layout="constrained")
    axes = figure.subplots()
    errors = [1.96 * math.sqrt(a.rate * (1 - a.rate) / a.enrollments) if a.enrollments else 0 for a in arms]
    axes.bar(
        [a.arm for a in arms], [a.rate for a in arms], yerr=errors, capsize=8, color=["#2980b9", "#95a5a6"][: len(arms)]
    )
    axes.set_ylabel("enrollments converted")
    axes.yaxis.set_major_formatter(lambda value, _: f"{value:.1%}")
    return figure


def feedback_figure(report: Report) -> Figure | None:
    """Weekly complaint rate against the bulk-sender thresholds, and weekly unsubscribe rate."""
    from matplotlib.figure import Figure

    sends = report.weekly(report.sends_by_day)
    weeks = sorted(w for w, n in sends.items() if n)
    if not weeks:
        return None
    figure = Figure(figsize=(11, 3.6), layout="constrained")
    complaints, unsubscribes = figure.subplots(1, 2)
    x = _days(weeks)
    for axes, counts, colour, title in (
        (complaints, report.weekly(report.complained_by_day), "#c0392b", "complaints per send, per week"),
        (unsubscribes, report.weekly(report.unsubscribed_by_day), "#8e44ad", "unsubscribes per send, per week"),
    ):
        axes.plot(x, [counts.get(w, 0) / sends[w] for w in weeks], marker="o", color=colour)
        axes.set_title(title, fontsize=10)
        axes.yaxis.set_major_formatter(lambda value, _: f"{value:.2%}")
        axes.set_ylim(bottom=0)
    worst = max((report.weekly(report.complained_by_day).get(w, 0) / sends[w] for w in weeks), default=0.0)
    complaints.set_ylim(0, max(2 * COMPLAINT_LIMIT, 1.2 * worst))  # both thresholds in view
    complaints.axhline(COMPLAINT_TARGET, color="#e67e22", linestyle="--", label="keep under 0.1 %")
    complaints.axhline(COMPLAINT_LIMIT, color="#c0392b", linestyle=":", label="never 0.3 %")
    complaints.legend(fontsize=8)
    figure.autofmt_xdate()
    return figure


FIGURES: list[tuple[str, str, Callable[[Report], Figure | None]]] = [
    ("reasons", "Decisions by reason per day", reasons_figure),
    ("campaigns", "Sends, engagement and unsubscribes per campaign", campaigns_figure),
    ("assets", "Attention asset by value tier: now, and its trend", assets_figure),
    ("engagement", "Engagement per send: all recipients against the top tier", engagement_figure),
    ("holdout", "Model against holdout", holdout_figure),
    ("feedback", "Complaints and unsubscribes against bulk-sender thresholds", feedback_figure),
]
"""(key, title, builder) of each plot, in page order; a builder returns None when it has no data."""
