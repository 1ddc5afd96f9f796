"""Job records in SQLite or PostgreSQL, with Peewee.

``open_database(url, settings)`` gives a database bound to the models below;
``init``/``migrate``/``reset`` manage its schema; ``DatabaseRecorder`` is the
pipeline's ``jobs.Recorder``; ``heartbeat``, ``mark_interrupted`` and
``record_final_path`` are the service's writes. Reads live in ``queries``.

Every unit of work runs through ``run_unit``: one transaction (``BEGIN
IMMEDIATE`` on SQLite for writes, so two writers never deadlock upgrading a
read lock), rolled back whole on any error. On PostgreSQL a unit that fails
because the connection died (server restarted, connection killed) is retried
on a fresh connection for up to ``retry_seconds``; SQLite errors are final
(``busy_timeout`` has already waited for a competing writer).

Portable storage choices, the same on both databases:
- money: exact ``Decimal`` (``NUMERIC`` on PostgreSQL, ``TEXT`` on SQLite,
  whose ``NUMERIC`` affinity would turn it into a float); sums on SQLite go
  through the ``dec_add``/``dec_sum`` functions registered on each connection.
- JSON: ``TEXT`` holding JSON (keys keep their order; no driver parses it).
- time: timezone-aware UTC in Python; ``TIMESTAMPTZ`` on PostgreSQL, ISO text
  ``YYYY-MM-DD HH:MM:SS.ffffff+00:00`` on SQLite (sorts as it should).
- search: ``*_folded`` columns hold ``fold(text)`` (NFKC + ``str.casefold``:
  SQLite's ``LIKE`` folds ASCII only) with byte-order collation, so a prefix
  is an index range on both databases; ``po_search`` holds every suffix of
  every order's PO number, so a substring is an index range too.
- stats: ``job_rollups`` keeps counts and sums per status, per hour and per
  day, updated in the same transaction as the job's final status, so ``stats``
  reads a few hundred rows rather than every job.

Schema: ``SCHEMA_VERSION`` in ``schema_version``; ``MIGRATIONS`` step it
forward in place (``init`` at every start, ``migrate`` on demand); an upgrade
never needs ``reset``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urlsplit

import peewee as pw
from playhouse.migrate import SchemaMigrator
from playhouse.pool import PooledPostgresqlDatabase

from .config import DatabaseSettings, Settings
from .errors import StoreError
from .jobs import (
    JobResult,
    JobStatus,
    LogEntry,
    OrderResult,
    StepResult,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
# peewee's driver-error → peewee-error translation (a mangled name inside classes).
_EXCEPTIONS = getattr(pw, "__exception_wrapper__")  # noqa: B009

SCHEMA_VERSION = 2
FINAL_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DUPLICATE, JobStatus.INTERRUPTED}
)
MIN_SUBSTRING = 3  # shorter PO search terms match as prefixes (see po_search)
CONTROL_NUMBER_MAX = 999_999_999  # ISA13 has nine digits


def utcnow() -> datetime:
    return datetime.now(UTC)


_SPACE = re.compile(r"\s+")


def fold(text: str | None) -> str | None:
    """The search key of a name: NFKC, case-folded, spaces collapsed.

    ``fold('MÜLLER  GmbH') == fold('müller gmbh')``; ``'Straße'`` folds to
    ``'strasse'``. Stored in the ``*_folded`` columns and applied to search terms.
    """
    if text is None:
        return None
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return _SPACE.sub(" ", folded).strip()


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive one is taken to be UTC already (as stored)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def hour_of(moment: datetime) -> datetime:
    return as_utc(moment).replace(minute=0, second=0, microsecond=0)


def day_of(moment: datetime) -> datetime:
    return hour_of(moment).replace(hour=0)


ROLLUP_PERIODS = (("hour", hour_of), ("day", day_of))


# --- fields ---------------------------------------------------------------


class UtcDateTimeField(pw.Field):
    """An aware UTC datetime. A naive value is taken to be UTC already."""

    field_type = "UTCDATETIME"

    def db_value(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat(sep=" ", timespec="microseconds")

    def python_value(self, value: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class MoneyField(pw.Field):
    """Exact money: ``Decimal`` in, the same ``Decimal`` out, never a float."""

    field_type = "MONEY"

    def db_value(self, value: Any) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError("money must be Decimal, not float")
        return value if isinstance(value, Decimal) else Decimal(value)

    def python_value(self, value: Any) -> Decimal | None:
        if value is None or isinstance(value, Decimal):
            return value
        return Decimal(str(value))


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)


class JsonField(pw.TextField):
    """JSON kept as text: portable, and keys keep their order."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else dumps(value)

    def python_value(self, value: Any) -> Any:
        return None if value is None else json.loads(value)


class FoldedField(pw.TextField):
    """A ``fold()`` search key, compared byte-wise (``COLLATE "C"`` on PostgreSQL),
    so that ``col >= 'ab' AND col < 'ac'`` is a prefix match and uses the index
    whatever the database's default collation."""

    field_type = "FOLDED"


FIELD_TYPES = {
    "sqlite": {"UTCDATETIME": "DATETIME", "MONEY": "TEXT", "FOLDED": "TEXT"},
    "postgresql": {"UTCDATETIME": "TIMESTAMPTZ", "MONEY": "NUMERIC", "FOLDED": 'TEXT COLLATE "C"'},
}


# --- models ---------------------------------------------------------------


class BaseModel(pw.Model):
    class Meta:
        legacy_table_names = False


