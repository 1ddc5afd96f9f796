"""The worker: one unit of work from claim to outcome, on a worker thread.

A unit is a ticket from the inbox (claim it by rename, then run it) or a
claim left behind (already in this host's folder). The worker opens the
claimed file safely, checks it is still the file the watcher judged ready,
runs ``Pipeline.run`` on its bytes and has the ``Mover`` put it in ``done/``
or ``failed/``. Before each ERP post and before filing it checks the claim is
still its own (``Claims.check_claim``); a job whose file another host took
over stops, ``interrupted``, and its file is left to that host. It never
raises for a file: it reports an ``Outcome`` for the main thread. At
shutdown the service hands back the files of jobs still running
(``hand_back_unfinished``).

A job whose record cannot be written (``NotRecorded``) is parked: its file
stays claimed in ``processing/``, never moved and never handed back, and the
outcome ``unrecorded`` carries the record owed. The service queues it again
(``parked_work``) once the database is back: the owed record is written and
the file moved, or, for a job stopped before the ERP call, the job runs again.
A job whose acknowledgements its folder could not take is parked the same
way, outcome ``unacknowledged``: the service queues it again after a while,
and the acknowledgements are written (as built), then the record. What a
parked job owes is kept beside its claim (``Claims.keep_owed``) for a
restart. A job the database failed before its acknowledgements went out
(``NotRecorded.held``) has that kept first, then is settled at once. No job
stays ``running`` once its file has moved.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from . import files, memory
from .claims import Claims, new_job_id, os_message
from .config import Settings
from .errors import ClaimLost, FileChanged, NotRecorded
from .jobs import JobResult, JobStatus
from .outcomes import Mover, PendingMove, recorded_sets
from .watch import Fingerprint, Refused, Ticket, Verdict, read_all, safe_open

logger = structlog.get_logger("edi_inbox.worker")


@dataclass
class Work:
    """One unit for a worker: a ticket from the inbox, or a claim to resume."""

    name: str
    ticket: Ticket | None = None
    pname: str | None = None  # resume: already in this host's folder
    job_id: str | None = None  # a ticket's: the claim is processing/<host>/NAME.<job_id>
    retry_of: str | None = None
    owed: NotRecorded | None = None  # a parked job's final record, still to write
    lane: str = ""  # whose inbox: "" [paths] inbox, else the partner's ([partners.NAME] inbox)
    size: int = 0  # the bytes it counts against [daemon] max_bytes_in_flight
    # A claim left by a job whose daemon died, or was parked ([daemon] max_crashes)
    resumed: bool = False
    # Run alone (nothing else in flight): it reached max_crashes deaths, each
    # with other files in flight; set aside only if it dies alone.
    apart: bool = False


@dataclass
class Outcome:
    """What a worker reports back to the main thread."""

    name: str
    # succeeded | failed | duplicate | refused | taken | changed | lost | handed_back
    # | unrecorded | unacknowledged | error | halted
    status: str
    job_id: str | None = None
    recheck: bool = False  # the name is back in (or still in) the inbox
    pending: PendingMove | None = None
    error: str | None = None  # from a worker process: what it would have told on_error
    parked: Work | None = None  # unrecorded, unacknowledged: the unit to queue again later
    lane: str = ""  # the unit's
    # A unit from a ticket: the inode the ticket was for (0 if unknown); the
    # tracker's entry for the name is its to release. None: a resumed or
    # parked unit, whose name may meanwhile be a new upload's.
    ticket_ino: int | None = None
    size: int = 0  # the unit's (``Work.size``): no longer in flight


def parked_work(name: str, pname: str, owed: NotRecorded, lane: str) -> Work:
    """The unit that finishes a parked job: its owed record then the move, or,
    if it stopped before the ERP call (still ``running``), the job again."""
    again = owed.job.status is JobStatus.RUNNING
    return Work(
        name,
        pname=pname,
        job_id=owed.job.job_id,
        retry_of=owed.job.retry_of,
        owed=None if again else owed,
        lane=lane,
    )


@dataclass
class InFlight:
    name: str
    pname: str
    claims: Claims  # the inbox (lane) it came from, and its processing folder
    job_id: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    handed_back: bool = False
    finishing: bool = False
    lost: bool = False  # the claim was found taken over: the file is not ours to move
    crashed: os.stat_result | None = None  # its crashes in a row counted (a marker to forget)


class Worker:
    """Runs units of work; shared by the worker threads (state: the jobs in flight).

    ``lanes``: the inboxes by lane (``claims.lanes``). A unit from a partner's
    inbox runs as that partner's (``Pipeline.run(partner=)``): a sender in it
    that is not one of the partner's ids is refused."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Any,
        lanes: Mapping[str, Claims],
        mover: Mover,
        *,
        host: str,
        on_error: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.pipeline = pipeline
        self.lanes = lanes
        self.mover = mover
        self.host = host
        self.partners = settings.partners
        self.max_bytes = settings.daemon.max_file_bytes
        self.max_crashes = settings.daemon.max_crashes
        self.on_error = on_error
        self.inflight: dict[str, InFlight] = {}
        self._lock = threading.Lock()

    def do(self, item: Work) -> Outcome:
        """Claim (unless resumed), run and finish one unit."""
        claims = self.lanes[item.lane]
        claims.ensure_open()  # a partner's inbox shut when this process started
        if item.owed is not None and item.pname is not None:
            with contextlib.suppress(OSError):  # its parked note, if any: it ends now
                claims.forget_crashes(os.stat(item.pname, dir_fd=claims.fd, follow_symlinks=False))
            flight = InFlight(item.name, item.pname, claims, item.owed.job.job_id)
            with _job_events(flight):
                return self._settle(flight, item.owed)
        if item.pname is not None:  # resumed: already claimed
            job_id = item.job_id or new_job_id()
            # A claimed file runs under its job's name (a resumed one has it already).
            pname = item.pname if item.resumed else claims.rename_claim(item.pname, job_id)
            return self._run_claimed(InFlight(item.name, pname, claims, job_id), item)
        ticket = item.ticket
        assert ticket is not None
        job_id = item.job_id or new_job_id()
        try:
            st = os.stat(ticket.name, dir_fd=claims.inbox_fd, follow_symlinks=False)
        except FileNotFoundError:
            return Outcome(ticket.name, "taken")
        if ticket.fingerprint is not None and Fingerprint.of(st) != ticket.fingerprint:
            return Outcome(ticket.name, "changed", recheck=True)
        try:
            pname = claims.claim(ticket.name, job_id)
        except FileNotFoundError:
            return Outcome(ticket.name, "taken")  # another worker or host was first
        except OSError as exc:
            hint = ""
            if exc.errno == errno.EXDEV:
                hint = " (processing/ must be on the same file system as the inbox)"
            message = os_message(exc) + hint
            logger.error("claim_failed", file=files.display_name(ticket.name), error=message)
            self.on_error(f"cannot claim a file: {message}")
            return Outcome(ticket.name, "error", recheck=True)
        logger.debug("claimed", file=files.display_name(ticket.name), job_id=job_id)
        return self._run_claimed(InFlight(ticket.name, pname, claims, job_id), item)

    def in_flight(self) -> int:
        return len(self.inflight)

    def hand_back_unfinished(self) -> int:
        """At shutdown: give the files of jobs still running back to the inbox;
        how many went back."""
        with self._lock:
            left = list(self.inflight.values())
        count = 0
        for flight in left:
            with flight.lock:
                if flight.finishing:
                    continue
                flight.handed_back = True
            if self._hand_back(flight, "shutdown", ran=True).status != "error":
                count += 1  # a hand back that failed leaves the file claimed
        return count

    def _run_claimed(self, flight: InFlight, item: Work) -> Outcome:
        with self._lock:
            self.inflight[flight.job_id] = flight
        try:
            with _job_events(flight):
                return self._run(flight, item)
        finally:
            with self._lock:
                self.inflight.pop(flight.job_id, None)

    def _run(self, flight: InFlight, item: Work) -> Outcome:
        name, pname, ticket, claims = flight.name, flight.pname, item.ticket, flight.claims
        job_id = flight.job_id
        partner = self.partners.get(claims.partner) if claims.partner is not None else None
        if ticket is not None and ticket.verdict is Verdict.REFUSE:
            try:
                st = os.stat(pname, dir_fd=claims.fd, follow_symlinks=False)
            except FileNotFoundError:
                return Outcome(name, "taken")
            if Fingerprint.of(st) != ticket.fingerprint:  # swapped since the verdict
                return self._hand_back(flight, "changed")
            problem = Refused(ticket.code or "refused", ticket.reason or "refused")
            return self._refuse(flight, job_id, problem, item.retry_of)

        try:
            max_bytes = partner.max_file_bytes if partner is not None else self.max_bytes
            fd, st = safe_open(claims.fd, pname, max_bytes)
        except FileNotFoundError:
            return Outcome(name, "taken")
        except Refused as problem:
            return self._refuse(flight, job_id, problem, item.retry_of)
        except OSError as exc:
            if files.short_of_resources(exc):  # the daemon's trouble: the file runs later
                shown = files.display_name(name)
                logger.warning("upload_not_opened", file=shown, error=os_message(exc))
                return self._hand_back(flight, "error")
            reason = f"the file cannot be read: {os_message(exc)}"
            return self._refuse(flight, job_id, Refused("unreadable", reason), item.retry_of)
        try:
            fingerprint = ticket.fingerprint if ticket is not None else None
            if fingerprint is not None and Fingerprint.of(st) != fingerprint:
                return self._hand_back(flight, "changed")
            data = read_all(fd, st.st_size)
        finally:
            os.close(fd)
        if len(data) != st.st_size:  # still being written through an open descriptor
            return self._hand_back(flight, "changed")
        retry_of = item.retry_of or claims.take_retry_marker(st)
        if item.retry_of:  # a claim resumed: its job may have ended before its file moved
            ended = self._ended(item.retry_of, name, data)
            if ended is not None:
                return self._finish(flight, ended)
        if item.pname is not None and not item.resumed:  # a parked job run again
            claims.forget_crashes(st)  # its parked note: a death now counts
        crashes = claims.count_crash(st, job_id, item.retry_of) if item.resumed else 0
        if crashes:
            flight.crashed = st
            if crashes >= self.max_crashes and not item.apart:
                times = "once" if crashes == 1 else f"{crashes} times in a row"
                reason = (
                    f"the service stopped {times} while it processed this file; it is set "
                    "aside, not run again, so that the other files go on (the operator "
                    "runs it again once the cause is found)"
                )
                sets = self._recorded_sets(item.retry_of)  # what the ERP may hold
                return self._refuse(flight, job_id, Refused("crashed", reason), retry_of, sets)

        def guard() -> None:
            self._check_claim(flight, st)

        def destination(job: JobResult) -> str:
            self._check_claim(flight, st)
            self._check_unchanged(flight, st)
            return self.mover.destination(name, job)

        try:
            result = self.pipeline.run(
                claims.path(pname),
                file_name=files.display_name(name),
                job_id=job_id,
                retry_of=retry_of,
                data=data,
                guard=guard,
                destination=destination,
                partner=partner,
                owe_acks=True,
            )
        except NotRecorded as unrecorded:
            if unrecorded.held:
                return self._write_held(flight, unrecorded)
            return self._park(flight, unrecorded)
        except Exception as exc:  # Pipeline.run should not raise; if it does, fail that job
            logger.error("pipeline_crashed", file=files.display_name(name), error=repr(exc))
            error = f"internal error: {exc!r}"
            result = self._failed_result(job_id, flight, retry_of, error, "internal_error")
            owed = self.pipeline.record_ended(result)
            if owed is not None:
                return self._park(flight, owed)
        if flight.lost:  # another host may have the file now
            return self._lost(flight, st, job_id, retry_of)
        if result.status is JobStatus.INTERRUPTED and _halted(result):
            return self._halt(flight, result)
        if result.status is JobStatus.INTERRUPTED:  # changed while it ran: run it again
            return self._hand_back(flight, "changed", ran=True)
        return self._finish(flight, result)

    def _check_claim(self, flight: InFlight, claimed: os.stat_result) -> None:
        """``Claims.check_claim``, remembering a loss (the pipeline reports it)."""
        try:
            flight.claims.check_claim(flight.pname, claimed)
        except ClaimLost:
            flight.lost = True
            raise

    def _check_unchanged(self, flight: InFlight, read: os.stat_result) -> None:
        """Raise ``FileChanged`` unless the claimed file is still the one read
        (a writer that kept it open may have appended another interchange)."""
        try:
            now = os.stat(flight.pname, dir_fd=flight.claims.fd, follow_symlinks=False)
        except FileNotFoundError:
            return  # gone (by hand, or taken over): the Mover records that
        if _stamp(now) != _stamp(read):
            raise FileChanged(
                f"{files.display_name(flight.name)} changed while it was processed "
                f"({read.st_size} bytes read, {now.st_size} now); it runs again"
            )

    def _refuse(
        self,
        flight: InFlight,
        job_id: str,
        problem: Refused,
        retry_of: str | None,
        sets: list[dict[str, Any]] | None = None,
    ) -> Outcome:
        """Fail a file without reading it: recorded as a job, moved to failed/
        (its report listing ``sets``, the orders an earlier run of it recorded)."""
        shown = files.display_name(flight.name)
        error = f"{shown} was not read: {problem.reason}"
        result = self._failed_result(job_id, flight, retry_of, error, problem.code)
        result.sets = sets or []
        logger.warning("file_refused", file=shown, code=problem.code, reason=problem.reason)
        owed = self.pipeline.record_ended(result)
        if owed is not None:
            return self._park(flight, owed)
        outcome = self._finish(flight, result)
        if outcome.status == "failed":
            outcome.status = "refused"
        return outcome

    def _failed_result(
        self, job_id: str, flight: InFlight, retry_of: str | None, error: str, code: str
    ) -> JobResult:
        now = datetime.now(UTC)
        return JobResult(
            job_id=job_id,
            file_name=files.display_name(flight.name),
            status=JobStatus.FAILED,
            started_at=now,
            completed_at=now,
            duration_seconds=0.0,
            file_path=str(flight.claims.path(flight.pname)),
            error=error,
            error_details=[{"code": code, "message": error}],
            host=self.host,
            retry_of=retry_of,
            partner=flight.claims.partner,  # its folder's: the file was not read
        )

    def _lost(
        self, flight: InFlight, claimed: os.stat_result, job_id: str, retry_of: str | None
    ) -> Outcome:
        """The claim check failed: the file is left alone. If it is still in
        this host's folder (no host took it: the heartbeat was only stale, the
        database away), the unit is parked like a job that cannot be recorded
        and runs again once the service's probe has written a heartbeat."""
        try:
            now = os.stat(flight.pname, dir_fd=flight.claims.fd, follow_symlinks=False)
        except FileNotFoundError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (claimed.st_dev, claimed.st_ino):
            return Outcome(flight.name, "lost", job_id=job_id)
        with flight.lock:
            flight.finishing = True  # never handed back: a restart resumes it
        flight.claims.note_parked(flight.pname, job_id)
        shown = files.display_name(flight.name)
        logger.warning("job_parked", file=shown, job_id=job_id, reason="claim unsure")
        message = f"{shown}: this host's heartbeat is stale; it runs again once it is fresh"
        lane = flight.claims.partner or ""
        work = Work(flight.name, pname=flight.pname, job_id=job_id, retry_of=retry_of, lane=lane)
        return Outcome(flight.name, "lost", job_id=job_id, error=message, parked=work)

    def _park(self, flight: InFlight, owed: NotRecorded, *, again: bool = False) -> Outcome:
        """The job cannot be recorded, or owes acknowledgements its folder
        cannot take yet: its file stays claimed where it is (not moved, not
        handed back at shutdown; a restart resumes it). ``again``: a retry
        that changed nothing (what it owes is kept already; a debug line)."""
        with flight.lock:
            flight.finishing = True
        flight.claims.note_parked(flight.pname, owed.job.job_id)
        work = parked_work(flight.name, flight.pname, owed, flight.claims.partner or "")
        if work.owed is not None and not again:  # the job ended (its 997 went out, or is owed)
            _keep(flight, owed)
        shown = files.display_name(flight.name)
        # Said once what it owes is kept: a crash after this line resumes it, not reruns it.
        (logger.debug if again else logger.warning)(
            "job_parked", file=shown, job_id=owed.job.job_id, posted=owed.posted, reason=owed.reason
        )
        if owed.acks:
            message = f"{shown}: acknowledgement(s) owed: {owed.reason}"
        else:
            message = f"database unavailable: {owed.reason}"
        self.on_error(message)
        status = "unacknowledged" if owed.acks else "unrecorded"
        return Outcome(flight.name, status, job_id=owed.job.job_id, error=message, parked=work)

    def _write_held(self, flight: InFlight, owed: NotRecorded) -> Outcome:
        """A job the database failed, its acknowledgements held back: keep
        what it owes (a crash from here on writes that, never runs the job
        again), then settle it at once."""
        with flight.lock:
            if flight.handed_back:  # shutdown gave the file back: it runs again
                return Outcome(flight.name, "handed_back", job_id=owed.job.job_id)
            flight.finishing = True
        return self._settle(flight, owed, first=True)

    def _settle(self, flight: InFlight, owed: NotRecorded, *, first: bool = False) -> Outcome:
        """A parked job: write the acknowledgements it owes, then its record,
        then file it (or, if it was interrupted, give it back to the inbox to
        run again). ``first``: not a retry, the job has just ended."""
        flight.finishing = True
        name, job = flight.name, owed.job
        with self._lock:
            self.inflight[job.job_id] = flight
        try:
            if owed.acks:
                owing = len(owed.acks)
                if owed.held:  # out only once what the job owes is kept
                    problem = _keep(flight, owed)
                    if problem is not None:
                        owed.reason = f"held until what the job owes can be kept: {problem}"
                        return self._park(flight, owed, again=not first)
                if not self.pipeline.write_owed_acks(owed):
                    return self._park(flight, owed, again=not first and len(owed.acks) == owing)
                owed.held = False
                _keep(flight, owed)  # a restart now owes the record alone
            try:
                self.pipeline.record_owed(owed)
            except NotRecorded as unrecorded:
                return self._park(flight, unrecorded)
            flight.claims.drop_owed(job.job_id)
            logger.info("job_recorded_late", file=files.display_name(name), job_id=job.job_id)
            if job.status is JobStatus.INTERRUPTED:
                return self._hand_back(flight, "changed", ran=True)
            return self._finish(flight, job)
        finally:
            with self._lock:
                self.inflight.pop(job.job_id, None)

    def _ended(self, job_id: str, name: str, data: bytes) -> JobResult | None:
        """The record of ``job_id`` if it ended for these very bytes: a crash
        came between its record and the move, its 997 went out. The file is
        filed, not run again (which would answer the partner twice): into
        done/, or into failed/ with a report rebuilt from the record (a
        failed or partial job's)."""
        recorder = self.pipeline.recorder
        try:
            record = recorder.ended(job_id)
            if record is None or record[1] != hashlib.sha256(data).hexdigest():
                return None
            status, _, path = record
            if status in (JobStatus.SUCCEEDED, JobStatus.DUPLICATE):
                shown = files.display_name(name)
                job = JobResult(job_id, shown, JobStatus(status), file_path=path, host=self.host)
            elif status in (JobStatus.FAILED, JobStatus.PARTIAL):
                job = recorder.recorded(job_id)
                if job is None:
                    return None
                job.sets = recorded_sets(job)
            else:  # interrupted: it runs again
                return None
        except Exception as exc:  # no record to go by: run it (a record it needs too)
            logger.warning("job_lookup_failed", job_id=job_id, error=repr(exc))
            return None
        logger.info("resumed_job_had_ended", file=files.display_name(name), job_id=job_id)
        return job

    def _recorded_sets(self, job_id: str | None) -> list[dict[str, Any]]:
        """The orders ``job_id`` recorded, as a report lists them (an order it
        sent unanswered ``pending``); none if it recorded none or the record
        cannot be read."""
        if job_id is None:
            return []
        try:
            job = self.pipeline.recorder.recorded(job_id)
        except Exception as exc:  # the report goes without them
            logger.warning("job_lookup_failed", job_id=job_id, error=repr(exc))
            return []
        return recorded_sets(job) if job is not None else []

    def _finish(self, flight: InFlight, result: JobResult) -> Outcome:
        """Move the file to done/ or failed/; when the move fails it stays claimed (pending)."""
        with flight.lock:
            if flight.handed_back:  # shutdown gave the file back meanwhile
                return Outcome(flight.name, "handed_back", job_id=result.job_id)
            flight.finishing = True
        claims = flight.claims
        if flight.crashed is not None:  # it ran to an end: no crash in a row
            claims.forget_crashes(flight.crashed)
        claimed = claims.path(flight.pname)
        pending = self.mover.finish(claimed, flight.name, result, claims.paths.inbox)
        return Outcome(flight.name, str(result.status), job_id=result.job_id, pending=pending)

    def _halt(self, flight: InFlight, job: JobResult) -> Outcome:
        """The job was cut short by the daemon's trouble (no room in the
        outbox, no descriptors, the database away): its file stays claimed
        (a partner's next upload of its name cannot replace it in the inbox)
        and runs again, carrying on the job, after a pause that doubles."""
        with flight.lock:
            flight.finishing = True  # never handed back: it waits claimed
        # Under this job's name, noted parked: a start after a death resumes it
        # as this job's, not counted as a crash.
        pname = flight.claims.rename_claim(flight.pname, job.job_id)
        flight.claims.note_parked(pname, job.job_id)
        self.on_error(job.error or "a job was cut short")
        lane = flight.claims.partner or ""
        again = Work(flight.name, pname=pname, retry_of=job.job_id, lane=lane)
        return Outcome(flight.name, "halted", job_id=job.job_id, error=job.error, parked=again)

    def _hand_back(self, flight: InFlight, status: str, *, ran: bool = False) -> Outcome:
        """Give the claimed file back to the inbox; ``ran``: the job ran and did
        not end (the next job for the file carries on its orders)."""
        shown, job_id = files.display_name(flight.name), flight.job_id
        try:
            back = flight.claims.hand_back(flight.name, flight.pname, job_id if ran else None)
        except OSError as exc:
            logger.error("hand_back_failed", file=shown, job_id=job_id, error=os_message(exc))
            return Outcome(flight.name, "error", recheck=True)
        log_handed_back(flight.name, back.name, job_id, status)
        return Outcome(flight.name, status, recheck=True)


