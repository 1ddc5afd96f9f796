"""What a job is: its status, steps, log lines and orders, and who records them.

The pipeline produces these; a ``Recorder`` keeps them (``store.DatabaseRecorder``
in a database, ``NullRecorder`` nowhere). The JSON shape of ``JobResult`` is a
contract (``jobs show --json``, ``process --json``): keep the names.
"""

from __future__ import annotations

import enum
import json
import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from .jsontext import dumps
from .money import as_text, exact_sum
from .orders import JSON_VERSION, same_content
from .orders import head as order_head


class JobStatus(enum.StrEnum):
    RECEIVED = "received"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"  # some orders posted, some rejected
    FAILED = "failed"
    DUPLICATE = "duplicate"
    INTERRUPTED = "interrupted"


# The statuses whose jobs' posted orders ``stats`` sums (total_amount_processed).
COUNTED_STATUSES = (JobStatus.SUCCEEDED, JobStatus.PARTIAL)


class StepStatus(enum.StrEnum):
    SUCCESS = "success"
    FAILED = "failed"
    PENDING = "pending"


STEPS = ("parse", "transform", "validate", "post_to_erp", "acknowledge")


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass
class StepResult:
    step_name: str
    status: StepStatus
    attempts: int = 1
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    started_at: datetime | None = None
    duration_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "step_name": self.step_name,
            "status": str(self.status),
            "attempts": self.attempts,
            "error": self.error,
            "data": self.data,
            "started_at": iso(self.started_at),
            "duration_seconds": self.duration_seconds,
        }


@dataclass
class LogEntry:
    timestamp: datetime
    level: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "timestamp": iso(self.timestamp),
            "level": self.level,
            "message": self.message,
            "details": self.details,
        }


