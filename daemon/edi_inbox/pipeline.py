"""Runs one file through parse → transform → validate → post_to_erp → acknowledge.

A step is a method taking the job's ``_Work`` and returning the step's data
(a dict); it raises to fail. One loop runs the steps the way structlog runs
processors: it binds ``job_id`` and ``file`` to the logger, times each step,
and reports it to the recorder. ``edi-inbox process`` and the daemon both call
``Pipeline.run``; it never raises for bad input and never moves the file.

Records are written where they protect something: the job row (status
running), with the steps done so far and their log lines (and the control
numbers of the file's 997s, reserved in the same write), just before the
first ERP call, the only step whose effect lies outside this host; each
order's ERP id the moment the ERP answers; the rest with the final status
(and, in the daemon, the path the file is about to be moved to). Three
transactions for a good file, two for a file that fails before the ERP call
(its 997's control numbers, then the record), instead of one per step. A
crash before the first write loses nothing: the daemon runs the claimed
file again under the same job id; one after it leaves the job ``running``,
and the next start marks it ``interrupted`` and runs it again.

No order is posted without a record: if the running record cannot be
written, nothing is posted. A write that fails is tried again for
``record_patience`` seconds (backoff 0.5 s → 30 s); then ``run`` raises
``NotRecorded``, which carries the record still owed (``record_owed`` writes
it later). An error no retry can fix (``store.is_permanent``: a value the
database cannot hold) fails the job with that reason instead: the record is
written without its log lines (a log line never fails a job), else the job's
status alone (``job_status_only``), so that no job stays ``running``.

No acknowledgement goes out without a control number from the database's
sequence (two interchanges to a partner never share an ISA13): a job that
ended before the ERP call reserves its numbers as its 997 is written, and
while the database is unavailable it raises ``NotRecorded`` there, still
``running``: it runs again once the database is back.

An acknowledgement its folder cannot take (a full disk, an outbox turned
unwritable) is, in the daemon (``run(owe_acks=True)``), owed like a record:
``NotRecorded`` carries the acknowledgements built and not written
(``Ack``), the job stays ``running`` until ``write_owed_acks`` has
written them, and only then is its final record written. ``process`` records
the job at once, its ``acknowledge`` step failed with where and why. In the
daemon, a job the database has already failed (an accepted order's record
did not land) holds its acknowledgements back the same way (``held``): the
worker keeps what the job owes first, then writes them, so that a crash
while the final record waits on the database never sends a second 997. A
crash between the acknowledgements and the final record, the database up:
the next run of the job gets the control numbers the first reserved
(``Started.numbered_before``), and an acknowledgement found written under
its number (``_sent_before``) is not written again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import io
import json
import os
import re
import socket
import stat
import time
import types
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from . import log as logsetup
from . import orders, partners, rules
from .config import PartnerSettings, RuleSettings, Settings
from .erp import longest_delivery, make_erp, partner_erps
from .errors import (
    MAX_ERRORS_LISTED,
    ClaimLost,
    EdiInboxError,
    ErpError,
    ErpRejected,
    FileChanged,
    NotRecorded,
    Problem,
    SetErrors,
    ShortOfResources,
    TooLarge,
    TruncatedError,
    UnsafeFile,
    X12Error,
)
from .files import MAX_NAME, candidates, display_name, safe_name, sync_directory, write_new
from .jobs import (
    Interchange,
    JobResult,
    JobStatus,
    NullRecorder,
    OrderResult,
    PostedOrder,
    Recorder,
    StepResult,
    StepStatus,
)
from .store.database import is_permanent
from .watch import read_all
from .x12 import X12Reader
from .x12.ack import (
    SetAnswer,
    Unaddressable,
    ack_kind,
    build_ack,
    build_ta1,
    check_address,
    is_acknowledgement,
    ta1_wanted,
)
from .x12.model import GroupSummary, InterchangeSummary, SetSummary, TransactionSet
from .x12.repeats import mark_repeats

logger = structlog.get_logger("edi_inbox.pipeline")

# 997 codes for business-rule problems. The 997 reports syntax, so a rule
# broken inside an element is told as "invalid value" (AK4 7) or "invalid
# date" (AK4 8), and a missing or inconsistent segment at segment level.
_AK4_BY_PROBLEM = {
    "invalid_date": "8",
    "invalid_time": "9",
    "not_numeric": "6",
    "missing_po_number": "1",  # mandatory element missing
    "missing_date": "1",
    "missing_quantity": "2",  # PO102 is conditional
}
_AK3_BY_PROBLEM = {
    "missing_beg": "3",  # mandatory segment missing
    "no_lines": "3",
    "unknown_segment": "6",  # segment not in the defined transaction set
    "misplaced_segment": "2",  # unexpected segment
    "segment_out_of_sequence": "7",  # segment not in proper sequence
}
_AK3_HAS_ELEMENT_ERRORS = "8"
RECORD_RETRY_FIRST = 0.5  # seconds before a record write is tried again; doubled
RECORD_RETRY_MAX = 30.0
RIVAL_POLL_FIRST = 0.02  # seconds between looks at a job posting the same order; doubled
RIVAL_POLL_MAX = 1.0
REPLACE = "05"  # BEG01: a new version of the order, posted whenever its content is new
LOGGED_IDS = 10  # ERP ids named on a job's job_finished line
_NUMBER_BYTES = 20  # of a control number in an acknowledgement's name (a valid one: 9 digits)


class StepFailed(EdiInboxError):
    """A step's own failure, already described: ``details`` go to error.json
    (the first ``MAX_ERRORS_LISTED``; the message says how many more)."""

    def __init__(self, message: str, details: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.details = details[:MAX_ERRORS_LISTED]


@dataclass(frozen=True)
class Ack:
    """An acknowledgement built (numbered), to write as it is: one owed is
    written later byte for byte, so the partner gets the one the job's
    record names."""

    directory: str
    name: str
    data: bytes
    kind: str  # "997", "999" or "TA1"
    mode: int | None  # a partner's outbox: 0640


class NotAcknowledged(EdiInboxError):
    """Some 997s could not be written: the step fails, the job keeps its outcome
    (the orders were handled; only the answer to the partner is missing)."""

    def __init__(self, message: str, data: dict[str, Any]) -> None:
        super().__init__(message)
        self.data = data


@dataclass
class _AcksDue:
    """What goes out for a file: (interchange, group) per 997/999, (interchange,
    None) per TA1, each checked before a control number is spent on it; and
    why the others cannot be answered."""

    due: list[tuple[InterchangeSummary, GroupSummary | None]]
    not_acknowledged: list[str]


@dataclass
class _Work:
    """What the steps hand on to each other for one file."""

    data: bytes = b""
    sets: list[TransactionSet] = field(default_factory=list)
    interchanges: list[InterchangeSummary] = field(default_factory=list)
    # The orders read; once judged (``validate``), their heads alone (no lines):
    # what follows reads no line, and a file of many lines holds them no longer.
    purchase_orders: list[tuple[TransactionSet, orders.PurchaseOrder]] = field(default_factory=list)
    # Why a set is not posted, for the 997 and error.json: id(SetSummary) -> errors.
    # (By identity: control numbers may repeat, which is an error of its own.)
    rejected: dict[int, list[X12Error]] = field(default_factory=dict)
    order_of: dict[int, OrderResult] = field(default_factory=dict)  # id(SetSummary) -> order
    copy_of: dict[int, OrderResult] = field(default_factory=dict)  # id(a copy) -> first in file
    noted: dict[int, list[X12Error]] = field(default_factory=dict)  # id(SetSummary) -> warnings
    skip_rest: str | None = None  # why the remaining steps do not run
    cut_off: bool = False  # the file ends inside an interchange (an upload that stalled)
    guard: Callable[[], None] | None = None  # raises ClaimLost when the file is not ours
    lost: bool = False  # the claim was lost: not even a 997 is written
    accepted: dict[str, str] = field(default_factory=dict)  # key -> ERP id, known before posting
    rivals: frozenset[str] = frozenset()  # jobs posting an order of ours (Started.rivals)
    seen: set[str] = field(default_factory=set)  # keys of the posted orders judged against
    # Keys sent before this run without an answer, read with the running
    # record (Started.sent; None before it: ``_sent_unanswered`` asks).
    sent: frozenset[str] | None = None
    # Keys the jobs it carries on may have got to the ERP (``_held_before``).
    held_before: frozenset[str] | None = None
    counted: frozenset[str] = frozenset()  # accepted, in the retried job's total (Started)
    # Why this run posts nothing more (an accepted order's record failed, the
    # daemon is short of descriptors): the job runs again.
    halted: str | None = None
    partner: PartnerSettings | None = None  # who sent it ([partners.NAME]); None: unclaimed
    given: PartnerSettings | None = None  # the partner the file must come from (process --partner)
    # The acknowledgements due (``Pipeline._acks_due``), and the first of their
    # control numbers once reserved (with the running record, in its write).
    due: _AcksDue | None = None
    control_number: int | None = None
    numbered_before: bool = False  # by a run that never ended (Started.numbered_before)
    owe_acks: bool = False  # an acknowledgement not written is owed (the daemon)
    owed_acks: list[Ack] = field(default_factory=list)
    owed_reason: str = ""  # why they were not written
    held: bool = False  # not tried: the database failed the job (see the module's doc)
    # Orders an older version posted, read again from its job's kept bytes
    # (``Pipeline._same_as``): (job id, PO number, BEG01, BEG04) -> their JSON.
    reread: dict[tuple[str, str, str, str], list[dict[str, Any]] | None] = field(
        default_factory=dict
    )

    def reject(self, ts: TransactionSet, error: X12Error) -> None:
        self.rejected.setdefault(id(summary_of(ts)), []).append(error)

    def usable(self, ts: TransactionSet) -> bool:
        """Nothing found wrong with the set (or its group) so far."""
        s = summary_of(ts)
        return not s.errors and not ts.group.errors and id(s) not in self.rejected


def summary_of(ts: TransactionSet) -> SetSummary:
    """The summary the reader keeps of ``ts`` (the two share their error list)."""
    assert ts.summary is not None, "a set from the reader carries its summary"
    return ts.summary


@dataclass(frozen=True)
class Step:
    """One step of the pipeline, run without the pipeline knowing its name.

    ``run(job, work)`` returns the step's data. After a failure only steps with
    ``after_failure`` run (the 997 says what was rejected); the job's running
    record is written just before a ``checkpoint`` step (the ERP call);
    ``attempts(job)`` is what the step's result records as its attempts.
    """

    name: str
    run: Callable[[JobResult, _Work], dict[str, Any]]
    after_failure: bool = False
    checkpoint: bool = False
    attempts: Callable[[JobResult], int] = lambda job: 1


def _erp_attempts(job: JobResult) -> int:
    """The HTTP attempts of the orders this run sent to the ERP, accepted or
    not (1 when none was sent)."""
    return max(1, sum(order.attempts or 0 for order in job.orders))


def read_file(path: Path, limit: int) -> bytes:
    """Read a file given by an operator: never follows a symbolic link (a
    partner's folder may hold one to a file of the system's), never blocks on a
    FIFO, refuses anything but a regular file, never reads past ``limit``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(
                f"{display_name(str(path))} is a symbolic link; links are never followed"
            ) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{display_name(str(path))} is not a regular file")
        if st.st_size > limit:
            raise UnsafeFile(
                f"the file is {st.st_size} bytes, over the limit of {limit} bytes (max_file_bytes)"
            )
        data = read_all(fd, limit)
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
        try:  # a partner's own ERP ([partners.NAME] erp_url) takes its orders
            self.partner_erps = partner_erps(settings)
        except BaseException:
            self.close()
            raise
        self.host = host or socket.gethostname()
        self.split_ids = partners.split_by_group(settings.partners)  # once, not per order
        # How long a record write that fails for a reason that may pass is
        # tried again before ``run`` raises NotRecorded (the daemon parks the
        # file at once and retries from its loop; ``process`` waits).
        self.record_patience = record_patience
        # How long a job waits for another posting the same order: as long as
        # that one's delivery can take, and its record after it.
        self.rival_patience = longest_delivery(settings.erp) + record_patience
        self.steps = (
            Step("parse", self.parse),
            Step("transform", self.transform),
            Step("validate", self.validate),
            Step("post_to_erp", self.post_to_erp, checkpoint=True, attempts=_erp_attempts),
            Step("acknowledge", self.acknowledge, after_failure=True),
        )

    def close(self) -> None:
        if self._own_erp:
            self.erp.close()
        for erp in getattr(self, "partner_erps", {}).values():
            erp.close()

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
        partner: PartnerSettings | None = None,
        owe_acks: bool = False,
    ) -> JobResult:
        """Process one file; the result says what happened. Never raises for bad input.

        ``guard()``, if given, is called before each ERP post and retry; if it
        raises ``ClaimLost`` (another host has the file now) the job ends
        ``interrupted`` at once: nothing more is posted, no 997 written.
        ``destination(job)``, if given, says where the file will be moved once
        the job is done (the daemon's ``done/`` or ``failed/``): the final
        record carries that path, saving the move a transaction of its own
        (not asked for a job ended ``interrupted``: its file is handed back).
        If it raises ``FileChanged`` or ``ClaimLost``, the job ends
        ``interrupted``: the file runs again, here or on the host that took it
        (orders the ERP accepted are not posted again).
        ``partner``, if given, is who the file comes from (its folder says
        so): a sender that is not one of its ids is refused, nothing posted.
        ``owe_acks``: an acknowledgement its folder cannot take is owed (see
        the module's doc), not given up.

        Raises ``NotRecorded`` when the job's record cannot be written (the
        database is unavailable): before the ERP call nothing was posted and
        the job must run again; after it, the final record is owed."""
        path = Path(path)
        job = JobResult(
            job_id=job_id or str(uuid.uuid4()),
            file_name=file_name or display_name(path.name),
            file_path=str(path),
            host=self.host,
            retry_of=retry_of,
            started_at=datetime.now(UTC),
            status=JobStatus.RUNNING,
        )
        clock = time.perf_counter()
        with logsetup.job_context(job.job_id, job.file_name) as logs:
            work = _Work(guard=guard, given=partner, owe_acks=owe_acks)
            try:
                limit = (partner or self.settings.daemon).max_file_bytes  # a partner's own
                work.data = data if data is not None else read_file(path, limit)
            except (OSError, UnsafeFile) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                work.skip_rest = f"the file could not be read: {reason}"
                job.error = work.skip_rest
                job.error_details = [{"message": work.skip_rest}]
            self._fill_file_facts(job, work.data)
            # One info line a job, job_finished, says what matters; the others
            # of a normal job are debug (each info line cost ~0.1 ms of the job).
            logger.debug("job_started", size=job.file_size, retry_of=retry_of)
            unwritten: list[StepResult] = []
            held: list[Any] = []  # log lines drained for a write that did not land
            for step in self.steps:
                if step.checkpoint and not work.skip_rest:
                    held = logs.drain()
                    if self._record_running(job, work, unwritten, held):
                        unwritten, held = [], []
                unwritten.append(self._run_step(job, work, step))
            if job.status is JobStatus.RUNNING:
                job.status = conclude(job, work)
            job.completed_at = datetime.now(UTC)
            job.duration_seconds = round(time.perf_counter() - clock, 6)
            # An interrupted job's file is handed back, not filed: it stays where it was.
            handed_back = work.lost or job.status is JobStatus.INTERRUPTED
            if destination is not None and not handed_back:
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
                # A bounded line for any file: the record holds every order's id.
                erp_po_ids=[o.erp_po_id for o in job.orders if o.erp_po_id][:LOGGED_IDS],
                acks=job.acks,
                moved_to=display_name(job.file_path) if destination and job.file_path else None,
                size=job.file_size,
                retry_of=retry_of,
                error=job.error,
                duration_seconds=job.duration_seconds,
            )
            job.logs = logs.entries
            if work.owed_acks:
                owed, reason = work.owed_acks, work.owed_reason
                if not work.held:
                    logger.error("acks_owed", acks=len(owed), reason=reason)
                drained = [*held, *logs.drain()]
                if work.control_number is None:  # ended before the ERP call: no record yet
                    self._record(self.recorder.job_started, job)  # "running" while it owes
                raise NotRecorded(
                    job, _posted(job), reason, drained, unwritten, owed, held=work.held
                )
            self._record_final(job, [*held, *logs.drain()], unwritten, destination)
        return job

    def record_ended(self, job: JobResult) -> NotRecorded | None:
        """Record a job that ended without its steps (a file refused unread, a
        crash): what is owed if the database is unavailable; an error no retry
        fixes is logged, and the file is filed all the same."""
        try:
            self.recorder.job_finished(job, [])  # the row too: one transaction
        except Exception as exc:
            logger.error("recorder_failed", job_id=job.job_id, error=repr(exc))
            if not is_permanent(exc):
                return NotRecorded(job, False, str(exc))
        return None

    def _fill_file_facts(self, job: JobResult, data: bytes) -> None:
        job.file_size = len(data)
        job.file_sha256 = hashlib.sha256(data).hexdigest()
        if len(data) <= self.settings.database.edi_content_max_bytes:
            job.edi_content = data

    def _run_step(self, job: JobResult, work: _Work, step: Step) -> StepResult:
        name = step.name
        started = datetime.now(UTC)
        clock = time.perf_counter()
        result = StepResult(step_name=name, status=StepStatus.SUCCESS, started_at=started)
        # After a failure only the 997 runs, and not for a job that runs again
        # (interrupted): that run answers, once, with what became of each order.
        again = work.lost or job.status is JobStatus.INTERRUPTED
        if work.skip_rest and not (step.after_failure and work.interchanges and not again):
            result.status = StepStatus.PENDING
            result.attempts = 0
            result.data = {"skipped": work.skip_rest}
        else:
            try:
                result.data = step.run(job, work)
            except NotRecorded:  # the job must run again (or its record is owed)
                raise
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
            result.attempts = step.attempts(job)  # a failed step's too: all it tried
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
        work.skip_rest = f"{result.step_name} failed"
        if job.error is None:
            job.error = message
            job.error_details = details

    def _read(
        self, job: JobResult, work: _Work, name: str, read: Callable[..., Any], *args: Any
    ) -> Any:
        """``read(*args)``, a question to the record, as patient as a write
        (``_persist``). If the database stays unavailable, an empty answer,
        and the job is halted (it runs again: unknown is not "never")."""
        try:
            return self._persist(lambda job, logs: read(*args), job, [])
        except Exception as exc:
            logger.error("recorder_failed", call=name, error=repr(exc))
            if not is_permanent(exc):
                work.halted = f"the database is unavailable ({exc})"
            return []

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
        # The 997s' control numbers are reserved in the same write: one
        # transaction a job fewer.
        count = len(self._acks_due(work).due)
        started = lambda job, logs, steps: self.recorder.job_started(  # noqa: E731
            job, steps, logs, control_numbers=count, seen=work.seen
        )
        try:
            known = self._persist(started, job, logs, steps)
        except Exception as exc:
            if not is_permanent(exc):
                logger.error("job_not_recorded", error=str(exc), posted=False)
                raise NotRecorded(job, False, str(exc), logs, steps) from exc
            reason = f"the job cannot be recorded, so nothing was posted: {exc}"
            logger.error("job_not_recorded", error=str(exc), permanent=True)
            work.skip_rest = "the job cannot be recorded"
            job.error = reason
            job.error_details = [{"code": "not_recorded", "message": reason}]
            return False
        work.accepted = known.accepted
        work.control_number = known.control_number
        work.numbered_before = known.numbered_before
        work.rivals = known.rivals
        work.counted = known.counted
        work.sent = frozenset(known.sent)
        for order in job.orders:
            body = known.sent.get(order.idempotency_key)
            if body is not None and body != order.payload_json and order.status == "pending":
                # One key, one body: the ERP may hold the order under this key
                # (its answer lost) and may refuse the key with another body.
                logger.info("order_sent_as_before", po_number=order.po_number)
                order.payload_json, order.json_version = body, None
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
        except TruncatedError:
            work.cut_off = True
            _mark_cut_off(reader.interchanges, work.sets)
            raise
        except TooLarge:
            reader.interchanges.clear()  # refused whole: one failure, no 997 per group
            raise
        finally:
            work.interchanges = list(reader.interchanges)
            job.interchanges = [
                Interchange(i.sender_id, i.receiver_id, i.control_number) for i in work.interchanges
            ]
            refused = self._resolve_partner(job, work)
        if refused is not None:  # each set says why, naming the sender (AK5 R, no code fits)
            for ts in work.sets:
                work.reject(ts, X12Error(refused.message, segment_id="ISA", element=6))
        data = {
            "interchanges": len(work.interchanges),
            "groups": sum(len(i.groups) for i in work.interchanges),
            "transaction_sets": len(work.sets),
            "codes": sorted({ts.code for ts in work.sets}),
        }
        for interchange in work.interchanges:
            mark_repeats(interchange)
        received = [ts for ts in work.sets if is_acknowledgement(ts.group, ts.code)]
        if received:  # the partner's 997s/999s: read, never answered, never an error
            work.sets = [ts for ts in work.sets if not is_acknowledgement(ts.group, ts.code)]
            data["acknowledgements_received"] = [f"{t.code} {t.control_number}" for t in received]
            logger.info("acknowledgements_received", sets=len(received))
        # A refused sender is one error put on every interchange (each one's
        # TA1 says so): the job's error says it once.
        envelope = list(dict.fromkeys(e for i in work.interchanges for e in i.errors))
        if envelope:  # the interchange itself is wrong: nothing in it is posted
            raise StepFailed(
                _summarise([str(e) for e in envelope]), [e.to_json() for e in envelope]
            )
        if not work.sets and _acknowledgements_only(work.interchanges):
            work.skip_rest = "the file holds acknowledgements only (997, 999, TA1): nothing to post"
            return data
        if not work.sets:
            raise X12Error("the file holds no transaction set")
        for ts in work.sets:
            if ts.group.errors and not ts.errors:
                work.reject(ts, _group_rejected(ts))
        hint = None
        for ts in work.sets:
            hint = _terminator_hint(ts) or hint
            if hint is not None and any(_cut_value(e) for e in ts.errors):
                work.reject(ts, hint)
        bad = [ts for ts in work.sets if not work.usable(ts)]
        if bad:
            data["rejected_sets"] = [f"{ts.code} {ts.control_number}" for ts in bad]
        if len(bad) == len(work.sets):  # nothing left to post
            errors = list(dict.fromkeys(e for ts in bad for e in _set_errors(work, ts)))
            if hint is not None:  # the cause first, then what it caused
                errors = [hint, *(e for e in errors if e is not hint)]
            raise StepFailed(_summarise([str(e) for e in errors]), [e.to_json() for e in errors])
        reused = self._record(self.recorder.interchange_seen, job)
        if reused:  # partners' counters wrap and get reset: the content decides
            logger.warning("interchange_number_reused", earlier_job=reused)
            data["interchange_number_reused_from"] = reused
        return data

    def _resolve_partner(self, job: JobResult, work: _Work) -> X12Error | None:
        """The partner whose settings apply ([partners.NAME] ids). A sender
        refused (unknown, or several partners in one file) is an envelope
        error: nothing in the file is posted, and a TA1 says 006 (invalid
        interchange sender ID)."""
        if work.given is not None:
            found = partners.resolve_given(self.settings.partners, work.given, work.interchanges)
        else:
            found = partners.resolve(self.settings.partners, work.interchanges)
        work.partner = found.partner
        job.partner = found.partner.name if found.partner is not None else None
        if found.refused is None:
            return None
        if self._held_before(job, work):
            # A file its earlier run took (then cut short: a crash, a takeover)
            # whose orders the ERP may hold: finished as begun, whatever the
            # configuration says of its sender now.
            logger.warning("sender_refused_after_sending", reason=found.refused)
            return None
        logger.warning("sender_refused", reason=found.refused)
        error = X12Error(found.refused, segment_id="ISA", element=6, code="006")
        for interchange in work.interchanges:
            interchange.errors.append(error)
        return error

    def transform(self, job: JobResult, work: _Work) -> dict[str, Any]:
        """Turn each 850 into a purchase order; any other set is refused."""
        errors: list[X12Error] = []
        for ts in work.sets:
            if not work.usable(ts):
                continue
            try:
                po = orders.from_transaction(ts)
            except SetErrors as exc:  # each broken segment in the 997 and the report
                broken = [*exc.errors, *self._judged_beside(work, exc)]
                for error in broken:
                    work.reject(ts, error)
                errors.extend(broken)
                continue
            except X12Error as exc:
                work.reject(ts, exc)
                errors.append(exc)
                continue
            work.purchase_orders.append((ts, po))
            # Its sender told apart from another partner's by its GS02, if so.
            encoded = orders.encode(po, self._group_of(po))
            order = OrderResult(
                po_number=po.po_number,
                idempotency_key=encoded.key,
                line_count=len(po.lines),
                total_amount=po.total_amount,
                vendor_name=po.vendor_name,
                # Only the JSON text is kept, for the ERP and the record: every
                # order's dict as well took ~19x a file's size in memory.
                payload_json=encoded.text,
            )
            job.orders.append(order)
            work.order_of[id(summary_of(ts))] = order
        if errors and not job.orders:
            raise StepFailed(_summarise([str(e) for e in errors]), [e.to_json() for e in errors])
        data: dict[str, Any] = {"orders": [o.po_number for o in job.orders]}
        if errors:
            data["rejected"] = [str(e) for e in errors]
        return data

    def _judged_beside(self, work: _Work, refused: SetErrors) -> list[X12Error]:
        """What the rules find (errors and warnings, by the partner's levels)
        in a set refused for its syntax, on segments its syntax errors do not
        name, but for the rules that judge segments against each other
        (``rules.ACROSS``): the 997 names all it would name of each alone, so
        a partner who mends the syntax is not refused again for a date."""
        if refused.order is None:
            return []
        named = {e.segment_number for e in refused.errors}
        found, warnings = rules.split(rules.validate(refused.order), self._levels(work))
        noted = [replace(p, message=f"warning: {p.message}") for p in warnings]
        return [
            _problem_to_x12(p)
            for p in sorted([*found, *noted], key=lambda p: p.segment_number or 0)
            if p.code not in rules.ACROSS and p.segment_number not in named
        ]

    def _levels(self, work: _Work) -> Mapping[str, str]:
        """The rules' levels for the file's partner (``[rules]`` or its own)."""
        return _levels_of(work.partner.rules if work.partner else self.settings.rules)

    def validate(self, job: JobResult, work: _Work) -> dict[str, Any]:
        """Apply the business rules to every order; report every problem at once."""
        problems: list[Problem] = []
        levels = self._levels(work)
        checked = [
            (ts, po, *rules.split(rules.validate(po), levels)) for ts, po in work.purchase_orders
        ]
        held = self._held_anyway(
            job, work, [work.order_of[id(summary_of(ts))] for ts, _, found, _ in checked if found]
        )
        for ts, po, found, warnings in checked:
            order = work.order_of[id(summary_of(ts))]
            if found and order.idempotency_key in held:
                # Sent by the run this one carries on, or posted as it is by
                # another job (the rules changed since): the ERP may hold it. A
                # warning now: sent again under its key, or a duplicate.
                logger.warning("rules_changed_after_sending", po_number=po.po_number)
                found, warnings = [], [*warnings, *found]
            for problem in found:
                work.reject(ts, _problem_to_x12(problem))
            if found:
                order.status, order.error = "rejected", "; ".join(p.message for p in found)
            if warnings:  # posted all the same; kept on the order, the job's log, AK5 E
                work.noted[id(summary_of(ts))] = [_problem_to_x12(p) for p in warnings]
                order.warnings = [p.message for p in warnings]
                if not found:
                    order.error = "warning: " + "; ".join(order.warnings)
                for p in warnings:
                    logger.warning("rule_warning", po_number=po.po_number, rule=p.code,
                                   warning=p.message)  # fmt: skip
            problems.extend(found)
        if problems and all(o.status == "rejected" for o in job.orders):
            total = len(problems) + sum(p.more or 0 for p in problems)  # those left out too
            raise StepFailed(
                _summarise([p.message for p in problems], total=total),
                [p.to_json() for p in problems],
            )
        work.purchase_orders = [(ts, replace(po, lines=())) for ts, po in work.purchase_orders]
        data: dict[str, Any] = {"orders_checked": len(work.purchase_orders)}
        duplicates = self._deduplicate(job, work)
        if duplicates:
            data["duplicates"] = duplicates
        if problems or duplicates:
            data["rejected"] = [o.po_number for o in job.orders if o.status == "rejected"]
        return data

    def _deduplicate(self, job: JobResult, work: _Work) -> list[str]:
        """Duplicates by content (issue 10): an order whose identity (sender,
        PO number, BEG01) and content match one posted before, by another job
        or earlier in this file, is ``duplicate`` and not posted; the same
        identity with other content is rejected, naming the job that posted
        the first (an original changed is sent as BEG01 05, a replace), but
        a replace with content no earlier replace had is the order's next
        version, and posted. An
        order posted by the job this one retries is left to ``post_to_erp``,
        which knows it as accepted. BEG01 07 (a duplicate, says the partner)
        is never posted. Returns what was decided, in words."""
        said: list[str] = []
        # identity -> the orders of it in this file (one a receiver), each with
        # its content's key (a duplicate's record gets a key of its own: ``_duplicate``)
        seen: dict[tuple[str, ...], list[tuple[OrderResult, str]]] = {}
        for index, (ts, po) in enumerate(work.purchase_orders):
            order = work.order_of[id(summary_of(ts))]
            if order.status != "pending":
                continue
            ident = orders.identity(po, self._group_of(po))
            label = _label(po)
            earlier = seen.setdefault(ident, [])
            document = order.fields() if earlier else {}
            first = next(
                (
                    f
                    for f, key in earlier
                    if key == order.idempotency_key
                    or orders.same_content(f.fields(), document, complete=True)
                ),
                None,
            )
            if first is not None:  # what the first becomes (``conclude``)
                self._duplicate(job, order, index, job.job_id, first.erp_po_id)
                work.copy_of[id(order)] = first
            elif any(orders.same_receiver(f.fields(), document) for f, _ in earlier):
                order.status = "rejected"
                order.error = f"{label} appears earlier in this file with other content"
            if order.status != "pending":
                said.append(f"{label}: {order.status} (this file)")
                continue
            earlier.append((order, order.idempotency_key))
            if self._against_posted(job, work, index, po, order):
                said.append(f"{label}: {order.status}")
        for order in job.orders:
            if order.status == "rejected" and order.error and not order.partner_error:
                order.partner_error = order.error
        return said

    def _against_posted(
        self, job: JobResult, work: _Work, index: int, po: orders.PurchaseOrder, order: OrderResult
    ) -> bool:
        """Judge ``order`` (the ``index``-th of the file) against the orders
        of its sender and PO number other jobs posted: True when it is decided
        (a duplicate, or rejected as other content), False when it is still
        to post."""
        label = _label(po)
        sender = (po.envelope.sender_qualifier, po.envelope.sender_id)
        sent = self._read(job, work, "find_sent", self.recorder.find_sent, sender, po.po_number)
        work.seen.update(p.idempotency_key for p in sent)
        sent = self._comparable(job, po, sent)
        posted = [p for p in sent if p.erp_po_id is not None]
        if job.retry_of and order.idempotency_key not in {p.idempotency_key for p in posted}:
            # Posted by the job this one retries, under the key an older
            # version gave it: the order takes that key (``post_to_erp``
            # then knows it as accepted, and counted).
            document = order.fields()
            mine = [p for p in posted if p.job_id == job.retry_of and p.purpose == po.purpose]
            match = next((p for p in mine if self._same_as(job, work, p, po, document)), None)
            if match is not None:
                order.idempotency_key = match.idempotency_key
        posted = [p for p in posted if p.job_id != job.retry_of]  # post_to_erp's to judge
        if po.purpose == "07":  # "duplicate": the original is what counts
            original = next((p for p in posted if p.purpose != "07"), None)
            if original is not None:
                self._duplicate(job, order, index, original.job_id, original.erp_po_id)
            else:
                order.status = "rejected"
                order.error = (
                    f"{label} is marked a duplicate (BEG01 07) but no original of it was"
                    " posted: send the original (BEG01 00)"
                )
            return True
        same = [p for p in posted if p.purpose == po.purpose]
        match = next((p for p in same if p.idempotency_key == order.idempotency_key), None)
        if match is None and same:  # the same numbers written another way?
            document = order.fields()
            match = next((p for p in same if self._same_as(job, work, p, po, document)), None)
        if match is not None:
            self._duplicate(job, order, index, match.job_id, match.erp_po_id)
            return True
        if po.purpose == REPLACE:  # each replace is a new version: posted
            return False
        # Other content sent to another receiver (ISA07:ISA08) is that one's order.
        document = order.fields() if same else {}
        ours = [p for p in same if orders.same_receiver(p.fields(), document)]
        if ours and self._sent_unanswered(job, work, order):
            return False  # re-sent under its key: the ERP's answer says what it holds
        if ours:
            order.status = "rejected"
            order.error = (
                f"{label} was posted by job {ours[0].job_id} with other content;"
                " a change is sent as a replace (BEG01 05) or a cancellation (BEG01 01)"
            )
            return True
        # Sent by another job without an answer (cut short, or timed out):
        # the ERP may hold it, and would hold two versions. (The order's
        # JSON is read only then: a large order's is many times its file.)
        unanswered = [
            u
            for u in sent
            if u.erp_po_id is None
            and u.job_id != job.retry_of
            and u.purpose == po.purpose
            and u.idempotency_key != order.idempotency_key
        ]
        document = order.fields() if unanswered else {}
        other = next(
            (
                u
                for u in unanswered
                if orders.same_receiver(u.fields(), document)
                and not self._same_as(job, work, u, po, document)
            ),
            None,
        )
        if other is not None and self._sent_unanswered(job, work, order):
            # This one went to the ERP unanswered too (its run cut short): the
            # older of the two is the order, sent again under its key.
            first = next(
                (
                    n
                    for n, u in enumerate(sent)
                    if u.job_id == job.retry_of and u.idempotency_key == order.idempotency_key
                ),
                None,
            )
            if first is not None and first < sent.index(other):
                return False
        if other is not None:
            order.status = "rejected"
            order.error = (
                f"{label} was sent by job {other.job_id} with other content, and the ERP's"
                " answer is not known (it may hold that order); a change is sent as a"
                " replace (BEG01 05) or a cancellation (BEG01 01)"
            )
        return order.status != "pending"

    def _comparable(
        self, job: JobResult, po: orders.PurchaseOrder, found: list[PostedOrder]
    ) -> list[PostedOrder]:
        """Of ``found`` (orders of ``po``'s sender and PO number), those of
        other jobs that ``po`` is judged against: the same release, usage (a
        test is another order) and division."""
        usage, group = po.envelope.usage, self._group_of(po)
        return [
            p
            for p in found
            if p.job_id != job.job_id
            and p.release_number == po.release_number
            and p.usage == usage
            # another division's, under the same ISA id (one told apart
            # by no GS02 is compared: posted before the partners were split)
            and (group is None or p.fields().get(orders.SENDER_GROUP) in (None, group))
        ]

    def _same_as(
        self,
        job: JobResult,
        work: _Work,
        posted: PostedOrder,
        po: orders.PurchaseOrder,
        document: dict[str, Any],
    ) -> bool:
        """Whether ``document`` (``po``'s JSON) says what ``posted`` did. One
        an older version posted lacks the fields it did not read (a DTM's
        zone): beyond what both say, its file, read again from the bytes its
        job kept, is compared field for field; without them, what both say."""
        if not posted.same_content(document):
            return False
        if posted.json_version == orders.JSON_VERSION:
            return True
        ident = (posted.job_id, po.po_number, po.purpose, po.release_number)
        if ident not in work.reread:
            work.reread[ident] = self._reread(job, work, ident)
        again = work.reread[ident]
        if not again:
            return True
        return any(orders.same_content(d, document, complete=True) for d in again)

    def _reread(
        self, job: JobResult, work: _Work, ident: tuple[str, str, str, str]
    ) -> list[dict[str, Any]] | None:
        """The JSON, as this version writes it, of the orders with this PO
        number, purpose and release in the file job ``ident[0]`` kept; None
        when it kept none or it cannot be read."""
        job_id, po_number, purpose, release = ident
        content = self._read(job, work, "kept_content", self.recorder.kept_content, job_id)
        if not content:
            return None
        found = []
        try:
            for ts in X12Reader(io.BytesIO(content)).transaction_sets():
                try:
                    po = orders.from_transaction(ts)
                except X12Error:
                    continue
                if (po.po_number, po.purpose, po.release_number) == (po_number, purpose, release):
                    found.append(json.loads(orders.encode(po, self._group_of(po)).text))
        except X12Error:  # cut short, or over a limit: what was read stands
            pass
        return found or None

    def _held_before(self, job: JobResult, work: _Work, order: OrderResult | None = None) -> bool:
        """Whether the jobs this one carries on (a run cut short, resumed or
        taken over; a retry, and those it retried) posted ``order``, or sent
        it without an answer; without ``order``, any order of theirs. One read
        a job (``Recorder.held_by``)."""
        if not job.retry_of:
            return False
        if work.held_before is None:
            held = self._read(job, work, "held_by", self.recorder.held_by, job.retry_of)
            work.held_before = frozenset(held)
        held = work.held_before
        return bool(held) if order is None else order.idempotency_key in held

    def _held_anyway(self, job: JobResult, work: _Work, refused: list[OrderResult]) -> set[str]:
        """The keys of ``refused`` (orders the rules refuse now) that the ERP
        may hold all the same: posted as they are by any job (the file sent
        again: duplicates whatever the rules say now), or sent by the jobs
        this one carries on. One read a job, however many are refused."""
        if not refused:
            return set()
        keys = {o.idempotency_key for o in refused}
        posted = set(self._read(job, work, "posted_keys", self.recorder.posted_keys, keys))
        return {o.idempotency_key for o in refused if o.idempotency_key in posted} | {
            o.idempotency_key for o in refused if self._held_before(job, work, o)
        }

    def _sent_unanswered(self, job: JobResult, work: _Work, order: OrderResult) -> bool:
        """Whether ``order`` went to the ERP before without an answer (its
        answer lost to a crash, a timeout, a stop): the ERP may hold it, so it
        is not judged against what was posted since (a changed version of it:
        both may be at the ERP) but sent again under its key, whose answer
        says. Unknown (the database unavailable) is not "never sent". Once
        the running record is written, its own rows are this run's: what
        runs before it sent is what it read then."""
        if work.sent is not None:
            return order.idempotency_key in work.sent
        sent = self._read(
            job, work, "sent_unanswered", self.recorder.sent_unanswered, job, order.po_number
        )
        return order.idempotency_key in sent

    def _group_of(self, po: orders.PurchaseOrder) -> str | None:
        """The order's GS02 if partners are told apart by it under its ISA id
        (``partners.split_by_group``)."""
        env = po.envelope
        split = (env.sender_qualifier, env.sender_id) in self.split_ids
        return env.group_sender if split else None

    @staticmethod
    def _duplicate(
        job: JobResult, order: OrderResult, index: int, first_job: str, erp_po_id: str | None
    ) -> None:
        """Not posted: the same order was, by ``first_job``. Its record gets a
        key of its own (the ERP key stays with the posted one's row)."""
        order.status, order.duplicate_of, order.erp_po_id = "duplicate", first_job, erp_po_id
        order.error = f"duplicate of order {order.po_number} posted by job {first_job}"
        order.idempotency_key = orders.record_key(order.idempotency_key, job.job_id, index)
        logger.info("order_duplicate", po_number=order.po_number, duplicate_of=first_job)

    def post_to_erp(self, job: JobResult, work: _Work) -> dict[str, Any]:
        """Deliver each order once: an order the ERP already accepted (as read
        with the job's running record) is not posted again. A partner with an
        ``erp_url`` has its orders posted there, the rest to ``[erp] url``."""
        failures: list[str] = []
        partner = work.partner
        erp = self.partner_erps.get(partner.name, self.erp) if partner else self.erp
        data: dict[str, Any] = {}
        if work.rivals and not work.halted:
            data["waited_for"] = sorted(work.rivals)
            self._await_rivals(job, work)
            decided = self._deduplicate(job, work)
            if decided:
                data["duplicates"] = decided
        where: dict[int, tuple[int, orders.PurchaseOrder]] = {}
        for order in job.orders:
            if order.status != "pending":  # rejected by a rule: never posted
                continue
            if where and not work.halted and order.idempotency_key not in work.accepted:
                # Posted by another job while this one posted those before it
                # (a resend that stopped waiting for this long file)?
                index, po = where[id(order)]
                if self._against_posted(job, work, index, po, order):
                    data.setdefault("duplicates", []).append(f"{_label(po)}: {order.status}")
                    continue
            if work.halted:  # nothing more is posted in this run (see ``halted``)
                failures.append(f"PO {order.po_number}: not posted: {work.halted}")
                continue
            known = work.accepted.get(order.idempotency_key)
            if known:
                order.erp_po_id, order.status = known, "posted"
                if order.idempotency_key in work.counted:  # in the retried job's total
                    order.counted_by = job.retry_of
                logger.info("order_already_accepted", po_number=order.po_number, erp_po_id=known)
                continue
            if work.guard is not None:
                work.guard()
            if not where:  # the running record's read is older than a POST from now on
                where = {
                    id(work.order_of[id(summary_of(ts))]): (index, po)
                    for index, (ts, po) in enumerate(work.purchase_orders)
                }
            try:
                delivery = erp.deliver(
                    order.payload_json or "{}", order.idempotency_key, guard=work.guard
                )
            except ShortOfResources as exc:  # the daemon's trouble: the file runs again
                work.halted = f"the daemon is short of resources ({exc})"
                failures.append(f"PO {order.po_number}: not posted: {work.halted}")
                continue
            except ErpError as exc:
                # Not held: no attempt of this run reached the ERP, nor did
                # one before it (a run a crash cut short may have sent it).
                sent_before = order.idempotency_key in (work.sent or ())
                order.attempts, order.refused = exc.attempts, not exc.may_hold and not sent_before
                # The ERP's own words (redacted by erp.py) stay in the job's
                # record; the step's error, which reaches error.json, is ours.
                order.status, order.error = "rejected", str(exc)
                order.partner_error = _erp_failure(order.po_number, exc)
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
            order.erp_po_id, order.status = delivery.erp_id, "posted"
            # Recorded before anything else can go wrong: a crash after this
            # line never posts the order again.
            try:
                first = self._persist(
                    lambda job, logs, order: self.recorder.order_accepted(job, order),
                    job,
                    [],
                    order,
                )
            except Exception as exc:
                logger.error("order_not_recorded", po_number=order.po_number, error=repr(exc))
                work.halted = f"the database is unavailable ({exc})"
                first = None
            if first is not None:  # another job posted it too, and was first to record it
                logger.warning(
                    "order_posted_twice",
                    po_number=order.po_number,
                    erp_po_id=order.erp_po_id,
                    first_job=first[0],
                    first_erp_po_id=first[1],
                )
                self._duplicate(job, order, where[id(order)][0], *first)
            logger.debug("order_posted", po_number=order.po_number, erp_po_id=delivery.erp_id)
        if failures and work.halted:  # runs again: the accepted orders are not posted twice
            job.status = JobStatus.INTERRUPTED
        if failures:
            raise StepFailed(_summarise(failures), [{"message": f} for f in failures])
        return {"erp_po_ids": [o.erp_po_id for o in job.orders], **data}

    def _await_rivals(self, job: JobResult, work: _Work) -> None:
        """Wait until the other jobs posting an order of this job's sender and
        PO number (``work.rivals``) have it accepted or end: the same order
        sent twice at once is posted once, and of two versions of one order
        the second is judged against the first (``_deduplicate`` again). As
        long as they get an order accepted every ``rival_patience`` seconds
        (the longest a delivery can take: a rival's file may hold many
        orders before ours); then the orders are posted, under their
        Idempotency-Keys (``order_accepted`` says which job had one first).
        A rival that has already posted (``Started.rivals``) is not waited for."""
        waiting: Collection[str] = work.rivals
        deadline = left = 0.0
        delay = 0.0
        while True:
            if work.guard is not None:
                work.guard()
            holding = self._read(job, work, "in_flight", self.recorder.in_flight, job, waiting)
            if not holding:
                return
            waiting = set(holding)
            if not delay:
                logger.info("order_in_flight_elsewhere", jobs=sorted(waiting))
            if not delay or sum(holding.values()) < left:  # they got an order answered
                deadline = time.monotonic() + self.rival_patience
                left = sum(holding.values())
            delay = min(delay * 2, RIVAL_POLL_MAX) if delay else RIVAL_POLL_FIRST
            if time.monotonic() + delay > deadline:
                logger.warning("rivals_still_posting", jobs=sorted(waiting))
                return
            time.sleep(delay)

    def _processed_whole(self, job: JobResult, work: _Work) -> str | None:
        """The job that processed this cut-off file's bytes whole, if any: an
        upload that stalled while the partner sent it again, complete, under
        another name (the same interchange, the same bytes and more). Its
        answers stand: a TA1 and 997 rejecting this copy, written after them,
        would be the partner's last word on orders the ERP holds."""
        try:
            return self.recorder.processed_whole(job, work.data)
        except Exception as exc:  # then answered as any cut-off file
            logger.error("recorder_failed", call="processed_whole", error=repr(exc))
            return None

    def acknowledge(self, job: JobResult, work: _Work) -> dict[str, Any]:
        """Write a 997 for every functional group received — a 999 instead for
        a 5010 group from a partner with ``ack = "999"`` —, into acks/ (or
        into the partner's ``outbox`` instead, moded 0640 for its group: one
        copy, in the one place that partner fetches from). The step's data
        name the files (``acks``) and the kind of each (``kinds``: file name
        -> "997", "999" or "TA1").

        A group whose envelope cannot be answered (``Unaddressable``: an ISA06
        too long, a delimiter inside it) gets no 997; the step says why."""
        partner = work.partner
        if partner is not None and partner.ack == "none" and partner.ta1 == "never":
            said = f'partner {partner.name} has ack = "none" and ta1 = "never"'
            return {"skipped": f"no acknowledgements: {said}"}
        if partner is None and not self.settings.ack.enabled:
            return {"skipped": "acknowledgements are disabled ([ack] enabled = false)"}
        whole = self._processed_whole(job, work) if work.cut_off else None
        if whole is not None:
            logger.info("acks_stand", processed_by=whole)
            return {"skipped": f"a cut-off copy of the file job {whole} processed whole: its"
                    " acknowledgements stand"}  # fmt: skip
        if work.guard is not None:  # a host that lost the file leaves its 997 to the other
            work.guard()
        acks_dir, mode = self._acks_folder(partner)
        now = datetime.now(UTC)
        written: list[str] = []
        kinds: dict[str, str] = {}
        answers = _answers(work, before=job.status is JobStatus.DUPLICATE)
        acks = self._acks_due(work)
        due, not_acknowledged = acks.due, list(acks.not_acknowledged)
        first = work.control_number
        if first is None:  # no running record (the job ended before the ERP call)
            first = self._control_numbers(job, len(due)) if due else 0

        def build(index: int, number: int) -> Ack:
            interchange, answered = due[index]
            if answered is None:
                ta1 = build_ta1(interchange, control_number=number, now=now)
                name = ack_name(job.file_name, interchange.control_number, "TA1")
                return Ack(str(acks_dir), name, ta1, "TA1", mode)
            kind = ack_kind(partner.ack if partner else "997", interchange, answered)
            ack = build_ack(
                interchange, answered, kind=kind, control_number=number, answers=answers, now=now
            )
            name = ack_name(job.file_name, answered.control_number, kind.code)
            return Ack(str(acks_dir), name, ack, kind.code, mode)

        left = [build(i, first + i) for i in range(len(due))]  # built, not written yet
        if work.numbered_before and left:
            # A run of this job that never ended (a crash before its final
            # record) numbered its acknowledgements the same: those it wrote
            # went out, and are not sent again. One that said otherwise (the
            # file changed since) is answered anew, under a new number.
            sent = [_sent_before(ack, first + i) for i, ack in enumerate(left)]
            changed = [i for i, (_, same) in enumerate(sent) if not same]
            fresh = self._control_numbers(job, len(changed)) if changed else 0
            for n, i in enumerate(changed):
                left[i] = build(i, fresh + n)
            unsent = []
            for ack, (name, same) in zip(left, sent, strict=True):
                if name is not None and same:
                    written.append(name)
                    kinds[name] = ack.kind
                else:
                    unsent.append(ack)
            if written:
                logger.info("acks_sent_before", acks=written)
            left = unsent
        if left and work.owe_acks and work.halted:
            work.owed_reason = f"{len(left)} held until the job's record is kept: {work.halted}"
            work.owed_acks, work.held = left, True
            left = []
        try:
            _write_acks(left, written, kinds, guard=work.guard)
            if written:
                # Each file was fsynced (write_new), but not its name: one fsync of
                # acks/ for all of this job's, before its final record says they
                # went out (a 997 is never written again once the job is recorded).
                sync_directory(acks_dir)
        except OSError as exc:  # a full disk, a folder it may not write: said, not a crash
            where, reason = display_name(str(acks_dir)), exc.strerror or str(exc)
            if not left:
                not_acknowledged.append(f"{where} could not be synced: {reason}")
            elif work.owe_acks:
                work.owed_reason = f"{len(left)} not written in {where}: {reason}"
                work.owed_acks = left
            else:
                not_acknowledged.append(f"the {len(left)} due, not written in {where}: {reason}")
        job.acks = written
        data: dict[str, Any] = {"acks": written, "kinds": kinds}
        if not_acknowledged:
            data["not_acknowledged"] = not_acknowledged
        if work.owed_acks:
            data["owed"] = [ack.name for ack in work.owed_acks]
            said = f"not_acknowledged: {work.owed_reason}; written as soon as it can be"
            if not_acknowledged:
                said += "; and none for " + _summarise(not_acknowledged)
            raise NotAcknowledged(said, data)
        if not_acknowledged:
            said = "not_acknowledged: no 997 written for " + _summarise(not_acknowledged)
            raise NotAcknowledged(said, data)
        return data

    def _acks_folder(self, partner: PartnerSettings | None) -> tuple[Path, int | None]:
        """Where a file's acknowledgements go, with their mode: its partner's
        outbox (0640), else ``acks/``."""
        if partner is not None and partner.outbox is not None:
            return partner.outbox, 0o640
        assert self.settings.paths.acks is not None
        return self.settings.paths.acks, None

    def write_owed_acks(self, owed: NotRecorded) -> bool:
        """Write the acknowledgements a parked job owes (``owed.acks``), each as
        it was built, and make its ``acknowledge`` step say so. False while
        their folder still cannot take them (``owed.reason`` says why; those
        written are no longer owed)."""
        job = owed.job
        step = next(s for s in owed.steps if s.step_name == "acknowledge")
        data = step.data
        written: list[str] = data["acks"]
        # Where the partner's acknowledgements go now: a reload may have moved
        # its outbox (the old one would not take them, most likely). One the
        # old folder holds already (written before a crash) stays there.
        partner = self.settings.partners.get(job.partner or "")
        if partner is None and job.partner is not None:  # renamed: the one its sender's is now
            isa = {o.sender for o in job.orders}
            claiming = [
                p
                for p in self.settings.partners.partners
                if any((pid.qualifier, pid.sender) in isa for pid in p.ids)
            ]
            partner = claiming[0] if len(claiming) == 1 else None
        if job.partner is None or partner is not None:  # else (removed): as built
            directory, mode = self._acks_folder(partner)
            owed.acks[:] = [
                ack
                if _written_before(Path(ack.directory), ack.name, ack.data) is not None
                else dataclasses.replace(ack, directory=str(directory), mode=mode)
                for ack in owed.acks
            ]
        folders = {Path(ack.directory) for ack in owed.acks}
        try:
            _write_acks(owed.acks, written, data["kinds"], resume=True)
        except OSError as exc:
            where = display_name(owed.acks[0].directory)
            owed.reason = f"{len(owed.acks)} not written in {where}: {exc.strerror or exc}"
            data["owed"] = [ack.name for ack in owed.acks]
            return False
        finally:
            job.acks = list(written)
        for folder in folders:  # their names, as acknowledge does
            with contextlib.suppress(OSError):
                sync_directory(folder)
        data.pop("owed", None)
        data["written_late"] = datetime.now(UTC).isoformat()
        if "not_acknowledged" in data:  # what no retry helps (a group it cannot address)
            step.error = "not_acknowledged: no 997 written for " + _summarise(
                data["not_acknowledged"]
            )
        else:
            step.status, step.error = StepStatus.SUCCESS, None
        logger.info("acks_written_late", job_id=job.job_id, acks=written)
        return True

    def _acks_due(self, work: _Work) -> _AcksDue:
        """The acknowledgements this file gets, as its partner (or ``[ack]``)
        asks; worked out once a job (the running record reserves their numbers)."""
        if work.due is not None:
            return work.due
        partner = work.partner
        enabled = self.settings.ack.enabled
        wanted = partner.ack if partner else ("997" if enabled else "none")
        ta1_policy = partner.ta1 if partner else ("on-request" if enabled else "never")
        acks = _AcksDue([], [])
        for interchange in work.interchanges:
            if interchange.ta1s and not interchange.groups and not interchange.errors:
                continue  # TA1s alone: no TA1 answers a TA1
            if ta1_policy == "always" or (ta1_policy == "on-request" and ta1_wanted(interchange)):
                try:
                    check_address(interchange)
                except Unaddressable as exc:
                    acks.not_acknowledged.append(
                        f"interchange {interchange.control_number[:20]!r}: {exc}"
                    )
                else:
                    acks.due.append((interchange, None))
            for group in interchange.groups if wanted != "none" else ():
                if _answering(group):
                    continue
                try:
                    check_address(interchange, group)
                except Unaddressable as exc:
                    acks.not_acknowledged.append(f"group {group.control_number[:20]!r}: {exc}")
                    continue
                acks.due.append((interchange, group))
        for reason in acks.not_acknowledged:
            logger.warning("not_acknowledged", reason=reason)
        work.due = acks
        return acks

    def _control_numbers(self, job: JobResult, count: int) -> int:
        """The first of ``count`` consecutive control numbers, reserved in one
        write (a job that ended before the ERP call reserved none). Only the
        database's sequence numbers an acknowledgement: while it is
        unavailable, ``NotRecorded`` (nothing was posted: the job runs again
        once it is back); if it can never answer, ``NotAcknowledged``."""
        reserve = lambda job, logs: self.recorder.next_control_number(count)  # noqa: E731
        try:
            return int(self._persist(reserve, job, []))
        except Exception as exc:
            if not is_permanent(exc):
                logger.error("job_not_recorded", error=str(exc), posted=False)
                job.status = JobStatus.RUNNING  # (a duplicate too) nothing is kept
                raise NotRecorded(job, False, str(exc)) from exc
            reason = f"not_acknowledged: no control number could be reserved: {exc}"
            raise NotAcknowledged(reason, {"acks": [], "kinds": {}}) from exc


