"""API ingest: events posted in batches to a running daemon while its ticks run; none lost.

Starts ``tact run`` (ticks + API) as a child process on a temporary workspace (SQLite file by
default, ``null`` adapters, quiet hours and caps off, a campaign triggered by ``signed_up``),
upserts N recipients (``POST /v1/recipients``), then posts events (``POST /v1/events``) from
concurrent clients in this process for the given seconds: a ``signed_up`` per recipient first
(each enrolls, so ticks decide and send), then ``opened``, ``clicked`` and custom events. It
lets the daemon settle, stops it with SIGTERM and compares the events accepted with the rows
of the ``event`` table; it exits non-zero when they differ, a batch failed, or the daemon did
not exit 0. Usage (see bench/README.md):

    .venv/bin/python bench/api_ingest.py --seconds 60
    .venv/bin/python bench/api_ingest.py --seconds 10 --recipients 2000       # smoke run
    .venv/bin/python bench/api_ingest.py --database postgresql+psycopg://tact@localhost/tact_bench
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa

TACT = Path(sys.executable).parent / "tact"
TOKEN = secrets.token_urlsafe(24)
RUN = secrets.token_hex(4)  # event ids stay unique across runs on one database
FOLLOW_UP_TYPES = ("opened", "clicked", "page_viewed", "opened", "feature_used", "clicked")
RETRIES_ON_503 = 5

CAMPAIGN = """
id = "ingest"
kind = "marketing"
trigger = { event = "signed_up" }
steps = [
{id = "welcome", after = "0s", channel = "email", subject = "Hi", text = "Hi {{ recipient.first_name }}", value = 0.8},
{id = "tips", after = "5s", channel = "email", subject = "Tips", text = "A few tips.", value = 0.6},
]
"""


def config_text(database_url: str, port: int) -> str:
    """The daemon's configuration: API on 127.0.0.1:``port``, ``null`` channels, 1 s ticks."""
    return f"""\
campaigns_dir = "campaigns"
database = {{ url = "{database_url}" }}
engine = {{ tick_interval = "1s" }}
quiet_hours = {{ enabled = false }}
caps = {{ enabled = false }}
attention = {{ holdout = 0.0 }}
channels = {{ email = {{ adapter = "null" }}, sms = {{ adapter = "null" }} }}

[api]
enabled = true
host = "127.0.0.1"
port = {port}

[api.tokens]
bench = "{TOKEN}"
"""


def count_rows(url: str, *wheres: str) -> list[int]:
    """Rows of the ``event`` table matching each condition, and of ``send_log``, in one connection."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    queries = [f"SELECT count(*) FROM event WHERE {where}" for where in wheres] + ["SELECT count(*) FROM send_log"]
    try:
        with engine.connect() as connection:
            return [int(connection.execute(sa.text(query)).scalar_one()) for query in queries]
    finally:
        engine.dispose()


@dataclass
class LoadReport:
    """What the loader's batches came back with."""

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    retries: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


async def post_batch(
    session: aiohttp.ClientSession, path: str, batch: list[dict[str, Any]], report: LoadReport
) -> None:
    """POST one batch (retrying a 503 a few times) and add its answer to ``report``."""
    body = json.dumps(batch)
    for attempt in range(RETRIES_ON_503 + 1):
        began = time.perf_counter()
        try:
            async with session.post(path, data=body) as response:
                text = await response.text()
                status = response.status
        except aiohttp.ClientError as error:
            report.errors.append(f"{path}: {error!r}")
            return
        if status == 503 and attempt < RETRIES_ON_503:
            report.retries += 1
            await asyncio.sleep(0.2 * (attempt + 1))
            continue
        if status != 200:
            report.errors.append(f"{path}: HTTP {status} {text[:200]}")
            return
        report.latencies.append(time.perf_counter() - began)
        answer = json.loads(text)
        report.accepted += int(answer["accepted"])
        report.duplicates += int(answer.get("duplicates", 0))
        report.rejected += len(answer["rejected"])
        return


def event(index: int, recipients: int) -> dict[str, Any]:
    """Event number ``index``: a ``signed_up`` per recipient first, then a mix of follow-ups."""
    recipient = f"r{index % recipients:07d}"
    kind = "signed_up" if index < recipients else FOLLOW_UP_TYPES[index % len(FOLLOW_UP_TYPES)]
    return {"id": f"bench-{RUN}-{index:010d}", "recipient_id": recipient, "type": kind}