@dataclass
class OrderResult:
    """One 850 of the file, and what became of it."""

    po_number: str
    idempotency_key: str
    line_count: int
    total_amount: Decimal | None  # None: unpriced (never "0")
    vendor_name: str | None
    status: str = "pending"  # pending (while the job runs) | posted | rejected | duplicate
    erp_po_id: str | None = None
    error: str | None = None
    attempts: int = 0
    payload: dict[str, Any] | None = None  # the canonical PO as JSON
    payload_json: str | None = None  # ``dumps(payload)``, encoded once for the ERP and the record
    # The payload's fields' version (``orders.JSON_VERSION``); None: a body an
    # earlier run sent under the key, carried on (its version unknown).
    json_version: int | None = JSON_VERSION
    refused: bool = False  # by the ERP for good, or never sent to it: not taken
    # Why it was not posted in words for the partner (error.json), where
    # ``error`` keeps the ERP's own (redacted) words for the record.
    partner_error: str | None = None
    warnings: list[str] = field(default_factory=list)  # rules at level "warn" it broke
    duplicate_of: str | None = None  # the job that posted this order first
    # Posted by the job this one retries, which ended counting it (a partial
    # job retried): this job's too, but not in its total.
    counted_by: str | None = None

    def fields(self) -> dict[str, Any]:
        """The canonical PO as a dict: ``payload``, or decoded from ``payload_json``
        (the pipeline keeps only the JSON of a file's orders)."""
        if self.payload is not None:
            return self.payload
        return json.loads(self.payload_json) if self.payload_json else {}

    def head(self) -> dict[str, Any]:
        """The canonical PO's fields but its lines (``orders.head``): what
        the duplicate checks read of it, without decoding every line."""
        return self.payload if self.payload is not None else order_head(self.payload_json)

    @property
    def sender(self) -> tuple[str, str]:
        """ISA05, ISA06 of the order's interchange (from its payload)."""
        fields = self.head()
        return (str(fields.get("sender_qualifier", "")), str(fields.get("sender_id", "")))

    @property
    def purpose(self) -> str:
        return str(self.head().get("purpose", ""))

    def to_json(self) -> dict[str, Any]:
        return {
            "po_number": self.po_number,
            "line_count": self.line_count,
            "total_amount": as_text(self.total_amount),
            "vendor_name": self.vendor_name,
            "erp_po_id": self.erp_po_id,
            "status": self.status,
            "attempts": self.attempts,
            "error": self.error,
            "duplicate_of": self.duplicate_of,
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class Started:
    """What ``Recorder.job_started`` gives back: the ERP ids already given to
    the job's orders (idempotency key -> id), the first of the control
    numbers it reserved (None: none asked for), and its rivals: the other
    running jobs posting an order of the same sender and PO number, and the
    jobs that posted one of its orders since its duplicate check, whose
    outcome decides this job's (a duplicate, a conflict, or its to post).
    Only an order this job, or the one it retries, had accepted is in
    ``accepted``: another job's is that job's, never this one's too. Of
    those, ``counted`` are the retried job's that it ended counting (its
    status in ``COUNTED_STATUSES``): they stay its, out of this job's total;
    the others, of a job that never ended (a crash), become this job's.
    ``sent``: the body already sent under one of this job's keys with no
    answer on record (key -> the JSON text): by a job that ended unanswered,
    stopped (a crash) or is sending it. It is the body to send under that key,
    as one key always carries one body (the ERP may hold the order, and may
    check the body a key comes with). ``numbered_before``: the control
    numbers are those a run of this job that never ended (a crash) reserved,
    which may have written its acknowledgements with them."""

    accepted: dict[str, str]
    control_number: int | None = None
    rivals: frozenset[str] = frozenset()
    counted: frozenset[str] = frozenset()
    sent: dict[str, str] = field(default_factory=dict)
    numbered_before: bool = False


@dataclass(frozen=True)
class PostedOrder:
    """An order some job posted: what a later one is compared with."""

    job_id: str
    erp_po_id: str | None  # None: sent without an answer (``find_sent``)
    idempotency_key: str
    purpose: str  # BEG01
    release_number: str = ""  # BEG04
    usage: str = "P"  # ISA15: a test order is another order
    payload_json: str = field(default="", compare=False)  # the body posted (text: kept small)
    json_version: int | None = None  # its fields' (``OrderResult.json_version``)

    def fields(self) -> dict[str, Any]:
        return json.loads(self.payload_json) if self.payload_json else {}

    def same_content(self, document: dict[str, Any]) -> bool:
        """Whether ``document`` (an order read now) says what this one did:
        field for field when both are this version's JSON."""
        complete = self.json_version == JSON_VERSION
        return same_content(self.fields(), document, complete=complete)


@dataclass
class Interchange:
    """Who sent a file's interchange, for duplicate detection and search."""

    sender_id: str
    receiver_id: str
    control_number: str

    def key(self) -> tuple[str, str, str]:
        return (self.sender_id, self.receiver_id, self.control_number)


@dataclass
class JobResult:
    job_id: str
    file_name: str  # as files.display_name shows it (a record holds text)
    status: JobStatus = JobStatus.RECEIVED
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_seconds: float | None = None
    file_sha256: str | None = None
    file_size: int | None = None
    file_path: str | None = None  # where the file was read from
    error: str | None = None
    error_details: list[dict[str, Any]] = field(default_factory=list)
    host: str | None = None
    retry_of: str | None = None
    duplicate_of: str | None = None
    interchanges: list[Interchange] = field(default_factory=list)
    steps: list[StepResult] = field(default_factory=list)
    logs: list[LogEntry] = field(default_factory=list)
    orders: list[OrderResult] = field(default_factory=list)
    acks: list[str] = field(default_factory=list)  # 997 (and TA1) file names written
    # What became of each transaction set received, and why (for error.json).
    sets: list[dict[str, Any]] = field(default_factory=list)
    edi_content: bytes | None = None
    partner: str | None = None  # the [partners.NAME] that sent it, if one claims it

    @property
    def success(self) -> bool:
        return self.status in (JobStatus.SUCCEEDED, JobStatus.DUPLICATE)

    @property
    def po_number(self) -> str | None:
        return self.orders[0].po_number if self.orders else None

    @property
    def total_amount(self) -> Decimal | None:
        """What was posted to the ERP by this job, each order once (duplicates
        and rejected orders add nothing); None when nothing priced was posted."""
        amounts = [o.total_amount for o in self.orders if o.status == "posted" and not o.counted_by]
        priced = [a for a in amounts if a is not None]
        return exact_sum(priced) if priced else None

    @property
    def vendor_name(self) -> str | None:
        return next((o.vendor_name for o in self.orders if o.vendor_name), None)

    @property
    def erp_po_id(self) -> str | None:
        ids = [o.erp_po_id for o in self.orders if o.erp_po_id]
        return ",".join(ids) if ids else None

    @property
    def sender_id(self) -> str | None:
        return self.interchanges[0].sender_id if self.interchanges else None

    @property
    def receiver_id(self) -> str | None:
        return self.interchanges[0].receiver_id if self.interchanges else None

    @property
    def interchange_control_number(self) -> str | None:
        return self.interchanges[0].control_number if self.interchanges else None

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "file_name": self.file_name,
            "status": str(self.status),
            "success": self.success,
            "started_at": iso(self.started_at),
            "completed_at": iso(self.completed_at),
            "duration_seconds": self.duration_seconds,
            "po_number": self.po_number,
            "total_amount": as_text(self.total_amount),
            "vendor_name": self.vendor_name,
            "erp_po_id": self.erp_po_id,
            "error": self.error,
            "error_details": self.error_details,
            "file_sha256": self.file_sha256,
            "file_size": self.file_size,
            "file_path": self.file_path,  # where the file is (done/, failed/, …)
            "host": self.host,
            "sender_id": self.sender_id,
            "partner": self.partner,
            "receiver_id": self.receiver_id,
            "interchange_control_number": self.interchange_control_number,
            "retry_of": self.retry_of,
            "duplicate_of": self.duplicate_of,
            "acks": self.acks,
            "steps": [s.to_json() for s in self.steps],
            "logs": [entry.to_json() for entry in self.logs],
            "orders": [o.to_json() for o in self.orders],
        }


