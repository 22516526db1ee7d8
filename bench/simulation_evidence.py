"""The attention model's evidence: `tact simulate` over several seeds, compared per seed.

Runs ``tact simulate --recipients N --days D --seed S --json`` for each seed (a fresh process,
as a user would), then prints, per seed and on average, how the value policy compares with the
best frequency cap and with fixed cadence, the paired 95 % confidence interval the simulator
reports for value-weighted conversions, and each run's wall time.

    .venv/bin/python bench/simulation_evidence.py --recipients 5000 --days 90 --seeds 1 2 3 4 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TACT = Path(sys.executable).with_name("tact")


def simulate(recipients: int, days: int, seed: int, world: str) -> tuple[dict[str, Any], float]:
    """One `tact simulate` run: its JSON and its wall time in seconds."""
    command = [str(TACT), "simulate", "--recipients", str(recipients), "--days", str(days)]
    command += ["--seed", str(seed), "--world", world, "--json"]
    began = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout), time.perf_counter() - began


def losses(metrics: dict[str, float]) -> float:
    """Unsubscribes plus complaints per 1,000 recipients."""
    return metrics["unsubscribes_per_1000"] + metrics["complaints_per_1000"]


def compare(result: dict[str, Any]) -> dict[str, float]:
    """The acceptance ratios of one run."""
    fixed = result["policies"]["fixed"]["overall"]
    cap = result["policies"]["cap"]["overall"]
    value = result["policies"]["value"]["overall"]
    cap_top, value_top = result["policies"]["cap"]["top20"], result["policies"]["value"]["top20"]
    ci = result["comparison"]["value_weighted_conversions"]
    return {
        "losses_vs_cap": losses(value) / losses(cap) - 1 if losses(cap) else 0.0,
        "conversions_vs_cap": value["value_weighted_conversions"] / cap["value_weighted_conversions"] - 1,
        "conversions_diff_low": ci["low"],
        "conversions_diff_high": ci["high"],
        "top20_conversions_vs_cap": value_top["value_weighted_conversions"] / cap_top["value_weighted_conversions"] - 1,
        "sends_vs_fixed": value["sends"] / fixed["sends"] - 1,
        "engagement_vs_fixed": value["engagement"] / fixed["engagement"],
    }


def main() -> None:
    """Run the seeds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=5000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--world", default="default")
    parser.add_argument("--save", type=Path, help="Also write every run's JSON to this file.")
    args = parser.parse_args()
    rows, runs = [], {}
    print(
        "seed  best cap            losses   conv vs cap (95% CI of diff)     "
        "top20 conv  sends vs fixed  engagement  time"
    )
    for seed in args.seeds:
        result, seconds = simulate(args.recipients, args.days, seed, args.world)
        runs[seed] = result
        row = compare(result)
        rows.append(row)
        label = next(g["label"] for g in result["cap_grid"] if g["best"])
        print(
            f"{seed:>4}  {label:<18} {row['losses_vs_cap']:+7.1%}   {row['conversions_vs_cap']:+6.1%} "
            f"({row['conversions_diff_low']:+8.1f} to {row['conversions_diff_high']:+8.1f})   "
            f"{row['top20_conversions_vs_cap']:+8.1%}   {row['sends_vs_fixed']:+12.1%}   "
            f"{row['engagement_vs_fixed']:9.1%}  {seconds:5.0f}s",
            flush=True,
        )
    mean = {key: statistics.fmean(row[key] for row in rows) for key in rows[0]}
    print(
        f"mean  {'':<18} {mean['losses_vs_cap']:+7.1%}   {mean['conversions_vs_cap']:+6.1%} "
        f"{'':<26}{mean['top20_conversions_vs_cap']:+8.1%}   {mean['sends_vs_fixed']:+12.1%}   "
        f"{mean['engagement_vs_fixed']:9.1%}"
    )
    if args.save:
        args.save.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
