"""Reading job records: what the CLI prints and the service reports.

Every function takes the database from ``store.open_database`` and returns
JSON-ready values (money as a string, times as ISO 8601 in UTC), except
``load_job``, which gives a ``jobs.JobResult``. Each answers from indexes and
small tables, so that it stays well under 100 ms with a million jobs:

- ``stats`` sums ``job_rollups`` (daily rows, the hourly rows of the first
  partial day, the jobs of the first partial hour) and counts the few jobs
  still running.
- ``list_jobs`` walks the ``(started_at, id)`` or ``(status, started_at, id)`` index.
- ``search_jobs``: a PO term is a range on ``po_search`` (every suffix of every
  order's folded PO number), so substrings and prefixes alike use an index
  (a term matching very many jobs walks jobs newest first instead); a
  vendor prefix is a range on ``vendor_search`` (every order's folded
  vendor); a vendor substring is matched against its distinct names (a loose
  index scan, one index seek per distinct vendor), then looked up by the
  index; the jobs found either way as for a PO term.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import peewee as pw

from .errors import StoreError
from .jobs import (
    COUNTED_STATUSES,
    Interchange,
    JobResult,
    JobStatus,
    LogEntry,
    OrderResult,
    StepResult,
    StepStatus,
    iso,
)
from .money import as_text, exact_sum
from .store import (
    FINAL_STATUSES,
    MIN_SUBSTRING,
    Database,
    as_utc,
    day_of,
    hour_of,
    run_unit,
    utcnow,
)
from .store.models import (
    Daemon,
    Job,
    JobInterchange,
    JobLog,
    JobRollup,
    JobStep,
    Order,
    PartnerRollup,
    PoSearch,
    VendorSearch,
    po_search_key,
    vendor_search_key,
)

SUMMARY_FIELDS = (
    Job.job_id,
    Job.file_name,
    Job.status,
    Job.success,
    Job.started_at,
    Job.completed_at,
    Job.duration_seconds,
    Job.po_number,
    Job.total_amount,
    Job.vendor_name,
    Job.erp_po_id,
    Job.error,
    Job.sender_id,
    Job.partner,
    Job.host,
    Job.retry_of,
    Job.duplicate_of,
)
LIVE_STATUSES = (JobStatus.RECEIVED.value, JobStatus.RUNNING.value)
FILED_FAILED = (JobStatus.FAILED.value, JobStatus.PARTIAL.value)  # their files go to failed/
OFFSET_MAX = 2**63 - 1  # the largest integer SQLite and PostgreSQL's bigint hold
SEARCH_MATCHES = ("substring", "prefix")
MATERIALIZE_AT_LEAST = 1000  # candidate jobs a PO search always looks up directly


def moment(value: str) -> datetime:
    """``since``/``until`` as the CLI and the HTTP API take them: an ISO date
    or date-time, naive meaning UTC; ``ValueError`` (its message for the
    user) otherwise, or past what a day's or an hour's bounds can reach (the
    years 1 and 9999)."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a date (YYYY-MM-DD[THH:MM])") from None
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if not 1 < parsed.year < 9999:
        raise ValueError(f"{value!r} is out of range (years 2 to 9998)")
    return parsed


def _rows(query: Any) -> Iterator[Any]:
    """The rows of a ``.tuples()``/``.dicts()`` query (peewee's type stubs call
    them model instances)."""
    return iter(query)


def summary(row: dict[str, Any]) -> dict[str, Any]:
    """A job row (``SUMMARY_FIELDS`` as a dict) in JSON-ready form."""
    out = dict(row)
    out["started_at"] = iso(row["started_at"])
    out["completed_at"] = iso(row["completed_at"])
    out["total_amount"] = as_text(row["total_amount"])
    return out


def _money_sum(db: Database, column: Any) -> Any:
    return pw.fn.dec_sum(column) if db.is_sqlite else pw.fn.SUM(column)


def _next_prefix(term: str) -> str | None:
    """The least string greater than every string starting with ``term``."""
    while term and ord(term[-1]) == 0x10FFFF:
        term = term[:-1]
    return term[:-1] + chr(ord(term[-1]) + 1) if term else None