class Job(BaseModel):
    """One file's run through the pipeline. ``job_id`` is the UUID users see."""

    id = pw.BigAutoField()
    job_id = pw.CharField(max_length=36, unique=True)
    file_name = pw.TextField()
    file_path = pw.TextField(null=True)
    file_sha256 = pw.CharField(max_length=64, null=True)
    file_size = pw.BigIntegerField(null=True)
    status = pw.TextField(default=JobStatus.RECEIVED.value)
    success = pw.BooleanField(default=False)
    started_at = UtcDateTimeField(null=True)
    completed_at = UtcDateTimeField(null=True)
    duration_seconds = pw.DoubleField(null=True)
    po_number = pw.TextField(null=True)
    po_number_folded = FoldedField(null=True)  # searched through po_search instead
    total_amount = MoneyField(null=True)
    erp_po_id = pw.TextField(null=True)
    vendor_name = pw.TextField(null=True)
    vendor_name_folded = FoldedField(null=True)
    error = pw.TextField(null=True)
    error_details = JsonField(null=True)
    host = pw.TextField(null=True)
    sender_id = pw.TextField(null=True)
    receiver_id = pw.TextField(null=True)
    interchange_control_number = pw.TextField(null=True)
    retry_of = pw.CharField(max_length=36, null=True)
    duplicate_of = pw.CharField(max_length=36, null=True)
    acks = JsonField(null=True)  # schema v2
    edi_content = pw.BlobField(null=True)
    created_at = UtcDateTimeField()
    updated_at = UtcDateTimeField()

    class Meta:
        table_name = "jobs"
        indexes = (
            (("started_at", "id"), False),
            (("status", "started_at", "id"), False),
        )


# Every index costs a page write per commit (SQLite's commit cost grows with
# the pages it touches), so the indexes on columns that are NULL while a job
# runs are partial: a row enters them once, when the job finishes.
for _column, *_more in (
    (Job.file_sha256,),
    (Job.po_number,),
    (Job.retry_of,),
    (Job.vendor_name_folded, Job.started_at),
    (Job.sender_id, Job.started_at),
):
    Job.add_index(_column, *_more, where=_column.is_null(False))


class JobStep(BaseModel):
    id = pw.BigAutoField()
    # Indexed by the unique (job, step_name) index, which starts with it.
    job = pw.ForeignKeyField(Job, column_name="job_id", on_delete="CASCADE", index=False)
    step_name = pw.TextField()
    status = pw.TextField()
    data = JsonField(null=True)
    error = pw.TextField(null=True)
    attempts = pw.IntegerField(default=1)
    started_at = UtcDateTimeField(null=True)
    duration_seconds = pw.DoubleField(null=True)
    created_at = UtcDateTimeField()

    class Meta:
        table_name = "job_steps"
        indexes = ((("job", "step_name"), True),)


class JobLog(BaseModel):
    id = pw.BigAutoField()
    job = pw.ForeignKeyField(Job, column_name="job_id", on_delete="CASCADE", index=True)
    timestamp = UtcDateTimeField()
    level = pw.TextField()
    message = pw.TextField()
    details = JsonField(null=True)

    class Meta:
        table_name = "job_logs"


class Order(BaseModel):
    """One 850. ``idempotency_key`` is unique: the row of an order the ERP
    accepted is never taken over by a later job (``accepted_erp_id`` reads it)."""

    id = pw.BigAutoField()
    # Indexed with po_number_folded (below): "has this job an order whose PO
    # starts with …" is then answered from the index alone.
    job = pw.ForeignKeyField(Job, column_name="job_id", on_delete="CASCADE", index=False)
    po_number = pw.TextField()
    po_number_folded = FoldedField(index=True)
    line_count = pw.IntegerField(default=0)
    total_amount = MoneyField(null=True)
    vendor_name = pw.TextField(null=True)
    erp_po_id = pw.TextField(null=True)
    idempotency_key = pw.TextField(unique=True)
    status = pw.TextField(default="pending")
    error = pw.TextField(null=True)
    attempts = pw.IntegerField(default=0)
    payload = JsonField(null=True)
    created_at = UtcDateTimeField()
    updated_at = UtcDateTimeField()

    class Meta:
        table_name = "orders"
        indexes = ((("job", "po_number_folded"), False),)


class JobInterchange(BaseModel):
    """Every interchange of a file, for duplicate detection (ISA06/ISA08/ISA13)."""

    sender_id = pw.TextField()
    receiver_id = pw.TextField()
    control_number = pw.TextField()
    job = pw.ForeignKeyField(Job, column_name="job_id", on_delete="CASCADE", index=True)

    class Meta:
        table_name = "job_interchanges"
        primary_key = pw.CompositeKey("sender_id", "receiver_id", "control_number", "job")


class PoSearch(BaseModel):
    """Each suffix (at least ``MIN_SUBSTRING`` long) of each folded PO number of
    a job: a substring search is a prefix range on ``suffix``. Schema v2."""

    suffix = FoldedField()
    job = pw.ForeignKeyField(Job, column_name="job_id", on_delete="CASCADE", index=False)

    class Meta:
        table_name = "po_search"
        primary_key = pw.CompositeKey("suffix", "job")
        # (job, suffix), not just (job): a search that walks jobs newest first
        # asks "has this job a key in range?" from the index alone; PostgreSQL
        # would otherwise read ~8 scattered heap rows per job (measured 10x).
        indexes = ((("job", "suffix"), False),)


class JobRollup(BaseModel):
    """Jobs that reached a final status, by status, per hour and per day of
    ``started_at`` (``period`` is ``hour`` or ``day``): ``stats`` over any span
    reads at most a day of hours and a row per day. Schema v2."""

    period = pw.TextField()
    start = UtcDateTimeField()
    status = pw.TextField()
    jobs = pw.BigIntegerField(default=0)
    durations = pw.BigIntegerField(default=0)  # how many had a duration
    duration_total = pw.DoubleField(default=0.0)
    amount = MoneyField(default=Decimal(0))

    class Meta:
        table_name = "job_rollups"
        primary_key = pw.CompositeKey("period", "start", "status")