class Recorder(Protocol):
    """Where the pipeline reports. Every method may raise. ``job_started``,
    ``order_accepted`` and ``job_finished`` must land (no order is posted
    without a record; see ``pipeline``); the others' failures are logged and
    the job goes on. A recorder may add ``job_status_only(job, reason)``, the
    pipeline's fallback when the full final record cannot be written."""

    def job_started(
        self,
        job: JobResult,
        steps: Iterable[StepResult] = (),
        logs: Iterable[LogEntry] = (),
        *,
        control_numbers: int = 0,
        seen: Collection[str] = (),
    ) -> Started:
        """The job row, status running, with the steps done so far and their
        log lines, in one transaction, which also reads the ERP ids already
        given to the job's orders (those are not posted again: this job's, or
        the retried one's, are ``accepted``; another job's makes it a rival,
        as does an order of the job's sender and PO number another job posted
        whose key is not among ``seen``, those its check judged it against)
        and reserves
        ``control_numbers`` for its acknowledgements. The pipeline calls it
        just before the first ERP call; a job that ends before that is
        written once, by ``job_finished``. Its pending orders count as in
        flight from then on: a job started later with an order of the same
        sender and PO number gets this one among its ``rivals``."""

    def job_finished(
        self, job: JobResult, logs: list[LogEntry], steps: Iterable[StepResult] = ()
    ) -> None:
        """Final status, summary fields, orders, the steps not yet written and
        the remaining log lines, in one transaction."""

    def interchange_seen(self, job: JobResult) -> str | None:
        """The job_id of an earlier succeeded job with an interchange of the
        same sender + receiver + ISA13 (a reused number: only worth a warning)."""

    def processed_whole(self, job: JobResult, data: bytes) -> str | None:
        """The job that answered an interchange of ``job`` (succeeded, partial
        or duplicate) from a file whose kept bytes (``edi_content``) begin
        with ``data``: ``data`` is a cut-off copy of that file."""

    def find_sent(self, sender: tuple[str, str], po_number: str) -> list[PostedOrder]:
        """The orders of ``sender`` (ISA05, ISA06) with PO number ``po_number``
        that any job posted, or that a job not ended (running, or cut short)
        sent without an answer the ERP may hold (no ERP id, not refused for
        good), oldest first."""

    def kept_content(self, job_id: str) -> bytes | None:
        """The file's bytes job ``job_id`` kept (``edi_content``); None if it
        kept none (a file over ``edi_content_max_bytes``) or there is no such job."""

    def sent_unanswered(self, job: JobResult, po_number: str) -> Collection[str]:
        """The keys of ``job``'s orders with this PO number that went to the
        ERP before without an answer (by a run of this job, or of the one it
        carries on, or by a job that ended): the ERP may hold them."""

    def posted_keys(self, keys: Collection[str]) -> Collection[str]:
        """Those of ``keys`` an order was posted under (by any job)."""

    def held_by(self, job_id: str) -> Collection[str]:
        """The keys (as their bodies went out) of the orders the ERP may hold
        from job ``job_id`` and the jobs it carries on (its ``retry_of``, and
        theirs): those it answered, those sent without an answer, and those a
        run cut short was posting (not duplicates, nor orders refused for good
        or never sent)."""

    def in_flight(self, job: JobResult, rivals: Collection[str]) -> dict[str, int]:
        """Those of ``rivals`` (``Started.rivals``) still running with an order
        of ``job``'s sender and PO number that has no ERP id yet, each with
        the number of its orders not answered yet (how far it is)."""

    def ended(self, job_id: str) -> tuple[str, str | None, str | None] | None:
        """The final status, file sha256 and file path recorded for ``job_id``;
        None while it runs, or when there is no such job."""

    def recorded(self, job_id: str) -> JobResult | None:
        """The job as recorded (steps, orders, error), or None."""

    def order_accepted(self, job: JobResult, order: OrderResult) -> tuple[str, str] | None:
        """Record the ERP id at once, before anything else can go wrong.
        Returns the job and ERP id of another job that had the order
        accepted first (both posted it, under its one Idempotency-Key): the
        order is that job's; None when it is this one's."""

    def next_control_number(self, count: int = 1) -> int:
        """The first of ``count`` fresh 997/TA1 interchange control numbers (the
        others follow it), increasing across restarts."""