def _prefix(column: Any, term: str) -> Any:
    upper = _next_prefix(term)
    condition = column >= term
    return condition & (column < upper) if upper is not None else condition


# --- stats ----------------------------------------------------------------


def stats(
    db: Database, since: datetime | None = None, partner: str | None = None
) -> dict[str, Any]:
    """Totals over jobs started at or after ``since`` (all jobs when None),
    of one ``partner`` when given (from ``partner_rollups``, as the others
    from ``job_rollups``: at most a day of hours and a row per day, however
    long the history).

    ``successful_jobs`` counts succeeded and duplicate jobs (both are a success
    for the partner); ``success_rate`` is their percentage of the jobs that
    reached an outcome (an interrupted run, carried on by another, is none);
    ``total_amount_processed`` sums succeeded jobs only (a duplicate's orders
    were counted with the original); ``by_status`` has every status."""

    since = None if since is None else as_utc(since)
    rollup: Any = JobRollup if partner is None else PartnerRollup
    ours = rollup.partner == partner if partner is not None else None
    theirs = Job.partner == partner if partner is not None else None

    def work() -> dict[str, Any]:
        jobs: Counter[str] = Counter()
        durations = 0
        duration_total = 0.0
        amounts: dict[str, Decimal] = {}

        def add(status: str, n: int, nd: int, total: float, amount: Any) -> None:
            nonlocal durations, duration_total
            jobs[status] += int(n or 0)
            durations += int(nd or 0)
            duration_total += float(total or 0.0)
            amounts[status] = exact_sum((amounts.get(status), amount))

        # [since, first hour) from jobs, [first hour, first day) from hourly
        # rollups, [first day, ∞) from daily ones: at most a day of hours.
        first_day = first_hour = None
        if since is not None:
            first_hour = _ceil(since, hour_of(since), timedelta(hours=1))
            first_day = _ceil(since, day_of(since), timedelta(days=1))
        spans: list[tuple[str, datetime | None, datetime | None]] = [("day", first_day, None)]
        if since is not None:
            spans.append(("hour", first_hour, first_day))
        for period, lower, upper in spans:
            query = rollup.select(
                rollup.status,
                pw.fn.SUM(rollup.jobs),
                pw.fn.SUM(rollup.durations),
                pw.fn.SUM(rollup.duration_total),
                _money_sum(db, rollup.amount),
            ).where(rollup.period == period)
            if ours is not None:
                query = query.where(ours)
            if lower is not None:
                query = query.where(rollup.start >= lower)
            if upper is not None:
                query = query.where(rollup.start < upper)
            for row in _rows(query.group_by(rollup.status).tuples()):
                add(*row)
        if since is not None and first_hour is not None and first_hour > since:
            partial = Job.select(Job.status, Job.duration_seconds, Job.total_amount).where(
                (Job.started_at >= since)
                & (Job.started_at < first_hour)
                & Job.status.in_([str(s) for s in FINAL_STATUSES])
            )
            if theirs is not None:
                partial = partial.where(theirs)
            for status, duration, amount in _rows(partial.tuples()):
                add(status, 1, duration is not None, duration or 0.0, amount)
        live = Job.select(Job.status, pw.fn.COUNT(Job.id)).where(Job.status.in_(LIVE_STATUSES))
        if since is not None:
            live = live.where(Job.started_at >= since)
        if theirs is not None:
            live = live.where(theirs)
        for status, n in _rows(live.group_by(Job.status).tuples()):
            jobs[status] += n
        found = _stats_json(jobs, durations, duration_total, amounts, since)
        return found if partner is None else {"partner": partner, **found}

    return run_unit(db, work, write=False)


def partner_activity(db: Database, names: list[str], since: datetime) -> dict[str, dict[str, Any]]:
    """For ``edi-inbox partners``: per partner name, its files (jobs) and
    failures (failed jobs) started at or after ``since``, and its last
    activity (the latest job's start, at any time)."""
    since = as_utc(since)
    out = {}
    for name in names:
        counts = stats(db, since=since, partner=name)  # from its rollups

        def last(name: str = name) -> Any:
            return Job.select(pw.fn.MAX(Job.started_at)).where(Job.partner == name).scalar()

        latest = run_unit(db, last, write=False)
        out[name] = {
            "files": counts["total_jobs"],
            "failures": counts["failed_jobs"],
            "partial": counts["partial_jobs"],
            "last_activity": iso(as_utc(latest)) if isinstance(latest, datetime) else latest,
        }
    return out


