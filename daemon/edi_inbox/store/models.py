"""The tables: Peewee models bound to a database by ``open_database``.

``jobs`` holds a row per file; ``job_steps``, ``job_logs``, ``orders`` and
``job_interchanges`` hang off it (``ON DELETE CASCADE``). Two tables are
derived: ``po_search`` (every suffix of every order's folded PO number, so a
PO substring is an index range) and ``vendor_search`` (every order's folded
vendor), written with the running row and again with the final record, and
``job_rollups`` (counts and sums per status, hour and day, so ``stats`` reads
a few hundred rows rather than every job), kept in the transaction that
finishes a job. ``control_numbers``,
``daemons`` and ``schema_version`` are the service's.
"""

from __future__ import annotations

from decimal import Decimal

import peewee as pw

from ..jobs import JobStatus
from .fields import (
    FoldedField,
    JsonField,
    MoneyField,
    UtcDateTimeField,
    day_of,
    fold,
    hour_of,
)

FINAL_STATUSES = frozenset(
    {
        JobStatus.SUCCEEDED,
        JobStatus.PARTIAL,
        JobStatus.FAILED,
        JobStatus.DUPLICATE,
        JobStatus.INTERRUPTED,
    }
)
MIN_SUBSTRING = 3  # shorter PO search terms match as prefixes (see po_search)
# A PO number is searched by its first PO_SEARCH_CHARS folded characters: the
# folded column and po_search hold no more. A PO number has at most 22
# (BEG03), but an order must never cost rows or index bytes quadratic in a
# partner's value (a 40 KB one: 20,000 suffixes, 2.3 GB of SQLite; on
# PostgreSQL, one index row over its 2,704-byte limit).
PO_SEARCH_CHARS = 64
# A vendor (N1*VN, N102: at most 60 characters) is searched by its first
# VENDOR_SEARCH_CHARS folded ones: room for folding to lengthen it, within
# PostgreSQL's index row limit however hostile the value.
VENDOR_SEARCH_CHARS = 200
CONTROL_NUMBER_MAX = 999_999_999  # ISA13 has nine digits
ROLLUP_PERIODS = (("hour", hour_of), ("day", day_of))


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
    total_amount = MoneyField(null=True)
    erp_po_id = pw.TextField(null=True)
    vendor_name = pw.TextField(null=True)
    error = pw.TextField(null=True)
    error_details = JsonField(null=True)
    host = pw.TextField(null=True)
    sender_id = pw.TextField(null=True)
    receiver_id = pw.TextField(null=True)
    interchange_control_number = pw.TextField(null=True)
    retry_of = pw.CharField(max_length=36, null=True)
    duplicate_of = pw.CharField(max_length=36, null=True)
    acks = JsonField(null=True)  # schema v2
    partner = pw.TextField(null=True)  # schema v4: the [partners.NAME] that sent the file
    # Schema v7: "FIRST COUNT", the acknowledgements' control numbers the
    # running record reserved (a run of the job that never ended numbers its
    # 997s the same: ``Started.numbered_before``).
    ack_numbers = pw.TextField(null=True)
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
# (A job's PO numbers and vendors are looked up through orders, po_search and
# vendor_search, not the job's row.)
for _column, *_more in (
    (Job.file_sha256,),
    (Job.retry_of,),
    (Job.sender_id, Job.started_at),
    (Job.partner, Job.started_at),
    # Schema v10: a partner's last failure (``status``) without a pass over
    # every partner's failures.
    (Job.partner, Job.status, Job.started_at, Job.id),
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
    accepted is never taken over by a later job (``job_started`` reads it)."""

    id = pw.BigAutoField()
    # Indexed with po_number_folded (below): "has this job an order whose PO
    # starts with …" is then answered from the index alone.
    job = pw.ForeignKeyField(Job, column_name="job_id", on_delete="CASCADE", index=False)
    po_number = pw.TextField()
    po_number_folded = FoldedField(index=True)  # po_search_key(): at most PO_SEARCH_CHARS
    line_count = pw.IntegerField(default=0)
    total_amount = MoneyField(null=True)
    vendor_name = pw.TextField(null=True)
    erp_po_id = pw.TextField(null=True)
    idempotency_key = pw.TextField(unique=True)
    status = pw.TextField(default="pending")
    error = pw.TextField(null=True)
    attempts = pw.IntegerField(default=0)
    payload = JsonField(null=True)
    json_version = pw.SmallIntegerField(null=True)  # the payload's (orders.JSON_VERSION)
    refused = pw.BooleanField(default=False)  # for good, or never sent: not taken
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


class VendorSearch(BaseModel):
    """Each order's folded vendor name (``vendor_search_key``) of a job, once:
    a vendor search matches any order of a file, as a PO search does. The
    distinct names are few (one per trading partner's vendor), so a
    substring is matched against them and then looked up here. Schema v6."""

    vendor = FoldedField()
    job = pw.ForeignKeyField(Job, column_name="job_id", on_delete="CASCADE", index=False)

    class Meta:
        table_name = "vendor_search"
        primary_key = pw.CompositeKey("vendor", "job")
        indexes = ((("job", "vendor"), False),)  # as po_search's (job, suffix)


def vendor_search_key(vendor_name: str | None) -> str | None:
    """A vendor name (or search term) as ``vendor_search`` holds it: folded,
    cut to ``VENDOR_SEARCH_CHARS``; None for none (or only spaces)."""
    folded = fold(vendor_name)
    return folded[:VENDOR_SEARCH_CHARS] if folded else None


def po_search_key(po_number: str | None) -> str | None:
    """A PO number (or search term) as ``orders.po_number_folded`` holds it:
    folded, cut to ``PO_SEARCH_CHARS``."""
    folded = fold(po_number)
    return None if folded is None else folded[:PO_SEARCH_CHARS]


def po_suffixes(folded_po: str | None) -> list[str]:
    """The ``po_search`` keys of a folded PO number: the suffixes of its first
    ``PO_SEARCH_CHARS`` characters that are at least ``MIN_SUBSTRING`` long
    (the whole number, however short). At most 62 keys of at most 64
    characters, however long the number."""
    if not folded_po:
        return []
    folded_po = folded_po[:PO_SEARCH_CHARS]
    last = max(len(folded_po) - MIN_SUBSTRING, 0)
    return [folded_po[i:] for i in range(last + 1)]


class JobRollup(BaseModel):
    """Jobs that reached a final status, by status, per hour and per day of
    ``started_at`` (``period`` is ``hour`` or ``day``, see ``ROLLUP_PERIODS``):
    ``stats`` over any span reads at most a day of hours and a row per day.
    Schema v2."""

    period = pw.TextField()
    start = UtcDateTimeField()
    status = pw.TextField()
    jobs = pw.BigIntegerField(default=0)
    # Schema v9: jobs that reached it, never taken back (a job interrupted,
    # then run to its end, counts in both): /metrics' counter. A default in
    # SQL too: a host on an older version, running on after another migrated
    # the database, writes rows without it.
    reached = pw.BigIntegerField(default=0, constraints=[pw.SQL("DEFAULT 0")])
    durations = pw.BigIntegerField(default=0)  # how many had a duration
    duration_total = pw.DoubleField(default=0.0)
    amount = MoneyField(default=Decimal(0))

    class Meta:
        table_name = "job_rollups"
        primary_key = pw.CompositeKey("period", "start", "status")


class PartnerRollup(BaseModel):
    """``JobRollup`` of one partner's jobs (``jobs.partner``): ``stats
    --partner`` over any span reads at most a day of hours and a row per day
    too. Schema v10."""

    partner = pw.TextField()
    period = pw.TextField()
    start = UtcDateTimeField()
    status = pw.TextField()
    jobs = pw.BigIntegerField(default=0)
    reached = pw.BigIntegerField(default=0)
    durations = pw.BigIntegerField(default=0)
    duration_total = pw.DoubleField(default=0.0)
    amount = MoneyField(default=Decimal(0))

    class Meta:
        table_name = "partner_rollups"
        primary_key = pw.CompositeKey("partner", "period", "start", "status")


class ControlNumber(BaseModel):
    """Sequences that must keep increasing across restarts (``isa13`` for 997s,
    1 to ``CONTROL_NUMBER_MAX``, wrapping)."""

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
    # Schema v9: the interval it beats at (hosts may be configured apart:
    # each is judged by its own). None from an older version.
    heartbeat_seconds = pw.DoubleField(null=True)
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
    VendorSearch,
    JobRollup,
    PartnerRollup,
    ControlNumber,
    Daemon,
    SchemaVersion,
)
