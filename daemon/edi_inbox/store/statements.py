"""The recorder's SQL: written once, put in each database's dialect once, run
straight on the driver, and a unit's statements sent together.

peewee spends ~200 µs building an upsert, more than SQLite spends running it,
and a file's records must cost well under a millisecond, so these statements
are plain SQL (identifiers double-quoted, which both databases accept; "?"
becomes "%s" for psycopg2), cached per database.

A ``Batch`` holds one unit's writes. On SQLite they run one after another in
the unit's ``BEGIN IMMEDIATE`` transaction, rows through ``executemany`` (one
prepared statement stepped per row, cheaper there than a multi-row
``VALUES``). On PostgreSQL each statement costs a round trip and a parse
and plan (120-180 µs a statement measured here, more than its rows' work), so
rows go in multi-row ``VALUES`` and the statements in one query string, which
the server runs as one transaction: ``Batch.commit`` is a whole unit in one
round trip instead of BEGIN, one per statement (one per row with
``executemany``) and COMMIT. A file's records went from ~57 round trips to 15.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from ..money import exact_sum
from .database import EXCEPTIONS, Database, run_unit
from .fields import UtcDateTimeField, dumps
from .models import CONTROL_NUMBER_MAX, FINAL_STATUSES, ROLLUP_PERIODS

PG_ROWS_PER_STATEMENT = 1000


def _insert(table: str, columns: str, tail: str = "") -> tuple[str, int]:
    """``INSERT INTO table (columns) VALUES {rows} tail`` and its row width."""
    names = columns.split()
    quoted = ", ".join(f'"{name}"' for name in names)
    return f'INSERT INTO "{table}" ({quoted}) VALUES {{rows}}{tail}', len(names)


def _sets(columns: str, value: str = 'excluded."{c}"') -> str:
    """``"c" = value`` for each of ``columns``, ``{c}`` in ``value`` standing for it."""
    return ", ".join(f'"{c}" = {value.format(c=c)}' for c in columns.split())


def _rollup_upsert(table: str, key: str) -> tuple[str, int]:
    """Add a share to ``table``'s row of ``key`` (made if missing): every
    count and the amount (``{amount_sum}``, exact in each dialect)."""
    quoted = ", ".join(f'"{c}"' for c in key.split())
    return _insert(
        table,
        key + " jobs reached durations duration_total amount",
        f" ON CONFLICT ({quoted}) DO UPDATE SET "
        + _sets("jobs reached durations duration_total", f'"{table}".' + '"{c}" + excluded."{c}"')
        + f', "amount" = {{amount_sum}}("{table}"."amount", excluded."amount")',
    )


# name: (SQL, row width). A width means an INSERT whose {rows} takes rows of
# that many values; 0, a statement with its parameters written out.
STATEMENTS: dict[str, tuple[str, int]] = {
    "job_insert": _insert(
        "jobs",
        "job_id file_name file_path file_sha256 file_size status success started_at host"
        " retry_of partner ack_numbers created_at updated_at",
        ' ON CONFLICT ("job_id") DO NOTHING RETURNING "id"',
    ),
    "job_ended": (
        'SELECT "status", "file_sha256", "file_path" FROM "jobs" WHERE "job_id" = ?',
        0,
    ),
    "job_ack_numbers": ('UPDATE "jobs" SET "ack_numbers" = ? WHERE "id" = ?', 0),
    "job_ack_numbers_get": ('SELECT "status", "ack_numbers" FROM "jobs" WHERE "job_id" = ?', 0),
    "job_get": (
        'SELECT "id", "status", "started_at", "duration_seconds", "total_amount", "partner"'
        ' FROM "jobs" WHERE "job_id" = ?',
        0,
    ),
    "job_get_pk": (
        'SELECT "status", "started_at", "duration_seconds", "total_amount", "file_sha256",'
        ' "retry_of", "partner" FROM "jobs" WHERE "id" = ?',
        0,
    ),
    "job_restart": (
        'UPDATE "jobs" SET "status" = \'running\', "success" = ?, "started_at" = ?,'
        ' "completed_at" = NULL, "duration_seconds" = NULL, "error" = NULL,'
        ' "error_details" = NULL, "host" = ?, "file_path" = ?, "updated_at" = ? WHERE "id" = ?',
        0,
    ),
    "step_upsert": _insert(
        "job_steps",
        "job_id step_name status data error attempts started_at duration_seconds created_at",
        ' ON CONFLICT ("job_id", "step_name") DO UPDATE SET '
        + _sets("status data error attempts started_at duration_seconds"),
    ),
    "log_insert": _insert("job_logs", "job_id timestamp level message details"),
    # A row the ERP accepted for another job stays that job's (see Order).
    "order_upsert": _insert(
        "orders",
        "job_id po_number po_number_folded line_count total_amount vendor_name erp_po_id"
        " idempotency_key status error attempts payload json_version refused created_at"
        " updated_at",
        ' ON CONFLICT ("idempotency_key") DO UPDATE SET '
        + _sets("job_id po_number po_number_folded line_count total_amount vendor_name")
        + ', "erp_po_id" = COALESCE(excluded."erp_po_id", "orders"."erp_po_id"), '
        + _sets("status error attempts payload json_version refused updated_at")
        + ' WHERE "orders"."erp_po_id" IS NULL OR "orders"."job_id" = excluded."job_id"',
    ),
    "interchanges_delete": ('DELETE FROM "job_interchanges" WHERE "job_id" = ?', 0),
    "interchange_insert": _insert(
        "job_interchanges", "sender_id receiver_id control_number job_id", " ON CONFLICT DO NOTHING"
    ),
    "po_search_insert": _insert("po_search", "suffix job_id", " ON CONFLICT DO NOTHING"),
    "vendor_search_insert": _insert("vendor_search", "vendor job_id", " ON CONFLICT DO NOTHING"),
    "rollup_upsert": _rollup_upsert("job_rollups", "period start status"),
    "partner_rollup_upsert": _rollup_upsert("partner_rollups", "partner period start status"),
    "duplicate_by_interchange": (
        'SELECT j."job_id" FROM "job_interchanges" i JOIN "jobs" j ON j."id" = i."job_id"'
        ' WHERE i."sender_id" = ? AND i."receiver_id" = ? AND i."control_number" = ?'
        ' AND j."status" = \'succeeded\' AND j."job_id" <> ? ORDER BY j."id" LIMIT 1',
        0,
    ),
    # The files of the jobs that answered an interchange and posted (or had
    # posted) orders of it, newest first: ``DatabaseRecorder.processed_whole``.
    "answered_by_interchange": (
        'SELECT j."job_id", j."edi_content", j."file_path", j."file_sha256"'
        ' FROM "job_interchanges" i'
        ' JOIN "jobs" j ON j."id" = i."job_id"'
        ' WHERE i."sender_id" = ? AND i."receiver_id" = ? AND i."control_number" = ?'
        " AND j.\"status\" IN ('succeeded', 'partial', 'duplicate') AND j.\"job_id\" <> ?"
        ' ORDER BY j."id" DESC',
        0,
    ),
    "posted_by_po": (
        'SELECT o."payload", o."erp_po_id", o."idempotency_key", j."job_id", o."json_version"'
        ' FROM "orders" o'
        ' JOIN "jobs" j ON j."id" = o."job_id" WHERE o."po_number_folded" = ?'
        ' AND o."po_number" = ? AND o."status" = \'posted\' AND o."erp_po_id" IS NOT NULL'
        ' ORDER BY o."id"',
        0,
    ),
    # What a new order is judged against (``find_sent``): those posted, and
    # those of jobs not ended (running, or cut short: to run again) sent
    # without an answer and not refused for good (tried, or pending in a job
    # cut short, which may have sent it).
    "sent_by_po": (
        'SELECT o."payload", o."erp_po_id", o."idempotency_key", j."job_id", o."json_version"'
        ' FROM "orders" o'
        ' JOIN "jobs" j ON j."id" = o."job_id" WHERE o."po_number_folded" = ?'
        ' AND o."po_number" = ? AND (o."status" = \'posted\' AND o."erp_po_id" IS NOT NULL'
        ' OR o."erp_po_id" IS NULL AND NOT o."refused"'
        " AND j.\"status\" IN ('running', 'interrupted') AND (o.\"attempts\" > 0"
        " OR o.\"status\" = 'pending' AND j.\"status\" = 'interrupted'))"
        ' ORDER BY o."id"',
        0,
    ),
    # Orders without an ERP id, by PO number, oldest first: of running jobs
    # (attempts 0: another job's order in flight), and those sent to the ERP
    # by jobs that ended (attempts > 0: the body their key carries for good).
    # ``DatabaseRecorder.job_started`` and ``in_flight``.
    # An interrupted job's pending order may have been sent when it was cut
    # short (killed mid-POST, before its attempts were recorded).
    "unanswered_by_po": (
        'SELECT o."payload", o."idempotency_key", j."job_id", o."attempts", o."json_version",'
        ' o."refused", j."status" FROM "orders" o JOIN "jobs" j ON j."id" = o."job_id"'
        ' WHERE o."po_number_folded" = ? AND o."po_number" = ? AND o."erp_po_id" IS NULL'
        ' AND (o."attempts" > 0 OR o."status" = \'pending\''
        " AND j.\"status\" IN ('running', 'interrupted'))"
        ' ORDER BY o."id"',
        0,
    ),
    # Taken first in a job_started on PostgreSQL, per PO number, so that of two
    # jobs with the same order one sees the other's (SQLite: BEGIN IMMEDIATE).
    "po_lock": ("SELECT pg_advisory_xact_lock(7243002, hashtext(?))", 0),
    # An order's row by its key: accepted (an ERP id), or not answered yet
    # (its payload the body a job is sending, or sent before it stopped).
    "order_by_key": (
        'SELECT o."erp_po_id", j."job_id", j."status", o."payload" FROM "orders" o'
        ' JOIN "jobs" j ON j."id" = o."job_id" WHERE o."idempotency_key" = ?',
        0,
    ),
    # Whose an order's row is, after an order_accepted: another job's when it
    # had the order accepted first (both posted it under its key).
    "order_owner": (
        'SELECT j."job_id", o."erp_po_id" FROM "orders" o JOIN "jobs" j ON j."id" = o."job_id"'
        ' WHERE o."idempotency_key" = ?',
        0,
    ),
    # A job's orders (rows), for ``_sent_key``.
    "order_count": (
        'SELECT COUNT(*) FROM "orders" o JOIN "jobs" j ON j."id" = o."job_id" WHERE j."job_id" = ?',
        0,
    ),
    # A job's orders not answered yet: how far a rival is (``in_flight``).
    "pending_count": (
        'SELECT COUNT(*) FROM "orders" o JOIN "jobs" j ON j."id" = o."job_id"'
        ' WHERE j."job_id" = ? AND o."status" = \'pending\' AND o."erp_po_id" IS NULL',
        0,
    ),
    # A job's orders not posted when it ends (pending, or rejected before the
    # ERP call): kept under keys of their own.
    "orders_unposted_delete": (
        'DELETE FROM "orders" WHERE "job_id" = ? AND "erp_po_id" IS NULL',
        0,
    ),
    # An accepted order of a job that never ended moves to the job carrying it on.
    "order_take": (
        'UPDATE "orders" SET "job_id" = ?, "updated_at" = ? WHERE "idempotency_key" = ?',
        0,
    ),
    # Reserves the next ``count`` numbers (params: count, count, count, name): the
    # last is returned; past the maximum they start again at 1.
    "control_next": (
        'UPDATE "control_numbers" SET "value" = CASE WHEN "value" > '
        f'{CONTROL_NUMBER_MAX} - ? THEN ? ELSE "value" + ? END WHERE "name" = ? RETURNING "value"',
        0,
    ),
}

stamp = UtcDateTimeField().db_value  # a time as the SQL parameter its column takes
read_time = UtcDateTimeField().python_value  # and a time read back (SQLite gives text)


def json_or_none(value: Any) -> str | None:
    """JSON text of a value, or NULL for an empty or missing one."""
    return dumps(value) if value else None


def _cache(db: Database) -> dict[Any, str]:
    cached: dict[Any, str] | None = getattr(db, "_edi_statements", None)
    if cached is None:
        cached = db._edi_statements = {}  # type: ignore[union-attr]
    return cached


def _dialect(db: Database, sql: str) -> str:
    if db.is_sqlite:
        return sql.replace("{amount_sum}", "dec_add")
    sql = _PG_SUM.sub(r"\1 + \2", sql)
    return sql.replace("?", "%s")


# ``{amount_sum}(a, b)`` on PostgreSQL: a + b (NUMERIC is exact there).
_PG_SUM = re.compile(r"\{amount_sum\}\(([^,]+), ([^)]+)\)")


def statement(db: Database, name: str, rows: int = 1) -> str:
    """Statement ``name`` in this database's dialect; an INSERT with ``rows`` rows."""
    cache = _cache(db)
    sql = cache.get((name, rows))
    if sql is None:
        text, width = STATEMENTS[name]
        if width:
            row = "(" + ", ".join("?" * width) + ")"
            text = text.replace("{rows}", ", ".join([row] * rows))
        sql = cache[name, rows] = _dialect(db, text)
    return sql