def _halted(job: JobResult) -> bool:
    """An interrupted job cut short by the daemon's trouble, not by its file
    (changed, or another host's: ``pipeline._interrupt``'s codes)."""
    return not any(d.get("code") in ("changed", "claim_lost") for d in job.error_details)


def log_handed_back(name: str, back: str, job_id: str | None, reason: str) -> None:
    """``handed_back``, under the job's id and file (and the name the file
    got back, if an upload had taken its own meanwhile)."""
    extra = {"back_as": files.display_name(back)} if back != name else {}
    logger.info("handed_back", file=files.display_name(name), job_id=job_id, reason=reason, **extra)


@contextlib.contextmanager
def _job_events(flight: InFlight) -> Iterator[None]:
    """Bind the job's ``job_id`` and ``file`` to every event of this thread
    while it runs or settles the job (the pipeline binds the same while it
    runs it): those before and after it, like ``acks_written_late``, carry
    them too."""
    with structlog.contextvars.bound_contextvars(
        job_id=flight.job_id, file=files.display_name(flight.name)
    ):
        yield


def _keep(flight: InFlight, owed: NotRecorded) -> str | None:
    """Keep what a parked job owes beside its claim (``Claims.keep_owed``): a
    restart writes it instead of running the job again. Returns why it
    could not be kept (logged), or None."""
    try:
        flight.claims.keep_owed(owed)
    except Exception as exc:  # then a restart runs the job again (its orders not posted twice)
        logger.error("owed_record_not_kept", job_id=owed.job.job_id, error=repr(exc))
        return os_message(exc)
    return None


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    """What changes whenever the bytes may have: inode, size, mtime and ctime."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def run_one(worker: Worker, item: Work) -> Outcome:
    """``worker.do(item)``; a bug fails that unit of work, never the thread running it."""
    try:
        outcome = worker.do(item)
        memory.give_back(item.size)
    except Exception as exc:
        shown = files.display_name(item.name)
        logger.error("worker_error", file=shown, job_id=item.job_id, error=repr(exc))
        logger.debug("worker_traceback", traceback=traceback.format_exc())
        outcome = Outcome(item.name, "error", recheck=True)
    outcome.lane, outcome.size = item.lane, item.size
    if item.ticket is not None:
        fingerprint = item.ticket.fingerprint
        outcome.ticket_ino = fingerprint.ino if fingerprint is not None else 0
    return outcome
