"""The ``tact`` command line (Typer). Every command takes ``--config``."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from scheduler.app import build_adapters, build_engine_from_settings, resolve_settings
from scheduler.campaign import load_campaign
from scheduler.config import Settings
from scheduler.engine import Engine, IngestReport
from scheduler.errors import CampaignError, ConfigError, TactError
from scheduler.logs import configure_logging
from scheduler.readers import RawRow, read_rows
from scheduler.runtime import tune_gc

app = typer.Typer(
    help="Tact: drip-campaign touchpoints, each one worth the recipient's attention.",
    no_args_is_help=True,
)
recipients_app = typer.Typer(help="Recipients.", no_args_is_help=True)
events_app = typer.Typer(help="Events.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(recipients_app, name="recipients")
app.add_typer(events_app, name="events")
app.add_typer(db_app, name="db")

# soft_wrap: a line is never broken at the terminal width (scripts parse these lines).
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Configuration file (TOML). Env vars TACT_* override it.",
        envvar="TACT_CONFIG",
    ),
]


def _settings(config: Path | None) -> Settings:
    try:
        settings = resolve_settings(config)
    except TactError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
        raise typer.Exit(2) from None
    configure_logging(settings.logging)
    return settings


def _engine(settings: Settings, build: Callable[[], Engine] | None = None) -> Engine:
    try:
        return build() if build is not None else build_engine_from_settings(settings)
    except TactError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        raise typer.Exit(2) from None


def _parse_instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 date-time") from None
    if value.tzinfo is None:
        raise typer.BadParameter(f"{text!r} has no UTC offset (add Z or +HH:MM)")
    return value.astimezone(UTC)


@app.command()
def run(config: ConfigOption = None) -> None:
    """Run the daemon: ticks, campaign hot reload; SIGTERM drains and exits 0."""
    from scheduler.daemon import run_daemon, wait_for_engine

    settings = _settings(config)
    if settings.database.is_sqlite:  # a file that cannot be opened will not fix itself
        engine = _engine(settings)
    else:
        engine = _engine(settings, build=lambda: wait_for_engine(lambda: build_engine_from_settings(settings)))
    try:
        run_daemon(engine)
    finally:
        engine.close()


@app.command()
def tick(
    at: Annotated[str | None, typer.Option("--at", help="The instant (ISO 8601 with offset); default now.")] = None,
    config: ConfigOption = None,
) -> None:
    """Run one tick at an instant, drain everything due, then exit."""
    instant = _parse_instant(at) if at else None
    settings = _settings(config)
    with _engine(settings) as engine:
        tune_gc()
        result = engine.tick(instant, collect=False)
    summary = ", ".join(f"{key}={count}" for key, count in sorted(result.counts.items())) or "nothing due"
    out.print(
        f"tick at {result.at.isoformat()}: events applied={result.events_applied}, "
        f"segment enrollments={result.enrolled}, decisions={result.decided} ({summary})",
        highlight=False, markup=False,
    )  # fmt: skip


@app.command()
def validate(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Campaign files or directories; default: campaigns_dir."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Check the configuration, campaign files and templates; exit 1 with file:line:col lines."""
    try:
        settings = resolve_settings(config)
        build_adapters(settings)
    except TactError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    files: list[Path] = []
    for path in paths or [settings.campaigns_dir]:
        if path.is_dir():
            files.extend(sorted(p for p in path.glob("*.toml") if p.is_file()))
        elif path.exists():
            files.append(path)
        else:
            typer.echo(f"{path}:1:1: no such file or directory", err=True)
            raise typer.Exit(1)
    problems = 0
    ids: dict[str, Path] = {}
    for file in files:
        try:
            campaign = load_campaign(
                file,
                channels=settings.channels.keys(),
                sample_recipient=settings.sample_recipient or None,
            )
        except CampaignError as exc:
            for diagnostic in exc.diagnostics:
                typer.echo(str(diagnostic), err=True)
            problems += len(exc.diagnostics)
            continue
        if campaign.id in ids:
            typer.echo(
                f"{file}:1:1: duplicate campaign id {campaign.id!r} (also in {ids[campaign.id]})",
                err=True,
            )
            problems += 1
        ids[campaign.id] = file
    if problems:
        typer.echo(f"{problems} problem(s) in {len(files)} file(s)", err=True)
        raise typer.Exit(1)
    typer.echo(f"ok: configuration and {len(files)} campaign file(s) valid")


