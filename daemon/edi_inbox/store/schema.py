"""The schema's version, and bringing a database to it.

``SCHEMA_VERSION`` is kept in ``schema_version``; ``MIGRATIONS`` step it
forward in place (``init`` at every start, ``migrate`` on demand), so an
upgrade never needs ``reset``.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import peewee as pw
from playhouse.migrate import SchemaMigrator

from ..errors import StoreError
from ..money import exact_sum
from .database import Database, run_unit
from .fields import utcnow
from .models import (
    CONTROL_NUMBER_MAX,
    FINAL_STATUSES,
    MODELS,
    ROLLUP_PERIODS,
    BaseModel,
    ControlNumber,
    Daemon,
    Job,
    JobInterchange,
    JobLog,
    JobRollup,
    Order,
    PartnerRollup,
    PoSearch,
    SchemaVersion,
    VendorSearch,
    po_suffixes,
    vendor_search_key,
)

SCHEMA_VERSION = 10


def _create_tables(db: Database, models: Sequence[type[BaseModel]]) -> None:
    # Tables keyed by their primary key alone are WITHOUT ROWID on SQLite: one
    # B-tree to write instead of two. PostgreSQL has no such clause.
    for model in (JobInterchange, PoSearch, VendorSearch, JobRollup, PartnerRollup):
        model._meta.without_rowid = db.is_sqlite
    db.create_tables(models, safe=True)
    if Job in models:
        _partner_statistics(db)


def _partner_statistics(db: Database) -> None:
    """PostgreSQL: how often each partner has each status. Without it the
    planner takes partner and status for independent, and finds a partner
    that never failed (``status``'s last error) by walking every failed job
    backwards for one of that partner's (schema v10)."""
    if not db.is_sqlite:
        db.execute_sql(
            'CREATE STATISTICS IF NOT EXISTS "jobs_partner_status" (mcv)'
            ' ON "partner", "status" FROM "jobs"'
        )


def _lock_schema(db: Database) -> None:
    """Serialize schema changes between daemons starting at once."""
    if not db.is_sqlite:  # SQLite: BEGIN IMMEDIATE already excludes other writers
        db.execute_sql("SELECT pg_advisory_xact_lock(7243001)")


def _read_version(db: Database) -> int | None:
    if "schema_version" not in db.get_tables():
        return None
    row = SchemaVersion.get_or_none(SchemaVersion.id == 1)
    return row.version if row else None


def _write_version(version: int) -> None:
    SchemaVersion.insert(id=1, version=version, migrated_at=utcnow()).on_conflict(
        conflict_target=[SchemaVersion.id],
        preserve=[SchemaVersion.version, SchemaVersion.migrated_at],
    ).execute()


def seed_control_number() -> None:
    """The ``isa13`` sequence's row, if missing (part of the caller's unit)."""
    # Seconds since 2020 (as jobs.NullRecorder's numbers): a database made anew
    # starts past the numbers its predecessor gave out at one a second.
    start = (int(time.time()) - 1_577_836_800) % CONTROL_NUMBER_MAX
    ControlNumber.insert(name="isa13", value=start).on_conflict_ignore().execute()


def _add_column_if_missing(db: Database, model: type[BaseModel], name: str) -> None:
    table = model._meta.table_name
    if name in {c.name for c in db.get_columns(table)}:
        return
    field = model._meta.fields[name]
    SchemaMigrator.from_database(db).add_column(table, field.column_name, field).run()


def _migrate_v2(db: Database) -> None:
    """v2: ``jobs.acks``; ``po_search`` and ``job_rollups``, filled from existing jobs."""
    _add_column_if_missing(db, Job, "acks")
    _create_tables(db, MODELS)  # the new tables, and any index still missing
    db.execute_sql('DROP INDEX IF EXISTS "orders_job_id"')  # now (job_id, po_number_folded)
    rebuild_search_and_rollups(db)


def _migrate_v3(db: Database) -> None:
    """v3: no index on ``jobs.po_number`` (never used: POs are found through
    ``orders`` and ``po_search``; it cost every finished job a page write)."""
    db.execute_sql('DROP INDEX IF EXISTS "jobs_po_number"')


def _migrate_v4(db: Database) -> None:
    """v4: ``jobs.partner`` (issue 11), indexed with ``started_at``; jobs
    recorded before it have none."""
    _add_column_if_missing(db, Job, "partner")
    _create_tables(db, MODELS)  # the (partner, started_at) index


def _migrate_v5(db: Database) -> None:
    """v5: an order refused was recorded ``failed`` before v3's code said
    ``rejected``; the contract has posted, rejected and duplicate only."""
    db.execute_sql('UPDATE "orders" SET "status" = \'rejected\' WHERE "status" = \'failed\'')


def _migrate_v6(db: Database) -> None:
    """v6: ``vendor_search`` (a vendor search matches any order of a file, not
    only its first), filled from the orders; the ``jobs`` index on the first
    order's vendor it replaces is dropped, with the job's folded PO number and
    vendor columns no search reads (left in place, unused and NULL from now
    on, by a SQLite older than 3.35, which cannot drop a column)."""
    _create_tables(db, MODELS)
    db.execute_sql('DROP INDEX IF EXISTS "jobs_vendor_name_folded_started_at"')
    droppable = not db.is_sqlite or sqlite3.sqlite_version_info >= (3, 35)
    for column in ("po_number_folded", "vendor_name_folded"):
        if droppable and column in {c.name for c in db.get_columns("jobs")}:
            db.execute_sql(f'ALTER TABLE "jobs" DROP COLUMN "{column}"')
    fill_vendor_search(db)


def _migrate_v7(db: Database) -> None:
    """v7: ``jobs.ack_numbers``, the control numbers a running job reserved
    for its acknowledgements; jobs recorded before it have none."""
    _add_column_if_missing(db, Job, "ack_numbers")


def _migrate_v8(db: Database) -> None:
    """v8: ``orders.json_version``, the version of an order's payload fields
    (``orders.JSON_VERSION``); orders recorded before it have none, and are
    compared with a resend on the fields both have. ``orders.refused``: the
    ERP refused the order for good, or was never reached (false for those
    recorded before): it does not hold the order."""
    _add_column_if_missing(db, Order, "json_version")
    _add_column_if_missing(db, Order, "refused")


# The error an older version recorded for an order whose every attempt met a
# refused connection (``erp._transport_message`` then as now).
_NEVER_CONNECTED = re.compile(r"unavailable after (\d+) attempts: ConnectionRefusedError: ")


def _migrate_v9(db: Database) -> None:
    """v9: an order a version before 9 recorded unanswered after refused
    connections only is marked ``refused``: the ERP never got it (those
    versions took it for one the ERP may hold, so that once its changed
    version was posted, a retry sent it too). Only when its error says so,
    every retry its job logged (``erp_retry``, one before each attempt after
    the first) met a refused connection too, and the job ran once (a run
    after the first starts after the job's row was written: the run before
    may have sent the order before it stopped). ``daemons.heartbeat_seconds``:
    the interval a daemon beats at (None for those of older versions).
    ``job_rollups.reached``: the jobs that reached a status, never taken
    back (from the counts so far)."""
    _add_column_if_missing(db, Daemon, "heartbeat_seconds")
    _add_column_if_missing(db, JobRollup, "reached")
    JobRollup.update(reached=JobRollup.jobs).execute()
    candidates = (
        Order.select(Order.id, Order.job, Order.attempts, Order.error)
        .join(Job)
        .where(
            Order.erp_po_id.is_null(),
            Order.refused == False,  # noqa: E712
            Order.error.contains("ConnectionRefusedError"),
            Job.started_at <= Job.created_at,
        )
    )
    rows: list[Any] = list(candidates.tuples())
    never_sent = []
    for pk, job, attempts, error in rows:
        found = _NEVER_CONNECTED.search(error)
        if found is None or int(found[1]) != attempts:
            continue
        retries = JobLog.select(JobLog.details).where(
            JobLog.job == job, JobLog.message == "erp_retry"
        )
        errors = [str((line.details or {}).get("error", "")) for line in retries]
        refused = all(e.startswith("ConnectionRefusedError: ") for e in errors)
        if refused and len(errors) >= attempts - 1:
            never_sent.append(pk)
    if never_sent:
        Order.update(refused=True).where(Order.id.in_(never_sent)).execute()


def _migrate_v10(db: Database) -> None:
    """v10: ``partner_rollups``, each partner's ``job_rollups`` (``stats
    --partner`` no longer reads every job of the partner), filled from the
    jobs; the index of jobs by partner and status, and on PostgreSQL the
    statistics that make the planner use it (a partner's last failure,
    found by ``status`` for each partner, no longer walks every failed
    job). Built here once, in the migration's transaction."""
    _create_tables(db, [Job, PartnerRollup])  # Job is there: its missing indexes
    _fill_rollups(PartnerRollup)


# Each step takes the schema from version N-1 to N, inside the migration's
# transaction. A step must work from that version's layout, not today's
# models: add columns with _add_column_if_missing, create tables safe=True.
MIGRATIONS: dict[int, Callable[[Database], None]] = {
    2: _migrate_v2,
    3: _migrate_v3,
    4: _migrate_v4,
    5: _migrate_v5,
    6: _migrate_v6,
    7: _migrate_v7,
    8: _migrate_v8,
    9: _migrate_v9,
    10: _migrate_v10,
}


def init(db: Database) -> list[int]:
    """Create the schema in an empty database, or migrate an older one forward.

    Returns the versions applied (``[SCHEMA_VERSION]`` for a new database).
    Safe to call at every start-up, from several hosts at once."""
    return migrate(db)


def migrate(db: Database) -> list[int]:
    """Bring the schema to ``SCHEMA_VERSION``; returns the versions applied.

    Raises ``StoreError`` for a database newer than this code, or one holding a
    ``jobs`` table but no schema version (not ours to guess at). Creates the
    SQLite file's directory if need be."""
    if db.is_sqlite:
        os.makedirs(os.path.dirname(os.path.abspath(db.database)), exist_ok=True)
    # The common case, at every start and CLI call: current already. A read
    # answers it without queueing for the write lock behind a busy daemon.
    if schema_version(db) == SCHEMA_VERSION:
        return []

    def work() -> list[int]:
        _lock_schema(db)
        current = _read_version(db)
        if current is None:
            if "jobs" in db.get_tables():
                raise StoreError(
                    "the database has a jobs table but no schema_version: "
                    "not an edi-inbox database this version knows how to migrate"
                )
            _create_tables(db, MODELS)
            seed_control_number()
            _write_version(SCHEMA_VERSION)
            return [SCHEMA_VERSION]
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"the database schema is version {current}, newer than this "
                f"edi-inbox knows ({SCHEMA_VERSION}): upgrade edi-inbox"
            )
        applied = []
        for version in range(current + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version](db)
            applied.append(version)
        if applied:
            _write_version(SCHEMA_VERSION)
        return applied

    return run_unit(db, work)


