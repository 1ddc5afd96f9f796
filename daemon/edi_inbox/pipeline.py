"""Runs one file through parse → transform → validate → post_to_erp → acknowledge.

A step is a method taking the job's ``_Work`` and returning the step's data
(a dict); it raises to fail. One loop runs the steps the way structlog runs
processors: it binds ``job_id`` and ``file`` to the logger, times each step,
and reports it to the recorder. ``edi-inbox process`` and the daemon both call
``Pipeline.run``; it never raises for bad input and never moves the file.

Records are written where they protect something: the job row (status
running), with the steps done so far and their log lines, just before the
first ERP call, the only step whose effect lies outside this host; each
order's ERP id the moment the ERP answers; the rest with the final status
(and, in the daemon, the path the file is about to be moved to). Three
transactions for a good file, one for a file that fails before the ERP call,
instead of one per step. A crash before the first write loses nothing: the
daemon runs the claimed file again under the same job id; one after it leaves
the job ``running``, and the next start marks it ``interrupted`` and runs it
again.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import stat
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from . import log as logsetup
from . import orders, rules
from .config import Settings
from .erp import make_erp
from .errors import (
    MAX_ERRORS_LISTED,
    EdiInboxError,
    ErpError,
    FileChanged,
    Problem,
    TooLarge,
    UnsafeFile,
    X12Error,
)
from .files import display_name, safe_name, write_new
from .jobs import (
    Interchange,
    JobResult,
    JobStatus,
    NullRecorder,
    OrderResult,
    Recorder,
    StepResult,
    StepStatus,
    dumps,
)
from .x12 import X12Reader, build_997
from .x12.model import InterchangeSummary, TransactionSet

logger = structlog.get_logger("edi_inbox.pipeline")

# 997 codes for business-rule problems. The 997 reports syntax, so a rule
# broken inside an element is told as "invalid value" (AK4 7) or "invalid
# date" (AK4 8), and a missing or inconsistent segment at segment level.
_AK4_BY_PROBLEM = {
    "invalid_date": "8",
    "not_numeric": "6",
    "missing_po_number": "1",  # mandatory element missing
    "missing_date": "1",
    "missing_quantity": "2",  # PO102 is conditional
}
_AK3_MANDATORY_MISSING = "3"
_AK3_HAS_ELEMENT_ERRORS = "8"


class StepFailed(EdiInboxError):
    """A step's own failure, already described: ``details`` go to error.json
    (the first ``MAX_ERRORS_LISTED``; the message says how many more)."""

    def __init__(self, message: str, details: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.details = details[:MAX_ERRORS_LISTED]


@dataclass
class _Work:
    """What the steps hand on to each other for one file."""

    data: bytes = b""
    sets: list[TransactionSet] = field(default_factory=list)
    interchanges: list[InterchangeSummary] = field(default_factory=list)
    purchase_orders: list[tuple[TransactionSet, orders.PurchaseOrder]] = field(default_factory=list)
    # Problems per interchange/group/set, for the 997: (ISA13, GS06, ST02) -> errors.
    rejected: dict[tuple[str, str, str], list[X12Error]] = field(default_factory=dict)
    failed: bool = False
    skip_rest: str | None = None  # why the remaining steps do not run
    accepted: dict[str, str] = field(default_factory=dict)  # key -> ERP id, known before posting

    def reject(self, ts: TransactionSet, error: X12Error) -> None:
        key = (ts.interchange.control_number, ts.group.control_number, ts.control_number)
        self.rejected.setdefault(key, []).append(error)


def read_file(path: Path, limit: int) -> bytes:
    """Read a file given by an operator: never blocks on a FIFO, refuses
    anything but a regular file, and never reads past ``limit`` bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{display_name(str(path))} is not a regular file")
        if st.st_size > limit:
            raise UnsafeFile(
                f"the file is {st.st_size} bytes, over the limit of {limit} bytes (max_file_bytes)"
            )
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise UnsafeFile(f"the file grew past the limit of {limit} bytes while being read")
        return data
    finally:
        os.close(fd)