def _ceil(moment: datetime, floor: datetime, step: timedelta) -> datetime:
    return floor if floor == moment else floor + step


def _stats_json(
    jobs: Counter[str],
    durations: int,
    duration_total: float,
    amounts: dict[str, Decimal],
    since: datetime | None,
) -> dict[str, Any]:
    by_status = {str(s): jobs.get(str(s), 0) for s in JobStatus}
    successful = by_status["succeeded"] + by_status["duplicate"]
    # An interrupted run is carried on by another: no outcome of its own.
    finished = sum(by_status[str(s)] for s in FINAL_STATUSES if s is not JobStatus.INTERRUPTED)
    return {
        "since": iso(since),
        "total_jobs": sum(by_status.values()),
        "successful_jobs": successful,
        "failed_jobs": by_status["failed"],
        "partial_jobs": by_status["partial"],  # some orders posted, some rejected
        "duplicates": by_status["duplicate"],
        "success_rate": round(100.0 * successful / finished, 2) if finished else None,
        "average_duration_seconds": round(duration_total / durations, 3) if durations else None,
        # What was posted, each order once: a partial job's total is its posted orders'.
        "total_amount_processed": as_text(exact_sum(amounts.get(str(s)) for s in COUNTED_STATUSES)),
        "by_status": by_status,
    }


def status_summary(db: Database, *, now: datetime | None = None) -> dict[str, Any]:
    """For ``edi-inbox status``: the last 24 hours by status, the jobs running
    now, the latest failed job and every daemon's heartbeat (its age by the
    database's clock unless ``now`` is given)."""
    given, now = now, as_utc(now or utcnow())
    day = stats(db, since=now - timedelta(hours=24))

    def work() -> dict[str, Any]:
        amounts = posted_by_currency(db, now - timedelta(hours=24))
        running = Job.select().where(Job.status == JobStatus.RUNNING.value).count()
        last = (
            Job.select(Job.job_id, Job.file_name, Job.error, Job.completed_at)
            .where(Job.status == JobStatus.FAILED.value)
            .order_by(Job.started_at.desc(), Job.id.desc())
            .dicts()
            .first()
        )
        if last is not None:
            last["completed_at"] = iso(last["completed_at"])
        return {"running": running, "last_error": last, "amounts": amounts}

    extra = run_unit(db, work, write=False)
    amounts = extra.pop("amounts")
    by_status = day["by_status"]
    return {
        "now": iso(now),
        "last_24h": {
            "total": day["total_jobs"],
            "succeeded": by_status["succeeded"],
            "partial": by_status["partial"],
            "failed": by_status["failed"],
            "duplicate": by_status["duplicate"],
            "interrupted": by_status["interrupted"],
            "average_duration_seconds": day["average_duration_seconds"],
            "total_amount_processed": day["total_amount_processed"],
            "amounts_by_currency": amounts,
        },
        **extra,
        "daemons": list_daemons(db, now=given),
    }


def posted_by_currency(db: Database, since: datetime) -> dict[str, str]:
    """The orders posted by jobs started at or after ``since``, summed per
    currency (the order's CUR; "" for orders naming none): a sum of every
    currency's amounts (``total_amount_processed``) names none. Part of the
    caller's unit."""
    if db.is_sqlite:
        currency: Any = pw.fn.json_extract(Order.payload, "$.currency")
    else:
        currency = pw.Expression(Order.payload.cast("json"), "->>", "currency")
    query = (
        Order.select(currency, _money_sum(db, Order.total_amount))
        .join(Job, on=(Order.job == Job.id))
        .where((Job.started_at >= as_utc(since)) & (Order.status == "posted"))
        .group_by(currency)
    )
    sums: dict[str, Decimal] = {}
    for named, amount in _rows(query.tuples()):
        sums[named or ""] = exact_sum((sums.get(named or ""), amount))
    return {c: format(sums[c], "f") for c in sorted(sums)}


