"""Engine throughput: touchpoints decided and logged per second, and peak RSS.

Enrolls N recipients into a 3-step marketing campaign, makes every touchpoint due, and has
--replicas engine processes (default 1) tick through three simulated days with the `null`
adapter, sharing the work through the store's leased claims. The replicas start each day
together and tick until the day's queue is empty. Usage (see bench/README.md):

    .venv/bin/python bench/engine_throughput.py --recipients 100000
    .venv/bin/python bench/engine_throughput.py --database postgresql://tact@127.0.0.1:54329/tact --replicas 3

Without --database the bench uses a temporary SQLite file. With a PostgreSQL URL
(postgresql://, postgres:// or postgresql+psycopg://) it never touches the database the URL
names: it connects there only to CREATE DATABASE tact_bench_<pid> on the same server, runs in
that one, and drops it at the end (unless --keep). The URL's role needs CREATEDB.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import queue
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import TypedDict

import psycopg
import sqlalchemy as sa
import structlog
from psycopg import sql

from scheduler import Engine
from scheduler.runtime import tune_gc
from scheduler.store import migrate_database, normalise_url

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

START = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
DAYS = 3


class ReplicaReport(TypedDict):
    """What one replica process did, sent back to the parent."""

    replica: int
    decided: list[int]  # per day
    counts: list[dict[str, int]]  # per day, decision:reason -> touchpoints
    ticks: list[int]  # tick calls per day
    peak_rss_mib: float


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def quiet_logs() -> None:
    """Keep the engine's structlog output to warnings and worse."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def build_engine(url: str, campaigns_dir: Path, batch_size: int, worker_id: str | None = None) -> Engine:
    """An engine on ``url`` with null adapters, and caps, quiet hours and the holdout off."""
    return Engine.from_config(
        None,
        database_url=url,
        channels={"email": "null", "sms": "null"},
        campaigns_dir=str(campaigns_dir),
        caps={"enabled": False},
        quiet_hours={"enabled": False},
        attention={"holdout": 0.0},
        engine={"batch_size": batch_size, "worker_id": worker_id},
        logging={"level": "warning"},
    )


def create_postgres_database(url: str) -> tuple[str, str, str]:
    """Create ``tact_bench_<pid>`` on the server ``url`` names.

    Returns the new database's SQLAlchemy URL, the libpq URI of the database ``url`` names
    (to drop the new one from), and the new database's name.
    """
    named = sa.make_url(normalise_url(url))
    admin = named.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"tact_bench_{os.getpid()}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return named.set(database=name).render_as_string(hide_password=False), admin, name


def drop_postgres_database(admin: str, name: str) -> None:
    """Drop the bench's own database (only ever a ``tact_bench_`` one)."""
    assert name.startswith("tact_bench_")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def set_up(url: str, campaigns_dir: Path, recipients: int, batch_size: int) -> float:
    """Migrate the new database, upsert the recipients and enroll them all at ``START``;
    return this process's peak RSS."""
    migrate_database(url)  # as `tact db upgrade` does before replicas start (PostgreSQL checks only)
    engine = build_engine(url, campaigns_dir, batch_size)
    try:
        began = time.perf_counter()
        chunk = 10_000
        for offset in range(0, recipients, chunk):
            engine.upsert_recipients(
                {"id": f"r{i:08d}", "email": f"r{i}@example.com", "first_name": f"R{i}"}
                for i in range(offset, min(recipients, offset + chunk))
            )
        upserted = time.perf_counter()
        ids = [f"r{i:08d}" for i in range(recipients)]
        enrolled, _ = engine.enroll("bench", ids, at=START)
        del ids
        done = time.perf_counter()
        analyzed = ""
        if engine.store.dialect == "postgresql":
            # Statistics for the fresh tables, as autovacuum would have gathered by the next
            # tick of a running installation, so the figures are those of steady state.
            with engine.store.engine.begin() as connection:
                connection.execute(sa.text("ANALYZE"))
            analyzed = f", ANALYZE in {time.perf_counter() - done:.1f}s"
    finally:
        engine.close()
    print(
        f"setup: {recipients} recipients upserted in {upserted - began:.1f}s, "
        f"{enrolled} enrolled in {done - upserted:.1f}s{analyzed}",
        flush=True,
    )
    return peak_rss_mb()


def replica_main(
    replica: int, url: str, campaigns_dir: Path, batch_size: int, barrier: Barrier, reports: Queue[ReplicaReport]
) -> None:
    """One replica: its own engine; each day starts at the barrier and ticks until one decides 0."""
    try:
        quiet_logs()
        engine = build_engine(url, campaigns_dir, batch_size, worker_id=f"bench-{replica}:{os.getpid()}")
        tune_gc()  # as the daemon and `tact tick` do after start-up
        report = ReplicaReport(replica=replica, decided=[], counts=[], ticks=[], peak_rss_mib=0.0)
        for day in range(DAYS):
            barrier.wait()
            decided, ticks = 0, 0
            counts: dict[str, int] = {}
            while True:
                result = engine.tick(at=START + timedelta(days=day), collect=False)
                ticks += 1
                decided += result.decided
                for key, count in result.counts.items():
                    counts[key] = counts.get(key, 0) + count
                if result.decided == 0:
                    break
            report["decided"].append(decided)
            report["counts"].append(counts)
            report["ticks"].append(ticks)
        barrier.wait()
        engine.close()
        report["peak_rss_mib"] = peak_rss_mb()
        reports.put(report)
    except threading.BrokenBarrierError:
        return  # another replica failed; the parent reports it
    except BaseException:
        barrier.abort()  # the others must not wait for this replica
        raise