class ControlNumber(BaseModel):
    """Sequences that must keep increasing across restarts (``isa13`` for 997s)."""

    name = pw.TextField(primary_key=True)
    value = pw.BigIntegerField()

    class Meta:
        table_name = "control_numbers"


class Daemon(BaseModel):
    id = pw.BigAutoField()
    daemon_id = pw.TextField(unique=True)
    host = pw.TextField()
    pid = pw.IntegerField()
    version = pw.TextField()
    started_at = UtcDateTimeField()
    heartbeat_at = UtcDateTimeField()
    counters = JsonField(null=True)
    last_error = pw.TextField(null=True)

    class Meta:
        table_name = "daemons"


class SchemaVersion(BaseModel):
    id = pw.IntegerField(primary_key=True)
    version = pw.IntegerField()
    migrated_at = UtcDateTimeField()

    class Meta:
        table_name = "schema_version"


MODELS: tuple[type[BaseModel], ...] = (
    Job,
    JobStep,
    JobLog,
    Order,
    JobInterchange,
    PoSearch,
    JobRollup,
    ControlNumber,
    Daemon,
    SchemaVersion,
)


# --- databases ------------------------------------------------------------


def _dec_add(a: Any, b: Any) -> str:
    return str(Decimal(str(a or 0)) + Decimal(str(b or 0)))


class _DecSum:
    """SQLite aggregate: the exact sum of decimal text (``SUM`` would use floats)."""

    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: Any) -> None:
        if value is not None:
            self.total = (self.total or Decimal(0)) + Decimal(str(value))

    def finalize(self) -> str | None:
        return None if self.total is None else str(self.total)


class _Units:
    """What both database classes add: units of work with rollback and retry."""

    retry_seconds: float = 10.0
    edi_content_max_bytes: int = 1024 * 1024
    is_sqlite: bool = False

    def run(self: Any, fn: Callable[[], T], *, write: bool = True, atomic: bool = True) -> T:
        """Run ``fn`` in one transaction (``atomic=False``: a single statement
        that needs none); on PostgreSQL, again on a fresh connection while the
        connection keeps dying, for up to ``retry_seconds``."""
        if self.in_transaction():  # nested: the outer unit owns commit and retry
            return fn()
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.05
        while True:
            opened = False
            try:
                opened = self.connect(reuse_if_open=True)
                self._check_connection()
                if not atomic:
                    return fn()
                with self._transaction(write):
                    return fn()
            except Exception as exc:
                self._discard_broken()
                if not self._retryable(exc) or time.monotonic() + delay > deadline:
                    raise
                log.warning("database connection lost (%s); retrying", exc)
            finally:
                if opened and not self.is_sqlite and not self.is_closed():
                    self.close()  # back to the pool: one connection per unit of work
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


class SqliteStore(_Units, pw.SqliteDatabase):
    """SQLite in WAL mode: one connection per thread, writes ``BEGIN IMMEDIATE``."""

    is_sqlite = True

    def __init__(self, path: str, settings: DatabaseSettings) -> None:
        busy_ms = int(settings.busy_timeout_seconds * 1000)
        super().__init__(
            path,
            pragmas={
                "journal_mode": "wal",
                "busy_timeout": busy_ms,
                "foreign_keys": 1,
                "synchronous": "normal",
                "cache_size": -32_000,  # 32 MB of page cache per connection
                "temp_store": "memory",
                # A checkpoint costs two fsyncs (~4 ms each on a VM disk): every
                # 10,000 WAL pages (~40 MB) instead of SQLite's 1,000 makes that
                # ~60 µs a file instead of ~600; the WAL is cut back to 64 MB after.
                "wal_autocheckpoint": 10_000,
                "journal_size_limit": 64 * 1024 * 1024,
            },
            timeout=settings.busy_timeout_seconds,
            field_types=FIELD_TYPES["sqlite"],
        )
        self.edi_content_max_bytes = settings.edi_content_max_bytes
        self.write_lock = threading.Lock()
        self.write_lock_seconds = settings.busy_timeout_seconds + 5.0
        self.register_function(_dec_add, "dec_add", 2, deterministic=True)
        self.register_aggregate(_DecSum, "dec_sum", 1)

    def _transaction(self, write: bool) -> Any:
        return _SqliteTransaction(self, write)

    def _initialize_connection(self, conn: Any) -> None:
        self._state.file_id = self._file_id()  # type: ignore[attr-defined]

    def _file_id(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.database)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _check_connection(self) -> None:
        # An open SQLite connection goes on writing into a database file that
        # was deleted or replaced underneath it, and every record is lost:
        # check (one stat) that the file is still the one we opened.
        if self.database == ":memory:":
            return
        state: Any = self._state  # type: ignore[attr-defined]
        if state.file_id is None or self._file_id() != state.file_id:
            _force_close(self)
            raise StoreError(f"the database file {self.database} was removed or replaced")

    def _retryable(self, exc: BaseException) -> bool:
        return False

    def _discard_broken(self) -> None:
        # A failed rollback (the file vanished) leaves the driver mid-transaction:
        # close the connection rather than hand a half-written transaction on.
        if not self.is_closed() and self._state.conn.in_transaction:  # type: ignore[attr-defined]
            _force_close(self)