def list_daemons(db: Database, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every daemon's last heartbeat, newest first, with its age in seconds
    by the clock heartbeats are dated by (``Database.clock``) unless ``now``
    is given."""

    def work() -> list[dict[str, Any]]:
        clock = as_utc(now) if now else db.clock()
        rows = list(_rows(Daemon.select().order_by(Daemon.heartbeat_at.desc()).dicts()))
        for row in rows:
            row.pop("id", None)
            row["heartbeat_age_seconds"] = round((clock - row["heartbeat_at"]).total_seconds(), 3)
            row["started_at"] = iso(row["started_at"])
            row["heartbeat_at"] = iso(row["heartbeat_at"])
        return rows

    return run_unit(db, work, write=False)


# --- listing and showing --------------------------------------------------


def list_jobs(
    db: Database,
    limit: int = 20,
    offset: int = 0,
    status: str | None = None,
    partner: str | None = None,
    before: str | None = None,
) -> list[dict[str, Any]]:
    """Job summaries, most recently started first (of one ``partner`` if given).

    ``before``: a job id (or a unique prefix of one): only the jobs listed
    after it, whatever was recorded since — the next page, when the last
    of this one is given (an ``offset`` counts from the newest job, so jobs
    recorded meanwhile shift it). An unknown one is a ``StoreError``."""
    if status is not None and status not in {str(s) for s in JobStatus}:
        raise StoreError(f"unknown status {status!r}: one of {', '.join(map(str, JobStatus))}")

    def work() -> list[dict[str, Any]]:
        query = Job.select(*SUMMARY_FIELDS)
        if status is not None:
            query = query.where(Job.status == status)
        if partner is not None:
            query = query.where(Job.partner == partner)
        if before is not None:
            row = _resolve(before)
            if row is None:
                raise StoreError(f"no job {before!r} to list the jobs before")
            query = query.where(
                (Job.started_at < row.started_at)
                | ((Job.started_at == row.started_at) & (Job.id < row.id))
            )
        query = query.order_by(Job.started_at.desc(), Job.id.desc()).limit(limit).offset(offset)
        return [summary(row) for row in _rows(query.dicts())]

    return run_unit(db, work, write=False)


def _resolve(job_id: str) -> Any:
    """The job row for a job id or a unique prefix of one; None if none matches."""
    job_id = job_id.strip().lower()
    if not job_id:
        return None
    row = Job.get_or_none(Job.job_id == job_id)
    if row is not None:
        return row
    rows = list(Job.select().where(_prefix(Job.job_id, job_id)).order_by(Job.job_id).limit(2))
    if len(rows) > 1:
        raise StoreError(f"job id prefix {job_id!r} matches several jobs: give more of it")
    return rows[0] if rows else None


def filed_at(db: Database, job_id: str) -> tuple[str, str | None] | None:
    """A job's full id and the path its file was filed under (``job_id`` may
    be a unique prefix); None if no job matches."""

    def work() -> tuple[str, str | None] | None:
        row = _resolve(job_id)
        return None if row is None else (row.job_id, row.file_path)

    return run_unit(db, work, write=False)


def load_job(db: Database, job_id: str, *, with_content: bool = False) -> JobResult | None:
    """A recorded job as a ``JobResult`` (``job_id`` may be a unique prefix).

    ``edi_content`` is loaded only ``with_content`` (``retry`` needs it)."""

    def work() -> JobResult | None:
        row = _resolve(job_id)
        if row is None:
            return None
        steps = JobStep.select().where(JobStep.job == row.id).order_by(JobStep.id)
        logs = JobLog.select().where(JobLog.job == row.id).order_by(JobLog.id)
        orders = Order.select().where(Order.job == row.id).order_by(Order.id)
        interchanges = JobInterchange.select().where(JobInterchange.job == row.id)
        return JobResult(
            job_id=row.job_id,
            file_name=row.file_name,
            status=JobStatus(row.status),
            started_at=row.started_at,
            completed_at=row.completed_at,
            duration_seconds=row.duration_seconds,
            file_sha256=row.file_sha256,
            file_size=row.file_size,
            file_path=row.file_path,
            error=row.error,
            error_details=row.error_details or [],
            host=row.host,
            retry_of=row.retry_of,
            duplicate_of=row.duplicate_of,
            interchanges=_first_first(
                [Interchange(i.sender_id, i.receiver_id, i.control_number) for i in interchanges],
                (row.sender_id, row.receiver_id, row.interchange_control_number),
            ),
            steps=[
                StepResult(
                    step_name=s.step_name,
                    status=StepStatus(s.status),
                    attempts=s.attempts,
                    error=s.error,
                    data=s.data or {},
                    started_at=s.started_at,
                    duration_seconds=s.duration_seconds,
                )
                for s in steps
            ],
            logs=[LogEntry(e.timestamp, e.level, e.message, e.details or {}) for e in logs],
            orders=[
                OrderResult(
                    po_number=o.po_number,
                    idempotency_key=o.idempotency_key,
                    line_count=o.line_count,
                    total_amount=o.total_amount,
                    vendor_name=o.vendor_name,
                    status=o.status,
                    erp_po_id=o.erp_po_id,
                    error=o.error,
                    attempts=o.attempts,
                    payload=o.payload,
                    json_version=o.json_version,
                    refused=o.refused,
                )
                for o in orders
            ],
            acks=row.acks or [],
            partner=row.partner,
            edi_content=bytes(row.edi_content) if with_content and row.edi_content else None,
        )

    return run_unit(db, work, write=False)


def _first_first(interchanges: list[Interchange], first: tuple[Any, ...]) -> list[Interchange]:
    """The file's first interchange (the one on the job row) first, then the others."""
    return sorted(interchanges, key=lambda i: (i.key() != first, i.key()))