def _answering(group: GroupSummary) -> bool:
    """A group of acknowledgements (GS01 FA: 997s, 999s) the partner sends
    us: kept with the file, never posted, never acknowledged. A group
    labelled FA that holds anything else (an 850) is not one: that set is
    read, posted and answered as any group's, its 997s are not."""
    codes = [s.code for s in group.sets]
    return group.functional_id == "FA" and all(is_acknowledgement(group, c) for c in codes)


def _acknowledgements_only(interchanges: list[InterchangeSummary]) -> bool:
    """The interchanges hold acknowledgements (groups of them, or TA1s) and
    nothing else: not an empty interchange, not a purchase order."""
    groups = [g for i in interchanges for g in i.groups]
    return all(map(_answering, groups)) and (bool(groups) or any(i.ta1s for i in interchanges))


_ANSWERED = ("posted", "duplicate")  # posted now, or before: the 997 accepts these


def _answers(work: _Work, *, before: bool = False) -> dict[int, SetAnswer]:
    """What became of each set, for the 997: accepted only if its order was
    posted (``before``: the whole file was, by the job it duplicates)."""
    answers: dict[int, SetAnswer] = {}
    for interchange in work.interchanges:
        for group in interchange.groups:
            for s in group.sets:
                order = work.order_of.get(id(s))
                errors = tuple(work.rejected.get(id(s), ()))
                posted = before or (order is not None and order.status in _ANSWERED)
                noted = tuple(work.noted.get(id(s), ())) if posted else ()
                answers[id(s)] = SetAnswer(
                    posted=posted, errors=noted if posted else errors, warnings=bool(noted)
                )
    return answers