class _SqliteTransaction:
    """``db.atomic('IMMEDIATE')`` without its generality (savepoints, commit
    hooks), for the recorder's many small units. It sits on peewee's
    transaction stack, so ``in_transaction()`` and nested ``atomic()`` see it.

    A write first takes the database's in-process write lock: threads of one
    process then queue on it and are woken the moment it is free, instead of
    meeting SQLite's busy handler, which sleeps 1-100 ms between retries (with
    eight or more workers that sleeping was the daemon's ceiling). Other
    processes still meet ``busy_timeout``."""

    def __init__(self, db: SqliteStore, write: bool) -> None:
        self.db = db
        self.write = write

    def __enter__(self) -> _SqliteTransaction:
        db = self.db
        if self.write and not db.write_lock.acquire(timeout=db.write_lock_seconds):
            raise pw.OperationalError(
                f"database is locked: no write turn within {db.write_lock_seconds:g} s"
            )
        try:
            with _EXCEPTIONS:
                db._state.conn.execute("BEGIN IMMEDIATE" if self.write else "BEGIN")  # type: ignore[attr-defined]
        except BaseException:
            if self.write:
                db.write_lock.release()
            raise
        db.push_transaction(self)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        db = self.db
        db.pop_transaction()
        conn = db._state.conn  # type: ignore[attr-defined]
        try:
            with _EXCEPTIONS:
                if exc_type is None:
                    try:
                        conn.execute("COMMIT")
                        return
                    except Exception:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        finally:
            if self.write:
                db.write_lock.release()


class PostgresStore(_Units, PooledPostgresqlDatabase):
    """PostgreSQL through peewee's pool; dead connections are dropped, not reused."""

    def __init__(self, url: str, settings: DatabaseSettings, retry_seconds: float) -> None:
        super().__init__(
            url,
            max_connections=max(settings.pool_size, 1),
            stale_timeout=300,
            timeout=30,
            connect_timeout=5,
            field_types=FIELD_TYPES["postgresql"],
        )
        self.edi_content_max_bytes = settings.edi_content_max_bytes
        self.retry_seconds = retry_seconds

    def _transaction(self, write: bool) -> Any:
        return self.atomic()

    def _check_connection(self) -> None:
        pass

    def _retryable(self, exc: BaseException) -> bool:
        # Connection loss surfaces as InterfaceError ("connection already closed")
        # or OperationalError ("server closed the connection unexpectedly",
        # "terminating connection due to administrator command", "could not
        # connect"); serialization failures and deadlocks are OperationalError too.
        return isinstance(exc, pw.InterfaceError | pw.OperationalError)

    def _discard_broken(self) -> None:
        if self.is_closed():
            return
        conn = self._state.conn
        if conn.closed or self._adapter.txn_status(conn) != self._adapter.txn_idle:
            _force_close(self)


def _force_close(db: Any) -> None:
    try:
        while db.in_transaction():
            db.pop_transaction()
        if isinstance(db, PooledPostgresqlDatabase):
            db.manual_close()
        else:
            db.close()
    except Exception:  # the connection is beyond saving: forget it
        log.debug("closing a broken connection failed", exc_info=True)
        db._state.reset()


Database = SqliteStore | PostgresStore


def open_database(
    url: str | None = None, settings: Settings | None = None, *, retry_seconds: float = 10.0
) -> Database:
    """Open ``sqlite:///PATH`` or ``postgresql://…`` (default: ``settings.database_url``)
    and bind the models to it. One database per process at a time: opening
    another rebinds the models. The schema is not touched: call ``init``."""
    settings = settings or Settings()
    url = url or settings.database_url
    scheme = urlsplit(url).scheme
    db: Database
    if scheme == "sqlite":
        # As SQLAlchemy and playhouse.db_url read it: sqlite:////abs/path,
        # sqlite:///relative/path (what Settings.database_url builds).
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path:
            raise StoreError(f"database url {url!r} names no file: use sqlite:///PATH")
        db = SqliteStore(path, settings.database)
    elif scheme in ("postgresql", "postgres"):
        db = PostgresStore(
            "postgresql" + url[len(scheme) :], settings.database, retry_seconds=retry_seconds
        )
    else:
        raise StoreError(f"database url {url!r}: use sqlite:///PATH or postgresql://…")
    db.bind(MODELS, bind_refs=False, bind_backrefs=False)
    return db


def run_unit(db: Database, fn: Callable[[], T], *, write: bool = True, atomic: bool = True) -> T:
    """``fn()`` as one unit of work (see ``_Units.run``)."""
    return db.run(fn, write=write, atomic=atomic)


# --- schema ---------------------------------------------------------------


def _create_tables(db: Database, models: Sequence[type[BaseModel]]) -> None:
    # Tables keyed by their primary key alone are WITHOUT ROWID on SQLite: one
    # B-tree to write instead of two. PostgreSQL has no such clause.
    for model in (JobInterchange, PoSearch, JobRollup):
        model._meta.without_rowid = db.is_sqlite
    db.create_tables(models, safe=True)


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


def _seed_control_number() -> None:
    # Start where jobs.NullRecorder's clock-based numbers are, so numbers keep
    # increasing after a reset or after running without a database.
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


# Each step takes the schema from version N-1 to N, inside the migration's
# transaction. A step must work from that version's layout, not today's
# models: add columns with _add_column_if_missing, create tables safe=True.
MIGRATIONS: dict[int, Callable[[Database], None]] = {2: _migrate_v2}


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
    if db.is_sqlite and db.database != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(db.database)), exist_ok=True)
    # The common case, at every start and CLI call: current already. A read
    # answers it without queueing for the write lock behind a busy daemon.
    if run_unit(db, lambda: _read_version(db), write=False) == SCHEMA_VERSION:
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
            _seed_control_number()
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
    """Drop every edi-inbox table (all records go) and create the schema anew."""

    def work() -> None:
        _lock_schema(db)
        for model in reversed(MODELS):
            model.drop_table(safe=True)

    run_unit(db, work)
    return migrate(db)