def _import(
    path: Path,
    config: Path | None,
    what: str,
    ingest: Callable[[Engine, list[Mapping[str, Any]]], IngestReport],
) -> None:
    settings = _settings(config)
    if not path.is_file():
        err.print(f"error: {path}: no such file", highlight=False, markup=False)
        raise typer.Exit(2)
    try:
        rows: Iterator[RawRow] = read_rows(path)
        from scheduler.readers import count_rows

        total = count_rows(path)
    except (ValueError, OSError) as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    bad = 0
    accepted = duplicates = 0

    def report_bad(line: int, reason: str, message: str) -> None:
        nonlocal bad
        bad += 1
        err.print(f"{path}:{line}: {reason}: {message}", highlight=False, markup=False)

    with _engine(settings) as engine, Progress(
        TextColumn(f"importing {what}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=True, disable=not err.is_terminal,
    ) as progress:  # fmt: skip
        task = progress.add_task(what, total=total)
        chunk: list[RawRow] = []

        def flush() -> None:
            nonlocal accepted, duplicates
            report = ingest(engine, [r.data for r in chunk if r.data is not None])
            lines = [r.line for r in chunk if r.data is not None]
            for index, reason, message in report.rejected:
                report_bad(lines[index], reason, message)
            accepted += report.accepted
            duplicates += report.duplicates
            progress.advance(task, len(chunk))
            chunk.clear()

        for row in rows:
            if row.error is not None:
                report_bad(row.line, "unreadable", row.error)
                progress.advance(task)
                continue
            chunk.append(row)
            if len(chunk) >= 2000:
                flush()
        if chunk:
            flush()
    dup = f", {duplicates} already known" if duplicates else ""
    out.print(f"{what}: {accepted} imported{dup}, {bad} rejected", highlight=False, markup=False)
    if bad:
        raise typer.Exit(1)


@recipients_app.command("import")
def recipients_import(
    file: Annotated[Path, typer.Argument(help="CSV or JSON lines file.")],
    config: ConfigOption = None,
) -> None:
    """Import recipients (CSV or JSONL): good rows kept, bad rows reported by line, exit 1 if any."""
    _import(
        file,
        config,
        "recipients",
        lambda engine, rows: engine.upsert_recipients(rows, source="import"),
    )


@events_app.command("import")
def events_import(
    file: Annotated[Path, typer.Argument(help="CSV or JSON lines file.")],
    config: ConfigOption = None,
) -> None:
    """Import events (CSV or JSONL); replays are ignored, bad rows reported by line."""
    _import(file, config, "events", lambda engine, rows: engine.record_events(rows))


@app.command()
def enroll(
    campaign: Annotated[str, typer.Argument(help="Campaign id.")],
    recipients: Annotated[list[str], typer.Argument(help="Recipient ids.")],
    at: Annotated[str | None, typer.Option("--at", help="Enrollment instant; default now.")] = None,
    config: ConfigOption = None,
) -> None:
    """Enroll recipients in a campaign by hand (already-active enrollments are left alone)."""
    instant = _parse_instant(at) if at else None
    settings = _settings(config)
    with _engine(settings) as engine:
        try:
            enrolled, unknown = engine.enroll(campaign, recipients, instant)
        except TactError as exc:
            err.print(f"error: {exc}", highlight=False, markup=False)
            raise typer.Exit(2) from None
    out.print(
        f"enrolled {enrolled} of {len(set(recipients))} in {campaign}",
        highlight=False,
        markup=False,
    )
    if unknown:
        err.print(f"unknown recipients: {', '.join(unknown)}", highlight=False, markup=False)
        raise typer.Exit(1)


class LogFormat(StrEnum):
    """Output formats of ``tact log``."""

    table = "table"
    csv = "csv"
    json = "json"
    jsonl = "jsonl"


LOG_COLUMNS = (
    "id", "at", "touchpoint_id", "recipient_id", "campaign_id", "step_id", "channel", "adapter",
    "decision", "reason", "deferred_until", "asset", "expectation", "fatigue", "engagement_p",
    "relevance", "value", "net_value", "threshold", "propensity", "provider_message_id", "error",
    "latency_ms", "attempt",
)  # fmt: skip


def _wide(console: Console) -> Console:
    """``console`` on a terminal; piped, one that does not cut tables to 80 columns (ids and
    reasons stay whole)."""
    return console if console.is_terminal else Console(width=1000)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


@app.command("log")
def log_command(
    campaign: Annotated[str | None, typer.Option(help="Campaign id.")] = None,
    recipient: Annotated[str | None, typer.Option(help="Recipient id.")] = None,
    decision: Annotated[str | None, typer.Option(help="sent, deferred, dropped, failed, retrying.")] = None,
    reason: Annotated[str | None, typer.Option(help="Reason code.")] = None,
    since: Annotated[str | None, typer.Option(help="From this instant (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this instant (ISO 8601).")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many rows.")] = None,
    format: Annotated[LogFormat, typer.Option("--format", help="Output format.")] = LogFormat.table,
    config: ConfigOption = None,
) -> None:
    """Print the send log, filtered; csv/json/jsonl stream any number of rows."""
    filters = {
        "campaign": campaign, "recipient": recipient, "decision": decision, "reason": reason,
        "since": _parse_instant(since) if since else None, "until": _parse_instant(until) if until else None,
    }  # fmt: skip
    settings = _settings(config)
    with _engine(settings) as engine:
        rows = engine.store.send_log_rows(filters, limit=limit)
        if format is LogFormat.table:
            table = Table(
                *(
                    "id",
                    "at",
                    "recipient",
                    "campaign",
                    "step",
                    "channel",
                    "decision",
                    "reason",
                    "until",
                )
            )
            for row in rows:
                table.add_row(
                    str(row["id"]), row["at"].strftime("%Y-%m-%d %H:%M"), row["recipient_id"], row["campaign_id"],
                    row["step_id"], row["channel"] or "", row["decision"], row["reason"],
                    row["deferred_until"].strftime("%Y-%m-%d %H:%M") if row["deferred_until"] else "",
                )  # fmt: skip
            _wide(out).print(table)
        elif format is LogFormat.csv:
            writer = csv.writer(sys.stdout)
            writer.writerow(LOG_COLUMNS)
            for row in rows:
                writer.writerow([_plain(row[c]) if row[c] is not None else "" for c in LOG_COLUMNS])
        elif format is LogFormat.jsonl:
            for row in rows:
                sys.stdout.write(json.dumps({c: _plain(row[c]) for c in LOG_COLUMNS}) + "\n")
        else:
            sys.stdout.write("[")
            for index, row in enumerate(rows):
                sys.stdout.write(("," if index else "") + "\n" + json.dumps({c: _plain(row[c]) for c in LOG_COLUMNS}))
            sys.stdout.write("\n]\n")


@app.command()
def explain(recipient: Annotated[str, typer.Argument(help="Recipient id.")], config: ConfigOption = None) -> None:
    """Show a recipient's consent, attention state, pending touches and last decisions."""
    from scheduler.explain import explain_recipient

    settings = _settings(config)
    with _engine(settings) as engine:
        text = explain_recipient(engine, recipient)
    if text is None:
        err.print(f"error: no recipient with id {recipient!r}", highlight=False, markup=False)
        raise typer.Exit(1)
    out.print(text, highlight=False, markup=False)


@app.command()
def report(
    html: Annotated[Path | None, typer.Option("--html", help="Also write a self-contained HTML report here.")] = None,
    campaign: Annotated[str | None, typer.Option(help="Only this campaign.")] = None,
    since: Annotated[str | None, typer.Option(help="From this instant (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this instant (ISO 8601).")] = None,
    config: ConfigOption = None,
) -> None:
    """Summarise decisions, campaigns, value tiers and model against holdout; --html adds plots."""
    from scheduler.analytics import ReportFilter, build_report
    from scheduler.report import render_text, write_html

    report_filter = ReportFilter(
        since=_parse_instant(since) if since else None,
        until=_parse_instant(until) if until else None,
        campaign=campaign,
    )
    settings = _settings(config)
    with _engine(settings) as engine:
        figures = build_report(engine.store.engine, report_filter)
    render_text(figures, _wide(out))
    if html is not None:
        write_html(figures, html)
        err.print(f"report written to {html}", highlight=False, markup=False)


@app.command()
def simulate(
    campaigns: Annotated[
        Path | None, typer.Option("--campaigns", help="Campaigns directory (default: the config's).")
    ] = None,
    recipients: Annotated[int, typer.Option("--recipients", min=1, help="Synthetic population size.")] = 5000,
    days: Annotated[int, typer.Option("--days", min=1, help="Simulated days.")] = 90,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same population and luck).")] = 1,
    world: Annotated[
        str,
        typer.Option("--world", help="Hidden dynamics: default, light-fatigue, heavy-fatigue, wrong-values, no-trust."),
    ] = "default",
    policies: Annotated[
        str, typer.Option("--policies", help="Comma-separated policies to run: fixed, cap, value.")
    ] = "fixed,cap,value",
    jobs: Annotated[
        int | None, typer.Option("--jobs", min=1, help="Parallel processes (default: CPUs, up to 4).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML report with plots.")] = None,
    database: Annotated[
        Path | None,
        typer.Option(
            "--database",
            help="Keep the value policy's run in this new SQLite file, holdout as configured (for tact report).",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run the real engine on a synthetic population for each policy and compare them."""
    from scheduler.simulation.report import render_text, to_json, write_html
    from scheduler.simulation.runner import SimulationOptions, run_simulation

    settings = _settings(config)
    chosen = tuple(p.strip() for p in policies.split(",") if p.strip())
    unknown = [p for p in chosen if p not in ("fixed", "cap", "value")]
    if unknown or not chosen:
        err.print(f"error: unknown policy {', '.join(unknown) or '(none)'}; use fixed, cap, value", markup=False)
        raise typer.Exit(2)
    if database is not None and (database.exists() or "value" not in chosen):
        problem = "already exists" if database.exists() else "needs the value policy"
        err.print(f"error: --database {database} {problem}", highlight=False, markup=False)
        raise typer.Exit(2)
    options = SimulationOptions(
        recipients=recipients,
        days=days,
        seed=seed,
        campaigns_dir=campaigns or settings.campaigns_dir,
        config_path=config,
        world=world,
        policies=chosen,
        database=database,
    )
    if jobs is not None:
        options.jobs = jobs
    with Progress(
        TextColumn("simulating"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn(),
        console=err, transient=True, disable=as_json and not err.is_terminal,
    ) as progress:  # fmt: skip
        task = progress.add_task("simulate", total=1.0)
        try:
            result = run_simulation(options, lambda _label, done: progress.update(task, completed=done))
        except TactError as exc:
            err.print(f"error: {exc}", highlight=False, markup=False)
            raise typer.Exit(2) from None
    if html is not None:
        write_html(result, html)
        err.print(f"report written to {html}", highlight=False, markup=False)
    if as_json:
        typer.echo(json.dumps(to_json(result), indent=2))
    else:
        render_text(result, out)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Create or upgrade the database schema to this version of Tact."""
    from scheduler.store import migrate_database

    settings = _settings(config)
    try:
        migrate_database(settings.database.url)
    except Exception as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    out.print("database schema is up to date", highlight=False, markup=False)


@app.command()
def version() -> None:
    """Print Tact's version."""
    typer.echo(f"tact {package_version('tact')}")


def main() -> None:
    """Entry point of the ``tact`` console script."""
    try:
        app()
    except ConfigError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        sys.exit(2)