def show_job(db: Database, job_id: str) -> dict[str, Any] | None:
    """``jobs show``: a job as ``JobResult.to_json()`` (``job_id`` may be a
    unique prefix; an ambiguous one raises ``StoreError``), None if unknown.

    The summary fields come from the job row: an order row that a later job
    took over (see ``store.Order``) does not change what this job recorded."""

    def work() -> dict[str, Any] | None:
        job = load_job(db, job_id)
        if job is None:
            return None
        data = job.to_json()
        row = Job.select(*SUMMARY_FIELDS, Job.receiver_id, Job.interchange_control_number).where(
            Job.job_id == job.job_id
        )
        fields: dict[str, Any] = row.dicts().get()  # type: ignore[assignment]
        for name in ("po_number", "vendor_name", "erp_po_id", "sender_id"):
            data[name] = fields[name]
        data["receiver_id"] = fields["receiver_id"]
        data["interchange_control_number"] = fields["interchange_control_number"]
        data["total_amount"] = as_text(fields["total_amount"])
        data["success"] = fields["success"]
        return data

    return run_unit(db, work, write=False)


def failed_jobs(db: Database, limit: int | None = None) -> list[dict[str, Any]]:
    """Failed and partial jobs (their files go to failed/) not yet retried by
    a job that succeeded or is running, newest first (the files a page
    shows are the latest, not a year-old backlog's), each with
    ``has_content`` (whether the file's bytes are in the database): the
    dashboard's failed files."""

    def work() -> list[dict[str, Any]]:
        retry = Job.alias("retry")
        retried = retry.select(pw.SQL("1")).where(
            (retry.retry_of == Job.job_id)
            & retry.status.in_(
                [JobStatus.SUCCEEDED.value, JobStatus.DUPLICATE.value, JobStatus.RUNNING.value]
            )
        )
        query = (
            Job.select(*SUMMARY_FIELDS, Job.file_path, Job.edi_content.is_null(False).alias("c"))
            .where(Job.status.in_(FILED_FAILED) & ~pw.fn.EXISTS(retried))
            .order_by(Job.started_at.desc(), Job.id.desc())
        )
        if limit is not None:
            query = query.limit(limit)
        out = []
        for row in _rows(query.dicts()):
            has_content = bool(row.pop("c"))
            item = summary(row)
            item["has_content"] = has_content
            out.append(item)
        return out

    return run_unit(db, work, write=False)


# --- search ---------------------------------------------------------------