def schema_version(db: Database) -> int | None:
    """The database's schema version, or None when it has none yet."""
    return run_unit(db, lambda: _read_version(db), write=False)


def rebuild_search_and_rollups(db: Database) -> None:
    """Recompute ``po_search`` and ``job_rollups`` from orders and jobs (derived
    data: run after editing jobs by hand). Part of the caller's transaction."""
    PoSearch.delete().execute()
    JobRollup.delete().execute()
    last = 0
    while True:
        batch: list[Any] = list(
            Order.select(Order.id, Order.job, Order.po_number_folded)
            .where(Order.id > last)
            .order_by(Order.id)
            .limit(5000)
            .tuples()
        )
        if not batch:
            break
        last = batch[-1][0]
        rows = {(s, job) for _, job, po in batch for s in po_suffixes(po)}
        for chunk in pw.chunked(sorted(rows), 500):
            PoSearch.insert_many(
                chunk, fields=[PoSearch.suffix, PoSearch.job]
            ).on_conflict_ignore().execute()
    totals: dict[tuple[str, datetime, str], list[Any]] = {}
    query: Any = (
        Job.select(Job.status, Job.started_at, Job.duration_seconds, Job.total_amount)
        .where(Job.status.in_([str(s) for s in FINAL_STATUSES]) & Job.started_at.is_null(False))
        .tuples()
    )
    for status, started_at, duration, amount in query.iterator():
        for period, start in ROLLUP_PERIODS:
            key = (period, start(started_at), status)
            entry = totals.setdefault(key, [0, 0, 0.0, Decimal(0)])
            entry[0] += 1
            if duration is not None:
                entry[1] += 1
                entry[2] += duration
            entry[3] += amount or 0
    for group in pw.chunked(list(totals.items()), 200):
        JobRollup.insert_many(
            [
                {
                    "period": key[0],
                    "start": key[1],
                    "status": key[2],
                    "jobs": sums[0],
                    "durations": sums[1],
                    "duration_total": sums[2],
                    "amount": sums[3],
                }
                for key, sums in group
            ]
        ).execute()


def po_suffixes(folded_po: str | None) -> list[str]:
    """The ``po_search`` keys of a folded PO number: its suffixes of at least
    ``MIN_SUBSTRING`` characters (the whole number, however short)."""
    if not folded_po:
        return []
    last = max(len(folded_po) - MIN_SUBSTRING, 0)
    return [folded_po[i:] for i in range(last + 1)]


# --- recorder -------------------------------------------------------------
#
# The recorder's statements are plain SQL, written once: peewee spends ~200 µs
# building an upsert, more than SQLite spends running it, and a file's records
# must cost well under a millisecond. Identifiers are double-quoted (both
# databases accept that); "?" becomes "%s" for psycopg2.

_STATEMENTS = {
    "job_insert": (
        'INSERT INTO "jobs" ("job_id", "file_name", "file_path", "file_sha256", "file_size",'
        ' "status", "success", "started_at", "host", "retry_of", "created_at", "updated_at")'
        " VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)"
        ' ON CONFLICT ("job_id") DO NOTHING RETURNING "id"'
    ),
    "job_get": (
        'SELECT "id", "status", "started_at", "duration_seconds", "total_amount"'
        ' FROM "jobs" WHERE "job_id" = ?'
    ),
    "job_get_pk": (
        'SELECT "status", "started_at", "duration_seconds", "total_amount", "file_sha256",'
        ' "retry_of" FROM "jobs" WHERE "id" = ?'
    ),
    "job_restart": (
        'UPDATE "jobs" SET "status" = \'running\', "success" = ?, "started_at" = ?,'
        ' "completed_at" = NULL, "duration_seconds" = NULL, "error" = NULL,'
        ' "error_details" = NULL, "host" = ?, "file_path" = ?, "updated_at" = ? WHERE "id" = ?'
    ),
    "step_upsert": (
        'INSERT INTO "job_steps" ("job_id", "step_name", "status", "data", "error", "attempts",'
        ' "started_at", "duration_seconds", "created_at") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)'
        ' ON CONFLICT ("job_id", "step_name") DO UPDATE SET "status" = excluded."status",'
        ' "data" = excluded."data", "error" = excluded."error",'
        ' "attempts" = excluded."attempts", "started_at" = excluded."started_at",'
        ' "duration_seconds" = excluded."duration_seconds"'
    ),
    "log_insert": (
        'INSERT INTO "job_logs" ("job_id", "timestamp", "level", "message", "details")'
        " VALUES (?, ?, ?, ?, ?)"
    ),
    # A row the ERP accepted for another job stays that job's (see Order).
    "order_upsert": (
        'INSERT INTO "orders" ("job_id", "po_number", "po_number_folded", "line_count",'
        ' "total_amount", "vendor_name", "erp_po_id", "idempotency_key", "status", "error",'
        ' "attempts", "payload", "created_at", "updated_at")'
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ' ON CONFLICT ("idempotency_key") DO UPDATE SET "job_id" = excluded."job_id",'
        ' "po_number" = excluded."po_number", "po_number_folded" = excluded."po_number_folded",'
        ' "line_count" = excluded."line_count", "total_amount" = excluded."total_amount",'
        ' "vendor_name" = excluded."vendor_name",'
        ' "erp_po_id" = COALESCE(excluded."erp_po_id", "orders"."erp_po_id"),'
        ' "status" = excluded."status", "error" = excluded."error",'
        ' "attempts" = excluded."attempts", "payload" = excluded."payload",'
        ' "updated_at" = excluded."updated_at"'
        ' WHERE "orders"."erp_po_id" IS NULL OR "orders"."job_id" = excluded."job_id"'
    ),
    "interchanges_delete": 'DELETE FROM "job_interchanges" WHERE "job_id" = ?',
    "interchange_insert": (
        'INSERT INTO "job_interchanges" ("sender_id", "receiver_id", "control_number", "job_id")'
        " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
    ),
    "po_search_insert": (
        'INSERT INTO "po_search" ("suffix", "job_id") VALUES (?, ?) ON CONFLICT DO NOTHING'
    ),
    "rollup_upsert": (
        'INSERT INTO "job_rollups" ("period", "start", "status", "jobs", "durations",'
        ' "duration_total", "amount") VALUES (?, ?, ?, ?, ?, ?, ?)'
        ' ON CONFLICT ("period", "start", "status") DO UPDATE SET'
        ' "jobs" = "job_rollups"."jobs" + excluded."jobs",'
        ' "durations" = "job_rollups"."durations" + excluded."durations",'
        ' "duration_total" = "job_rollups"."duration_total" + excluded."duration_total",'
        ' "amount" = {amount_sum}'
    ),
    "duplicate_by_hash": (
        'SELECT "job_id" FROM "jobs" WHERE "file_sha256" = ? AND "status" = \'succeeded\''
        ' AND "job_id" <> ? ORDER BY "id" LIMIT 1'
    ),
    "duplicate_by_interchange": (
        'SELECT j."job_id" FROM "job_interchanges" i JOIN "jobs" j ON j."id" = i."job_id"'
        ' WHERE i."sender_id" = ? AND i."receiver_id" = ? AND i."control_number" = ?'
        ' AND j."status" = \'succeeded\' AND j."job_id" <> ? ORDER BY j."id" LIMIT 1'
    ),
    "accepted_erp_id": (
        'SELECT "erp_po_id" FROM "orders" WHERE "idempotency_key" = ? AND "erp_po_id" IS NOT NULL'
    ),
    "control_next": (
        'UPDATE "control_numbers" SET "value" = CASE WHEN "value" >= '
        f'{CONTROL_NUMBER_MAX} THEN 1 ELSE "value" + 1 END WHERE "name" = ? RETURNING "value"'
    ),
}


