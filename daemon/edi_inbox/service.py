"""The daemon: claim ready files, run the pipeline on a worker pool, move the results.

One main thread owns the readiness ``Tracker`` (``watch.py``) and every
decision; the watchdog observer thread only enqueues events; worker threads
claim a file, run ``Pipeline.run`` on it and move it. A file's life:

    inbox/NAME --rename--> processing/NAME.<job_id> --> done/NAME or failed/NAME (+ .error.json)

The rename into ``processing/`` is the lock: a worker (or another host) that
finds the name gone has lost the race and skips it quietly. Nothing is ever
overwritten (``files.move_new``). A move that fails (disk full) leaves the file
claimed; it is tried again with backoff. On start, files left in
``processing/`` by a crash are run again as new jobs with ``retry_of`` the old
job id (the recorder knows which orders the ERP already accepted).

Stopping follows rq and Supervisor: SIGTERM/SIGINT only set a flag; the loop
stops intake, gives jobs in flight ``shutdown_timeout_seconds`` to finish,
hands the files of the rest back to the inbox and returns 0. ``run(once=True)``
is the burst mode (scan, process what is ready, return), ``max_jobs`` stops
after that many jobs; both let tests drive the loop without sleeping.

Retries (``retry``): the failed file goes back into the inbox under its
original name, and a marker ``processing/.retry/<dev>-<ino>.json`` (keyed by
the file's inode, which a same-file-system move keeps, and checked against its
size and mtime) tells the daemon that the next job for that file is a retry of
the old one.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import queue
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from . import __version__, files, notify
from .config import Settings
from .errors import EdiInboxError
from .jobs import JobResult, JobStatus
from .watch import (
    Fingerprint,
    InboxHandler,
    Refused,
    Ticket,
    Tracker,
    Verdict,
    WatchError,
    drain,
    is_ignored,
    observer_alive,
    read_all,
    refusal,
    safe_open,
    scan,
    start_observer,
    stop_observer,
)

logger = structlog.get_logger("edi_inbox.service")

EXIT_OK = 0
EXIT_FAILURE = 1
MAX_NAME_BYTES = 255
RETRY_DIR = ".retry"
# The observer is restarted when it dies; this many restarts within
# OBSERVER_RESTART_WINDOW seconds (or this many failed starts in a row) mean
# something is broken for good: exit non-zero and let systemd decide.
MAX_OBSERVER_RESTARTS = 5
OBSERVER_RESTART_WINDOW = 60.0
LOOP_WAIT_MAX = 0.25  # the longest the loop sleeps: a stop request waits no longer
STATUS_EVERY = 1.0
NOTIFY_WAIT = 2.0  # READY=1 and STOPPING=1 may wait this long for systemd; the rest never wait
COUNTERS = (
    "succeeded",
    "failed",
    "duplicate",
    "refused",
    "resumed",
    "handed_back",
    "taken",
    "changed",
    "move_errors",
    "observer_restarts",
)


def processing_name(name: str, job_id: str) -> str:
    """``NAME.<job_id>``, with NAME cut (bytewise) so the whole fits a file name."""
    suffix = "." + job_id
    raw = os.fsencode(name)[: MAX_NAME_BYTES - len(os.fsencode(suffix))]
    return os.fsdecode(raw) + suffix


def split_processing_name(pname: str) -> tuple[str, str | None]:
    """The original name and job id of a file in ``processing/``."""
    base, dot, job_id = pname.rpartition(".")
    if not dot or not base or not job_id:
        return pname, None
    return base, job_id


def error_report(result: JobResult, file: str) -> dict[str, Any]:
    """What ``failed/NAME.error.json`` holds: the reasons, in words a partner can act on."""
    return {
        "job_id": result.job_id,
        "file_name": result.file_name,
        "file": files.display_name(file),
        "status": str(result.status),
        "error": result.error,
        "error_details": result.error_details,
        "po_number": result.po_number,
        "sender_id": result.sender_id,
        "interchange_control_number": result.interchange_control_number,
        "retry_of": result.retry_of,
        "completed_at": result.completed_at.isoformat() if result.completed_at else None,
        "steps": [
            {"step_name": s.step_name, "status": str(s.status), "error": s.error}
            for s in result.steps
        ],
    }


@dataclass
class Work:
    """One unit for a worker: a ticket from the inbox, or a file to resume."""

    name: str
    ticket: Ticket | None = None
    pname: str | None = None  # resume: already in processing/
    job_id: str | None = None
    retry_of: str | None = None


@dataclass
class Outcome:
    """What a worker reports back to the main thread."""

    name: str
    status: str  # succeeded | failed | duplicate | refused | taken | changed | error
    job_id: str | None = None
    recheck: bool = False  # the name is back in (or still in) the inbox
    pending: PendingMove | None = None


@dataclass
class PendingMove:
    """A finished job whose file could not be moved yet (disk full…)."""

    pname: str
    name: str
    result: JobResult
    attempts: int = 0
    next_at: float = 0.0
    final: Path | None = None  # moved already; only the error.json is missing
    last_error: str = ""


@dataclass
class InFlight:
    name: str
    pname: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    handed_back: bool = False
    finishing: bool = False


class Service:
    """The daemon loop. ``run()`` returns an exit code."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Any,
        *,
        recorder: Any = None,
        clock: Callable[[], float] = time.monotonic,
        environ: Mapping[str, str] | None = None,
        heartbeat: Callable[[dict[str, int], str | None], None] | None = None,
        lookup_job: Callable[[str], Mapping[str, Any] | None] | None = None,
        final_path: Callable[[str, str], None] | None = None,
        host: str | None = None,
        inotify_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.daemon = settings.daemon
        self.pipeline = pipeline
        self.recorder = recorder if recorder is not None else getattr(pipeline, "recorder", None)
        self.clock = clock
        self.environ = os.environ if environ is None else environ
        self.heartbeat = heartbeat
        self.lookup_job = lookup_job
        self.final_path = final_path
        self.host = host or socket.gethostname()
        self.inotify_factory = inotify_factory

        self.events: queue.Queue[Any] = queue.Queue()
        self.work: queue.Queue[Work | None] = queue.Queue()
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.last_error: str | None = None
        self.observer: Any = None
        self.observer_kind: str | None = None
        self.tracker: Tracker | None = None
        self.workers: list[threading.Thread] = []
        self.inflight: dict[str, InFlight] = {}
        self.inflight_lock = threading.Lock()
        self.pending: list[PendingMove] = []
        self.reported: set[tuple[str, int]] = set()
        self.claim_failures: dict[str, int] = {}
        self.finished = 0
        self.outstanding = 0  # work items handed out and not yet reported back
        self._stop = threading.Event()
        self._restart_times: list[float] = []
        self._failed_starts = 0
        self._next_observer_try = 0.0
        self.inbox_fd = -1
        self.processing_fd = -1

    # -- control ---------------------------------------------------------------

    def request_stop(self, signum: int | None = None, frame: Any = None) -> None:
        """Signal handler: only sets a flag; the loop acts on it."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- the loop --------------------------------------------------------------

    def run(self, *, once: bool = False, max_jobs: int | None = None) -> int:
        """Watch, process, and return an exit code (0: stopped cleanly)."""
        try:
            self._open_folders()
        except (WatchError, OSError) as exc:
            return self._fatal("cannot_start", exc)
        try:
            self.tracker = Tracker(self.inbox_fd, self.daemon, self.clock)
            self._start_workers()
            if not once:
                try:
                    self._start_observer()
                except WatchError as exc:
                    return self._fatal("cannot_watch", exc)
            self._resume_processing()
            self._rescan()
            notify.notify("READY=1\n" + self._status_line(), self.environ, timeout=NOTIFY_WAIT)
            logger.info(
                "daemon_ready",
                inbox=str(self.settings.paths.inbox),
                observer=self.observer_kind or "none (once)",
                workers=self.daemon.workers,
                host=self.host,
            )
            return self._loop(once=once, max_jobs=max_jobs)
        finally:
            self._shutdown()

    def _fatal(self, event: str, exc: BaseException) -> int:
        message = str(exc) if isinstance(exc, EdiInboxError) else _os_message(exc)
        logger.error(event, error=message)
        self.last_error = message
        return EXIT_FAILURE

    def _loop(self, *, once: bool, max_jobs: int | None) -> int:
        assert self.tracker is not None
        now = self.clock()
        next_rescan = now + self.daemon.rescan_seconds
        next_heartbeat = now
        ping_every = notify.watchdog_interval(self.environ)
        next_ping = now
        next_status = now + STATUS_EVERY
        while not self.stopping:
            now = self.clock()
            wait = LOOP_WAIT_MAX
            due = self.tracker.due()
            if due is not None:
                wait = min(wait, max(0.0, due - now))
            if self.pending:
                wait = min(wait, max(0.0, min(p.next_at for p in self.pending) - now))
            for item in drain(self.events, wait):
                self._handle(item)
            for ticket in self.tracker.poll():
                self._dispatch(ticket)
            now = self.clock()
            self._retry_pending(now)
            if now >= next_rescan:
                self._rescan()
                next_rescan = now + self.daemon.rescan_seconds
            if not once and not self._check_observer(now):
                return EXIT_FAILURE
            if now >= next_heartbeat:
                self._beat()
                next_heartbeat = now + self.daemon.heartbeat_seconds
            if ping_every and now >= next_ping:
                if self.healthy():
                    notify.notify("WATCHDOG=1", self.environ)
                next_ping = now + ping_every
            if now >= next_status:
                notify.notify(self._status_line(), self.environ)
                next_status = now + STATUS_EVERY
            if max_jobs is not None and self.finished >= max_jobs:
                logger.info("max_jobs_reached", jobs=self.finished)
                break
            if once and self._idle():
                break
        return EXIT_OK

    def _idle(self) -> bool:
        """Burst mode is done: nothing in flight, nothing settling (held files wait)."""
        assert self.tracker is not None
        return self.outstanding == 0 and self.tracker.waiting() == 0 and not self.pending

    def healthy(self) -> bool:
        """Observer (if any) and every worker alive: the condition for WATCHDOG=1."""
        if self.observer is not None and not observer_alive(self.observer):
            return False
        return all(w.is_alive() for w in self.workers)

    # -- folders, observer, scans ----------------------------------------------------

    def _open_folders(self) -> None:
        paths = self.settings.paths
        assert paths.inbox is not None and paths.processing is not None
        try:
            self.inbox_fd = os.open(paths.inbox, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise WatchError(f"inbox {paths.inbox}: {_os_message(exc)}") from None
        try:
            for name, path in paths.folders().items():
                if name != "inbox":
                    path.mkdir(parents=True, exist_ok=True)
            (paths.processing / RETRY_DIR).mkdir(exist_ok=True)
            self.processing_fd = os.open(
                paths.processing, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
            )
        except OSError:
            os.close(self.inbox_fd)
            self.inbox_fd = -1
            raise

    def _start_observer(self) -> None:
        assert self.settings.paths.inbox is not None
        handler = InboxHandler(
            self.settings.paths.inbox, self.events.put, self.daemon.ignore_patterns
        )
        self.observer, self.observer_kind = start_observer(
            self.daemon, self.settings.paths.inbox, handler, inotify_factory=self.inotify_factory
        )

    def _check_observer(self, now: float) -> bool:
        """Restart a dead observer (and rescan: its events are lost). False: give up."""
        if self.observer is not None and observer_alive(self.observer):
            return True
        if now < self._next_observer_try:
            return True
        if self.observer is not None:
            logger.error("observer_died", observer=self.observer_kind)
            self.last_error = "the watchdog observer thread died"
            stop_observer(self.observer, timeout=0.5)
            self.observer = None
        self._restart_times = [t for t in self._restart_times if now - t < OBSERVER_RESTART_WINDOW]
        if len(self._restart_times) >= MAX_OBSERVER_RESTARTS:
            logger.error("observer_keeps_dying", restarts=len(self._restart_times))
            return False
        self._restart_times.append(now)
        try:
            self._start_observer()
        except WatchError as exc:
            self._failed_starts += 1
            self.last_error = str(exc)
            logger.error("observer_restart_failed", error=str(exc), attempt=self._failed_starts)
            if self._failed_starts >= MAX_OBSERVER_RESTARTS:
                return False
            self._next_observer_try = now + min(30.0, 2.0**self._failed_starts)
            return True
        self._failed_starts = 0
        self.counters["observer_restarts"] += 1
        logger.warning("observer_restarted", restarts=self.counters["observer_restarts"])
        self._rescan()
        return True

    def _rescan(self) -> None:
        """Feed every name in the inbox to the tracker (start-up, overflow, polling)."""
        assert self.tracker is not None
        present: set[str] = set()
        try:
            for entry in scan(self.inbox_fd):
                present.add(entry.name)
                self.tracker.seen(entry.name, functools.partial(entry.stat, follow_symlinks=False))
        except OSError as exc:
            logger.error("scan_failed", error=_os_message(exc))
            self.last_error = f"cannot scan the inbox: {_os_message(exc)}"
            return
        self.tracker.prune(present)
        self.reported = {r for r in self.reported if r[0] in present}

    # -- events and tickets ----------------------------------------------------

    def _handle(self, item: Any) -> None:
        assert self.tracker is not None
        kind = item[0]
        if kind == "fs":
            self.tracker.event(item[1], item[2])
        elif kind == "done":
            self._on_outcome(item[1])

    def _dispatch(self, ticket: Ticket) -> None:
        if ticket.verdict is Verdict.REPORT:
            key = (ticket.name, ticket.fingerprint.ino if ticket.fingerprint else 0)
            if key not in self.reported:
                self.reported.add(key)
                logger.warning(
                    "inbox_entry_left",
                    file=files.display_name(ticket.name),
                    reason=f"{ticket.reason}; it cannot be moved safely and is left in place",
                )
            return
        self.outstanding += 1
        self.work.put(Work(ticket.name, ticket=ticket))

    def _on_outcome(self, outcome: Outcome) -> None:
        assert self.tracker is not None
        self.outstanding -= 1
        if outcome.status in ("succeeded", "failed", "duplicate", "refused"):
            self.finished += 1
        if outcome.status in ("succeeded", "failed", "duplicate", "refused", "taken", "changed"):
            self.counters[outcome.status] += 1
        delay = None
        if outcome.status == "error":
            failures = self.claim_failures.get(outcome.name, 0) + 1
            self.claim_failures[outcome.name] = failures
            delay = min(60.0, 0.5 * 2**failures)
        else:
            self.claim_failures.pop(outcome.name, None)
        self.tracker.release(outcome.name, recheck=outcome.recheck, delay=delay)
        if outcome.pending is not None:
            self.counters["move_errors"] += 1
            self.pending.append(outcome.pending)

    # -- workers --------------------------------------------------------------------

    def _start_workers(self) -> None:
        for n in range(self.daemon.workers):
            worker = threading.Thread(target=self._worker, name=f"edi-worker-{n}", daemon=True)
            worker.start()
            self.workers.append(worker)

    def _worker(self) -> None:
        while True:
            item = self.work.get()
            if item is None:
                return
            try:
                outcome = self._do(item)
            except Exception as exc:  # a bug: that file, never the worker
                logger.error("worker_error", file=files.display_name(item.name), error=repr(exc))
                logger.debug("worker_traceback", traceback=traceback.format_exc())
                outcome = Outcome(item.name, "error", recheck=True)
            self.events.put(("done", outcome))

    def _do(self, item: Work) -> Outcome:
        if item.pname is not None:  # resumed from processing/
            return self._run_claimed(item.name, item.pname, item.job_id or _new_id(), None, item)
        ticket = item.ticket
        assert ticket is not None
        job_id = _new_id()
        pname = processing_name(ticket.name, job_id)
        try:
            st = os.stat(ticket.name, dir_fd=self.inbox_fd, follow_symlinks=False)
        except FileNotFoundError:
            return Outcome(ticket.name, "taken")
        if ticket.fingerprint is not None and Fingerprint.of(st) != ticket.fingerprint:
            return Outcome(ticket.name, "changed", recheck=True)
        try:
            os.rename(ticket.name, pname, src_dir_fd=self.inbox_fd, dst_dir_fd=self.processing_fd)
        except FileNotFoundError:
            return Outcome(ticket.name, "taken")  # another worker or host was first
        except OSError as exc:
            hint = ""
            if exc.errno == errno.EXDEV:
                hint = " (processing/ must be on the same file system as the inbox)"
            logger.error(
                "claim_failed", file=files.display_name(ticket.name), error=_os_message(exc) + hint
            )
            self.last_error = f"cannot claim a file: {_os_message(exc)}{hint}"
            return Outcome(ticket.name, "error", recheck=True)
        logger.debug("claimed", file=files.display_name(ticket.name), job_id=job_id)
        return self._run_claimed(ticket.name, pname, job_id, ticket, item)

    def _run_claimed(
        self, name: str, pname: str, job_id: str, ticket: Ticket | None, item: Work
    ) -> Outcome:
        flight = InFlight(name, pname)
        with self.inflight_lock:
            self.inflight[job_id] = flight
        try:
            return self._run_job(flight, job_id, ticket, item)
        finally:
            with self.inflight_lock:
                self.inflight.pop(job_id, None)

    def _run_job(self, flight: InFlight, job_id: str, ticket: Ticket | None, item: Work) -> Outcome:
        name, pname = flight.name, flight.pname
        processing = self.settings.paths.processing
        assert processing is not None
        if ticket is not None and ticket.verdict is Verdict.REFUSE:
            try:
                st = os.stat(pname, dir_fd=self.processing_fd, follow_symlinks=False)
            except FileNotFoundError:
                return Outcome(name, "taken")
            if Fingerprint.of(st) != ticket.fingerprint:  # swapped since the verdict
                return self._hand_back(flight, "changed")
            problem = Refused(ticket.code or "refused", ticket.reason or "refused")
            return self._refuse(flight, job_id, problem, item.retry_of)

        try:
            fd, st = safe_open(self.processing_fd, pname, self.daemon.max_file_bytes)
        except FileNotFoundError:
            return Outcome(name, "taken")
        except Refused as problem:
            return self._refuse(flight, job_id, problem, item.retry_of)
        except OSError as exc:
            reason = f"the file cannot be read: {_os_message(exc)}"
            return self._refuse(flight, job_id, Refused("unreadable", reason), item.retry_of)
        try:
            if ticket is not None and ticket.fingerprint is not None:
                now_fp = Fingerprint.of(st)
                if now_fp != ticket.fingerprint:
                    return self._hand_back(flight, "changed")
            data = read_all(fd, st.st_size)
        finally:
            os.close(fd)
        if len(data) != st.st_size:  # still being written through an open descriptor
            return self._hand_back(flight, "changed")
        retry_of = item.retry_of or self._take_retry_marker(st)
        try:
            result = self.pipeline.run(
                processing / pname,
                file_name=files.display_name(name),
                job_id=job_id,
                retry_of=retry_of,
                data=data,
            )
        except Exception as exc:  # Pipeline.run should not raise; if it does, fail that job
            logger.error("pipeline_crashed", file=files.display_name(name), error=repr(exc))
            result = self._failed_result(
                job_id, name, pname, retry_of, f"internal error: {exc!r}", "internal_error"
            )
            self._record_finished(result, started=False)
        return self._finish(flight, result)

    def _refuse(
        self, flight: InFlight, job_id: str, problem: Refused, retry_of: str | None
    ) -> Outcome:
        """Fail a file without reading it: recorded as a job, moved to failed/."""
        shown = files.display_name(flight.name)
        result = self._failed_result(
            job_id,
            flight.name,
            flight.pname,
            retry_of,
            f"{shown} was not read: {problem.reason}",
            problem.code,
        )
        logger.warning("file_refused", file=shown, code=problem.code, reason=problem.reason)
        self._record_finished(result, started=True)
        outcome = self._finish(flight, result)
        if outcome.status == "failed":
            outcome.status = "refused"
        return outcome

    def _failed_result(
        self, job_id: str, name: str, pname: str, retry_of: str | None, error: str, code: str
    ) -> JobResult:
        now = datetime.now(UTC)
        processing = self.settings.paths.processing
        assert processing is not None
        return JobResult(
            job_id=job_id,
            file_name=files.display_name(name),
            status=JobStatus.FAILED,
            started_at=now,
            completed_at=now,
            duration_seconds=0.0,
            file_path=str(processing / pname),
            error=error,
            error_details=[{"code": code, "message": error}],
            host=self.host,
            retry_of=retry_of,
        )

    def _record_finished(self, result: JobResult, *, started: bool) -> None:
        if self.recorder is None:
            return
        try:
            if started:
                self.recorder.job_started(result)
            self.recorder.job_finished(result, [])
        except Exception as exc:  # the recorder never fails a job
            logger.error("recorder_failed", job_id=result.job_id, error=repr(exc))

    def _finish(self, flight: InFlight, result: JobResult) -> Outcome:
        """Move the file to done/ or failed/ (+ error.json); on error keep it claimed."""
        with flight.lock:
            if flight.handed_back:  # shutdown gave the file back meanwhile
                return Outcome(flight.name, "handed_back", job_id=result.job_id)
            flight.finishing = True
        status = str(result.status)
        move = PendingMove(flight.pname, flight.name, result)
        try:
            self._complete(move)
        except OSError as exc:
            move.last_error = _os_message(exc)
            move.attempts = 1
            move.next_at = self.clock() + 0.5
            logger.error(
                "move_failed",
                file=files.display_name(flight.name),
                job_id=result.job_id,
                error=move.last_error,
                retry_in_seconds=0.5,
            )
            self.last_error = f"cannot move a finished file: {move.last_error}"
            return Outcome(flight.name, status, job_id=result.job_id, pending=move)
        return Outcome(flight.name, status, job_id=result.job_id)

    def _complete(self, move: PendingMove) -> None:
        """The move (and error.json) of a finished job; raises OSError to retry later."""
        paths = self.settings.paths
        assert paths.processing and paths.done and paths.failed
        ok = move.result.success
        if move.final is None:
            target = paths.done if ok else paths.failed
            move.final = files.move_new(paths.processing / move.pname, target, move.name)
        if not ok:
            report = json.dumps(error_report(move.result, move.final.name), indent=2, default=str)
            json_name = move.final.name + ".error.json"
            if len(os.fsencode(json_name)) > MAX_NAME_BYTES:
                json_name = f"{move.result.job_id}.error.json"
            files.write_new(paths.failed, json_name, report.encode("utf-8", "surrogateescape"))
        if self.final_path is not None:
            try:
                self.final_path(move.result.job_id, str(move.final))
            except Exception as exc:  # the file is where it belongs; the record can lag
                logger.error("record_final_path_failed", job_id=move.result.job_id, error=repr(exc))
        logger.info(
            "job_done",
            file=files.display_name(move.name),
            job_id=move.result.job_id,
            status=str(move.result.status),
            moved_to=files.display_name(str(move.final)),
            error=move.result.error,
        )

    def _retry_pending(self, now: float) -> None:
        for move in [m for m in self.pending if m.next_at <= now]:
            try:
                self._complete(move)
            except OSError as exc:
                processing = self.settings.paths.processing
                assert processing is not None
                if move.final is None and not os.path.lexists(processing / move.pname):
                    self.pending.remove(move)  # gone: removed by hand or resumed elsewhere
                    continue
                self._backoff(move, now, exc)
            else:
                self.pending.remove(move)

    def _backoff(self, move: PendingMove, now: float, exc: OSError) -> None:
        move.attempts += 1
        delay = min(60.0, 0.5 * 2**move.attempts)
        move.next_at = now + delay
        if _os_message(exc) != move.last_error or move.attempts % 10 == 0:
            logger.error(
                "move_failed",
                file=files.display_name(move.name),
                job_id=move.result.job_id,
                error=_os_message(exc),
                attempts=move.attempts,
                retry_in_seconds=delay,
            )
        move.last_error = _os_message(exc)

    def _hand_back(self, flight: InFlight, status: str) -> Outcome:
        """Put a claimed file back into the inbox under its name (never overwriting)."""
        paths = self.settings.paths
        assert paths.processing and paths.inbox
        try:
            back = files.move_new(paths.processing / flight.pname, paths.inbox, flight.name)
        except OSError as exc:
            logger.error(
                "hand_back_failed", file=files.display_name(flight.name), error=_os_message(exc)
            )
            return Outcome(flight.name, "error", recheck=True)
        logger.info("handed_back", file=files.display_name(back.name), reason=status)
        return Outcome(flight.name, status, recheck=True)

    # -- crash recovery --------------------------------------------------------

    def _resume_processing(self) -> None:
        """Files left in processing/ by a crash: run again as new jobs (retry_of the old)."""
        for entry in scan(self.processing_fd):
            if entry.name.startswith("."):
                continue
            name, old_job = split_processing_name(entry.name)
            info = None
            if self.lookup_job is not None and old_job:
                try:
                    info = self.lookup_job(old_job)
                except Exception as exc:  # no record to go by: resume it (the rename decides)
                    logger.warning("job_lookup_failed", job_id=old_job, error=repr(exc))
            if (
                info
                and info.get("host") not in (None, self.host)
                and info.get("status")
                in (
                    "running",
                    "received",
                )
            ):
                logger.info(
                    "resume_skipped",
                    file=files.display_name(name),
                    job_id=old_job,
                    reason=f"job running on host {info.get('host')}",
                )
                continue
            job_id = _new_id()
            pname = processing_name(name, job_id)
            try:
                os.rename(
                    entry.name, pname, src_dir_fd=self.processing_fd, dst_dir_fd=self.processing_fd
                )
            except FileNotFoundError:
                continue  # another daemon resumed it
            logger.info("resuming", file=files.display_name(name), job_id=job_id, retry_of=old_job)
            self.counters["resumed"] += 1
            self.outstanding += 1
            self.work.put(Work(name, pname=pname, job_id=job_id, retry_of=old_job))

    # -- retry markers -----------------------------------------------------------

    def _take_retry_marker(self, st: os.stat_result) -> str | None:
        processing = self.settings.paths.processing
        assert processing is not None
        marker = processing / RETRY_DIR / f"{st.st_dev}-{st.st_ino}.json"
        try:
            info = json.loads(marker.read_bytes())
        except (OSError, ValueError):
            return None
        with contextlib.suppress(OSError):
            marker.unlink()
        if info.get("size") != st.st_size or info.get("mtime_ns") != st.st_mtime_ns:
            return None  # the inode was reused by another file
        return info.get("retry_of")

    # -- stopping ------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop intake, let jobs finish within the timeout, hand back the rest."""
        if self.stopping:
            notify.notify("STOPPING=1", self.environ, timeout=NOTIFY_WAIT)
            logger.info("daemon_stopping", in_flight=len(self.inflight))
        if self.observer is not None:
            stop_observer(self.observer)
        # Unclaimed work stays in the inbox; resumes not started stay in processing/.
        while True:
            try:
                item = self.work.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self.outstanding -= 1
        for _ in self.workers:
            self.work.put(None)
        deadline = time.monotonic() + self.daemon.shutdown_timeout_seconds
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        with self.inflight_lock:
            left = list(self.inflight.values())
        for flight in left:
            with flight.lock:
                if flight.finishing:
                    continue
                flight.handed_back = True
            self._hand_back(flight, "shutdown")
            self.counters["handed_back"] += 1
        for item in drain(self.events, 0):
            if item[0] == "done" and item[1].pending is not None:
                self.pending.append(item[1].pending)
        for move in self.pending:  # one last try; else resumed at the next start
            with contextlib.suppress(OSError):
                self._complete(move)
        self._beat(stopping=True)
        for fd in (self.inbox_fd, self.processing_fd):
            if fd >= 0:
                os.close(fd)
        self.inbox_fd = self.processing_fd = -1
        logger.info("daemon_stopped", handed_back=self.counters["handed_back"])

    # -- reporting -------------------------------------------------------------------

    def snapshot(self) -> dict[str, int]:
        """Counters and queue lengths, for the heartbeat and STATUS=."""
        tracked = self.tracker.counts() if self.tracker else {}
        return {
            **self.counters,
            "in_flight": len(self.inflight),
            "queue": self.work.qsize(),
            "tracked": tracked.get("tracked", 0),
            "held": tracked.get("held", 0),
            "pending_moves": len(self.pending),
        }

    def _status_line(self) -> str:
        s = self.snapshot()
        return (
            f"STATUS=queue {s['queue']}, in flight {s['in_flight']}, held {s['held']}; "
            f"done {s['succeeded']}, duplicate {s['duplicate']}, failed {s['failed']}, "
            f"refused {s['refused']}"
        )

    def _beat(self, *, stopping: bool = False) -> None:
        if self.heartbeat is None:
            return
        try:
            counters = self.snapshot()
            if stopping:
                counters["stopping"] = 1
            self.heartbeat(counters, self.last_error)
        except Exception as exc:  # the database may be away for a moment
            logger.error("heartbeat_failed", error=repr(exc))