def reset(db: Database) -> list[int]:
    """Drop every edi-inbox table (all records go) and create the schema
    anew; but ``control_numbers``: the acknowledgements' ISA13s carry on (a
    partner refuses a number it has seen, and seconds since 2020 are no
    bound on the numbers given out)."""

    def work() -> None:
        _lock_schema(db)
        for model in reversed(MODELS):
            if model is not ControlNumber:
                model.drop_table(safe=True)

    run_unit(db, work)
    return migrate(db)


def schema_version(db: Database) -> int | None:
    """The database's schema version, or None when it has none yet."""
    return run_unit(db, lambda: _read_version(db), write=False)


def _fill_from_orders(key: Any, column: Any, keys: Callable[[Any], list[str]]) -> None:
    """Recompute a search table (``key``, ``job``) from the orders: the
    ``keys`` of each order's ``column``, 5,000 orders at a time."""
    model = key.model
    model.delete().execute()
    last = 0
    while True:
        batch: list[Any] = list(
            Order.select(Order.id, Order.job, column)
            .where(Order.id > last)
            .order_by(Order.id)
            .limit(5000)
            .tuples()
        )
        if not batch:
            break
        last = batch[-1][0]
        rows = {(key, job) for _, job, value in batch for key in keys(value)}
        for chunk in pw.chunked(sorted(rows), 500):
            model.insert_many(chunk, fields=[key, model.job]).on_conflict_ignore().execute()