async def wait_ready(session: aiohttp.ClientSession, daemon: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Poll ``/readyz`` until it answers 200 (or fail if the daemon exits first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise SystemExit(f"the daemon exited with status {daemon.returncode} before it was ready")
        try:
            async with session.get("/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit(f"the daemon was not ready after {timeout:g}s")


async def load(args: argparse.Namespace, base: str, daemon: subprocess.Popen[bytes]) -> tuple[LoadReport, float, float]:
    """Upsert the recipients, then post events; the report, upsert seconds and loader seconds."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(base, connector=connector, headers=headers) as session:
        await wait_ready(session, daemon)
        upserts = LoadReport()
        began = time.perf_counter()
        for offset in range(0, args.recipients, args.batch_size):
            people = [
                {"id": f"r{i:07d}", "email": f"r{i}@example.com", "first_name": f"R{i}"}
                for i in range(offset, min(args.recipients, offset + args.batch_size))
            ]
            await post_batch(session, "/v1/recipients", people, upserts)
        upsert_seconds = time.perf_counter() - began
        if upserts.errors or upserts.accepted != args.recipients:
            raise SystemExit(f"recipient upsert failed: {upserts.accepted} accepted, {upserts.errors[:3]}")

        report = LoadReport()
        numbers = itertools.count()
        began = time.perf_counter()
        deadline = began + args.seconds

        async def client() -> None:
            while time.perf_counter() < deadline:
                batch = [event(next(numbers), args.recipients) for _ in range(args.batch_size)]
                await post_batch(session, "/v1/events", batch, report)

        await asyncio.gather(*(client() for _ in range(args.concurrency)))
        return report, upsert_seconds, time.perf_counter() - began


def percentile(ordered: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of the sorted, non-empty ``ordered`` lie (nearest rank)."""
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def scrape_counter(base: str, name: str) -> float | None:
    """A counter's value from the daemon's ``/metrics`` (None when absent or unreachable)."""
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--recipients", "-n", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--database", default=None, help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="tact-ingest-"))
    print(f"workspace: {workdir} (removed after a clean run unless --keep)", flush=True)
    (workdir / "campaigns").mkdir()
    (workdir / "campaigns" / "ingest.toml").write_text(CAMPAIGN)
    url = args.database or f"sqlite:///{(workdir / 'bench.db').as_posix()}"
    with socket.socket() as probe:  # a port nothing listens on right now
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    base = f"http://127.0.0.1:{port}"
    config = workdir / "tact.toml"
    config.write_text(config_text(url, port))
    subprocess.run([TACT, "db", "upgrade", "--config", config], cwd=workdir, check=True, capture_output=True)
    events_before, decided_before = count_rows(url, "1 = 1")

    stderr_path = workdir / "daemon.stderr"
    with stderr_path.open("wb") as stderr:
        daemon = subprocess.Popen(
            [TACT, "run", "--config", config], cwd=workdir, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
        )
    try:
        report, upsert_seconds, seconds = asyncio.run(load(args, base, daemon))
        settle_deadline = time.monotonic() + 30  # until the ticks have applied every event
        while count_rows(url, "applied_at IS NULL")[0] and time.monotonic() < settle_deadline:
            time.sleep(0.5)
        time.sleep(3)
        ticks = scrape_counter(base, "tact_ticks_total")
        daemon.send_signal(signal.SIGTERM)
        exit_status = daemon.wait(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()

    events_after, unapplied, decided_after = count_rows(url, "1 = 1", "applied_at IS NULL")
    rows, decided = events_after - events_before, decided_after - decided_before
    lines = stderr_path.read_text().splitlines()
    working_ticks = sum(json.loads(line).get("event") == "tick" for line in lines if line.startswith("{"))
    latencies = sorted(report.latencies) or [0.0]
    lossless = rows == report.accepted
    ok = lossless and exit_status == 0 and not report.errors and not report.rejected

    print(f"recipients: {args.recipients:,} upserted in {upsert_seconds:.1f}s")
    print(
        f"loader: {seconds:.1f}s, concurrency {args.concurrency}, batch {args.batch_size}: "
        f"{len(report.latencies):,} batches, {report.retries} retried 503s, {len(report.errors)} errors"
    )
    for error in report.errors[:5]:
        print(f"  error: {error}")
    print(f"events: accepted={report.accepted:,} duplicates={report.duplicates:,} rejected={report.rejected:,}")
    print(f"database: event rows={rows:,} ({'equal' if lossless else 'DIFFERENT'}), not yet applied={unapplied:,}")
    print(f"throughput={report.accepted / seconds:,.0f} events/s")
    p50, p95 = (percentile(latencies, fraction) * 1000 for fraction in (0.50, 0.95))
    print(f"batch latency: p50={p50:.0f} ms p95={p95:.0f} ms")
    print(
        f"daemon: ticks={'?' if ticks is None else f'{ticks:.0f}'} ({working_ticks} deciding), "
        f"touchpoints decided={decided:,}, exit status={exit_status}"
    )
    if ok and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