def _vendor_names(db: Database) -> list[str]:
    """The distinct names in ``vendor_search``, one index seek each (a "loose
    index scan": neither database skips through an index for DISTINCT by itself)."""
    sql = (
        "WITH RECURSIVE v(name) AS ("
        " SELECT MIN(vendor) FROM vendor_search"
        " UNION ALL"
        " SELECT (SELECT MIN(vendor) FROM vendor_search WHERE vendor > v.name)"
        " FROM v WHERE v.name IS NOT NULL"
        ") SELECT name FROM v WHERE name IS NOT NULL"
    )
    return [name for (name,) in db.execute_sql(sql).fetchall()]


def _among(candidates: Any, limit: int) -> Any:
    """``Job.id IN (candidates)``, shaped for the number of candidates.

    Few: look them up and sort them. Many (a short or common PO term): sorting
    them all would cost more than walking jobs newest first and stopping at
    ``limit`` hits, so test each job with a correlated ``EXISTS`` instead. The
    crossover is near sqrt(limit × jobs) candidates (both plans then touch
    about as many rows)."""
    model = candidates.model
    total = Job.select(pw.fn.MAX(Job.id)).scalar() or 0
    cap = max(MATERIALIZE_AT_LEAST, math.isqrt(max(limit, 1) * total))
    probe = candidates.limit(cap + 1)
    count = pw.Select([probe], [pw.fn.COUNT(pw.SQL("*"))]).scalar(Job._meta.database)
    if count <= cap:
        return Job.id.in_(candidates)
    return pw.fn.EXISTS(candidates.where(model.job == Job.id))


def search_jobs(
    db: Database,
    po_number: str | None = None,
    vendor: str | None = None,
    sender: str | None = None,
    success: bool | None = None,
    partner: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    match: str = "substring",
    status: str | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Job summaries matching every given filter, most recently started first
    (``limit`` of them, after the first ``offset``).

    ``po_number`` and ``vendor`` match case-insensitively (``fold``), as a
    substring (default) or, with ``match="prefix"``, as a prefix; a PO term
    shorter than ``MIN_SUBSTRING`` characters matches as a prefix. A PO term
    or vendor term matches any order of a file (a job still running included).
    ``sender`` is the ISA06 sender id, exactly; ``partner`` a partner's name,
    exactly; ``status`` a job status. ``since``/``until`` bound
    ``started_at`` (``until`` exclusive)."""
    if match not in SEARCH_MATCHES:
        raise StoreError(f"match must be one of {', '.join(SEARCH_MATCHES)}, not {match!r}")

    def work() -> list[dict[str, Any]]:
        conditions = []
        if po_number is not None and po_number.strip():
            term = po_search_key(po_number) or ""  # the first PO_SEARCH_CHARS, as stored
            ids: Any
            if match == "prefix" or len(term) < MIN_SUBSTRING:
                ids = Order.select(Order.job).where(_prefix(Order.po_number_folded, term))
            else:
                ids = PoSearch.select(PoSearch.job).where(_prefix(PoSearch.suffix, term))
            conditions.append(_among(ids, offset + limit))
        if vendor is not None and vendor.strip():
            term = vendor_search_key(vendor) or ""  # cut as stored
            if match == "prefix":
                vendors = VendorSearch.select(VendorSearch.job).where(
                    _prefix(VendorSearch.vendor, term)
                )
            else:
                names = [name for name in _vendor_names(db) if term in name]
                if not names:
                    return []
                vendors = VendorSearch.select(VendorSearch.job).where(
                    VendorSearch.vendor.in_(names)
                )
            conditions.append(_among(vendors, offset + limit))
        if sender is not None and sender.strip():
            conditions.append(Job.sender_id == sender.strip())
        if partner is not None:
            conditions.append(Job.partner == partner)
        if success is not None:
            conditions.append(Job.success == success)
        if status is not None:
            conditions.append(Job.status == status)
        if since is not None:
            conditions.append(Job.started_at >= since)
        if until is not None:
            conditions.append(Job.started_at < until)
        query = Job.select(*SUMMARY_FIELDS)
        if conditions:
            query = query.where(*conditions)
        query = query.order_by(Job.started_at.desc(), Job.id.desc())
        return [summary(row) for row in _rows(query.limit(limit).offset(offset).dicts())]

    return run_unit(db, work, write=False)