def execute(db: Database, name: str, *params: Any) -> Any:
    """Run one statement inside the current unit; returns the driver's cursor.
    Straight to the driver: peewee's execute_sql adds a few µs a statement."""
    with EXCEPTIONS:
        cursor = db._state.conn.cursor()  # type: ignore[union-attr]
        cursor.execute(statement(db, name), params)
    return cursor


class Batch:
    """The writes of one unit of work, sent together (see the module's docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.sqls: list[str] = []
        self.params: list[Any] = []  # per SQL: its parameters, or its rows on SQLite

    def add(self, name: str, *params: Any) -> Batch:
        self.sqls.append(statement(self.db, name))
        self.params.append(params)
        return self

    def add_rows(self, name: str, rows: Sequence[Sequence[Any]]) -> Batch:
        """INSERT ``rows`` (none: nothing) with statement ``name``."""
        db = self.db
        if not rows:
            return self
        if db.is_sqlite:
            self.sqls.append(statement(db, name))
            self.params.append(_Rows(rows))
            return self
        for first in range(0, len(rows), PG_ROWS_PER_STATEMENT):
            chunk = rows[first : first + PG_ROWS_PER_STATEMENT]
            self.sqls.append(statement(db, name, len(chunk)))
            self.params.append([value for row in chunk for value in row])
        return self

    def update(self, table: str, pk: int, values: dict[str, Any]) -> Batch:
        """``UPDATE table SET <values> WHERE id = pk`` (its SQL cached per column set)."""
        cache = _cache(self.db)
        key = ("update", table, *values)
        sql = cache.get(key)
        if sql is None:
            sets = ", ".join(f'"{column}" = ?' for column in values)
            sql = cache[key] = _dialect(self.db, f'UPDATE "{table}" SET {sets} WHERE "id" = ?')
        self.sqls.append(sql)
        self.params.append([*values.values(), pk])
        return self

    def run(self) -> Any:
        """Send the statements, inside the current unit of work; returns the
        first row of the last one's result (None when it has none)."""
        if not self.sqls:
            return None
        conn = self.db._state.conn  # type: ignore[union-attr]
        with EXCEPTIONS:
            cursor = conn.cursor()
            if not self.db.is_sqlite:
                cursor.execute("; ".join(self.sqls), [p for ps in self.params for p in ps])
            else:
                for sql, params in zip(self.sqls, self.params, strict=True):
                    if isinstance(params, _Rows):
                        cursor.executemany(sql, params.rows)
                    else:
                        cursor.execute(sql, params)
            return cursor.fetchone() if cursor.description else None

    def commit(self) -> Any:
        """Run as a unit of work of its own; returns what ``run`` does.

        On PostgreSQL a query of several statements is a transaction by itself
        (all or nothing), so none is opened around it."""
        return run_unit(self.db, self.run, atomic=self.db.is_sqlite)


class _Rows:
    """Rows for ``executemany`` (SQLite), told apart from one statement's parameters."""

    __slots__ = ("rows",)

    def __init__(self, rows: Iterable[Sequence[Any]]) -> None:
        self.rows = rows


def add_rollup(
    batch: Batch,
    status: str,
    started_at: Any,
    duration: Any,
    amount: Any,
    sign: int,
    partner: str | None = None,
) -> Batch:
    """Add (+1) or take back (-1) one finished job's share of ``job_rollups``:
    a row for its hour and one for its day (unfinished jobs have none); and
    of ``partner_rollups`` for a partner's job. ``reached`` is never taken back."""
    if status not in FINAL_STATUSES or started_at is None:
        return batch
    started_at = read_time(started_at)
    share = (sign, max(sign, 0), sign if duration is not None else 0, (duration or 0.0) * sign)
    money = exact_sum((amount,))
    money = money if sign > 0 else money.copy_negate()
    rows = [
        (period, stamp(start(started_at)), status, *share, money)
        for period, start in ROLLUP_PERIODS
    ]
    batch.add_rows("rollup_upsert", rows)
    if partner is not None:
        batch.add_rows("partner_rollup_upsert", [(partner, *row) for row in rows])
    return batch
