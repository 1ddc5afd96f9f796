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

No order is posted without a record: if the running record cannot be
written, nothing is posted. A write that fails is tried again for
``record_patience`` seconds (backoff 0.5 s → 30 s); then ``run`` raises
``NotRecorded``, which carries the record still owed (``record_owed`` writes
it later). An error no retry can fix (``store.is_permanent``: a value the
database cannot hold) fails the job with that reason instead: the record is
written without its log lines (a log line never fails a job), else the job's
status alone (``job_status_only``), so that no job stays ``running``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import socket
import stat
import time
import uuid
from collections.abc import Callable, Iterator
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
    ClaimLost,
    EdiInboxError,
    ErpError,
    ErpRejected,
    FileChanged,
    NotRecorded,
    Problem,
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
from .store.database import is_permanent
from .x12 import X12Reader, build_997
from .x12.ack import Unaddressable, check_address
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
RECORD_RETRY_FIRST = 0.5  # seconds before a record write is tried again; doubled
RECORD_RETRY_MAX = 30.0


class StepFailed(EdiInboxError):
    """A step's own failure, already described: ``details`` go to error.json."""

    def __init__(self, message: str, details: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.details = details


class NotAcknowledged(EdiInboxError):
    """Some 997s could not be written: the step fails, the job keeps its outcome
    (the orders were handled; only the answer to the partner is missing)."""

    def __init__(self, message: str, data: dict[str, Any]) -> None:
        super().__init__(message)
        self.data = data


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
    guard: Callable[[], None] | None = None  # raises ClaimLost when the file is not ours
    lost: bool = False  # the claim was lost: not even a 997 is written
    accepted: dict[str, str] = field(default_factory=dict)  # key -> ERP id, known before posting
    unrecorded: str | None = None  # an accepted order's record failed: post nothing more

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
        record_patience: float = 0.0,
    ) -> None:
        if not structlog.is_configured():
            logsetup.configure(settings.log.level, settings.log.format)
        self.settings = settings
        self.recorder: Recorder = recorder if recorder is not None else NullRecorder()
        self._own_erp = erp is None
        self.erp = erp if erp is not None else make_erp(settings)
        self.host = host or socket.gethostname()
        # How long a record write that fails for a reason that may pass is
        # tried again before ``run`` raises NotRecorded (the daemon parks the
        # file at once and retries from its loop; ``process`` waits).
        self.record_patience = record_patience
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
        guard: Callable[[], None] | None = None,
        destination: Callable[[JobResult], str] | None = None,
    ) -> JobResult:
        """Process one file; the result says what happened. Never raises for bad input.

        ``guard()``, if given, is called before each ERP post and retry; if it
        raises ``ClaimLost`` (another host has the file now) the job ends
        ``interrupted`` at once: nothing more is posted, no 997 written.
        ``destination(job)``, if given, says where the file will be moved once
        the job is done (the daemon's ``done/`` or ``failed/``): the final
        record carries that path, saving the move a transaction of its own.
        If it raises ``FileChanged`` or ``ClaimLost``, the job ends
        ``interrupted``: the file runs again, here or on the host that took it
        (orders the ERP accepted are not posted again).

        Raises ``NotRecorded`` when the job's record cannot be written (the
        database is unavailable): before the ERP call nothing was posted and
        the job must run again; after it, the final record is owed."""
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
            work = _Work(guard=guard)
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
            held: list[Any] = []  # log lines drained for a write that did not land
            for name, step in self.steps:
                if name == "post_to_erp" and not work.skip_rest:
                    held = logs.drain()
                    if self._record_running(job, work, unwritten, held):
                        unwritten, held = [], []
                unwritten.append(self._run_step(job, work, name, step))
            if job.status is JobStatus.RUNNING:
                job.status = JobStatus.FAILED if work.failed else JobStatus.SUCCEEDED
            job.completed_at = datetime.now(UTC)
            job.duration_seconds = round(time.perf_counter() - clock, 6)
            if destination is not None and not work.lost:
                try:
                    job.file_path = destination(job)
                except (FileChanged, ClaimLost) as exc:  # not what was read, or not ours
                    _interrupt(job, exc)
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
            self._record_final(job, [*held, *logs.drain()], unwritten, destination)
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
        if work.skip_rest and not (name == "acknowledge" and work.interchanges and not work.lost):
            result.status = StepStatus.PENDING
            result.attempts = 0
            result.data = {"skipped": work.skip_rest}
        else:
            try:
                result.data = step(job, work)
                attempts = result.data.pop("_attempts", None)
                if attempts is not None:
                    result.attempts = attempts
            except NotAcknowledged as exc:
                result.status, result.error, result.data = StepStatus.FAILED, str(exc), exc.data
            except ClaimLost as exc:  # another host runs the file now: stop here
                result.status, result.error = StepStatus.FAILED, str(exc)
                work.lost, work.skip_rest = True, "the claim was lost"
                _interrupt(job, exc)
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

    def _persist(
        self, method: Callable[..., Any], job: JobResult, logs: list[Any], *rest: Any
    ) -> Any:
        """``method(job, logs, *rest)`` until it lands, for up to
        ``record_patience`` seconds; an error no retry can fix is tried once
        more without the log lines, then raised, as is the last other one."""
        deadline = time.monotonic() + self.record_patience
        delay = RECORD_RETRY_FIRST
        while True:
            try:
                return method(job, logs, *rest)
            except Exception as exc:
                if is_permanent(exc):
                    if not logs:
                        raise
                    logger.error(
                        "record_retried_without_log_lines", lines=len(logs), error=repr(exc)
                    )
                    logs = []
                    continue
                if time.monotonic() + delay > deadline:
                    raise
                logger.warning("record_retry", error=str(exc), retry_in_seconds=delay)
            time.sleep(delay)
            delay = min(delay * 2, RECORD_RETRY_MAX)

    def _record_running(
        self, job: JobResult, work: _Work, steps: list[StepResult], logs: list[Any]
    ) -> bool:
        """The running record, before the ERP call; True if it landed. If it
        cannot be written for good, the job fails here, with nothing posted;
        if the database is unavailable, ``NotRecorded`` (the job runs again)."""
        started = lambda job, logs, steps: self.recorder.job_started(job, steps, logs)  # noqa: E731
        try:
            known = self._persist(started, job, logs, steps)
        except Exception as exc:
            if not is_permanent(exc):
                logger.error("job_not_recorded", error=str(exc), posted=False)
                raise NotRecorded(job, False, str(exc), logs, steps) from exc
            reason = f"the job cannot be recorded, so nothing was posted: {exc}"
            logger.error("job_not_recorded", error=str(exc), permanent=True)
            work.failed = True
            work.skip_rest = "the job cannot be recorded"
            job.error = reason
            job.error_details = [{"code": "not_recorded", "message": reason}]
            return False
        work.accepted = known or {}
        return True

    def _record_final(
        self,
        job: JobResult,
        logs: list[Any],
        steps: list[StepResult],
        destination: Callable[[JobResult], str] | None = None,
    ) -> None:
        """The final record; ``NotRecorded`` if the database is unavailable."""
        try:
            self.record_owed(NotRecorded(job, _posted(job), "", logs, steps), destination)
        except NotRecorded as exc:
            logger.error("job_not_recorded", error=exc.reason, posted=exc.posted)
            raise

    def record_owed(
        self, owed: NotRecorded, destination: Callable[[JobResult], str] | None = None
    ) -> None:
        """Write a job's final record (``owed`` as ``run`` raised it): the whole
        record, or, if that cannot be written for good, the job's status
        alone. Raises ``NotRecorded`` again while the database is unavailable."""
        job = owed.job
        try:
            self._persist(self.recorder.job_finished, job, owed.logs, owed.steps)
            return
        except Exception as exc:
            if not is_permanent(exc):
                raise NotRecorded(job, owed.posted, str(exc), owed.logs, owed.steps) from exc
            error = exc
        posted = [o for o in job.orders if o.erp_po_id]
        if posted:
            reason = (
                f"the ERP accepted {len(posted)} order(s), but the job's record cannot be "
                f"written in full: {error}"
            )
        else:  # nothing left this host: the job fails, with the reason
            reason = f"the job's record cannot be written: {error}"
            if job.status is not JobStatus.FAILED:
                job.status = JobStatus.FAILED
                if destination is not None:
                    with _suppressed():
                        job.file_path = destination(job)
        job.error = reason
        job.error_details = [{"code": "not_recorded", "message": reason}]
        logger.error("record_cut_short", error=str(error), posted=len(posted))
        fallback = getattr(self.recorder, "job_status_only", None)
        if fallback is None:
            return
        try:
            fallback(job, reason)
        except Exception as exc:
            if is_permanent(exc):
                logger.error("recorder_failed", call="job_status_only", error=repr(exc))
                return
            raise NotRecorded(job, owed.posted, str(exc), owed.logs, owed.steps) from exc

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
        reader = X12Reader(io.BytesIO(work.data))
        try:
            for ts in reader.transaction_sets():
                work.sets.append(ts)
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
            payload = po.to_json()
            job.orders.append(
                OrderResult(
                    po_number=po.po_number,
                    idempotency_key=orders.idempotency_key(po),
                    line_count=len(po.lines),
                    total_amount=po.total_amount,
                    vendor_name=po.vendor_name,
                    payload=payload,
                    payload_json=dumps(payload),  # once, for the ERP and the record
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
            if work.unrecorded:  # no order is posted while the job cannot be recorded
                failures.append(f"PO {order.po_number}: not posted: {work.unrecorded}")
                continue
            known = work.accepted.get(order.idempotency_key)
            if known:
                order.erp_po_id, order.status = known, "posted"
                logger.info("order_already_accepted", po_number=order.po_number, erp_po_id=known)
                continue
            if work.guard is not None:
                work.guard()
            try:
                delivery = self.erp.deliver(
                    order.payload_json or "{}", order.idempotency_key, guard=work.guard
                )
            except ErpError as exc:
                order.attempts = exc.attempts
                attempts += exc.attempts
                # The ERP's own words (redacted by erp.py) stay in the job's
                # record; the step's error, which reaches error.json, is ours.
                order.status, order.error = "failed", str(exc)
                logger.warning(
                    "erp_refused",
                    po_number=order.po_number,
                    status_code=exc.status_code,
                    attempts=exc.attempts,
                    error=str(exc),
                )
                failures.append(_erp_failure(order.po_number, exc))
                continue
            order.attempts = delivery.attempts
            attempts += delivery.attempts
            order.erp_po_id, order.status = delivery.erp_id, "posted"
            # Recorded before anything else can go wrong: a crash after this
            # line never posts the order again.
            try:
                self._persist(
                    lambda job, logs, order: self.recorder.order_accepted(job, order),
                    job,
                    [],
                    order,
                )
            except Exception as exc:
                logger.error("order_not_recorded", po_number=order.po_number, error=repr(exc))
                work.unrecorded = f"the database is unavailable ({exc})"
            logger.info("order_posted", po_number=order.po_number, erp_po_id=delivery.erp_id)
        if failures and work.unrecorded:  # runs again: the accepted orders are not posted twice
            job.status = JobStatus.INTERRUPTED
        if failures:
            raise StepFailed(_summarise(failures), [{"message": f} for f in failures])
        return {"_attempts": max(attempts, 1), "erp_po_ids": [o.erp_po_id for o in job.orders]}

    def acknowledge(self, job: JobResult, work: _Work) -> dict[str, Any]:
        """Write a 997 for every functional group received, into acks/.

        A group whose envelope cannot be answered (``Unaddressable``: an ISA06
        too long, a delimiter inside it) gets no 997; the step says why."""
        if not self.settings.ack.enabled:
            return {"skipped": "acknowledgements are disabled ([ack] enabled = false)"}
        if work.guard is not None:  # a host that lost the file leaves its 997 to the other
            work.guard()
        acks_dir = self.settings.paths.acks
        assert acks_dir is not None
        acks_dir.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        written: list[str] = []
        not_acknowledged: list[str] = []
        for interchange in work.interchanges:
            for group in interchange.groups:
                rejected = {
                    st: errs
                    for (isa, gs, st), errs in work.rejected.items()
                    if isa == interchange.control_number and gs == group.control_number
                }
                try:  # before a control number is spent on it
                    check_address(interchange, group)
                except Unaddressable as exc:
                    reason = f"group {group.control_number[:20]!r}: {exc}"
                    logger.warning("not_acknowledged", reason=reason)
                    not_acknowledged.append(reason)
                    continue
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
        if not_acknowledged:
            raise NotAcknowledged(
                "not_acknowledged: no 997 written for " + _summarise(not_acknowledged),
                {"acks": written, "not_acknowledged": not_acknowledged},
            )
        return {"acks": written}


def _interrupt(job: JobResult, exc: FileChanged | ClaimLost) -> None:
    """End the job ``interrupted``: its file changed, or is another host's now."""
    job.status = JobStatus.INTERRUPTED
    job.error = str(exc)
    code = "claim_lost" if isinstance(exc, ClaimLost) else "changed"
    job.error_details = [{"code": code, "message": str(exc)}]


def _posted(job: JobResult) -> bool:
    return any(o.erp_po_id for o in job.orders)


@contextlib.contextmanager
def _suppressed() -> Iterator[None]:
    """A detail of the record (the file's path) never stops it being written."""
    try:
        yield
    except Exception as exc:
        logger.error("destination_unknown", error=repr(exc))


def _summarise(messages: list[str], limit: int = 5) -> str:
    shown = "; ".join(messages[:limit])
    more = len(messages) - limit
    return f"{shown}; and {more} more" if more > 0 else shown


def _erp_failure(po_number: str, exc: ErpError) -> str:
    """Why an order failed at the ERP, in our words: the partner reads them in
    error.json, so no ERP body (which may echo headers, tokens) goes in."""
    status = f"HTTP {exc.status_code}" if exc.status_code is not None else "no answer"
    if isinstance(exc, ErpRejected):
        return f"the ERP rejected order {po_number} ({status})"
    return f"the ERP did not take order {po_number} ({status} after {exc.attempts} attempts)"


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