def run_replicas(
    count: int, url: str, campaigns_dir: Path, batch_size: int
) -> tuple[list[float], list[ReplicaReport]] | None:
    """Run ``count`` replica processes; return each day's wall time and their reports.

    The parent waits at every barrier too, so a day's wall time runs from the release that
    starts it to the moment the last replica finished it. None when a replica failed.
    """
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(count + 1)
    reports: Queue[ReplicaReport] = context.Queue()
    processes = [
        context.Process(
            target=replica_main,
            args=(replica, url, campaigns_dir, batch_size, barrier, reports),
            name=f"bench-replica-{replica}",
        )
        for replica in range(1, count + 1)
    ]
    for process in processes:
        process.start()
    finished = threading.Event()

    def abort_when_one_dies() -> None:
        while not finished.wait(0.5):
            if any(p.exitcode not in (None, 0) for p in processes):
                barrier.abort()
                return

    watcher = threading.Thread(target=abort_when_one_dies, daemon=True)
    watcher.start()
    marks: list[float] = []
    collected: list[ReplicaReport] = []
    try:
        for _ in range(DAYS + 1):
            barrier.wait()
            marks.append(time.perf_counter())
        collected = [reports.get(timeout=120) for _ in processes]
    except (threading.BrokenBarrierError, queue.Empty):
        pass
    finally:
        finished.set()
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join()
    if len(collected) < count:
        codes = ", ".join(f"{p.name}: {p.exitcode}" for p in processes)
        print(f"a replica failed (exit codes {codes})", file=sys.stderr, flush=True)
        return None
    collected.sort(key=lambda r: r["replica"])
    return [marks[day + 1] - marks[day] for day in range(DAYS)], collected


def verify(url: str) -> tuple[int, int]:
    """send_log rows, and touchpoints with more than one send_log row."""
    engine = sa.create_engine(normalise_url(url))
    try:
        with engine.connect() as connection:
            logged = connection.execute(sa.text("SELECT count(*) FROM send_log")).scalar_one()
            repeated = connection.execute(
                sa.text(
                    "SELECT count(*) FROM (SELECT touchpoint_id FROM send_log "
                    "GROUP BY touchpoint_id HAVING count(*) > 1) AS repeated"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    return int(logged), int(repeated)


def print_days(day_seconds: Sequence[float], replicas: Sequence[ReplicaReport]) -> int:
    """Print each day's figures, summed over the replicas; return the touchpoints decided."""
    total = 0
    for day, seconds in enumerate(day_seconds):
        decided = sum(r["decided"][day] for r in replicas)
        counts: dict[str, int] = {}
        for r in replicas:
            for key, count in r["counts"][day].items():
                counts[key] = counts.get(key, 0) + count
        total += decided
        print(f"tick {day + 1}: {decided} decided in {seconds:.1f}s ({decided / seconds:,.0f}/s) {counts}", flush=True)
        if len(replicas) > 1:
            shares = ", ".join(f"{r['decided'][day]} in {r['ticks'][day]} ticks" for r in replicas)
            print(f"  per replica: {shares}")
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", "-n", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--database",
        default=None,
        help="a SQLite URL (used as given, must be new) or a PostgreSQL server's URL (the bench "
        "creates and drops its own tact_bench_<pid> database there); default: a temporary SQLite file",
    )
    parser.add_argument("--replicas", type=int, default=1, help="engine processes sharing the work (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the bench database (and temporary directory)")
    args = parser.parse_args()
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")

    quiet_logs()
    workdir = Path(tempfile.mkdtemp(prefix="tact-bench-"))
    campaigns_dir = workdir / "campaigns"
    campaigns_dir.mkdir()
    (campaigns_dir / "bench.toml").write_text(CAMPAIGN)
    url = args.database or f"sqlite:///{workdir / 'bench.db'}"
    postgres: tuple[str, str] | None = None
    if normalise_url(url).startswith("postgresql"):
        url, admin, name = create_postgres_database(url)
        postgres = (admin, name)
    shown = sa.make_url(normalise_url(url)).render_as_string(hide_password=True)
    print(f"database={shown} replicas={args.replicas}", flush=True)
    try:
        n = args.recipients
        setup_rss = set_up(url, campaigns_dir, n, args.batch_size)
        outcome = run_replicas(args.replicas, url, campaigns_dir, args.batch_size)
        if outcome is None:
            return 1
        day_seconds, replicas = outcome
        decided = print_days(day_seconds, replicas)
        logged, repeated = verify(url)
        wall = sum(day_seconds)
        print(f"recipients={n} touchpoints_decided={decided} send_log_rows={logged} repeated_touchpoints={repeated}")
        print(f"throughput={decided / wall:,.0f} touchpoints/s over {wall:.1f}s of ticks")
        print(f"peak_rss={max(r['peak_rss_mib'] for r in replicas):.0f} MiB (setup process: {setup_rss:.0f} MiB)")
        if len(replicas) > 1:
            print("peak_rss per replica: " + ", ".join(f"{r['peak_rss_mib']:.0f}" for r in replicas) + " MiB")
        return 0 if logged == decided == DAYS * n and repeated == 0 else 1
    finally:
        if args.keep:
            print(f"kept: {shown} and {workdir}")
        else:
            if postgres is not None:
                drop_postgres_database(*postgres)
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
