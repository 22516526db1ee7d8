"""A small simulation end to end: the real engine, the shipped campaigns, every policy."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from scheduler.errors import TactError
from scheduler.simulation import (
    CapPoint,
    SimulationOptions,
    SimulationResult,
    render_text,
    run_simulation,
    to_json,
    write_html,
)

CAMPAIGNS = Path(__file__).resolve().parents[2] / "campaigns"
METRIC_KEYS = {
    "recipients", "sends", "transactional_sends", "sends_per_recipient_week", "engagement",
    "engagement_per_send", "conversions", "value_weighted_conversions", "unsubscribes", "complaints",
    "unsubscribes_per_1000", "complaints_per_1000", "mean_final_asset", "mean_final_trust",
}  # fmt: skip
OPTIONS = SimulationOptions(
    recipients=60,
    days=14,
    seed=5,
    campaigns_dir=CAMPAIGNS,
    jobs=1,
    policies=("fixed", "cap", "value"),
    cap_grid=(CapPoint(email=1, min_gap="48h", sms=1),),
)


@pytest.fixture(scope="module")
def result() -> SimulationResult:
    """One tiny simulation shared by the tests of this module."""
    return run_simulation(OPTIONS)


def test_no_policy_violates_consent(result: SimulationResult) -> None:
    """No run sends marketing to anyone who unsubscribed, complained or never opted in."""
    assert [run.consent_violations for run in result.runs] == [0, 0, 0]


def test_every_policy_sends_and_logs_decisions(result: SimulationResult) -> None:
    """Each policy sends marketing and logs its own kind of send decision."""
    policies = result.policies()
    assert set(policies) == {"fixed", "cap", "value"}
    assert all(run.overall.sends > 0 for run in policies.values())
    assert policies["fixed"].decisions.get("sent:fixed", 0) > 0
    assert "sent:value_ok" not in policies["fixed"].decisions
    assert "sent:holdout" not in policies["value"].decisions


def test_cap_sends_no_more_than_fixed(result: SimulationResult) -> None:
    """A frequency cap on top of the fixed cadence never sends more."""
    policies = result.policies()
    assert policies["cap"].overall.sends <= policies["fixed"].overall.sends
    assert (
        policies["cap"].decisions.get("deferred:frequency_cap", 0)
        + policies["cap"].decisions.get("dropped:frequency_cap", 0)
        > 0
    )


def test_top20_is_a_fifth_of_the_audience(result: SimulationResult) -> None:
    """The top tier holds 20 % of recipients and no more sends than everyone together."""
    fixed = result.policies()["fixed"]
    assert fixed.top20.recipients == 12
    assert fixed.top20.sends <= fixed.overall.sends


def test_json_has_the_documented_keys(result: SimulationResult) -> None:
    """The JSON export carries options, policies, the cap grid, the comparison and the series."""
    document = to_json(result)
    assert set(document) == {"options", "policies", "cap_grid", "comparison", "series"}
    assert document["options"]["recipients"] == 60
    for name in ("fixed", "cap", "value"):
        assert set(document["policies"][name]["overall"]) == METRIC_KEYS
        assert set(document["policies"][name]["top20"]) == METRIC_KEYS
    assert document["policies"]["cap"]["config"]["caps"]["per_channel"] == {"email": 1, "sms": 1}
    assert [point["best"] for point in document["cap_grid"]] == [True]
    comparison = document["comparison"]
    interval = comparison["value_weighted_conversions"]
    assert interval["low"] <= interval["difference"] <= interval["high"]
    assert set(comparison["unsubscribes_and_complaints_per_1000"]) >= {"difference", "low", "high"}
    series = document["series"]["value"]
    assert len(series["sends"]) == 2
    assert set(series["asset_by_tier"]) == {"top20", "next30", "rest"}
    assert set(series["asset_by_tier"]["top20"][0]) == {"mean", "q1", "median", "q3"}


def test_value_run_reports_the_kappa_it_learned() -> None:
    """The value run reports the κ its engine learned from the simulated answers; fixed learns none."""
    learning = {"learn_min_touches": 50, "learn_min_answered": 5, "learn_window": "10d", "kappa_learning": "apply"}
    options = replace(OPTIONS, policies=("fixed", "value"), value_overrides=learning)
    result = run_simulation(options)
    document = to_json(result)
    assert document["policies"]["fixed"]["learned_kappa"] == {}
    assert document["policies"]["fixed"]["learned_unsubscribe"] == {}
    fit = document["policies"]["value"]["learned_kappa"]["email"]
    assert set(fit) == {
        "kappa", "steepness", "estimate", "standard_error", "touches", "answered", "observed_fatigue", "applied",
    }  # fmt: skip
    assert fit["applied"] is True
    assert 0.1 <= fit["kappa"] <= 1.5
    assert fit["touches"] >= 50
    console = Console(record=True, width=200)
    render_text(result, console)
    assert f"value learned kappa on email: {fit['kappa']:.2f}" in console.export_text()


def test_value_run_measuring_reports_the_fits_at_its_end() -> None:
    """Measuring fits κ and the unsubscribe rate once, at the end of the run, and reports them
    unapplied."""
    learning = {
        "learn_min_touches": 50, "learn_min_answered": 5, "learn_window": "10d",
        "kappa_learning": "measure", "unsubscribe_learning": "measure",
    }  # fmt: skip
    options = replace(OPTIONS, policies=("value",), value_overrides=learning)
    result = run_simulation(options)
    value = to_json(result)["policies"]["value"]
    fit = value["learned_kappa"]["email"]
    assert fit["applied"] is False
    assert fit["touches"] >= 50
    assert 0.1 <= fit["kappa"] <= 1.5
    risk = value["learned_unsubscribe"]["email"]
    assert set(risk) == {"ratio", "observed", "expected", "touches", "base", "applied"}
    assert risk["applied"] is False
    assert risk["touches"] == fit["touches"]
    assert 0.1 <= risk["ratio"] <= 10.0
    console = Console(record=True, width=240)
    render_text(result, console)
    line = f"value learned unsubscribe rate on email: {risk['ratio']:.2f} × the configured base"
    assert line in console.export_text()


def test_text_report_names_every_policy(result: SimulationResult) -> None:
    """The terminal report shows each policy, the best-cap rule and the comparison."""
    console = Console(record=True, width=220)
    render_text(result, console)
    text = console.export_text()
    for expected in ("fixed", "cap 1/7d gap 48h", "value", "best cap", "value-weighted conversions"):
        assert expected in text


def test_html_report_is_self_contained(result: SimulationResult, tmp_path: Path) -> None:
    """The HTML report embeds SVG plots and loads nothing from elsewhere."""
    path = tmp_path / "report.html"
    write_html(result, path)
    page = path.read_text()
    assert page.count("<svg") == 3
    assert "<script" not in page
    assert "<link" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "url(http" not in page and "@import" not in page


@pytest.mark.slow
def test_parallel_runs_match_serial_runs() -> None:
    """Worker processes give exactly the figures of an in-process run (everything is seeded)."""
    options = replace(OPTIONS, recipients=30, days=4, policies=("fixed", "cap"))
    serial = to_json(run_simulation(options))
    parallel = to_json(run_simulation(replace(options, jobs=2)))
    for document in (serial, parallel):
        document["options"].pop("seconds")
        document["options"].pop("jobs")
        for run in (*document["policies"].values(), *document["cap_grid"]):
            assert run.pop("seconds") > 0  # wall time: the one figure that differs between runs
    assert parallel == serial


def test_unknown_world_is_a_tact_error() -> None:
    """An unknown world stops the simulation before any run, with the known names."""
    with pytest.raises(TactError, match="light-fatigue"):
        run_simulation(replace(OPTIONS, world="sunny"))