# -- module-level entry points (the CLI calls these) ------------------------------


def run(
    settings: Settings,
    *,
    once: bool = False,
    max_jobs: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    environ: Mapping[str, str] | None = None,
) -> int:
    """``edi-inbox run``: open the database, watch the inbox until SIGTERM/SIGINT.

    Returns the exit code: 0 after a clean stop, 1 when the inbox is missing,
    the watch cannot start, the database cannot be opened or the observer keeps
    dying. READY=1 is sent only once the database is open and the first scan
    is queued.
    """
    from . import store
    from .pipeline import Pipeline

    host = socket.gethostname()
    try:
        db = store.open_database(settings.database_url, settings)
        store.init(db)  # creates or migrates the schema; safe at every start
        interrupted = store.mark_interrupted(db, host)
    except Exception as exc:
        logger.error("cannot_open_database", url=_safe_url(settings.database_url), error=str(exc))
        return EXIT_FAILURE
    if interrupted:
        logger.warning("jobs_interrupted", count=len(interrupted))
    daemon_id = f"{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    started_at = datetime.now(UTC)

    def heartbeat(counters: dict[str, int], last_error: str | None) -> None:
        store.heartbeat(
            db,
            daemon_id,
            host=host,
            pid=os.getpid(),
            version=__version__,
            started_at=started_at,
            counters=counters,
            last_error=last_error,
        )

    def lookup_job(job_id: str) -> Mapping[str, Any] | None:
        job = store.Job
        query = job.select(job.host, job.status, job.file_name).where(job.job_id == job_id)
        return store.run_unit(db, lambda: query.dicts().first(), write=False)

    def final_path(job_id: str, path: str) -> None:
        store.record_final_path(db, job_id, path)

    pipeline = Pipeline(settings, store.DatabaseRecorder(db), host=host)
    service = Service(
        settings,
        pipeline,
        clock=clock,
        environ=environ,
        heartbeat=heartbeat,
        lookup_job=lookup_job,
        final_path=final_path,
        host=host,
    )
    with _signals(service):
        try:
            code = service.run(once=once, max_jobs=max_jobs)
        finally:
            pipeline.close()
    if code == EXIT_OK:
        with contextlib.suppress(Exception):
            store.remove_daemon(db, daemon_id)  # a clean stop: no stale heartbeat
    with contextlib.suppress(Exception):
        db.close()
    return code