class Pipeline:
    """The steps for one file, with the ERP client and recorder they share.

    Thread-safe: the daemon's workers call ``run`` concurrently on one instance.
    """

    def __init__(
        self,
        settings: Settings,
        recorder: Recorder | None = None,
        erp: Any = None,
        *,
        host: str | None = None,
    ) -> None:
        if not structlog.is_configured():
            logsetup.configure(settings.log.level, settings.log.format)
        self.settings = settings
        self.recorder: Recorder = recorder if recorder is not None else NullRecorder()
        self._own_erp = erp is None
        self.erp = erp if erp is not None else make_erp(settings)
        self.host = host or socket.gethostname()
        self.steps: list[tuple[str, Callable[[JobResult, _Work], dict[str, Any]]]] = [
            ("parse", self.parse),
            ("transform", self.transform),
            ("validate", self.validate),
            ("post_to_erp", self.post_to_erp),
            ("acknowledge", self.acknowledge),
        ]

    def close(self) -> None:
        if self._own_erp:
            self.erp.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop ---------------------------------------------------------

    def run(
        self,
        path: Path,
        *,
        file_name: str | None = None,
        job_id: str | None = None,
        retry_of: str | None = None,
        data: bytes | None = None,
        destination: Callable[[JobResult], str] | None = None,
    ) -> JobResult:
        """Process one file; the result says what happened. Never raises for bad input.

        ``destination(job)``, if given, says where the file will be moved once
        the job is done (the daemon's ``done/`` or ``failed/``): the final
        record carries that path, saving the move a transaction of its own.
        If it raises ``FileChanged``, the job ends ``interrupted``: the file
        runs again (orders the ERP accepted are not posted again)."""
        path = Path(path)
        job = JobResult(
            job_id=job_id or str(uuid.uuid4()),
            file_name=file_name or path.name,
            file_path=str(path),
            host=self.host,
            retry_of=retry_of,
            started_at=datetime.now(UTC),
            status=JobStatus.RUNNING,
        )
        clock = time.perf_counter()
        with logsetup.job_context(job.job_id, display_name(job.file_name)) as logs:
            work = _Work()
            try:
                work.data = (
                    data
                    if data is not None
                    else read_file(path, self.settings.daemon.max_file_bytes)
                )
            except (OSError, UnsafeFile) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                work.failed = True
                work.skip_rest = f"the file could not be read: {reason}"
                job.error = work.skip_rest
                job.error_details = [{"message": work.skip_rest}]
            self._fill_file_facts(job, work.data)
            logger.info("job_started", size=job.file_size, retry_of=retry_of)
            unwritten: list[StepResult] = []
            for name, step in self.steps:
                if name == "post_to_erp" and not work.skip_rest:
                    known = self._record(self.recorder.job_started, job, unwritten, logs.drain())
                    work.accepted = known or {}
                    unwritten = []
                unwritten.append(self._run_step(job, work, name, step))
            if job.status is JobStatus.RUNNING:
                job.status = JobStatus.FAILED if work.failed else JobStatus.SUCCEEDED
            job.completed_at = datetime.now(UTC)
            job.duration_seconds = round(time.perf_counter() - clock, 6)
            if destination is not None:
                try:
                    job.file_path = destination(job)
                except FileChanged as exc:  # what was read is not what would be filed
                    job.status = JobStatus.INTERRUPTED
                    job.error = str(exc)
                    job.error_details = [{"code": "changed", "message": str(exc)}]
                except Exception as exc:  # the path is a record's detail, never a failure
                    logger.error("destination_unknown", error=repr(exc))
            logger.info(
                "job_finished",
                status=str(job.status),
                po_number=job.po_number,
                orders=len(job.orders),
                error=job.error,
                duration_seconds=job.duration_seconds,
            )
            job.logs = logs.entries
            self._record(self.recorder.job_finished, job, logs.drain(), unwritten)
        return job

    def _fill_file_facts(self, job: JobResult, data: bytes) -> None:
        job.file_size = len(data)
        job.file_sha256 = hashlib.sha256(data).hexdigest()
        if len(data) <= self.settings.database.edi_content_max_bytes:
            job.edi_content = data

    def _run_step(
        self,
        job: JobResult,
        work: _Work,
        name: str,
        step: Callable[[JobResult, _Work], dict[str, Any]],
    ) -> StepResult:
        started = datetime.now(UTC)
        clock = time.perf_counter()
        result = StepResult(step_name=name, status=StepStatus.SUCCESS, started_at=started)
        # The 997 is written for rejected files too; every other step stops at
        # the first failure.
        if work.skip_rest and not (name == "acknowledge" and work.interchanges):
            result.status = StepStatus.PENDING
            result.attempts = 0
            result.data = {"skipped": work.skip_rest}
        else:
            try:
                result.data = step(job, work)
                attempts = result.data.pop("_attempts", None)
                if attempts is not None:
                    result.attempts = attempts
            except StepFailed as exc:
                self._fail(job, work, result, str(exc), exc.details)
            except EdiInboxError as exc:
                details = [exc.to_json()] if isinstance(exc, X12Error) else [{"message": str(exc)}]
                self._fail(job, work, result, str(exc), details)
            except Exception as exc:  # a bug must fail this job, never the daemon
                logger.exception("step_crashed", step=name)
                self._fail(job, work, result, f"internal error in {name}: {exc!r}", [])
        result.duration_seconds = round(time.perf_counter() - clock, 6)
        if result.status is StepStatus.FAILED:
            logger.warning("step_failed", step=name, error=result.error)
        elif result.status is StepStatus.SUCCESS:
            logger.debug("step_done", step=name, duration_seconds=result.duration_seconds)
        job.steps.append(result)
        return result

    def _fail(
        self,
        job: JobResult,
        work: _Work,
        result: StepResult,
        message: str,
        details: list[dict[str, Any]],
    ) -> None:
        result.status = StepStatus.FAILED
        result.error = message
        work.failed = True
        work.skip_rest = f"{result.step_name} failed"
        if job.error is None:
            job.error = message
            job.error_details = details

    def _record(self, method: Callable[..., Any], *args: Any) -> Any:
        """Call the recorder; a failure is logged loudly and the job goes on."""
        try:
            return method(*args)
        except Exception as exc:
            logger.error("recorder_failed", call=getattr(method, "__name__", "?"), error=repr(exc))
            return None

    # -- the steps --------------------------------------------------------

    def parse(self, job: JobResult, work: _Work) -> dict[str, Any]:
        """Read every interchange; a structural error anywhere fails the file."""
        limits = self.settings.daemon
        reader = X12Reader(
            io.BytesIO(work.data),
            max_groups=limits.max_groups_per_file,
            max_sets=limits.max_sets_per_file,
            max_segments=limits.max_segments_per_file,
        )
        try:
            for ts in reader.transaction_sets():
                work.sets.append(ts)
        except TooLarge:
            reader.interchanges.clear()  # refused whole: one failure, no 997 per group
            raise
        finally:
            work.interchanges = list(reader.interchanges)
            job.interchanges = [
                Interchange(i.sender_id, i.receiver_id, i.control_number) for i in work.interchanges
            ]
        data = {
            "interchanges": len(work.interchanges),
            "groups": sum(len(i.groups) for i in work.interchanges),
            "transaction_sets": len(work.sets),
            "codes": sorted({ts.code for ts in work.sets}),
        }
        if reader.errors:
            raise StepFailed(
                _summarise([str(e) for e in reader.errors]), [e.to_json() for e in reader.errors]
            )
        if not work.sets:
            raise X12Error("the file holds no transaction set")
        duplicate_of = self._record(self.recorder.find_duplicate, job)
        if duplicate_of:
            job.status = JobStatus.DUPLICATE
            job.duplicate_of = duplicate_of
            work.skip_rest = f"duplicate of job {duplicate_of}"
            logger.info("duplicate", duplicate_of=duplicate_of)
            data["duplicate_of"] = duplicate_of
        return data

    def transform(self, job: JobResult, work: _Work) -> dict[str, Any]:
        """Turn each 850 into a purchase order; any other set is refused."""
        errors: list[X12Error] = []
        for ts in work.sets:
            try:
                po = orders.from_transaction(ts)
            except X12Error as exc:
                work.reject(ts, exc)
                errors.append(exc)
                continue
            work.purchase_orders.append((ts, po))
            job.orders.append(
                OrderResult(
                    po_number=po.po_number,
                    idempotency_key=orders.idempotency_key(po),
                    line_count=len(po.lines),
                    total_amount=po.total_amount,
                    vendor_name=po.vendor_name,
                    # Only the JSON is kept, encoded once for the ERP and the record:
                    # every order's dict as well took ~19x a file's size in memory.
                    payload_json=dumps(po.to_json()),
                )
            )
        if errors:
            raise StepFailed(_summarise([str(e) for e in errors]), [e.to_json() for e in errors])
        return {"orders": [o.po_number for o in job.orders]}

    def validate(self, job: JobResult, work: _Work) -> dict[str, Any]:
        """Apply the business rules to every order; report every problem at once."""
        problems: list[Problem] = []
        for ts, po in work.purchase_orders:
            found = rules.validate(po)
            for problem in found:
                work.reject(ts, _problem_to_x12(problem))
            problems.extend(found)
        if problems:
            for order in job.orders:
                mine = [p.message for p in problems if p.po_number == order.po_number]
                if mine:
                    order.status, order.error = "failed", "; ".join(mine)
            raise StepFailed(
                _summarise([p.message for p in problems]), [p.to_json() for p in problems]
            )
        return {"orders_checked": len(work.purchase_orders)}

    def post_to_erp(self, job: JobResult, work: _Work) -> dict[str, Any]:
        """Deliver each order once: an order the ERP already accepted (as read
        with the job's running record) is not posted again."""
        attempts = 0
        failures: list[str] = []
        for order in job.orders:
            known = work.accepted.get(order.idempotency_key)
            if known:
                order.erp_po_id, order.status = known, "posted"
                logger.info("order_already_accepted", po_number=order.po_number, erp_po_id=known)
                continue
            try:
                delivery = self.erp.deliver(order.payload_json or "{}", order.idempotency_key)
            except ErpError as exc:
                order.attempts = exc.attempts
                attempts += exc.attempts
                order.status, order.error = "failed", str(exc)
                failures.append(f"PO {order.po_number}: {exc}")
                continue
            order.attempts = delivery.attempts
            attempts += delivery.attempts
            order.erp_po_id, order.status = delivery.erp_id, "posted"
            # Recorded before anything else can go wrong: a crash after this
            # line never posts the order again.
            self._record(self.recorder.order_accepted, job, order)
            logger.info("order_posted", po_number=order.po_number, erp_po_id=delivery.erp_id)
        if failures:
            raise StepFailed(
                "the ERP did not accept every order: " + "; ".join(failures),
                [{"message": f} for f in failures],
            )
        return {"_attempts": max(attempts, 1), "erp_po_ids": [o.erp_po_id for o in job.orders]}

    def acknowledge(self, job: JobResult, work: _Work) -> dict[str, Any]:
        """Write a 997 for every functional group received, into acks/."""
        if not self.settings.ack.enabled:
            return {"skipped": "acknowledgements are disabled ([ack] enabled = false)"}
        acks_dir = self.settings.paths.acks
        assert acks_dir is not None
        acks_dir.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        written = []
        for interchange in work.interchanges:
            for group in interchange.groups:
                rejected = {
                    st: errs
                    for (isa, gs, st), errs in work.rejected.items()
                    if isa == interchange.control_number and gs == group.control_number
                }
                number = self._record(self.recorder.next_control_number)
                if number is None:  # the recorder is down: the 997 still goes out
                    number = NullRecorder().next_control_number()
                ack = build_997(
                    interchange, group, control_number=number, rejected=rejected, now=now
                )
                name = f"{safe_name(job.file_name)}.{group.control_number}.997"
                path = write_new(acks_dir, safe_name(name), ack)
                written.append(path.name)
        job.acks = written
        return {"acks": written}


def _summarise(messages: list[str], limit: int = 5) -> str:
    shown = "; ".join(messages[:limit])
    more = len(messages) - limit
    return f"{shown}; and {more} more" if more > 0 else shown


def _problem_to_x12(problem: Problem) -> X12Error:
    if problem.element is not None:
        code = _AK4_BY_PROBLEM.get(problem.code, "7")
    elif problem.segment_number is None:
        code = _AK3_MANDATORY_MISSING
    else:
        code = _AK3_HAS_ELEMENT_ERRORS
    return X12Error(
        problem.message,
        segment_number=problem.segment_number,
        segment_id=problem.segment_id,
        element=problem.element,
        code=code,
    )