def conclude(job: JobResult, work: _Work) -> JobStatus:
    """The job's status from its sets: every set posted (or posted before)
    ``succeeded``, some ``partial``, none ``failed``. An order still pending
    (the file failed as a whole, or a step crashed) is ``rejected``; the job
    keeps, per set, what became of it and why (``job.sets``, for error.json)."""
    reason = job.error or "the file was rejected as a whole"
    for copy in job.orders:  # a copy of an order in this file is what its first became
        first = work.copy_of.get(id(copy))
        if first is not None:
            copy.erp_po_id = first.erp_po_id
            if first.status == "duplicate":  # of an order another job posted: so is its copy
                copy.duplicate_of, copy.error = first.duplicate_of, first.error
            elif first.status != "posted":
                copy.status = "rejected"
                copy.error = f"a copy of order {copy.po_number} earlier in this file, not posted"
    for pending in job.orders:
        if pending.status == "pending":
            pending.status, pending.error = "rejected", pending.error or f"not posted: {reason}"
    received = posted = 0
    for interchange in work.interchanges:
        for group in interchange.groups:
            if not group.sets and group.errors and group.included:
                # Sets its GE counts, none of them read: a part of the file
                # not posted (its 997 rejects the group).
                received += 1
                job.sets.append(_unread_group(interchange, group))
            for s in group.sets:
                if is_acknowledgement(group, s.code):  # read, never answered nor judged
                    continue
                received += 1
                order = work.order_of.get(id(s))
                ok = order is not None and order.status in _ANSWERED
                posted += ok
                job.sets.append(
                    _set_report(interchange, group.control_number, s, order, work, job.error)
                )
    if not received and job.error is None and _acknowledgements_only(work.interchanges):
        return JobStatus.SUCCEEDED  # nothing to post, nothing wrong
    if received and posted == received:
        if not any(o.status == "posted" for o in job.orders):  # each one posted before
            job.duplicate_of = next(o.duplicate_of for o in job.orders if o.duplicate_of)
            return JobStatus.DUPLICATE
        return JobStatus.SUCCEEDED
    if job.error is None and received:  # no step failed: the sets say why
        rejected = [r for r in job.sets if r["status"] == "rejected"]
        job.error = f"{len(rejected)} of {received} transaction sets not posted: " + _summarise(
            [
                f"{r['transaction_set']} {r['control_number']}: {r['reason']}"
                if r["transaction_set"] is not None
                else f"group {r['group_control_number']}: {r['reason']}"
                for r in rejected
            ]
        )
    return JobStatus.PARTIAL if posted else JobStatus.FAILED


