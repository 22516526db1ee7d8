"""Showing a simulation: rich tables in the terminal, a JSON document, a self-contained HTML report.

JSON keys (stable; numbers are plain floats and ints):

- ``options``: recipients, days, seed, start, world, world_description, policies, jobs,
  campaigns_dir, config_path, value_overrides, cap_grid (each ``{email, sms, min_gap}``),
  seconds (wall time of the whole simulation);
- ``policies``: ``fixed``, ``cap`` (the best grid point) and ``value``, each with ``label``,
  ``config`` (the ``caps`` and ``attention`` overrides of the run), ``overall`` and ``top20``
  (the metrics below), ``decisions`` (send_log rows by ``decision:reason``),
  ``consent_violations``, ``learned_kappa`` (per channel, the κ the engine learned by the end
  of the run: ``kappa``, ``steepness``, ``estimate``, ``standard_error``, ``touches``,
  ``answered``, ``observed_fatigue``, ``applied``; empty when it learned nothing) and ``seconds`` (the run's
  own wall time, in its worker);
- ``cap_grid``: every cap run, as a policy entry plus ``best`` (true for the chosen one);
- ``comparison``: value against the best cap, paired over recipients: ``baseline``,
  ``treatment``, ``rounds`` and, for ``value_weighted_conversions`` (totals) and
  ``unsubscribes_and_complaints_per_1000``, ``difference``, ``low``, ``high`` (95 % bootstrap
  interval), ``baseline``, ``treatment``; ``null`` unless both ran;
- ``series``: per policy, weekly ``sends``, ``engagement``, ``conversions``, ``unsubscribes`` and
  ``asset_by_tier`` (``top20``, ``next30``, ``rest``: weekly ``{mean, q1, median, q3}``).

Metric keys: recipients, sends (marketing), transactional_sends, sends_per_recipient_week,
engagement (touches that drew a click, reply or conversion), engagement_per_send, conversions,
value_weighted_conversions (sum of true value), unsubscribes, complaints,
unsubscribes_per_1000, complaints_per_1000, mean_final_asset (the model's), mean_final_trust
(the population's hidden trust).
"""

from __future__ import annotations

import html
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from scheduler.plots import STYLE, svg, svg_figures
from scheduler.simulation.metrics import VALUE_TIERS, Metrics, PolicyResult, SimulationResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("sends", "sends", "{:,}"),
    ("sends_per_recipient_week", "sends / recipient-week", "{:.2f}"),
    ("engagement_per_send", "engagement / send", "{:.3f}"),
    ("engagement", "engagement", "{:,}"),
    ("conversions", "conversions", "{:,}"),
    ("value_weighted_conversions", "value-weighted conversions", "{:,.1f}"),
    ("unsubscribes_per_1000", "unsubscribes / 1,000", "{:.1f}"),
    ("complaints_per_1000", "complaints / 1,000", "{:.2f}"),
    ("mean_final_asset", "mean final asset", "{:.3f}"),
    ("mean_final_trust", "mean hidden trust", "{:.3f}"),
)
BEST_RULE = "best cap: most value-weighted conversions (ties: fewer unsubscribes + complaints)"
POLICY_COLOURS = {"fixed": "#7f7f7f", "cap": "#1f77b4", "value": "#d62728"}
TIER_COLOURS = {"top20": "#d62728", "next30": "#ff7f0e", "rest": "#1f77b4"}


def _cells(metrics: Metrics) -> list[str]:
    values = asdict(metrics)
    return [fmt.format(values[key]) for key, _, fmt in COLUMNS]


def _rows(result: SimulationResult, group: str) -> list[tuple[str, list[str]]]:
    return [(run.run.label, _cells(getattr(run, group))) for run in result.policies().values()]


def _grid_rows(result: SimulationResult) -> list[tuple[str, list[str]]]:
    return [
        (run.run.label + (" ★ best" if run is result.best_cap else ""), _cells(run.overall)) for run in result.cap_grid
    ]


def _comparison_lines(result: SimulationResult) -> list[str]:
    comparison = result.comparison
    if comparison is None:
        return []
    value, losses = comparison.value_weighted_conversions, comparison.unsubscribes_and_complaints_per_1000
    return [
        f"{comparison.treatment} − {comparison.baseline}, paired over recipients "
        f"({comparison.rounds} bootstrap rounds, 95 % intervals):",
        f"  value-weighted conversions: {value.difference:+,.1f} ({value.low:+,.1f} to {value.high:+,.1f}); "
        f"{value.treatment:,.1f} against {value.baseline:,.1f}",
        f"  unsubscribes + complaints per 1,000: {losses.difference:+.1f} ({losses.low:+.1f} to {losses.high:+.1f}); "
        f"{losses.treatment:.1f} against {losses.baseline:.1f}",
    ]