def _statements(db: Database) -> dict[str, str]:
    """The recorder's SQL in this database's dialect (cached on the database)."""
    cached = getattr(db, "_edi_statements", None)
    if cached is None:
        amount_sum = (
            'dec_add("job_rollups"."amount", excluded."amount")'
            if db.is_sqlite
            else '"job_rollups"."amount" + excluded."amount"'
        )
        cached = {}
        for name, sql in _STATEMENTS.items():
            sql = sql.replace("{amount_sum}", amount_sum)
            cached[name] = sql if db.is_sqlite else sql.replace("?", "%s")
        db._edi_statements = cached  # type: ignore[union-attr]
    return cached


_time = UtcDateTimeField().db_value


def _json(value: Any) -> str | None:
    return dumps(value) if value else None


def _run_sql(db: Database, sql: str, params: Sequence[Any]) -> Any:
    # Straight to the driver (the unit of work has the connection open):
    # peewee's execute_sql adds a few µs a statement, and a file has ~25.
    with _EXCEPTIONS:
        cursor = db._state.conn.cursor()  # type: ignore[union-attr]
        cursor.execute(sql, params)
    return cursor


def _execute(db: Database, name: str, params: Sequence[Any]) -> Any:
    return _run_sql(db, _statements(db)[name], params)


def _update_job(db: Database, pk: int, values: dict[str, Any]) -> None:
    """``UPDATE jobs SET <values> WHERE id = pk`` (the SQL cached per column set)."""
    statements = _statements(db)
    key = "job_update:" + ",".join(values)
    sql = statements.get(key)
    if sql is None:
        sets = ", ".join(f'"{column}" = ?' for column in values)
        sql = f'UPDATE "jobs" SET {sets} WHERE "id" = ?'
        sql = statements[key] = sql if db.is_sqlite else sql.replace("?", "%s")
    _run_sql(db, sql, [*values.values(), pk])


def _execute_many(db: Database, name: str, rows: Sequence[Sequence[Any]]) -> None:
    if rows:
        with _EXCEPTIONS:
            db._state.conn.cursor().executemany(_statements(db)[name], rows)  # type: ignore[union-attr]


def _rollup(
    db: Database, status: str, started_at: Any, duration: Any, amount: Any, sign: int
) -> None:
    """Add (+1) or take back (-1) one finished job's share of ``job_rollups``."""
    if status not in FINAL_STATUSES or started_at is None:
        return
    if isinstance(started_at, str):
        started_at = UtcDateTimeField().python_value(started_at)
    amount = (MoneyField().python_value(amount) or Decimal(0)) * sign
    durations = sign if duration is not None else 0
    rows = [
        (
            period,
            _time(start(started_at)),
            status,
            sign,
            durations,
            (duration or 0.0) * sign,
            amount,
        )
        for period, start in ROLLUP_PERIODS
    ]
    _execute_many(db, "rollup_upsert", rows)