@contextlib.contextmanager
def _signals(service: Service) -> Iterator[None]:
    """SIGTERM and SIGINT ask the service to stop (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, service.request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def retry(
    settings: Settings, job_id: str | None = None, *, all_failed: bool = False
) -> list[dict[str, Any]]:
    """``edi-inbox retry JOB_ID|--all-failed``: put failed files back into the inbox.

    The file goes back under its original name (a suffix if that name is
    taken; nothing is overwritten) and its error.json is removed; a marker in
    ``processing/.retry/`` makes the next job for it record ``retry_of``.
    Returns one dict per file: job_id, file (in failed/), inbox_name, retried
    (bool), reason (when not retried). Raises EdiInboxError when JOB_ID has
    no file in failed/.
    """
    paths = settings.paths
    assert paths.failed and paths.inbox and paths.processing
    if not all_failed and not job_id:
        raise EdiInboxError("give a job id or --all-failed")
    reports = []
    for report_path in sorted(paths.failed.glob("*.error.json")):
        try:
            report = json.loads(report_path.read_bytes())
        except (OSError, ValueError):
            continue
        if not isinstance(report, dict) or (not all_failed and report.get("job_id") != job_id):
            continue
        reports.append((report_path, report))
    if not reports and not all_failed:
        raise EdiInboxError(f"no failed file for job {job_id} in {paths.failed}")
    (paths.processing / RETRY_DIR).mkdir(parents=True, exist_ok=True)
    results = [_retry_one(settings, path, report) for path, report in reports]
    if job_id and not any(r["retried"] for r in results):
        raise EdiInboxError(f"job {job_id} was not retried: {results[0]['reason']}")
    return results


def _retry_one(settings: Settings, report_path: Path, report: dict[str, Any]) -> dict[str, Any]:
    paths = settings.paths
    assert paths.failed and paths.inbox and paths.processing
    failed_name = report_path.name[: -len(".error.json")]
    old_job = str(report.get("job_id"))
    result: dict[str, Any] = {"job_id": old_job, "file": failed_name, "retried": False}
    source = paths.failed / failed_name
    try:
        st = os.stat(source, follow_symlinks=False)
    except FileNotFoundError:
        result["reason"] = f"{files.display_name(failed_name)} is no longer in failed/"
        return result
    problem = refusal(st, settings.daemon.max_file_bytes)
    if problem is not None:
        result["reason"] = f"not retried: {problem.reason}"
        return result
    original = _original_name(failed_name, report)
    marker = paths.processing / RETRY_DIR / f"{st.st_dev}-{st.st_ino}.json"
    body = {"retry_of": old_job, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    tmp = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body))
    os.replace(tmp, marker)  # the marker exists before the file reaches the inbox
    try:
        back = files.move_new(source, paths.inbox, original)
    except OSError as exc:
        marker.unlink(missing_ok=True)
        result["reason"] = f"cannot move it back: {_os_message(exc)}"
        return result
    report_path.unlink(missing_ok=True)
    result.update(retried=True, inbox_name=files.display_name(back.name))
    logger.info("retry_queued", job_id=old_job, file=files.display_name(back.name))
    return result


def _original_name(failed_name: str, report: Mapping[str, Any]) -> str:
    """The name the partner used: file_name unless it was escaped for display."""
    original = report.get("file_name")
    if (
        isinstance(original, str)
        and original not in ("", ".", "..")
        and "/" not in original
        and files.display_name(original) == original
    ):
        return original
    return failed_name


def status(settings: Settings, db: Any, *, now: datetime | None = None) -> dict[str, Any]:
    """``edi-inbox status``: every daemon's heartbeat (``alive`` when younger than
    three heartbeat intervals, at least 15 s), ``running`` (any alive), the
    inbox backlog, folder counts, and the store's 24-hour summary and last error
    (``jobs_running``: jobs in state running)."""
    from . import queries

    now = now or datetime.now(UTC)
    doc = queries.status_summary(db, now=now)
    doc["jobs_running"] = doc.pop("running", 0)
    fresh = max(3 * settings.daemon.heartbeat_seconds, 15.0)
    for daemon in doc.get("daemons", []):
        daemon["alive"] = daemon["heartbeat_age_seconds"] <= fresh
    doc["running"] = any(d["alive"] for d in doc.get("daemons", []))
    doc["inbox"] = inbox_backlog(settings, now=now.timestamp())
    doc["folders"] = folder_counts(settings)
    return doc


def inbox_backlog(settings: Settings, *, now: float | None = None) -> dict[str, Any]:
    """Names waiting in the inbox (temporaries aside) and the oldest one's age,
    by ctime (a rename into the inbox sets it; clients often preserve mtime)."""
    now = time.time() if now is None else now
    waiting, oldest = 0, None
    try:
        with os.scandir(settings.paths.folders()["inbox"]) as entries:
            for entry in entries:
                if is_ignored(entry.name, settings.daemon.ignore_patterns):
                    continue
                waiting += 1
                with contextlib.suppress(OSError):
                    ctime = entry.stat(follow_symlinks=False).st_ctime
                    oldest = ctime if oldest is None else min(oldest, ctime)
    except OSError:
        return {"waiting": None, "oldest_age_seconds": None}
    age = None if oldest is None else round(max(0.0, now - oldest), 3)
    return {"waiting": waiting, "oldest_age_seconds": age}


def folder_counts(settings: Settings) -> dict[str, int | None]:
    """Entries in inbox/, processing/, done/, failed/ (None: folder missing), for status."""
    counts: dict[str, int | None] = {}
    for name in ("inbox", "processing", "done", "failed"):
        path = settings.paths.folders()[name]
        try:
            with os.scandir(path) as entries:
                counts[name] = sum(
                    1
                    for e in entries
                    if not e.name.startswith(".") and not e.name.endswith(".error.json")
                )
        except OSError:
            counts[name] = None
    return counts


def _safe_url(url: str) -> str:
    """A database URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    creds, at, where = rest.rpartition("@")
    if not at:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{where}"


def _new_id() -> str:
    return str(uuid.uuid4())


def _os_message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {files.display_name(os.fsdecode(exc.filename))}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc)


__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "Service",
    "folder_counts",
    "inbox_backlog",
    "retry",
    "run",
    "status",
]