def _decision_reasons(result: SimulationResult) -> list[str]:
    return sorted({key for run in result.policies().values() for key in run.decisions})


def render_text(result: SimulationResult, console: Console) -> None:
    """Print the policies' tables (all recipients, then the top 20 %), the cap grid, the
    comparison and the decisions by reason."""
    options = result.options
    console.print(
        f"[bold]Simulation[/bold]: {options.recipients:,} recipients × {options.days} days, seed {options.seed}, "
        f"world [bold]{result.world.name}[/bold] ({result.world.description}); {result.seconds:.0f} s"
    )
    for title, group in (("all recipients", "overall"), ("top 20 % by true value", "top20")):
        console.print(_table(f"Policies: {title}", "policy", _rows(result, group)))
    if result.cap_grid:
        console.print(_table("Cap grid (all recipients)", "cap", _grid_rows(result)))
        console.print(BEST_RULE)
    for line in _comparison_lines(result):
        console.print(line)
    for name, run in result.policies().items():
        for channel, fit in run.learned_kappa.items():
            state = "" if fit["applied"] else " (measured, not applied)"
            console.print(
                f"{name} learned kappa on {channel}: {fit['kappa']:.2f}{state}"
                f" (answers fit {fit['estimate']:.2f} ± {fit['standard_error']:.2f} from {fit['touches']:,} sends;"
                f" steepness {fit['steepness']:.2f})"
            )
        for channel, risk in run.learned_unsubscribe.items():
            state = "" if risk["applied"] else " (measured, not applied)"
            console.print(
                f"{name} learned unsubscribe rate on {channel}: {risk['ratio']:.2f} × the configured base{state}"
                f" ({risk['observed']:.0f} unsubscribes and complaints where {risk['expected']:.1f} were expected,"
                f" from {risk['touches']:,} sends)"
            )
    violations = {name: run.consent_violations for name, run in result.policies().items()}
    for run in result.cap_grid:
        violations[run.run.label] = run.consent_violations
    broken = {name: count for name, count in violations.items() if count}
    if broken:
        console.print(f"[bold red]consent violations[/bold red]: {broken}")
    else:
        console.print("consent violations: none")
    decisions = Table(title="Decisions by reason (send_log rows)")
    decisions.add_column("decision:reason")
    policies = result.policies()
    for name in policies:
        decisions.add_column(name, justify="right")
    for key in _decision_reasons(result):
        decisions.add_row(key, *(f"{run.decisions.get(key, 0):,}" for run in policies.values()))
    console.print(decisions)


def _table(title: str, first: str, rows: list[tuple[str, list[str]]]) -> Table:
    table = Table(title=title)
    table.add_column(first)
    for _, header, _ in COLUMNS:
        table.add_column(header, justify="right")
    for label, cells in rows:
        table.add_row(label, *cells)
    return table


# -- JSON ------------------------------------------------------------------------------------


def _policy_json(run: PolicyResult) -> dict[str, Any]:
    return {
        "label": run.run.label,
        "config": {"caps": run.run.caps, "attention": run.run.attention},
        "overall": asdict(run.overall),
        "top20": asdict(run.top20),
        "decisions": dict(run.decisions),
        "consent_violations": run.consent_violations,
        "learned_kappa": run.learned_kappa,
        "learned_unsubscribe": run.learned_unsubscribe,
        "seconds": run.seconds,
    }


def _series_json(run: PolicyResult) -> dict[str, Any]:
    series: dict[str, Any] = {name: list(values) for name, values in run.weekly.items()}
    series["asset_by_tier"] = {tier: [asdict(week[tier]) for week in run.asset_weeks] for tier in VALUE_TIERS}
    return series


def to_json(result: SimulationResult) -> dict[str, Any]:
    """The result as a JSON-ready dict (keys in the module docstring)."""
    options = result.options
    return {
        "options": {
            "recipients": options.recipients,
            "days": options.days,
            "seed": options.seed,
            "start": options.start.isoformat(),
            "world": options.world,
            "world_description": result.world.description,
            "policies": list(options.policies),
            "jobs": options.jobs,
            "campaigns_dir": str(options.campaigns_dir) if options.campaigns_dir else None,
            "config_path": str(options.config_path) if options.config_path else None,
            "value_overrides": dict(options.value_overrides),
            "cap_grid": [{"email": p.email, "sms": p.sms, "min_gap": p.min_gap} for p in options.cap_grid],
            "seconds": result.seconds,
        },
        "policies": {name: _policy_json(run) for name, run in result.policies().items()},
        "cap_grid": [{**_policy_json(run), "best": run is result.best_cap} for run in result.cap_grid],
        "comparison": result.comparison.as_dict() if result.comparison is not None else None,
        "series": {name: _series_json(run) for name, run in result.policies().items()},
    }


