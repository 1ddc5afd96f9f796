"""The daemon: watch the inbox, hand ready files to a worker pool, report.

One main thread owns the readiness ``Tracker`` (``watch.py``) and every
decision; the watchdog observer thread only enqueues events; worker threads
(``worker.py``) claim a file, run ``Pipeline.run`` on it and have it moved
(``outcomes.py``) — or, with ``[daemon] processes`` above 1, relay each unit
of work to a thread in a child process that does the same (``procs.py``).
A file's life:

    inbox/NAME --rename--> processing/<host>/NAME.<job_id>
        --> done/NAME or failed/NAME (+ NAME.error.json)

The rename into this host's folder of ``processing/`` is the lock
(``claims.py``). On start the daemon writes its heartbeat *before* it claims
anything, then resumes the claims its previous run left (and files of the
flat layout of earlier versions) as new jobs with ``retry_of`` the old job id
(the recorder knows which orders the ERP already accepted). At start and at
every rescan it takes over the claims of hosts without a fresh heartbeat.
One daemon per host (two would resume each other's files): ``run`` takes the
host's lock (``claims.lock_host``) before anything else, or exits 1.

The loop looks at the inbox's path every ``HEALTH_EVERY``: an inbox deleted
and re-created is opened, watched and scanned again (``inbox_replaced``); one
missing for ``INBOX_GONE_AFTER`` seconds ends the daemon with exit 1.

While the database is unavailable (a job's record or the heartbeat cannot be
written) intake pauses: files stay in the inbox, jobs that could not be
recorded stay claimed (``worker.py``), the heartbeat write probes the database
with backoff (0.5 s → 30 s), STATUS= says "database unavailable, intake
paused", and once a probe succeeds the parked jobs are queued again and intake
resumes by itself.

Stopping follows rq and Supervisor: SIGTERM/SIGINT only set a flag; the loop
stops intake, gives jobs in flight ``shutdown_timeout_seconds`` to finish,
hands the files of the rest back to the inbox and returns 0. ``run(once=True)``
is the burst mode (scan, process what is ready, return), ``max_jobs`` stops
after that many jobs; both let tests drive the loop without sleeping.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from . import __version__, admin, files, notify
from .claims import (
    Claims,
    Inbox,
    LiveHosts,
    Liveness,
    LookupJob,
    lock_host,
    new_job_id,
    os_message,
    processing_name,
)
from .config import Settings
from .errors import AlreadyRunning, EdiInboxError
from .outcomes import Mover, PendingMove
from .procs import ProcessPool
from .store.database import is_permanent
from .watch import (
    InboxHandler,
    Ticket,
    Tracker,
    Verdict,
    WatchError,
    drain,
    observer_alive,
    scan_oldest_first,
    start_observer,
    stop_observer,
)
from .worker import Outcome, Work, Worker, run_one

logger = structlog.get_logger("edi_inbox.service")

EXIT_OK = 0
EXIT_FAILURE = 1
# The observer is restarted when it dies; this many restarts within
# OBSERVER_RESTART_WINDOW seconds (or this many failed starts in a row) mean
# something is broken for good: exit non-zero and let systemd decide.
MAX_OBSERVER_RESTARTS = 5
OBSERVER_RESTART_WINDOW = 60.0
LOOP_WAIT_MAX = 0.25  # the longest the loop sleeps: a stop request waits no longer
STATUS_EVERY = 1.0
# How often the loop looks at the observer and the worker processes: a look is
# a few system calls, and a busy loop turns once per batch of events.
HEALTH_EVERY = 0.1
# Units a relay keeps at its child thread: the one running and the next.
RELAY_AHEAD = 2
INBOX_GONE_AFTER = 5.0  # seconds the inbox may be missing (being re-created) before exit 1
NOTIFY_WAIT = 2.0  # READY=1 and STOPPING=1 may wait this long for systemd; the rest never wait
COUNTERS = (
    "succeeded",
    "failed",
    "duplicate",
    "refused",
    "resumed",
    "taken_over",
    "handed_back",
    "taken",
    "changed",
    "lost",
    "move_errors",
    "observer_restarts",
)
FINISHED = ("succeeded", "failed", "duplicate", "refused")
PROBE_FIRST = 0.5  # seconds between database probes while it is unavailable; doubled
PROBE_MAX = 30.0


class Service:
    """The daemon loop. ``run()`` returns an exit code."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Any,
        *,
        clock: Callable[[], float] = time.monotonic,
        environ: Mapping[str, str] | None = None,
        heartbeat: Callable[[dict[str, int], str | None], None] | None = None,
        lookup_job: LookupJob | None = None,
        live_hosts: LiveHosts | None = None,
        interrupt_jobs: Callable[[list[str]], Any] | None = None,
        final_path: Callable[[str, str | None, str | None], None] | None = None,
        host: str | None = None,
        inotify_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.daemon = settings.daemon
        self.clock = clock
        self.environ = os.environ if environ is None else environ
        self.heartbeat = heartbeat
        self.lookup_job = lookup_job
        self.live_hosts = live_hosts
        self.interrupt_jobs = interrupt_jobs  # the jobs of the claims taken over
        self.host = host or socket.gethostname()
        self.inotify_factory = inotify_factory

        # With a heartbeat, other hosts may take this host's files when it goes
        # quiet: the workers check their claims against its age.
        self.liveness = None if heartbeat is None else Liveness(admin.fresh_seconds(self.daemon))
        self.claims = Claims(settings.paths, self.host, self.liveness)
        self.mover = Mover(
            settings.paths,
            self.claims.dir,
            clock=clock,
            final_path=final_path,
            outboxes=settings.partners.outboxes(),
            on_error=self._error,
        )
        self.worker = Worker(
            settings,
            pipeline,
            self.claims,
            self.mover,
            host=self.host,
            on_error=self._error,
        )
        # SimpleQueue (C, no Python-level Condition): four hand-offs per file.
        self.events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.work: queue.SimpleQueue[Work | None] = queue.SimpleQueue()
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.last_error: str | None = None
        self.observer: Any = None
        self.observer_kind: str | None = None
        self.tracker: Tracker | None = None
        self.threads: list[threading.Thread] = []
        self.pool: ProcessPool | None = None  # [daemon] processes > 1
        # relay thread -> the units at its child, oldest (the one running) first
        self.relayed: dict[int, list[Work]] = {}
        self.reported: set[tuple[str, int]] = set()
        self.claim_failures: dict[str, int] = {}
        self.finished = 0
        self.outstanding = 0  # work items handed out and not yet reported back
        self._stop = threading.Event()
        self._restart_times: list[float] = []
        self._failed_starts = 0
        self._next_observer_try = 0.0
        self._inbox_missing_since: float | None = None
        self.db_down: str | None = None  # why the database is unavailable: intake paused
        self.parked: list[Work] = []  # units to queue again once it is back
        self._probe_delay = PROBE_FIRST
        self._next_probe = 0.0
        self._resumed_at = -PROBE_MAX - 1.0

    # -- control ---------------------------------------------------------------

    def request_stop(self, signum: int | None = None, frame: Any = None) -> None:
        """Signal handler: only sets a flag; the loop acts on it."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def pending(self) -> list[PendingMove]:
        """Finished jobs whose files wait for a move that failed."""
        return self.mover.pending

    def _error(self, message: str) -> None:
        self.last_error = message

    # -- the loop --------------------------------------------------------------

    def run(self, *, once: bool = False, max_jobs: int | None = None) -> int:
        """Watch, process, and return an exit code (0: stopped cleanly)."""
        try:
            self.claims.open()
        except (WatchError, OSError) as exc:
            return self._fatal("cannot_start", exc)
        try:
            self._beat()  # before the first claim: other hosts must see this one alive
            self.tracker = Tracker(self.claims.inbox_fd, self.daemon, self.clock)
            try:
                self._start_workers()
            except RuntimeError as exc:
                return self._fatal("cannot_start_workers", exc)
            if not once:
                try:
                    self._start_observer()
                except WatchError as exc:
                    return self._fatal("cannot_watch", exc)
            self._recover(start=True)
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
        message = str(exc) if isinstance(exc, EdiInboxError) else os_message(exc)
        logger.error(event, error=message)
        self.last_error = message
        return EXIT_FAILURE

    def _loop(self, *, once: bool, max_jobs: int | None) -> int:
        assert self.tracker is not None
        now = self.clock()
        next_rescan = now + self.daemon.rescan_seconds
        next_heartbeat = now + self.daemon.heartbeat_seconds
        ping_every = notify.watchdog_interval(self.environ)
        next_ping = now
        next_status = now + STATUS_EVERY
        next_health = now
        while not self.stopping:
            now = self.clock()
            wait = LOOP_WAIT_MAX
            for due in (self.tracker.due(), self.mover.next_due()):
                if due is not None:
                    wait = min(wait, max(0.0, due - now))
            for item in drain(self.events, wait):
                self._handle(item)
            if self.db_down is None or not self._paused(now):
                for ticket in self.tracker.poll():
                    self._dispatch(ticket)
            now = self.clock()
            self.mover.retry_due(now)
            if now >= next_rescan:
                self._rescan()
                if self.db_down is None:
                    self._recover(start=False)
                next_rescan = now + self.daemon.rescan_seconds
            if now >= next_health:
                if not once and not self._follow_inbox(now):
                    return EXIT_FAILURE
                inbox_there = self._inbox_missing_since is None
                if not once and inbox_there and not self._check_observer(now):
                    return EXIT_FAILURE
                if self.pool is not None and not self.pool.alive():
                    logger.error("worker_process_died")
                    self.last_error = "a worker process died"
                    return EXIT_FAILURE
                next_health = now + HEALTH_EVERY
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
        """Observer (if any), every worker (and worker process) alive: the
        condition for WATCHDOG=1."""
        if self.observer is not None and not observer_alive(self.observer):
            return False
        if self.pool is not None and not self.pool.alive():
            return False
        return all(t.is_alive() for t in self.threads)

    # -- observer, scans, claims left behind ------------------------------------------

    def _start_observer(self) -> None:
        assert self.settings.paths.inbox is not None
        handler = InboxHandler(
            self.settings.paths.inbox, self.events.put, self.daemon.ignore_patterns
        )
        self.observer, self.observer_kind = start_observer(
            self.daemon, self.settings.paths.inbox, handler, inotify_factory=self.inotify_factory
        )

    def _follow_inbox(self, now: float) -> bool:
        """Notice an inbox deleted and re-created: watch and scan the new one.
        False: it has been missing for ``INBOX_GONE_AFTER`` seconds (exit 1)."""
        inbox = str(self.settings.paths.inbox)
        state = self.claims.follow_inbox()
        if state is Inbox.MISSING:
            if self._inbox_missing_since is None:
                self._inbox_missing_since = now
                logger.warning("inbox_missing", inbox=inbox)
            elif now - self._inbox_missing_since >= INBOX_GONE_AFTER:
                message = f"the inbox {inbox} has been missing for {INBOX_GONE_AFTER:.0f} s"
                logger.error("inbox_gone", inbox=inbox, error=message)
                self.last_error = message
                notify.notify(f"STATUS={message}; exiting", self.environ)
                return False
            return True
        self._inbox_missing_since = None
        if state is Inbox.REPLACED:
            logger.warning("inbox_replaced", inbox=inbox)
            if self.observer is not None:  # it watches the old directory
                stop_observer(self.observer, timeout=0.5)
                self.observer = None
            try:
                self._start_observer()
            except WatchError as exc:  # _check_observer tries again
                logger.error("observer_restart_failed", error=str(exc))
                self.last_error = str(exc)
            self._rescan()
        return True

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
            for entry in scan_oldest_first(self.claims.inbox_fd):
                present.add(entry.name)
                self.tracker.seen(entry.name, functools.partial(entry.stat, follow_symlinks=False))
        except OSError as exc:
            logger.error("scan_failed", error=os_message(exc))
            self.last_error = f"cannot scan the inbox: {os_message(exc)}"
            return
        self.tracker.prune(present)
        self.reported = {r for r in self.reported if r[0] in present}

    def _recover(self, *, start: bool) -> None:
        """Queue claims left behind: at start this host's own (and the flat
        layout's); always those of hosts without a fresh heartbeat."""
        leftovers = self.claims.leftovers(
            start=start, lookup_job=self.lookup_job, live_hosts=self.live_hosts
        )
        taken: list[str] = []  # the jobs of the files taken over
        try:
            for claim in leftovers:  # each is in this host's folder already: queue it now
                self.counters["taken_over" if claim.taken_from else "resumed"] += 1
                if claim.taken_from and claim.retry_of:
                    taken.append(claim.retry_of)
                self.outstanding += 1
                self.work.put(
                    Work(
                        claim.name, pname=claim.pname, job_id=claim.job_id, retry_of=claim.retry_of
                    )
                )
        except OSError as exc:
            logger.error("recover_failed", error=os_message(exc))
            self.last_error = f"cannot read processing/: {os_message(exc)}"
        if taken and self.interrupt_jobs is not None:
            try:
                self.interrupt_jobs(taken)
            except Exception as exc:  # a record's detail: the files are taken over all the same
                logger.error("interrupt_failed", jobs=taken, error=repr(exc))

    # -- events, tickets, outcomes ------------------------------------------------------

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
        self.work.put(Work(ticket.name, ticket=ticket, job_id=new_job_id()))

    def _on_outcome(self, outcome: Outcome) -> None:
        assert self.tracker is not None
        self.outstanding -= 1
        if outcome.error is not None:  # told by a worker process
            self.last_error = outcome.error
        if outcome.parked is not None:  # unrecorded: the file stays claimed
            self.parked.append(outcome.parked)
            self._pause(outcome.error or "a job could not be recorded")
        if outcome.status in FINISHED:
            self.finished += 1
        if outcome.status in (*FINISHED, "taken", "changed", "lost"):
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
            self.mover.add(outcome.pending)

    # -- worker threads -------------------------------------------------------------------

    def _start_workers(self) -> None:
        """Worker threads; or, with ``processes`` > 1, the children and a relay
        thread per child thread (RuntimeError if a child does not start)."""
        if self.daemon.processes > 1:
            self.pool = ProcessPool(
                self.settings, self.host, self.daemon.processes, self.daemon.workers, self.liveness
            )
            self.pool.start()
            for n, channel in enumerate(self.pool.channels):
                self._thread(f"edi-relay-{n}", self._relay, channel, n)
            return
        for n in range(self.daemon.workers):
            self._thread(f"edi-worker-{n}", self._work)

    def _thread(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _work(self) -> None:
        while True:
            item = self.work.get()
            if item is None:
                return
            self.events.put(("done", run_one(self.worker, item)))

    def _relay(self, channel: Any, n: int) -> None:
        """Hand units of work to one thread of a child process, report what it did.

        When more work waits than there are relays, the child gets its next
        unit while it still runs the last, so that it goes on at once instead
        of sleeping until this thread has been woken and scheduled (a pipe
        round trip cost the child ~0.1 ms of CPU a file, much of it being woken
        up). With less, a unit goes to a relay whose child is idle."""
        sent: list[Work] = []
        self.relayed[n] = sent
        while True:
            item: Work | None
            if not sent:
                item = self.work.get()  # nothing at the child: wait for work
                if item is None:
                    return
            else:
                item = self._waiting_unit() if len(sent) < RELAY_AHEAD else None
            try:
                if item is not None:
                    sent.append(item)
                    channel.send(item)
                    if len(sent) < RELAY_AHEAD:
                        continue  # another unit, if enough are waiting
                outcome = channel.recv()
            except (EOFError, OSError):  # the child is gone: the loop stops the daemon
                return  # the units stay in ``relayed``: shutdown hands their files back
            sent.pop(0)
            self.events.put(("done", outcome))

    def _waiting_unit(self) -> Work | None:
        """A unit off the queue if more wait than there are relays, else None.
        A stop sentinel goes back: a relay takes it once its child has nothing."""
        if self.work.qsize() <= len(self.relayed):
            return None
        try:
            item = self.work.get_nowait()
        except queue.Empty:
            return None
        if item is None:
            self.work.put(None)
        return item

    def _in_flight(self) -> int:
        return self.worker.in_flight() + sum(len(sent) for sent in self.relayed.values())

    def _hand_back_relayed(self) -> int:
        """At shutdown, once the children are gone: the files of their unfinished
        jobs back to the inbox (a claim the child never made is not there)."""
        count = 0
        for item in [item for sent in list(self.relayed.values()) for item in sent]:
            pname = item.pname or processing_name(item.name, item.job_id or "")
            if not os.path.lexists(self.claims.path(pname)):
                continue
            try:
                back = self.claims.hand_back(item.name, pname)
            except OSError as exc:
                logger.error(
                    "hand_back_failed", file=files.display_name(item.name), error=os_message(exc)
                )
                continue
            logger.info("handed_back", file=files.display_name(back.name), reason="shutdown")
            count += 1
        self.relayed.clear()
        return count

    # -- stopping ------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop intake, let jobs finish within the timeout, hand back the rest."""
        if self.stopping:
            notify.notify("STOPPING=1", self.environ, timeout=NOTIFY_WAIT)
            logger.info("daemon_stopping", in_flight=self._in_flight())
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
        for _ in self.threads:
            self.work.put(None)
        deadline = time.monotonic() + self.daemon.shutdown_timeout_seconds
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.counters["handed_back"] += self.worker.hand_back_unfinished()
        if self.pool is not None:
            if any(t.is_alive() for t in self.threads):  # jobs past the deadline
                self.pool.kill()
                for thread in self.threads:
                    thread.join(5.0)
            self.pool.stop(max(0.0, deadline - time.monotonic()))
            self.counters["handed_back"] += self._hand_back_relayed()
        for item in drain(self.events, 0):
            if item[0] == "done" and item[1].pending is not None:
                self.mover.add(item[1].pending)
        self._settle_parked(deadline)
        self.mover.flush()  # one last try; else resumed at the next start
        self._beat(stopping=True)
        self.claims.close()
        logger.info("daemon_stopped", handed_back=self.counters["handed_back"])

    # -- reporting -------------------------------------------------------------------

    def snapshot(self) -> dict[str, int]:
        """Counters and queue lengths, for the heartbeat and STATUS=."""
        tracked = self.tracker.counts() if self.tracker else {}
        return {
            **self.counters,
            "in_flight": self._in_flight(),
            "queue": self.work.qsize(),
            "tracked": tracked.get("tracked", 0),
            "held": tracked.get("held", 0),
            "pending_moves": len(self.pending),
            "parked": len(self.parked),
        }

    def _status_line(self) -> str:
        s = self.snapshot()
        if self.db_down is not None:
            waiting = s["tracked"] + s["queue"] + len(self.parked)
            return f"STATUS=database unavailable, intake paused ({waiting} waiting): {self.db_down}"
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
            if self.liveness is not None:
                self.liveness.beat()
        except Exception as exc:  # the database may be away for a moment
            logger.error("heartbeat_failed", error=repr(exc))
            if not is_permanent(exc) and not stopping:
                self._pause(f"database unavailable: {exc}")

    # -- the database unavailable: intake paused ------------------------------------

    def _pause(self, reason: str) -> None:
        """Stop taking files from the inbox until a probe reaches the database
        (logged once per pause; STATUS= shows the latest reason)."""
        if reason == self.db_down:
            return
        if self.db_down is not None:  # paused already: a new word for it
            self.db_down = self.last_error = reason
            return
        # Back off further if the last resume did not hold (a probe may pass
        # while jobs still fail: a disk with a few pages free).
        held = self.clock() - self._resumed_at > PROBE_MAX
        self._probe_delay = PROBE_FIRST if held else min(self._probe_delay * 2, PROBE_MAX)
        self._next_probe = self.clock() + self._probe_delay
        self.db_down = reason
        self.last_error = reason
        waiting = (self.tracker.counts()["tracked"] if self.tracker else 0) + len(self.parked)
        logger.error("intake_paused", reason=reason, waiting=waiting)
        notify.notify(self._status_line(), self.environ)

    def _settle_parked(self, deadline: float) -> None:
        """At shutdown, with the workers gone: the records parked jobs owe, if
        the database answers now. The rest stay claimed; the next start
        resumes them."""
        for item in [w for w in self.parked if w.owed is not None]:
            if time.monotonic() > deadline:
                break
            outcome = run_one(self.worker, item)
            if outcome.parked is not None:
                break  # still unavailable
            self.parked.remove(item)
            if outcome.pending is not None:
                self.mover.add(outcome.pending)
        if self.parked:
            logger.warning("parked_at_shutdown", jobs=len(self.parked), reason=self.db_down)

    def _paused(self, now: float) -> bool:
        """While paused: probe the database when due (the heartbeat write);
        once it answers, queue the parked jobs again and resume intake."""
        if now < self._next_probe:
            return True
        if self.heartbeat is not None:
            try:
                self.heartbeat(self.snapshot(), self.last_error)
            except Exception as exc:
                self._probe_delay = min(self._probe_delay * 2, PROBE_MAX)
                self._next_probe = self.clock() + self._probe_delay
                if is_permanent(exc):
                    logger.error("heartbeat_failed", error=repr(exc))
                else:
                    self._pause(f"database unavailable: {exc}")
                return True
        logger.info("intake_resumed", parked=len(self.parked), was=self.db_down)
        self.db_down = None
        self._resumed_at = now
        parked, self.parked = self.parked, []
        for item in parked:
            self.outstanding += 1
            self.work.put(item)
        return False


# -- the entry point (the CLI calls it) ------------------------------------------


def run(
    settings: Settings,
    *,
    once: bool = False,
    max_jobs: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    environ: Mapping[str, str] | None = None,
) -> int:
    """``edi-inbox run``: open the database, watch the inbox until SIGTERM/SIGINT.

    Returns the exit code: 0 after a clean stop, 1 when another daemon runs for
    this host, the inbox is missing, the watch cannot start, the database cannot
    be opened or the observer keeps dying. READY=1 is sent only once the
    database is open and the first scan is queued.
    """
    assert settings.paths.processing is not None
    host = socket.gethostname()
    try:  # first of all: a second daemon for this host must touch nothing
        lock = lock_host(settings.paths.processing, host)
    except (AlreadyRunning, OSError) as exc:
        message = str(exc) if isinstance(exc, EdiInboxError) else f"cannot lock: {os_message(exc)}"
        logger.error("cannot_start", error=message, host=host)
        print(f"edi-inbox: {message}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        return _serve(settings, host, once=once, max_jobs=max_jobs, clock=clock, environ=environ)
    finally:
        os.close(lock)


def _serve(
    settings: Settings,
    host: str,
    *,
    once: bool,
    max_jobs: int | None,
    clock: Callable[[], float],
    environ: Mapping[str, str] | None,
) -> int:
    """``run`` once this host's lock is held."""
    from . import store
    from .pipeline import Pipeline

    try:
        # SQLite's WAL is checkpointed by a thread of its own, not in the
        # commit of whichever worker crosses the mark (the others waited).
        db = store.open_database(settings.database_url, settings, checkpoints=False)
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
        return store.job_brief(db, job_id)

    def live_hosts() -> Collection[str]:
        return admin.live_hosts(settings, db)

    def interrupt_jobs(job_ids: list[str]) -> None:
        store.mark_interrupted(db, host, job_ids=job_ids)

    pipeline = Pipeline(settings, store.DatabaseRecorder(db), host=host)
    service = Service(
        settings,
        pipeline,
        clock=clock,
        environ=environ,
        heartbeat=heartbeat,
        lookup_job=lookup_job,
        live_hosts=live_hosts,
        interrupt_jobs=interrupt_jobs,
        final_path=functools.partial(store.record_final_path, db),
        host=host,
    )
    checkpointer = store.Checkpointer(db) if isinstance(db, store.SqliteStore) else None
    with _signals(service):
        try:
            if checkpointer is not None:
                checkpointer.start()
            code = service.run(once=once, max_jobs=max_jobs)
        finally:
            pipeline.close()
            if checkpointer is not None:
                checkpointer.stop()
    if code == EXIT_OK:
        with contextlib.suppress(Exception):
            store.remove_daemon(db, daemon_id)  # a clean stop: no stale heartbeat
    with contextlib.suppress(Exception):
        store.close_database(db)
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


def _safe_url(url: str) -> str:
    """A database URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    creds, at, where = rest.rpartition("@")
    if not at:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{where}"


__all__ = ["EXIT_FAILURE", "EXIT_OK", "Service", "run"]
