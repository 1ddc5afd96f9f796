"""Job records in SQLite or PostgreSQL, with Peewee.

``open_database(url, settings)`` gives a database bound to the models;
``init``/``migrate``/``reset`` manage its schema; ``DatabaseRecorder`` is the
pipeline's ``jobs.Recorder``; ``heartbeat``, ``mark_interrupted``,
``record_final_path`` and ``job_brief`` are the service's. Reads for the CLI
live in ``edi_inbox.queries``.

One noun per module:

- ``fields``: column types that store the same values on both databases
  (UTC times, exact money, JSON, ``fold()`` search keys);
- ``models``: the tables, ``po_search``, ``vendor_search`` and ``job_rollups`` included;
- ``database``: ``SqliteStore``/``PostgresStore``, ``open_database`` and
  ``run_unit`` (one transaction per unit of work; retried on a fresh
  connection when PostgreSQL's dies);
- ``schema``: ``SCHEMA_VERSION``, ``MIGRATIONS``, ``init``/``migrate``/``reset``;
- ``statements``: the recorder's SQL, a unit's statements sent together;
- ``recorder``: ``DatabaseRecorder`` and the service's writes.
"""

from __future__ import annotations

from ..errors import DatabaseUnavailable
from .database import (
    Checkpointer,
    Database,
    PostgresStore,
    SqliteStore,
    close_database,
    is_permanent,
    open_database,
    run_unit,
)
from .fields import (
    FIELD_TYPES,
    FoldedField,
    JsonField,
    MoneyField,
    UtcDateTimeField,
    as_utc,
    day_of,
    dumps,
    fold,
    hour_of,
    utcnow,
)
from .models import (
    CONTROL_NUMBER_MAX,
    FINAL_STATUSES,
    MIN_SUBSTRING,
    MODELS,
    ROLLUP_PERIODS,
    BaseModel,
    ControlNumber,
    Daemon,
    Job,
    JobInterchange,
    JobLog,
    JobRollup,
    JobStep,
    Order,
    PartnerRollup,
    PoSearch,
    SchemaVersion,
    VendorSearch,
    po_suffixes,
)
from .recorder import (
    DatabaseRecorder,
    died,
    heartbeat,
    job_brief,
    mark_interrupted,
    next_control_number,
    record_final_path,
    remove_daemon,
    take_left_behind,
)
from .schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    _write_version,
    init,
    migrate,
    rebuild,
    rebuild_search_and_rollups,
    reset,
    schema_version,
)

__all__ = [
    "CONTROL_NUMBER_MAX",
    "FIELD_TYPES",
    "FINAL_STATUSES",
    "MIGRATIONS",
    "MIN_SUBSTRING",
    "MODELS",
    "ROLLUP_PERIODS",
    "SCHEMA_VERSION",
    "BaseModel",
    "Checkpointer",
    "ControlNumber",
    "Daemon",
    "Database",
    "DatabaseRecorder",
    "DatabaseUnavailable",
    "FoldedField",
    "Job",
    "JobInterchange",
    "JobLog",
    "JobRollup",
    "JobStep",
    "JsonField",
    "MoneyField",
    "Order",
    "PartnerRollup",
    "PoSearch",
    "PostgresStore",
    "SchemaVersion",
    "SqliteStore",
    "UtcDateTimeField",
    "VendorSearch",
    "_write_version",
    "as_utc",
    "close_database",
    "day_of",
    "died",
    "dumps",
    "fold",
    "heartbeat",
    "hour_of",
    "init",
    "is_permanent",
    "job_brief",
    "mark_interrupted",
    "migrate",
    "next_control_number",
    "open_database",
    "po_suffixes",
    "rebuild",
    "rebuild_search_and_rollups",
    "record_final_path",
    "remove_daemon",
    "reset",
    "run_unit",
    "schema_version",
    "take_left_behind",
    "utcnow",
]