def fill_vendor_search(db: Database) -> None:
    """Recompute ``vendor_search`` from the orders (part of the caller's
    transaction)."""
    _fill_from_orders(
        VendorSearch.vendor,
        Order.vendor_name,
        lambda name: [k] if (k := vendor_search_key(name)) else [],
    )


def rebuild(db: Database) -> None:
    """``rebuild_search_and_rollups`` as a unit of its own, beside running
    daemons: on PostgreSQL the totals are locked first, so a job ending
    meanwhile adds its share after the rebuild, never into the rows it
    replaces (SQLite's write lock already holds them off)."""

    def work() -> None:
        if not db.is_sqlite:
            db.execute_sql('LOCK TABLE "job_rollups", "partner_rollups" IN EXCLUSIVE MODE')
        rebuild_search_and_rollups(db)

    run_unit(db, work)


def rebuild_search_and_rollups(db: Database) -> None:
    """Recompute ``po_search``, ``vendor_search``, ``job_rollups`` and
    ``partner_rollups`` from orders and jobs (derived data: run after editing jobs by hand). Part of
    the caller's transaction."""
    fill_vendor_search(db)
    _fill_from_orders(PoSearch.suffix, Order.po_number_folded, po_suffixes)
    _fill_rollups(JobRollup)
    _fill_rollups(PartnerRollup)


