"""The command line: parse options, call one library function, print.

Read commands take ``--json`` and then print JSON alone on stdout; logs go to
stderr (``run`` logs to stdout, which journald reads).

Every command runs under umask 027 (as the systemd unit's ``UMask=0027``): the
database holds every order's bytes, and the folders and files it creates are
no business of other users, wherever the command is run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import peewee as pw

from . import __version__, admin, config, files, queries, service, store
from . import log as logsetup
from .errors import EdiInboxError, NotRecorded, one_line
from .jobs import JobResult, StepStatus
from .money import as_text
from .pipeline import Pipeline
from .terminal import json_text, shown

PRIVATE_UMASK = 0o027  # no write for the group, nothing for others

# `process` waits this long for an unavailable database before it gives up on
# recording a job (and exits non-zero): a database restart fits in it.
RECORD_PATIENCE = 30.0
EXIT_DATABASE_UNAVAILABLE = 1  # status: the database cannot be opened or read
# How long a command that only reads keeps reconnecting to a database that
# is not answering (the daemon keeps at it for [database] reconnect_seconds).
READ_PATIENCE = 2.0
EXIT_NOT_RUNNING = 3  # status: no daemon has a fresh heartbeat


def _echo_json(value: Any) -> None:
    """JSON alone on stdout; partner text in it cannot act on a terminal."""
    click.echo(json_text(value, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=config.CONFIG_ENV,
    help="TOML configuration file (default: $EDI_INBOX_CONFIG, else "
    "/etc/edi-inbox/edi-inbox.toml if present, else built-in defaults).",
)
@click.version_option(__version__, prog_name="edi-inbox")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """edi-inbox: turn X12 850 purchase orders dropped into an inbox into ERP
    orders and 997 acknowledgements.

    \b
    Example:
        edi-inbox --config /etc/edi-inbox/edi-inbox.toml status
    """
    # Stricter bits already set are kept; the old mask comes back when the
    # command ends (it matters only to callers in the same process: tests).
    old = os.umask(PRIVATE_UMASK)
    os.umask(old | PRIVATE_UMASK)
    ctx.call_on_close(lambda: os.umask(old))
    try:
        settings = config.load(config_path)
    except EdiInboxError as exc:
        raise click.ClickException(str(exc)) from None
    logsetup.configure(settings.log.level, settings.log.format, stream=sys.stderr)
    ctx.obj = settings


pass_settings = click.make_pass_decorator(config.Settings)


@contextlib.contextmanager
def _database(settings: config.Settings, *, create: bool = True) -> Iterator[Any]:
    """The configured database, schema created or migrated, closed afterwards.
    ``create=False`` (the commands that only read): a SQLite file that does
    not exist is an error, never created empty (a file moved away during an
    incident would read as no jobs at all, and one created by root would be
    the daemon's to write but not its own), and a server that does not answer
    is given up after ``READ_PATIENCE``."""
    try:
        patience = None if create else READ_PATIENCE
        db = store.open_database(
            settings.database_url, settings, create=create, retry_seconds=patience
        )
        store.init(db)
    except Exception as exc:
        raise click.ClickException(f"cannot open the database: {shown(one_line(exc))}") from None
    try:
        yield db
    except EdiInboxError as exc:
        raise click.ClickException(shown(one_line(exc))) from None
    except (pw.DatabaseError, pw.InterfaceError) as exc:  # locked, a lock timeout, gone
        raise click.ClickException(f"the database failed: {shown(one_line(exc))}") from None
    finally:
        store.close_database(db)


def _when(value: str | None) -> datetime | None:
    """--since/--until: an ISO date or date-time; naive means UTC."""
    if value is None:
        return None
    try:
        return queries.moment(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _cell(value: Any) -> str:
    """A table cell: one line, nothing a terminal would obey."""
    return shown("" if value is None else str(value).replace("\n", " "))


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """An aligned table that fits the terminal: the widest column gives way."""
    if not rows:
        return "(none)"
    # Partner text (PO numbers, vendor names, errors quoting them) is shown, not obeyed.
    cells = [[_cell(r.get(key)) for key, _ in columns] for r in rows]
    widths = [
        max(len(title), *(len(row[i]) for row in cells)) for i, (_, title) in enumerate(columns)
    ]
    room = shutil.get_terminal_size((120, 24)).columns
    while sum(widths) + 2 * (len(widths) - 1) > room and max(widths) > 12:
        widest = widths.index(max(widths))
        widths[widest] -= 1

    def fit(text: str, width: int) -> str:
        return text if len(text) <= width else text[: width - 1] + "…"

    lines = ["  ".join(fit(t, w).ljust(w) for (_, t), w in zip(columns, widths, strict=True))]
    for row in cells:
        lines.append("  ".join(fit(c, w).ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


JOB_COLUMNS = [
    ("job_id", "JOB"),
    ("started_at", "STARTED"),
    ("status", "STATUS"),
    ("file_name", "FILE"),
    ("po_number", "PO"),
    ("vendor_name", "VENDOR"),
    ("total_amount", "TOTAL"),
    ("error", "ERROR"),
]

STEP_COLUMNS = [("step_name", "STEP"), ("status", "STATUS"), ("attempts", "ATTEMPTS"),
                ("error", "ERROR"), ("note", "NOTE")]  # fmt: skip
ORDER_COLUMNS = [("po_number", "PO"), ("line_count", "LINES"), ("total_amount", "TOTAL"),
                 ("status", "STATUS"), ("attempts", "POSTS"), ("erp_po_id", "ERP ID"),
                 ("error", "ERROR")]  # fmt: skip


def _step_note(step: dict[str, Any]) -> str | None:
    """What a step's data says beside its status: a 997 written late, why it
    was skipped (``--json`` has the whole ``data``)."""
    data = step.get("data") or {}
    if data.get("written_late"):
        return f"written late, {_utc(str(data['written_late']))}"
    skipped = data.get("skipped")
    return f"skipped: {skipped}" if skipped else None


LOG_COLUMNS = [("timestamp", "TIME"), ("level", "LEVEL"), ("message", "EVENT")]


def _job_rows(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**j, "job_id": j["job_id"][:8], "started_at": _utc(j["started_at"])} for j in jobs]


def _utc(stamp: str | None) -> str:
    """A recorded time (ISO, in UTC) to the second, marked UTC: ``2024-02-29T23:58:00Z``
    (read on a host elsewhere, a bare time would pass for local)."""
    return stamp[:19] + "Z" if stamp else ""


def _partner_option(help_text: str) -> Any:
    return click.option("--partner", metavar="NAME", help=help_text)


def _check_unwatched(settings: config.Settings, files: tuple[Path, ...]) -> None:
    """``process`` runs a FILE in place: one in an inbox the daemon watches,
    or claimed in a processing folder (a host's ``processing/<host>/``, which
    it resumes at its start), would be run, and answered, twice — by hand
    and by the daemon. A usage error, before anything is run."""
    folders = {"the inbox": settings.paths.inbox}
    folders.update({f"partner {p.name}'s inbox": p.inbox for p in settings.partners.with_inbox()})
    claimed = [settings.paths.processing, *(p.processing for p in settings.partners.partners)]
    for path in files:
        parents = [path.parent, path.parent.parent]  # processing/<host>/NAME.<job_id>
        found = [(label, f) for label, f in folders.items() if _same_folder(path.parent, f)]
        found += [
            ("a processing folder", f) for f in claimed if any(_same_folder(p, f) for p in parents)
        ]
        if found:
            label, folder = found[0]
            raise click.BadParameter(
                f"{str(path)!r} is in {label} ({folder}), which the daemon watches: it"
                " runs the file itself (running it here too would answer the partner"
                " twice); to run it by hand, move it out of there first",
                param_hint="'FILES...'",
            )


def _same_folder(a: Path, b: Path | None) -> bool:
    """Whether ``a`` and ``b`` are one folder (False if either is missing)."""
    try:
        return b is not None and os.path.samefile(a, b)
    except OSError:
        return False


def _check_present(files: tuple[Path, ...]) -> None:
    """``process`` FILEs must be there: a mistyped path is a usage error, not
    a failed job (nothing was received). Looked at with ``lstat``, not click's
    ``exists=True``: a dangling symbolic link is a FILE that fails unread, and
    is recorded like any other symbolic link."""
    for path in files:
        try:
            os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise click.BadParameter(
                f"Path {str(path)!r} does not exist.", param_hint="'FILES...'"
            ) from None


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the job(s) as JSON.")
@_partner_option(
    "The FILEs come from this partner ([partners.NAME]): a sender not among its ids is refused."
)
@pass_settings
def process(
    settings: config.Settings, files: tuple[Path, ...], as_json: bool, partner: str | None
) -> None:
    """Run the pipeline once for each FILE, in place (the file is not moved),
    and record each job in the configured database.

    Exits 0 only if every file succeeded (a duplicate counts as success) and
    was recorded: a job the database cannot record within 30 s is an error
    (exit 1), and its orders are not posted unless its running record was
    written first. A FILE that does not exist, or that is in an inbox the
    daemon watches or claimed in a processing folder (the daemon runs that
    file itself), is a usage error (exit 2): nothing is run or recorded.

    \b
    Example:
        edi-inbox process po_4711.edi --json
        edi-inbox process --partner acme /var/tmp/po_4711.edi
    """
    given = settings.partners.get(partner) if partner is not None else None
    if partner is not None and given is None:
        known = ", ".join(p.name for p in settings.partners.partners) or "none configured"
        raise click.BadParameter(f"no partner {partner!r} ({known})", param_hint="--partner")
    results: list[JobResult] = []
    unrecorded: NotRecorded | None = None
    with (
        _database(settings) as db,
        Pipeline(settings, store.DatabaseRecorder(db), record_patience=RECORD_PATIENCE) as pipeline,
    ):
        # Once the database is open (process creates it, as it always has), so
        # that the record a typo leaves alone is there to be read: no jobs.
        _check_present(files)
        _check_unwatched(settings, files)
        for path in files:
            try:
                results.append(pipeline.run(path, partner=given))
            except NotRecorded as exc:
                unrecorded = exc
                break
    if unrecorded is not None:
        raise click.ClickException(unrecorded.explain())
    if as_json:
        payload = [r.to_json() for r in results]
        _echo_json(payload[0] if len(payload) == 1 else payload)
    else:
        for result in results:
            click.echo(_summary_line(result))
    if not all(r.success for r in results):
        sys.exit(1)


@main.command()
@click.option("--once", is_flag=True, help="Scan, process what is ready, and exit.")
@click.option(
    "--max-jobs",
    type=click.IntRange(1),
    help="Run at most this many jobs, then exit: no more files are claimed, "
    "the rest stay in the inbox.",
)
@pass_settings
def run(settings: config.Settings, once: bool, max_jobs: int | None) -> None:
    """Watch the inbox and process every finished upload until SIGTERM.

    Logs JSON lines to stdout (a console format on a terminal). Under systemd
    (Type=notify) it reports READY, WATCHDOG and STATUS. With --max-jobs N it
    exits 0 once N jobs have ended (claims left by a previous run count as
    jobs); with --once as well, also when nothing more is ready.

    \b
    Example:
        edi-inbox --config /etc/edi-inbox/edi-inbox.toml run
        edi-inbox run --once --max-jobs 10
    """
    logsetup.configure(settings.log.level, settings.log.format, stream=sys.stdout)
    sys.exit(service.run(settings, once=once, max_jobs=max_jobs))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def status(settings: config.Settings, as_json: bool) -> None:
    """Show every daemon's heartbeat, the inbox backlog and the last 24 hours.

    Exits 0 when a daemon is running (fresh heartbeat), 3 when none is, 1
    when the database is unavailable (missing, unreadable, server down): it
    is never created here.

    \b
    Example:
        edi-inbox status --json
    """
    try:
        db = store.open_database(
            settings.database_url, settings, create=False, retry_seconds=READ_PATIENCE
        )
        try:
            doc = admin.status(settings, db)
            full = db.no_room() if isinstance(db, store.SqliteStore) else None
        finally:
            store.close_database(db)
        if full is not None:
            raise store.DatabaseUnavailable(full)
    except Exception as exc:
        reason = f"database unavailable: {one_line(exc)}"
        if as_json:
            _echo_json({"running": None, "database": "unavailable", "error": reason})
        else:
            click.echo(reason, err=True)
        sys.exit(EXIT_DATABASE_UNAVAILABLE)
    if as_json:
        _echo_json(doc)
    else:
        click.echo(_status_text(doc))
    sys.exit(0 if doc["running"] else EXIT_NOT_RUNNING)


def _said_with(counters: dict[str, Any]) -> bool:
    """Whether ``status`` says the last error with what waits for it."""
    return bool(counters.get("acks_owed") or counters.get("halted"))


def _daemon_state(d: dict[str, Any]) -> str:
    """``running``; ``exited`` (status N) when it exited on a failure and
    said so; else ``stale`` (killed, its machine down: its heartbeat stopped)."""
    if d["alive"]:
        return "running"
    exited = (d.get("counters") or {}).get("exited")
    return f"exited (status {exited})" if exited is not None else "stale"


def _status_text(doc: dict[str, Any]) -> str:
    lines = []
    for d in doc["daemons"]:
        state = _daemon_state(d)
        lines.append(
            f"daemon {d['host']} pid {d['pid']} v{d['version']}: {state}, "
            f"heartbeat {d['heartbeat_age_seconds']:.1f}s ago, started {_utc(d['started_at'])}"
        )
        counters = d.get("counters") or {}  # no backlog for a daemon not running
        said = f": {shown(d['last_error'])}" if d.get("last_error") else ""
        if counters.get("acks_owed"):
            lines.append(
                f"  {counters['acks_owed']} job(s) waiting to write their acknowledgements{said}"
            )
        if counters.get("halted"):
            lines.append(
                f"  {counters['halted']} job(s) cut short by the daemon's trouble, waiting"
                f" claimed to run again{said}"
            )
        if d.get("last_error") and state != "stale" and not _said_with(counters):
            lines.append(f"  its last error: {shown(d['last_error'])}")  # a reload refused …
        if counters.get("held"):
            lines.append(
                f"  {counters['held']} upload(s) held for their X12 trailer (stalled?): failed"
                " as truncated once unchanged for incomplete_grace_seconds"
            )
        if counters.get("open"):
            lines.append(
                f"  {counters['open']} upload(s) held, still open for writing past"
                " incomplete_grace_seconds: each waits for its writer to close it"
            )
    if not doc["daemons"]:
        lines.append("no daemon on record")
    inbox = doc["inbox"]
    oldest = inbox.get("oldest_age_seconds")
    claimed = doc["folders"].get("processing")
    lines.append(
        "inbox: "
        + ("missing or unreadable" if inbox["waiting"] is None else f"{inbox['waiting']} waiting")
        + (f" (oldest {oldest:.0f}s)" if oldest is not None else "")
        + (", processing/ not made yet" if claimed is None else f", {claimed} in processing")
    )
    day = doc["last_24h"]
    lines.append(
        f"last 24 h: {day['succeeded']} succeeded, {day.get('partial', 0)} partial,"
        f" {day['failed']} failed, "
        f"{day['duplicate']} duplicate"
    )
    if doc.get("last_error"):
        err = doc["last_error"]
        lines.append(
            f"last error: {shown(err['file_name'])}: {shown(err['error'])} (job {err['job_id']})"
        )
    for p in doc.get("partners", []):
        line = (
            f"partner {p['name']}: {p['files_24h']} files, {p['failures_24h']} failed"
            f" in the last 24 h"
        )
        inbox = p.get("inbox")
        if inbox and inbox["waiting"] is None:
            line += f"; its inbox {shown(inbox['path'])} is missing or unreadable"
        elif inbox and inbox["waiting"]:
            line += f"; {inbox['waiting']} waiting in its inbox"
        err = p["last_error"]
        if err:
            line += f"; last error: {shown(err['file_name'])}: {shown(err['error'])}"
        lines.append(line)
    return "\n".join(lines)


@main.command()
@click.option("--since", help="Only jobs started at or after this date (YYYY-MM-DD).")
@_partner_option("Only this partner's jobs ([partners.NAME]).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def stats(settings: config.Settings, since: str | None, partner: str | None, as_json: bool) -> None:
    """Totals: jobs, successes, failures, success rate, average duration, amount.

    \b
    Example:
        edi-inbox stats --since 2026-11-01 --partner acme --json
    """
    with _database(settings, create=False) as db:
        doc = queries.stats(db, since=_when(since), partner=partner)
    if as_json:
        _echo_json(doc)
        return
    for key in (
        "total_jobs",
        "successful_jobs",
        "failed_jobs",
        "success_rate",
        "average_duration_seconds",
        "total_amount_processed",
    ):
        value = "n/a (no jobs)" if doc[key] is None else doc[key]
        click.echo(f"{key.replace('_', ' '):<26} {value}")
    by_status = ", ".join(f"{k} {v}" for k, v in doc.get("by_status", {}).items())
    click.echo(f"{'by status':<26} {by_status}")


@main.group()
def jobs() -> None:
    """List, show and search recorded jobs."""


@jobs.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0, queries.OFFSET_MAX))
@click.option(
    "--before",
    metavar="JOB_ID",
    help="Only the jobs listed after this one (the next page: give the last job shown).",
)
@click.option("--status", "status_", help="Only jobs with this status (succeeded, failed, …).")
@_partner_option("Only jobs from this partner ([partners.NAME]).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def jobs_list(
    settings: config.Settings,
    limit: int,
    offset: int,
    before: str | None,
    status_: str | None,
    partner: str | None,
    as_json: bool,
) -> None:
    """The most recent jobs first.

    \b
    Example:
        edi-inbox jobs list --status failed --limit 50
        edi-inbox jobs list --status failed --limit 50 --before 3f2a9c1e
    """
    with _database(settings, create=False) as db:
        found = queries.list_jobs(
            db, limit=limit, offset=offset, status=status_, partner=partner, before=before
        )
    if as_json:
        _echo_json(found)
    else:
        click.echo(_table(_job_rows(found), JOB_COLUMNS))


@jobs.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def jobs_show(settings: config.Settings, job_id: str, as_json: bool) -> None:
    """One job with its steps, log lines and orders (JOB_ID or a unique prefix).

    \b
    Example:
        edi-inbox jobs show 3f2a9c1e
    """
    with _database(settings, create=False) as db:
        doc = queries.show_job(db, job_id)
    if doc is None:
        raise click.ClickException(f"no job {job_id}")
    if as_json:
        _echo_json(doc)
        return
    for key in ("job_id", "file_name", "file_path", "status", "started_at", "duration_seconds",
                "po_number", "vendor_name", "total_amount", "erp_po_id", "sender_id", "partner",
                "retry_of", "duplicate_of", "error"):  # fmt: skip
        value = doc.get(key)
        if value is None:
            continue
        if key == "file_path":  # escaped as its name is: two paths never show alike
            value = files.display_name(str(files.recorded_path(value)))
        click.echo(f"{key.replace('_', ' '):<18} {shown(value)}")
    click.echo("\nsteps:")
    click.echo(_table([{**s, "note": _step_note(s)} for s in doc["steps"]], STEP_COLUMNS))
    if doc["orders"]:
        click.echo("\norders:")
        click.echo(_table(doc["orders"], ORDER_COLUMNS))
    click.echo("\nlog:")
    click.echo(_table(doc["logs"], LOG_COLUMNS))


@jobs.command("search")
@click.option("--po-number", help="Any order's PO number: a case-insensitive prefix or substring.")
@click.option("--vendor", help="Any order's vendor: a case-insensitive prefix or substring.")
@click.option("--sender", help="Interchange sender id (ISA06), exactly.")
@_partner_option("Only jobs from this partner ([partners.NAME]).")
@click.option("--success/--failure", default=None, help="Only succeeded / only failed jobs.")
@click.option("--since", help="Started at or after (YYYY-MM-DD[THH:MM], UTC).")
@click.option("--until", help="Started before (YYYY-MM-DD[THH:MM], UTC).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def jobs_search(
    settings: config.Settings,
    po_number: str | None,
    vendor: str | None,
    sender: str | None,
    partner: str | None,
    success: bool | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Find jobs by PO number, vendor, sender, outcome and time.

    \b
    Example:
        edi-inbox jobs search --po-number 4711 --since 2026-11-01
    """
    with _database(settings, create=False) as db:
        found = queries.search_jobs(
            db,
            po_number=po_number,
            vendor=vendor,
            sender=sender,
            partner=partner,
            success=success,
            since=_when(since),
            until=_when(until),
            limit=limit,
        )
    if as_json:
        _echo_json(found)
    else:
        click.echo(_table(_job_rows(found), JOB_COLUMNS))


@main.command("partners")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def partners_(settings: config.Settings, as_json: bool) -> None:
    """The configured trading partners: their sender ids, acknowledgements
    and rule levels, their files and failures in the last 24 hours, and
    their last activity.

    \b
    Example:
        edi-inbox partners --json
    """
    with _database(settings, create=False) as db:
        doc = admin.partners(settings, db)
    listed = doc["partners"]
    if as_json:
        _echo_json(doc)
        return
    rows = [
        {
            **p,
            "ids": ", ".join(p["ids"]),
            "rules": ", ".join(f"{k}={v}" for k, v in p["rules"].items()) or "as [rules]",
            "inbox": p["inbox"] or "[paths] inbox",
        }
        for p in listed
    ]
    click.echo(_table(rows, PARTNER_COLUMNS))
    click.echo(f"\nsenders no partner claims: {doc['unknown']}")


PARTNER_COLUMNS = [("name", "PARTNER"), ("ids", "IDS"), ("ack", "ACK"), ("ta1", "TA1"),
                   ("inbox", "INBOX"), ("files", "FILES 24H"), ("failures", "FAILED 24H"),
                   ("last_activity", "LAST ACTIVITY"), ("rules", "RULES")]  # fmt: skip


@main.command()
@click.argument("job_id", required=False)
@click.option("--all-failed", is_flag=True, help="Retry every file in failed/.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_settings
def retry(settings: config.Settings, job_id: str | None, all_failed: bool, as_json: bool) -> None:
    """Put a failed file back into the inbox; its next job records retry_of.

    \b
    Example:
        edi-inbox retry 3f2a9c1e-0c4d-4f7e-9d7a-2b1f0e6c5a10
    """
    if bool(job_id) == all_failed:
        raise click.UsageError("give either JOB_ID or --all-failed")
    try:
        with _records(settings) as db:
            results = admin.retry(settings, job_id, all_failed=all_failed, db=db)
    except EdiInboxError as exc:
        raise click.ClickException(shown(exc)) from None
    if as_json:
        _echo_json(results)
        return
    for r in results:
        if r["retried"]:
            file, back = shown(r["file"]), shown(str(Path(r["inbox"]) / r["inbox_name"]))
            click.echo(f"retrying {file} (job {r['job_id']}) as {back}")
        else:
            click.echo(f"not retried: {shown(r['file'])} (job {r['job_id']}): {shown(r['reason'])}")


@contextlib.contextmanager
def _records(settings: config.Settings) -> Iterator[Any]:
    """The database to look a job up in, or None when it cannot be opened
    (within ``READ_PATIENCE``): what works without it goes on."""
    try:
        db = store.open_database(
            settings.database_url, settings, create=False, retry_seconds=READ_PATIENCE
        )
    except Exception:
        yield None
        return
    try:
        yield db
    finally:
        store.close_database(db)


@main.command()
@click.option("--listen", help="HOST:PORT (default: [http] listen, 127.0.0.1:8080).")
@pass_settings
def serve(settings: config.Settings, listen: str | None) -> None:
    """Serve the JSON API (/api, OpenAPI at /docs), the dashboard (/),
    /metrics and /healthz over HTTP until SIGTERM.

    \b
    Example:
        edi-inbox serve --listen 127.0.0.1:8080
    """
    try:
        from . import web
    except ImportError as exc:
        raise click.ClickException(f"{exc.name} is missing: pip install 'edi-inbox[web]'") from None
    if listen is not None:
        settings = settings.replace(http=dataclasses.replace(settings.http, listen=listen))
    try:
        web.serve(settings)
    except EdiInboxError as exc:
        raise click.ClickException(shown(exc)) from None


@main.group()
def db() -> None:
    """Create, migrate or reset the job database."""


@db.command("init")
@pass_settings
def db_init(settings: config.Settings) -> None:
    """Create the tables, or migrate them forward (safe to run at any time).

    \b
    Example:
        edi-inbox db init
    """
    with _database(settings) as database:
        click.echo(f"schema version {store.schema_version(database)}")


@db.command("migrate")
@pass_settings
def db_migrate(settings: config.Settings) -> None:
    """Bring the schema up to this version's; no data is lost.

    \b
    Example:
        edi-inbox db migrate
    """
    try:
        database = store.open_database(settings.database_url, settings)
        applied = store.migrate(database)
    except Exception as exc:
        raise click.ClickException(f"migration failed: {exc}") from None
    click.echo(f"applied {applied or 'nothing'}; schema version {store.schema_version(database)}")
    database.close()


@db.command("rebuild")
@pass_settings
def db_rebuild(settings: config.Settings) -> None:
    """Recompute the totals and search keys from the jobs and orders: after
    editing jobs by hand, or once every host runs this version after a
    rolling upgrade (a host of an older one keeps no partner's totals).
    Safe beside running daemons; no job record changes.

    \b
    Example:
        edi-inbox db rebuild
    """
    with _database(settings) as database:
        store.rebuild(database)
        click.echo("totals and search keys rebuilt from the jobs and orders")


@db.command("reset")
@click.option("--yes", is_flag=True, help="Confirm that every job record is to be deleted.")
@pass_settings
def db_reset(settings: config.Settings, yes: bool) -> None:
    """Drop every table and create them anew: ALL JOB RECORDS ARE LOST.

    \b
    Example:
        edi-inbox db reset --yes
    """
    if not yes:
        raise click.UsageError("db reset deletes every job record: add --yes to confirm")
    with _database(settings) as database:
        running = admin.live_hosts(settings, database)
        if running:  # it would post again, as new, what it posted before
            raise click.ClickException(
                f"a daemon is running ({', '.join(sorted(running))}): stop it first"
                " (systemctl stop edi-inbox); under a running daemon a reset forgets"
                " which orders were posted"
            )
        store.reset(database)
        click.echo(f"reset; schema version {store.schema_version(database)}")


def _summary_line(job: JobResult) -> str:
    mark = {"succeeded": "ok", "duplicate": "dup", "partial": "PARTIAL"}.get(str(job.status))
    line = f"{mark or 'FAILED':<7} {shown(job.file_name)}"
    if job.orders:
        line += "  PO " + ", ".join(shown(o.po_number) for o in job.orders)
        if job.total_amount is not None:
            line += f"  total {as_text(job.total_amount)}"
        if job.erp_po_id:
            line += f"  erp {shown(job.erp_po_id)}"
    if job.duplicate_of:
        line += f"  duplicate of job {job.duplicate_of}"
    if job.error:
        line += f"\n        {shown(job.error)}"
    for step in job.steps:  # a step failed after the outcome was known: the 997's
        if step.status is StepStatus.FAILED and step.error and step.error != job.error:
            line += f"\n        {step.step_name}: {shown(step.error)}"
    return line


if __name__ == "__main__":  # python -m edi_inbox.cli
    main()