@functools.lru_cache(maxsize=64)
def _levels_of(levels: RuleSettings) -> Mapping[str, str]:
    """``levels`` by rule (``rules.split``), read once a configuration."""
    return types.MappingProxyType(dataclasses.asdict(levels))


def _write_acks(
    acks: list[Ack],
    written: list[str],
    kinds: dict[str, str],
    *,
    resume: bool = False,
    guard: Callable[[], None] | None = None,
) -> None:
    """Write ``acks`` in order, each taken off the list once it landed (its
    file name added to ``written``, its kind to ``kinds``); raises OSError
    with the rest still on the list. ``resume`` (owed ones, perhaps written
    in part before a crash): one whose file is there with its very bytes
    counts as written, not written twice. ``guard()`` just before each one
    gets its name (``ClaimLost``: a host paused midway, whose file another
    host took over and answers, gives none of them a name)."""
    made, landed = None, 0
    try:
        for ack in acks:
            if ack.directory != made:
                _make_folder(Path(ack.directory))
                made = ack.directory
            there = _written_before(Path(ack.directory), ack.name, ack.data) if resume else None
            written.append(
                there or _write_ack(Path(ack.directory), ack.name, ack.data, ack.mode, guard)
            )
            kinds[written[-1]] = ack.kind
            landed += 1
    finally:
        del acks[:landed]