def _fill_rollups(model: type[JobRollup] | type[PartnerRollup]) -> None:
    """``model`` recomputed from the jobs that ended (``PartnerRollup``: from
    the partners' jobs, by partner). Part of the caller's transaction."""
    by_partner = model is PartnerRollup
    model.delete().execute()
    totals: dict[tuple[Any, ...], list[Any]] = {}
    ended = Job.status.in_([str(s) for s in FINAL_STATUSES]) & Job.started_at.is_null(False)
    if by_partner:
        ended &= Job.partner.is_null(False)
    query: Any = (
        Job.select(Job.status, Job.started_at, Job.duration_seconds, Job.total_amount, Job.partner)
        .where(ended)
        .tuples()
    )
    for status, started_at, duration, amount, partner in query.iterator():
        for period, start in ROLLUP_PERIODS:
            key = (period, start(started_at), status, partner if by_partner else None)
            entry = totals.setdefault(key, [0, 0, 0.0, Decimal(0)])
            entry[0] += 1
            if duration is not None:
                entry[1] += 1
                entry[2] += duration
            entry[3] = exact_sum((entry[3], amount))
    for group in pw.chunked(list(totals.items()), 200):
        model.insert_many(
            [
                {
                    "period": key[0],
                    "start": key[1],
                    "status": key[2],
                    **({"partner": key[3]} if by_partner else {}),
                    "jobs": sums[0],
                    "reached": sums[0],
                    "durations": sums[1],
                    "duration_total": sums[2],
                    "amount": sums[3],
                }
                for key, sums in group
            ]
        ).execute()