# -- HTML ------------------------------------------------------------------------------------


def _volume_figure(result: SimulationResult) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2), layout="constrained")
    conversions, losses = figure.subplots(1, 2)
    runs = [*result.policies().values(), *(r for r in result.cap_grid if r is not result.best_cap)]
    for run in runs:
        colour = POLICY_COLOURS.get(run.run.policy, "black")
        volume = run.overall.sends_per_recipient_week
        loss = run.overall.unsubscribes_per_1000 + run.overall.complaints_per_1000
        for axes, y in ((conversions, run.overall.value_weighted_conversions), (losses, loss)):
            axes.scatter([volume], [y], color=colour, s=40, marker="o" if run.run.policy != "cap" else "s")
            axes.annotate(_short(run), (volume, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    conversions.set(xlabel="marketing sends per recipient-week", ylabel="value-weighted conversions")
    losses.set(xlabel="marketing sends per recipient-week", ylabel="unsubscribes + complaints per 1,000")
    conversions.set_title("Volume against conversions", fontsize=10)
    losses.set_title("Volume against unsubscribes and complaints", fontsize=10)
    return figure


def _short(run: PolicyResult) -> str:
    return run.run.label.removeprefix("cap ") if run.run.cap is not None else run.run.label


def _asset_figure(result: SimulationResult) -> Figure:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    policies = result.policies()
    figure = Figure(figsize=(4 * max(1, len(policies)), 3.5), layout="constrained")
    axes_list = figure.subplots(1, max(1, len(policies)), sharey=True, squeeze=False)[0]
    for axes, run in zip(axes_list, policies.values(), strict=False):
        weeks = list(range(1, len(run.asset_weeks) + 1))
        for tier in VALUE_TIERS:
            spreads = [week[tier] for week in run.asset_weeks]
            colour = TIER_COLOURS[tier]
            axes.plot(weeks, [s.mean for s in spreads], color=colour, label=tier)
            axes.fill_between(weeks, [s.q1 for s in spreads], [s.q3 for s in spreads], color=colour, alpha=0.15)
        axes.set_title(run.run.label, fontsize=10)
        axes.set_xlabel("week")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes_list[0].set_ylabel("model asset (mean, quartiles)")
    axes_list[0].legend(fontsize=8)
    return figure


def _series_figure(result: SimulationResult) -> Figure:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(11, 6), layout="constrained")
    grid = figure.subplots(2, 2)
    names = ("sends", "engagement", "conversions", "unsubscribes")
    for axes, series in zip(grid.flat, names, strict=True):
        for name, run in result.policies().items():
            values = run.weekly[series]
            axes.plot(range(1, len(values) + 1), values, color=POLICY_COLOURS.get(name, "black"), label=name)
        axes.set_title(f"marketing {series} per week" if series == "sends" else f"{series} per week", fontsize=10)
        axes.set_xlabel("week")
        axes.set_ylim(bottom=0)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    grid.flat[0].legend(fontsize=8)
    return figure


def _html_table(title: str, first: str, rows: list[tuple[str, list[str]]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in (first, *(header for _, header, _ in COLUMNS)))
    body = "".join(
        f"<tr><th>{html.escape(label)}</th>{''.join(f'<td>{html.escape(c)}</td>' for c in cells)}</tr>"
        for label, cells in rows
    )
    return f"<h2>{html.escape(title)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_html(result: SimulationResult, path: Path) -> None:
    """Write one self-contained HTML file (tables and inline SVG plots; opens offline)."""
    options = result.options
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>Tact simulation</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Tact simulation</h1>",
        f"<p>{options.recipients:,} recipients × {options.days} days from {options.start:%Y-%m-%d}, seed "
        f"{options.seed}, world <b>{html.escape(result.world.name)}</b> ({html.escape(result.world.description)}). "
        "Each policy ran the real engine on its own in-memory database; the holdout is off.</p>",
        _html_table("Policies: all recipients", "policy", _rows(result, "overall")),
        _html_table("Policies: top 20 % by true value", "policy", _rows(result, "top20")),
    ]
    if result.cap_grid:
        parts.append(_html_table("Cap grid (all recipients)", "cap", _grid_rows(result)))
        parts.append(f"<p>{html.escape(BEST_RULE)}</p>")
    lines = _comparison_lines(result)
    if lines:
        parts.append("<h2>Comparison</h2><pre>" + html.escape("\n".join(lines)) + "</pre>")
    with svg_figures("tact-simulation"):
        for title, build in (
            ("Volume, conversions and unsubscribes", _volume_figure),
            ("Weekly series", _series_figure),
            ("Attention asset by value tier", _asset_figure),
        ):
            parts.append(f"<h2>{html.escape(title)}</h2><figure>{svg(build(result))}</figure>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