class DatabaseRecorder:
    """``jobs.Recorder`` on a database: a job's records in a few short transactions.

    Each method is one unit of work (``run_unit``): it commits whole or raises
    with nothing written. A method called for a job whose row is missing (its
    ``job_started`` failed while the database was away) creates the row first.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        # Per job in flight, to skip writes that would change nothing (each
        # written page costs a SQLite commit ~10 µs): the row id, whether this
        # recorder created the row, and the orders order_accepted just wrote.
        self._ids: dict[str, int] = {}
        self._fresh: set[str] = set()
        self._accepted: dict[str, tuple[Any, ...]] = {}

    def _order_changed(self, order: OrderResult) -> bool:
        with self._lock:
            return self._accepted.get(order.idempotency_key) != _order_fields(order)

    def _insert_job(self, job: JobResult, now: datetime) -> int | None:
        row = _execute(
            self.db,
            "job_insert",
            (
                job.job_id,
                job.file_name,
                job.file_path,
                job.file_sha256,
                job.file_size,
                False,
                _time(job.started_at or now),
                job.host,
                job.retry_of,
                _time(now),
                _time(now),
            ),
        ).fetchone()
        return row[0] if row else None

    def _job_pk(self, job: JobResult) -> int:
        """The row id of a job, inserting the job if it is not recorded yet."""
        with self._lock:
            pk = self._ids.get(job.job_id)
        if pk is None:
            pk = self._insert_job(job, utcnow())
            if pk is None:
                pk = _execute(self.db, "job_get", (job.job_id,)).fetchone()[0]
            with self._lock:
                self._ids[job.job_id] = pk
        return pk

    def _remember(self, job: JobResult, pk: int, fresh: bool) -> None:
        with self._lock:
            self._ids[job.job_id] = pk
            if fresh:
                self._fresh.add(job.job_id)
            else:
                self._fresh.discard(job.job_id)

    def job_started(self, job: JobResult) -> None:
        now = utcnow()

        def work() -> None:
            pk = self._insert_job(job, now)
            fresh = pk is not None
            if pk is None:  # resumed after a crash, or run again under the same id
                pk, status, started_at, duration, amount = _execute(
                    self.db, "job_get", (job.job_id,)
                ).fetchone()
                _rollup(self.db, status, started_at, duration, amount, -1)
                _execute(
                    self.db,
                    "job_restart",
                    (False, _time(job.started_at or now), job.host, job.file_path, _time(now), pk),
                )
            self._remember(job, pk, fresh)

        run_unit(self.db, work)

    def step_finished(self, job: JobResult, step: StepResult, logs: list[LogEntry]) -> None:
        now = _time(utcnow())

        def work() -> None:
            pk = self._job_pk(job)
            _execute(
                self.db,
                "step_upsert",
                (
                    pk,
                    step.step_name,
                    str(step.status),
                    _json(step.data),
                    step.error,
                    step.attempts,
                    _time(step.started_at),
                    step.duration_seconds,
                    now,
                ),
            )
            _insert_logs(self.db, pk, logs)

        run_unit(self.db, work)

    def order_accepted(self, job: JobResult, order: OrderResult) -> None:
        now = utcnow()

        def work() -> None:
            _upsert_orders(self.db, self._job_pk(job), [order], now)

        run_unit(self.db, work)
        with self._lock:
            self._accepted[order.idempotency_key] = _order_fields(order)

    def job_finished(self, job: JobResult, logs: list[LogEntry]) -> None:
        now = utcnow()
        content = job.edi_content
        if content is not None and len(content) > self.db.edi_content_max_bytes:
            content = None  # the hash and the final path are what is kept
        status = _status(job.status)
        total = job.total_amount

        def work() -> None:
            db = self.db
            pk = self._job_pk(job)
            old_status, old_started, old_duration, old_amount, old_sha, old_retry = _execute(
                db, "job_get_pk", (pk,)
            ).fetchone()
            _rollup(db, old_status, old_started, old_duration, old_amount, -1)
            old_started = UtcDateTimeField().python_value(old_started)
            started = job.started_at or old_started or now
            values: dict[str, Any] = {
                "status": status,
                "success": job.success,
                "completed_at": _time(job.completed_at or now),
                "duration_seconds": job.duration_seconds,
                "file_size": job.file_size,
                "po_number": job.po_number,
                "po_number_folded": fold(job.po_number),
                "total_amount": total,
                "erp_po_id": job.erp_po_id,
                "vendor_name": job.vendor_name,
                "vendor_name_folded": fold(job.vendor_name),
                "error": job.error,
                "error_details": _json(job.error_details),
                "host": job.host,
                "sender_id": job.sender_id,
                "receiver_id": job.receiver_id,
                "interchange_control_number": job.interchange_control_number,
                "duplicate_of": job.duplicate_of,
                "acks": _json(job.acks),
                "edi_content": content,
                "updated_at": _time(now),
            }
            # Assigning an indexed column rewrites its index even when the value
            # is the same: set the ones known since job_started only if changed.
            if started != old_started:
                values["started_at"] = _time(started)
            if job.file_sha256 != old_sha:
                values["file_sha256"] = job.file_sha256
            if job.retry_of != old_retry:
                values["retry_of"] = job.retry_of
            _update_job(db, pk, values)
            _upsert_orders(db, pk, [o for o in job.orders if self._order_changed(o)], now)
            _insert_logs(db, pk, logs)
            if job.job_id not in self._fresh:
                _execute(db, "interchanges_delete", (pk,))
            _execute_many(
                db,
                "interchange_insert",
                [(i.sender_id, i.receiver_id, i.control_number, pk) for i in job.interchanges],
            )
            suffixes = {s for o in job.orders for s in po_suffixes(fold(o.po_number))}
            _execute_many(db, "po_search_insert", [(s, pk) for s in sorted(suffixes)])
            _rollup(db, status, started, job.duration_seconds, total, +1)

        run_unit(self.db, work)
        with self._lock:
            self._ids.pop(job.job_id, None)
            self._fresh.discard(job.job_id)
            for order in job.orders:
                self._accepted.pop(order.idempotency_key, None)

    def find_duplicate(self, job: JobResult) -> str | None:
        def work() -> str | None:
            if job.file_sha256:
                row = _execute(
                    self.db, "duplicate_by_hash", (job.file_sha256, job.job_id)
                ).fetchone()
                if row:
                    return str(row[0])
            for key in dict.fromkeys(i.key() for i in job.interchanges):
                row = _execute(self.db, "duplicate_by_interchange", (*key, job.job_id)).fetchone()
                if row:
                    return str(row[0])
            return None

        return run_unit(self.db, work, write=False, atomic=False)

    def accepted_erp_id(self, idempotency_key: str) -> str | None:
        def work() -> str | None:
            row = _execute(self.db, "accepted_erp_id", (idempotency_key,)).fetchone()
            return row[0] if row else None

        return run_unit(self.db, work, write=False, atomic=False)

    def next_control_number(self) -> int:
        return next_control_number(self.db)


def _status(value: Any) -> str:
    return str(value.value if isinstance(value, JobStatus) else value)


def _insert_logs(db: Database, pk: int, logs: Iterable[LogEntry]) -> None:
    rows = [(pk, _time(e.timestamp), e.level, e.message, _json(e.details)) for e in logs]
    _execute_many(db, "log_insert", rows)


def _order_fields(order: OrderResult) -> tuple[Any, ...]:
    return (
        order.po_number,
        order.line_count,
        order.total_amount,
        order.vendor_name,
        order.erp_po_id,
        order.status,
        order.error,
        order.attempts,
        dumps(order.payload),
    )


def _upsert_orders(db: Database, pk: int, orders: Sequence[OrderResult], now: datetime) -> None:
    """Insert or update orders by idempotency key (the last one of a key wins)."""
    stamp = _time(now)
    rows = [
        (
            pk,
            o.po_number,
            fold(o.po_number),
            o.line_count,
            o.total_amount,
            o.vendor_name,
            o.erp_po_id,
            o.idempotency_key,
            o.status,
            o.error,
            o.attempts,
            None if o.payload is None else dumps(o.payload),
            stamp,
            stamp,
        )
        for o in {o.idempotency_key: o for o in orders}.values()
    ]
    _execute_many(db, "order_upsert", rows)


# --- service writes -------------------------------------------------------


def next_control_number(db: Database) -> int:
    """The next ISA13 for a 997: 1…999999999, wrapping, increasing across restarts."""

    def work() -> int:
        row = _execute(db, "control_next", ("isa13",)).fetchone()
        if row is None:  # a database initialised before the row existed
            _seed_control_number()
            row = _execute(db, "control_next", ("isa13",)).fetchone()
        return int(row[0])

    return run_unit(db, work)


def heartbeat(
    db: Database,
    daemon_id: str,
    *,
    host: str,
    pid: int,
    version: str,
    started_at: datetime,
    counters: dict[str, Any] | None = None,
    last_error: str | None = None,
    now: datetime | None = None,
) -> None:
    """Record that daemon ``daemon_id`` is alive (one row per daemon, upserted)."""
    now = now or utcnow()

    def work() -> None:
        Daemon.insert(
            daemon_id=daemon_id,
            host=host,
            pid=pid,
            version=version,
            started_at=started_at,
            heartbeat_at=now,
            counters=counters or {},
            last_error=last_error,
        ).on_conflict(
            conflict_target=[Daemon.daemon_id],
            preserve=[
                Daemon.host,
                Daemon.pid,
                Daemon.version,
                Daemon.started_at,
                Daemon.heartbeat_at,
                Daemon.counters,
                Daemon.last_error,
            ],
        ).execute()

    run_unit(db, work)


def remove_daemon(db: Database, daemon_id: str) -> None:
    """Forget a daemon's heartbeat row (on clean shutdown)."""
    run_unit(db, lambda: Daemon.delete().where(Daemon.daemon_id == daemon_id).execute())


