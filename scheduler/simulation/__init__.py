"""``tact simulate``: the real engine against a synthetic audience on a simulated clock.

A seeded population with hidden traits (``population``) reacts to what the engine sends
(``world``); each policy (fixed cadence, frequency caps, the attention model) runs on a fresh
engine and in-memory database (``runner``); ``metrics`` tallies the outcome per recipient and
value tier, and ``report`` prints it, exports JSON and writes a self-contained HTML report.

    from scheduler.simulation import SimulationOptions, run_simulation, render_text
    result = run_simulation(SimulationOptions(recipients=1000, days=30))
"""

from __future__ import annotations

from scheduler.simulation.report import render_text, to_json, write_html
from scheduler.simulation.runner import (
    DEFAULT_CAP_GRID,
    CapPoint,
    PolicyResult,
    PolicyRun,
    SimulationOptions,
    SimulationResult,
    run_simulation,
)
from scheduler.simulation.world import WORLDS, WorldSpec, world_spec

__all__ = [
    "DEFAULT_CAP_GRID",
    "WORLDS",
    "CapPoint",
    "PolicyResult",
    "PolicyRun",
    "SimulationOptions",
    "SimulationResult",
    "WorldSpec",
    "render_text",
    "run_simulation",
    "to_json",
    "world_spec",
    "write_html",
]