def ack_name(file_name: str, control_number: str, kind: str) -> str:
    """An acknowledgement's name, ``NAME.<control number>.<kind>`` (``NAME.GS06.997``,
    ``NAME.ISA13.TA1``): NAME is ``safe_name`` of the partner's file name, cut
    so that the whole fits ``MAX_NAME`` bytes, never the control number or the
    kind after it, so a partner's script finds each by its kind. The control
    number is the partner's text, made safe too and held to ``_NUMBER_BYTES``
    (a valid one, 9 digits at most, stays whole). ``safe_name`` gives the name
    back unchanged (``_write_ack`` applies it again)."""
    number = safe_name(control_number, fallback="", max_bytes=_NUMBER_BYTES)
    tail = f".{number}.{kind}"
    return safe_name(file_name, max_bytes=MAX_NAME - len(tail.encode())) + tail


def _written_before(directory: Path, name: str, data: bytes) -> str | None:
    """The name under which ``write_new`` put ``data`` in ``directory`` before
    (``name`` or a suffixed one: a regular file holding exactly those bytes),
    or None."""
    return next((c for c, found in _written(directory, name) if found == data), None)


_FREE_NAMES = 1000


def _sent_before(ack: Ack, number: int) -> tuple[str | None, bool]:
    """Whether ``ack``, numbered ``number`` (ISA13), was written before, by a
    run of its job that never ended: the name it has (None: not written),
    and whether it answers as ``ack`` does (its segments between the
    envelopes, TA1 or ST … SE, the same: the dates in the envelopes differ).
    ISA13 tells it from any other: the database's sequence numbers each
    acknowledgement once."""
    for candidate, data in _written(Path(ack.directory), ack.name):
        found = _envelope_and_answers(data)
        if found is not None and found[0] == number:
            return candidate, found[1] == _envelope_and_answers(ack.data)[1]  # type: ignore[index]
    return None, True