class NullRecorder:
    """Keeps nothing beyond this process: the pipeline without a database."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accepted: dict[str, tuple[str, str]] = {}  # key -> (ERP id, its job)
        self._counted: set[str] = set()  # jobs ended in COUNTED_STATUSES
        self._posted: dict[tuple[tuple[str, str], str], list[PostedOrder]] = {}
        # Jobs between job_started and job_finished: key -> (sender, PO number)
        # of each order without an ERP id.
        self._pending: dict[str, dict[str, tuple[tuple[str, str], str]]] = {}
        # Seconds since 2020 fit ISA13's nine digits until 2051 and keep
        # increasing across restarts as long as fewer than one 997 a second is
        # written on average; the database recorder keeps a real sequence.
        self._control = int(time.time()) - 1_577_836_800

    def job_started(
        self,
        job: JobResult,
        steps: Iterable[StepResult] = (),
        logs: Iterable[LogEntry] = (),
        *,
        control_numbers: int = 0,
        seen: Collection[str] = (),
    ) -> Started:
        keys = {o.idempotency_key for o in job.orders}
        mine = (job.job_id, job.retry_of)
        with self._lock:
            found = {k: v for k, v in self._accepted.items() if k in keys}
            accepted = {k: erp_id for k, (erp_id, by) in found.items() if by in mine}
            counted = {
                k for k, (_, by) in found.items() if by == job.retry_of and by in self._counted
            }
            for key in accepted.keys() - counted:
                self._accepted[key] = (accepted[key], job.job_id)
            pending = {
                o.idempotency_key: (o.sender, o.po_number)
                for o in job.orders
                if o.status == "pending" and o.idempotency_key not in found
            }
            rivals = self._holding(job, pending.values(), self._pending)
            rivals.update(by for _, by in found.values() if by not in mine)
            rivals.update(
                p.job_id
                for sender_po in set(pending.values())
                for p in self._posted.get(sender_po, ())
                if p.idempotency_key not in seen and p.job_id not in mine
            )
            self._pending[job.job_id] = pending
        first = self.next_control_number(control_numbers) if control_numbers else None
        return Started(accepted, first, frozenset(rivals), frozenset(counted))

    def sent_unanswered(self, job: JobResult, po_number: str) -> Collection[str]:
        return ()  # nothing is kept across a crash

    def held_by(self, job_id: str) -> Collection[str]:
        return ()  # nothing is kept across a crash

    def posted_keys(self, keys: Collection[str]) -> Collection[str]:
        with self._lock:
            return {k for k in keys if k in self._accepted}

    def in_flight(self, job: JobResult, rivals: Collection[str]) -> dict[str, int]:
        mine = [(o.sender, o.po_number) for o in job.orders]
        with self._lock:
            holding = self._holding(job, mine, {r: self._pending.get(r, {}) for r in rivals})
            return {r: len(self._pending[r]) for r in holding}

    @staticmethod
    def _holding(
        job: JobResult,
        orders: Iterable[tuple[tuple[str, str], str]],
        pending: dict[str, dict[str, tuple[tuple[str, str], str]]],
    ) -> set[str]:
        """The jobs of ``pending`` other than ``job`` (or the one it retries)
        with one of ``orders`` (sender, PO number) not yet accepted."""
        wanted = set(orders)
        return {
            other
            for other, theirs in pending.items()
            if other not in (job.job_id, job.retry_of) and wanted.intersection(theirs.values())
        }

    def job_finished(
        self, job: JobResult, logs: list[LogEntry], steps: Iterable[StepResult] = ()
    ) -> None:
        with self._lock:
            self._pending.pop(job.job_id, None)
            if job.status in COUNTED_STATUSES:
                self._counted.add(job.job_id)

    def ended(self, job_id: str) -> tuple[str, str | None, str | None] | None:
        return None  # nothing is kept across a crash: a claim resumed runs again

    def recorded(self, job_id: str) -> JobResult | None:
        return None

    def interchange_seen(self, job: JobResult) -> str | None:
        return None

    def processed_whole(self, job: JobResult, data: bytes) -> str | None:
        return None

    def kept_content(self, job_id: str) -> bytes | None:
        return None

    def find_sent(self, sender: tuple[str, str], po_number: str) -> list[PostedOrder]:
        with self._lock:  # posted: an answer lost is lost with the process
            return list(self._posted.get((sender, po_number), ()))

    def order_accepted(self, job: JobResult, order: OrderResult) -> tuple[str, str] | None:
        if not order.erp_po_id:
            return None
        key = order.idempotency_key
        fields = order.head()  # once, and not its lines: an order's dict is ~6x its JSON
        release, usage = str(fields.get("release_number", "")), str(fields.get("usage", "P"))
        purpose = str(fields.get("purpose", ""))
        sender = (str(fields.get("sender_qualifier", "")), str(fields.get("sender_id", "")))
        text = order.payload_json or dumps(order.fields())
        posted = PostedOrder(
            job.job_id, order.erp_po_id, key, purpose, release, usage, text, order.json_version
        )
        with self._lock:
            self._pending.get(job.job_id, {}).pop(key, None)
            erp_po_id, by = self._accepted.get(key, (order.erp_po_id, job.job_id))
            if by != job.job_id:
                return by, erp_po_id
            self._accepted[key] = (order.erp_po_id, job.job_id)
            self._posted.setdefault((sender, order.po_number), []).append(posted)
        return None

    def next_control_number(self, count: int = 1) -> int:
        with self._lock:
            first = self._control % 1_000_000_000 + 1
            if first + count - 1 > 999_999_999:  # past the maximum: from 1 again
                first = 1
            self._control = first + count - 1
            return first