def mark_interrupted(
    db: Database, host: str, *, now: datetime | None = None, reason: str | None = None
) -> list[dict[str, Any]]:
    """Crash recovery: jobs this ``host`` left ``running`` become ``interrupted``.

    Call at start-up, before any worker runs. Returns each such job as
    ``{job_id, file_name, file_path, started_at}`` so the service can resume
    its file from ``processing/``. A job another host finished meanwhile is
    left alone (compare-and-set on the status)."""
    now = now or utcnow()
    reason = reason or f"interrupted: the daemon on {host} stopped while this job ran"

    def work() -> list[dict[str, Any]]:
        running = list(
            Job.select(
                Job.id, Job.started_at, Job.total_amount, Job.job_id, Job.file_name, Job.file_path
            ).where((Job.status == JobStatus.RUNNING.value) & (Job.host == host))
        )
        done = []
        for row in running:
            duration = (now - row.started_at).total_seconds() if row.started_at else None
            changed = (
                Job.update(
                    status=JobStatus.INTERRUPTED.value,
                    success=False,
                    completed_at=now,
                    duration_seconds=duration,
                    error=reason,
                    updated_at=now,
                )
                .where((Job.id == row.id) & (Job.status == JobStatus.RUNNING.value))
                .execute()
            )
            if not changed:
                continue
            status = JobStatus.INTERRUPTED.value
            _rollup(db, status, row.started_at, duration, row.total_amount, +1)
            done.append(
                {
                    "job_id": row.job_id,
                    "file_name": row.file_name,
                    "file_path": row.file_path,
                    "started_at": row.started_at.isoformat() if row.started_at else None,
                }
            )
        return done

    return run_unit(db, work)


def record_final_path(db: Database, job_id: str, path: str) -> None:
    """Where the file ended up (``done/…`` or ``failed/…``), after the move."""
    run_unit(
        db,
        lambda: (
            Job.update(file_path=path, updated_at=utcnow()).where(Job.job_id == job_id).execute()
        ),
    )