def _written(directory: Path, name: str) -> Iterator[tuple[str, bytes]]:
    """The regular files ``write_new`` may have put in ``directory`` for
    ``name`` (it, then its suffixed names), with their bytes. A name free now
    may have been taken then (a partner fetches, and removes, what is in its
    outbox): the search ends after ``_FREE_NAMES`` free names in a row.
    Never follows a link, never waits on a FIFO."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    if not directory.is_dir():  # gone, or a file in its place: nothing there
        return
    free = 0
    for candidate in candidates(safe_name(name)):
        try:
            fd = os.open(directory / candidate, flags)
        except FileNotFoundError:
            free += 1
            if free > _FREE_NAMES:
                return
            continue
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a link at that name: taken, not ours
                continue
            return  # the folder cannot be read: none can be told written
        free = 0
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            data = b"".join(iter(lambda: os.read(fd, 1 << 20), b""))  # noqa: B023
        finally:
            os.close(fd)
        yield candidate, data


def _envelope_and_answers(data: bytes) -> tuple[int, list[bytes]] | None:
    """An acknowledgement this daemon wrote: its ISA13, and its segments
    between the envelopes (ISA, GS, GE, IEA left out); None if it is not one."""
    if len(data) < 106 or not data.startswith(b"ISA"):
        return None
    separator, terminator = data[3:4], data[105:106]  # the ISA's fixed width
    segments = [s.strip(b"\r\n") for s in data.split(terminator)]
    isa = segments[0].split(separator)
    if len(isa) != 17 or not isa[13].isdigit():
        return None
    envelope = (b"ISA", b"GS", b"GE", b"IEA")
    return int(isa[13]), [s for s in segments if s and s.split(separator, 1)[0] not in envelope]


def _make_folder(directory: Path) -> None:
    """``directory`` made if missing; a file in its place is "Not a directory"
    (mkdir's "File exists" would leave an operator guessing)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)) from exc


def _write_ack(
    directory: Path,
    name: str,
    data: bytes,
    mode: int | None,
    guard: Callable[[], None] | None = None,
) -> str:
    """Write one acknowledgement atomically (write_new: a hidden temporary
    name, then a rename, ``guard()`` before it); in a partner's outbox moded
    0640 whatever the umask, so the partner's account (in the file's group)
    can read it."""
    return write_new(directory, safe_name(name), data, mode=mode, check=guard).name


def _set_report(
    interchange: InterchangeSummary,
    group: str,
    s: SetSummary,
    order: OrderResult | None,
    work: _Work,
    job_error: str | None,
) -> dict[str, Any]:
    posted = order is not None and order.status in _ANSWERED
    reasons = [str(e) for e in (*s.errors, *work.rejected.get(id(s), ()))]
    if not reasons and order is not None and not posted:
        reasons.append(order.partner_error or order.error or "")
    return {
        "interchange_control_number": interchange.control_number,
        "group_control_number": group,
        "transaction_set": s.code,
        "control_number": s.control_number,
        "po_number": order.po_number if order is not None else None,
        "status": order.status if order is not None else "rejected",
        "erp_po_id": order.erp_po_id if order is not None else None,
        "reason": None
        if posted
        else _summarise(list(dict.fromkeys(r for r in reasons if r)))
        or f"not posted: the file was rejected as a whole: {job_error or 'see the job'}",
    }


def _unread_group(interchange: InterchangeSummary, group: GroupSummary) -> dict[str, Any]:
    """A group whose GE counts sets none of which could be read, as
    ``_set_report`` reports a set (no set: its code and number None)."""
    return {
        "interchange_control_number": interchange.control_number,
        "group_control_number": group.control_number,
        "transaction_set": None,
        "control_number": None,
        "po_number": None,
        "status": "rejected",
        "erp_po_id": None,
        "reason": "no transaction set of this group could be read: "
        + _summarise([str(e) for e in group.errors]),
    }


def _mark_cut_off(interchanges: list[InterchangeSummary], read: list[TransactionSet]) -> None:
    """A file that ends inside a set: that set lacks its SE (AK5 2), its group
    its GE (AK9 3), so the 997 says what is missing."""
    whole = {id(summary_of(ts)) for ts in read}
    if not interchanges or not interchanges[-1].groups:
        return
    group = interchanges[-1].groups[-1]
    if group.included is None:
        group.errors.append(X12Error("the file ends inside this group", segment_id="GE", code="3"))
    if group.sets and id(group.sets[-1]) not in whole:
        cut = X12Error("the file ends inside this transaction set", segment_id="SE", code="2")
        group.sets[-1].errors.append(cut)


_SEGMENT_ID = re.compile("[A-Z0-9]{2,3}")


def _cut_value(error: X12Error) -> bool:
    """A bad segment ID (AK3 1) that is a piece of text: a value cut in two."""
    sid = error.segment_id or ""
    return error.code == "1" and not _SEGMENT_ID.fullmatch(sid)


def _terminator_hint(ts: TransactionSet) -> X12Error | None:
    """When the ISA declares a space or a letter or digit as the segment
    terminator (its last character) and the set holds "segment IDs" that are
    pieces of text, the terminator is what is wrong: say so, first."""
    terminator = ts.delimiters.segment
    if not (terminator == " " or terminator.isalnum()):
        return None
    pieces = [e.segment_id for e in ts.errors if _cut_value(e)]
    if not pieces:
        return None
    return X12Error(
        f"the ISA declares {terminator!r} as the segment terminator (the character after"
        f" ISA16), so every {terminator!r} inside a value ends a segment: {pieces[0]!r} was"
        " read as a segment ID. The terminator is most likely misdetected or mis-declared:"
        " end each segment with the character the ISA declares after ISA16 (e.g. '~'),"
        " one that never occurs inside a value",
        segment_id="ISA",
    )


class _GroupRejected(X12Error):
    """A set refused for its group's errors (its 997 loop: AK5 R, set level)."""


def _group_rejected(ts: TransactionSet) -> X12Error:
    first = ts.group.errors[0]
    return _GroupRejected(
        f"functional group {ts.group.control_number!r} is rejected: {first}",
        segment_id="GS",
    )


def _set_errors(work: _Work, ts: TransactionSet) -> list[X12Error]:
    """Why ``ts`` is not posted, for the job's error: a set refused for its
    group's errors gives those (where they are; every set of the group gives
    the same ones, said once), not the set-level refusal its 997 loop holds."""
    rejected = work.rejected.get(id(summary_of(ts)), [])
    if any(isinstance(e, _GroupRejected) for e in rejected):
        return [*ts.group.errors, *(e for e in rejected if not isinstance(e, _GroupRejected))]
    return [*ts.errors, *rejected]


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


def _label(po: orders.PurchaseOrder) -> str:
    """An order as the duplicate check names it to the partner."""
    if po.release_number:
        return f"order {po.po_number} release {po.release_number} (BEG01 {po.purpose})"
    return f"order {po.po_number} (BEG01 {po.purpose or 'empty'})"


def _summarise(messages: list[str], limit: int = 5, total: int | None = None) -> str:
    """The first ``limit`` messages, and how many more of the ``total``
    (by default, of ``messages``)."""
    shown = "; ".join(messages[:limit])
    more = (len(messages) if total is None else total) - limit
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
    elif problem.code in _AK3_BY_PROBLEM:
        code = _AK3_BY_PROBLEM[problem.code]
    else:
        code = _AK3_HAS_ELEMENT_ERRORS
    return X12Error(
        problem.message,
        segment_number=problem.segment_number,
        segment_id=problem.segment_id,
        element=problem.element,
        code=code,
    )
