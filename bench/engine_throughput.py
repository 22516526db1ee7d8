"""Engine throughput: touchpoints decided and logged per second, and peak RSS.

Enrolls N recipients into a 3-step marketing campaign, makes every touchpoint due, and runs
ticks with the `null` adapter on a SQLite file. Usage (see bench/README.md):

    .venv/bin/python bench/engine_throughput.py --recipients 100000
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scheduler import Engine
from scheduler.runtime import tune_gc

CAMPAIGN = """
id = "bench"
kind = "marketing"
[trigger]
event = "signed_up"
[[steps]]
id = "one"
after = "0m"
channel = "email"
subject = "Hello {{ recipient.first_name }}"
text = "First touch for {{ recipient.first_name }}."
value = 0.8
topics = ["intro"]
[[steps]]
id = "two"
after = "1d"
channel = "email"
subject = "Second"
text = "Second touch."
value = 0.6
topics = ["tips"]
[[steps]]
id = "three"
after = "1d"
channel = "email"
subject = "Third"
text = "Third touch."
value = 0.5
"""


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", "-n", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--database", default=None, help="database URL (default: a temporary SQLite file)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="tact-bench-"))
    (workdir / "campaigns").mkdir()
    (workdir / "campaigns" / "bench.toml").write_text(CAMPAIGN)
    url = args.database or f"sqlite:///{workdir / 'bench.db'}"
    engine = Engine.from_config(
        None,
        database_url=url,
        channels={"email": "null", "sms": "null"},
        campaigns_dir=str(workdir / "campaigns"),
        caps={"enabled": False},
        quiet_hours={"enabled": False},
        attention={"holdout": 0.0},
        engine={"batch_size": args.batch_size},
        logging={"level": "warning"},
    )
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    n = args.recipients
    start = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    t0 = time.perf_counter()
    chunk = 10_000
    for offset in range(0, n, chunk):
        engine.upsert_recipients(
            {"id": f"r{i:08d}", "email": f"r{i}@example.com", "first_name": f"R{i}"}
            for i in range(offset, min(n, offset + chunk))
        )
    t1 = time.perf_counter()
    ids = [f"r{i:08d}" for i in range(n)]
    enrolled, _ = engine.enroll("bench", ids, at=start)
    del ids
    t2 = time.perf_counter()
    print(
        f"setup: {n} recipients upserted in {t1 - t0:.1f}s, {enrolled} enrolled in {t2 - t1:.1f}s",
        flush=True,
    )

    tune_gc()  # as the daemon and `tact tick` do after start-up
    decided = 0
    tick_seconds = 0.0
    for day in range(3):
        at = start + timedelta(days=day)
        began = time.perf_counter()
        result = engine.tick(at=at, collect=False)
        elapsed = time.perf_counter() - began
        tick_seconds += elapsed
        decided += result.decided
        print(
            f"tick {day + 1}: {result.decided} decided in {elapsed:.1f}s "
            f"({result.decided / elapsed:,.0f}/s) {dict(result.counts)}",
            flush=True,
        )
    logged = engine.store.count("send_log")
    engine.close()
    print(f"recipients={n} touchpoints_decided={decided} send_log_rows={logged}")
    print(f"throughput={decided / tick_seconds:,.0f} touchpoints/s over {tick_seconds:.1f}s of ticks")
    print(f"peak_rss={peak_rss_mb():.0f} MiB")
    return 0 if logged == decided == 3 * n else 1


if __name__ == "__main__":
    sys.exit(main())
