"""The daemon: watch the inbox, hand ready files to a worker pool, report.

One main thread owns the readiness ``Tracker`` (``watch.py``) and every
decision; the watchdog observer thread only enqueues events; worker threads
(``worker.py``) claim a file, run ``Pipeline.run`` on it and have it moved
(``outcomes.py``) — or, with ``[daemon] processes`` above 1, relay each unit
of work to a thread in a child process that does the same (``procs.py``).
The queue to the workers is bounded (``queue_limit``: a few units per worker,
those in flight counted): the loop polls the trackers only for as many ready
files as there is room, each inbox in turn taking an equal share, so a backlog
waits in the trackers (as names, beyond their window) and the main process's
memory does not grow with it. A file's life:

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

The daemon watches ``[paths] inbox`` and each partner's own inbox
(``[partners.NAME] inbox``), each a ``WatchedInbox`` (``inboxes.py``) with its
observer, tracker and processing folder; a file from a partner's inbox runs
as that partner's. The loop looks at each inbox's path every
``HEALTH_EVERY``: an inbox deleted and re-created is opened, watched and
scanned again (``inbox_replaced``); one missing for ``INBOX_GONE_AFTER``
seconds ends the daemon with exit 1.

While the database is unavailable (a job's record or the heartbeat cannot be
written) intake pauses: files stay in the inbox, jobs that could not be
recorded stay claimed (``worker.py``), the heartbeat write probes the database
with backoff (0.5 s → 30 s), STATUS= says "database unavailable, intake
paused", and once a probe succeeds the parked jobs are queued again and intake
resumes by itself.

Stopping follows rq and Supervisor: SIGTERM/SIGINT only set a flag; the loop
stops intake, gives jobs in flight ``shutdown_timeout_seconds`` to finish,
hands the files of the rest back to the inbox and returns 0. SIGHUP
(``systemctl reload``) re-reads the configuration (``prepare``): one with an
error, one changing what only a restart can change (``config.check_reload``),
one whose inboxes cannot be opened, or any reload while the database is
unavailable, is refused with the reason (``reload_refused``) and the running
one kept. Otherwise intake stops, the jobs in flight finish (however long:
nothing is handed back, so no job runs twice; a SIGTERM meanwhile turns the
reload into a stop), and ``run`` starts the service again with the new
settings in the same process, the host's lock and the database kept
(``RELOADING=1``, then ``READY=1``): new partners and changed rules apply from
the next file on. The signal handlers are installed once for the daemon's
life and set two events the services share, so no signal is lost between one
service and the next. ``run(once=True)``
is the burst mode (scan, process what is ready, return), ``max_jobs`` stops
after that many jobs and claims (or resumes) no more files than that; both let
tests drive the loop without sleeping.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import os
import queue
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from . import __version__, admin, files, limits, log, notify
from .claims import (
    Claim,
    Claims,
    LiveHosts,
    Liveness,
    LookupJob,
    host_folder,
    lanes,
    lock_host,
    new_job_id,
    os_message,
    owed_jobs,
    processing_folders,
    processing_name,
)
from .config import Settings, check_reload, load, safe_url
from .errors import AlreadyRunning, ConfigError, EdiInboxError, ShortOfResources, one_line
from .inboxes import WatchedInbox
from .outcomes import Mover, PendingMove
from .procs import ProcessPool
from .store.database import is_permanent
from .watch import (
    Fingerprint,
    InboxDenied,
    Ticket,
    Verdict,
    WatchError,
    drain,
    probe_inotify,
    scan,
)
from .worker import Outcome, Work, Worker, log_handed_back, run_one

logger = structlog.get_logger("edi_inbox.service")

EXIT_OK = 0
EXIT_FAILURE = 1
LOOP_WAIT_MAX = 0.25  # the longest the loop sleeps: a stop request waits no longer
STATUS_EVERY = 1.0
# How often the loop looks at the observer and the worker processes: a look is
# a few system calls, and a busy loop turns once per batch of events.
HEALTH_EVERY = 0.1
SHUT_RETRY_EVERY = 5.0  # seconds between tries at a partner's inbox the daemon may not open
# Units a relay keeps at its child thread: the one running and the next.
RELAY_AHEAD = 2
# Work handed out and not yet reported back, per worker thread (in the main
# process, or a relay's child thread): the queue holds no more than this, so
# a backlog waits in the trackers as names, not as queued units.
QUEUE_PER_WORKER = 4
QUEUE_MIN = 16
NOTIFY_WAIT = 2.0  # READY=1 and STOPPING=1 may wait this long for systemd; the rest never wait
COUNTERS = (
    "succeeded",
    "partial",
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
FINISHED = ("succeeded", "partial", "failed", "duplicate", "refused")
PROBE_FIRST = 0.5  # seconds between database probes while it is unavailable; doubled
PROBE_MAX = 30.0
ACKS_RETRY_FIRST = 1.0  # seconds before a job's owed acknowledgements are tried again; doubled
ACKS_RETRY_MAX = 60.0
RELOAD_RETRY_FIRST = 1.0  # seconds before a reload refused for the daemon's trouble is retried
RELOAD_RETRY_MAX = 30.0


class Signals:
    """What the signals asked for: ``stop`` (SIGTERM, SIGINT) and ``reload``
    (SIGHUP). Plain flags, set by the handlers and read by the loop, both in
    the main thread (tests set ``stop`` from another, which a flag allows)."""

    def __init__(self) -> None:
        self.stop = False
        self.reload = False


def _short_of_resources(exc: BaseException | None) -> bool:
    """``exc``, or an error that led to it, says the daemon is short of
    descriptors or memory (``files.short_of_resources``)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MemoryError | ShortOfResources):
            return True
        if isinstance(exc, OSError) and files.short_of_resources(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _claimed_size(claims: Claims, pname: str) -> int:
    """The size of a claimed file a unit resumes (0 if it cannot be told:
    the job says why when it runs)."""
    try:
        return os.stat(pname, dir_fd=claims.fd, follow_symlinks=False).st_size
    except OSError:
        return 0


def _size(ticket: Ticket) -> int:
    """The bytes a ticket's job will read: its file's size when it is to run
    (one refused or left unread reads nothing)."""
    fingerprint = ticket.fingerprint
    return fingerprint.size if ticket.verdict is Verdict.PROCESS and fingerprint else 0


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
        prepare: Callable[[Settings], tuple[Settings, Any]] | None = None,
        signals: Signals | None = None,
        open_uploads: Mapping[str, dict[str, tuple[int, Fingerprint]]] | None = None,
        counters: Mapping[str, int] | None = None,
        died_before: bool = True,
        recorded_hosts: LiveHosts | None = None,
        left_reported: Mapping[str, set[tuple[str, int]]] | None = None,
    ) -> None:
        self.settings = settings
        # Whether this host's last daemon died (it left its heartbeat row): the
        # claims it left count toward [daemon] max_crashes; after a clean stop
        # (or a reload) they are parked jobs', whatever their notes say.
        self.died_before = died_before
        # The hosts whose daemons left a heartbeat row (died): claims taken
        # over from another host count toward max_crashes only if it did.
        self.recorded_hosts = recorded_hosts
        # After a reload: the uploads the last configuration saw open (inbox ->
        # name -> opens), which no event of the new watch will tell.
        self.carried_opens = dict(open_uploads or {})
        self.open_at_stop: dict[str, dict[str, tuple[int, Fingerprint]]] = {}
        # Entries left in place and logged (inbox -> (name, inode)): a reload
        # does not log them again.
        self.left_reported = dict(left_reported or {})
        # For a reload: the new settings and their pipeline, checked, or
        # ConfigError (None: a SIGHUP is ignored).
        self.prepare = prepare
        self.reloaded: tuple[Settings, Any] | None = None  # to start again with
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
        self.liveness = (
            None
            if heartbeat is None
            else Liveness(admin.fresh_seconds(self.daemon.heartbeat_seconds))
        )
        self.lanes: dict[str, Claims] = lanes(settings, self.host, self.liveness)
        self.inboxes: dict[str, WatchedInbox] = {}  # lane -> its watch, once open
        # Partners' inboxes the daemon may not open (their owner's chmod), by
        # lane: why; tried again every SHUT_RETRY_EVERY, the others go on.
        self.shut: dict[str, str] = {}
        self._next_shut_try = 0.0
        self._once = False
        self.mover = Mover(
            settings.paths,
            clock=clock,
            final_path=final_path,
            outboxes=settings.partners.outboxes(),
            on_error=self._error,
        )
        self.worker = Worker(
            settings,
            pipeline,
            self.lanes,
            self.mover,
            host=self.host,
            on_error=self._error,
        )
        # SimpleQueue (C, no Python-level Condition): four hand-offs per file.
        self.events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.work: queue.SimpleQueue[Work | None] = queue.SimpleQueue()
        # The daemon's since it started: a reload's service goes on counting.
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0) | dict(counters or {})
        self.last_error: str | None = None
        self.threads: list[threading.Thread] = []
        self.pool: ProcessPool | None = None  # [daemon] processes > 1
        # relay thread -> the units at its child, oldest (the one running) first
        self.relayed: dict[int, list[Work]] = {}
        self.claim_failures: dict[tuple[str, str], int] = {}  # (lane, name) -> claims failed
        self.finished = 0
        self.outstanding = 0  # work items handed out and not yet reported back
        self.bytes_out = 0  # their files' sizes together (``max_bytes_in_flight``)
        # Units that wait for bytes in flight to end (``max_bytes_in_flight``),
        # oldest first; nothing else is queued before them.
        self.memory_wait: collections.deque[Work] = collections.deque()
        self.apart_out = False  # a file run apart is in flight ([daemon] max_crashes)
        self.max_jobs: int | None = None  # run(max_jobs=): no more jobs than this are started
        # ``workers`` threads in all, in this process or spread over the children
        self.queue_limit = max(QUEUE_MIN, QUEUE_PER_WORKER * self.daemon.workers)
        self._turn = 0  # which inbox takes first, in turn
        self.most_queued = 0  # the most units the queue held at once (tests, the bench)
        self.most_bytes = 0  # the most bytes in flight at once (tests)
        self.signals = signals or Signals()
        self.db_down: str | None = None  # why the database is unavailable: intake paused
        self.parked: list[Work] = []  # units to queue again once it is back
        # Units whose acknowledgements their folder could not take (a full disk,
        # an outbox turned unwritable): queued again every _acks_delay seconds.
        self.owing: list[Work] = []
        self.owing_jobs: set[str] = set()  # their jobs, queued or waiting
        # Units cut short by the daemon's trouble (``halted``: no room for the
        # orders), waiting among them; the files they are (lane, name) until
        # one runs to an end, and the error that trouble gave ``last_error``.
        self.halted = 0
        self.halted_files: set[tuple[str, str]] = set()
        self.halt_error: str | None = None
        self._acks_delay = ACKS_RETRY_FIRST
        self._next_acks_try = 0.0
        self._probe_delay = PROBE_FIRST
        self._next_probe = 0.0
        self._resumed_at = -PROBE_MAX - 1.0
        self._reload_at: float | None = None  # a refused reload tried again then
        # A worker process (or thread) died: its claims stay for the next
        # start, which counts them toward max_crashes
        self.worker_died = False
        self.stop_unrecorded = False  # the stop's heartbeat failed: the database is away
        self.draining = False  # stopping: what is queued is the workers' stop markers
        self.events_lost = False  # an observer's events were lost (overflow): rescan now
        self._reload_delay = RELOAD_RETRY_FIRST

    # -- control ---------------------------------------------------------------

    def request_stop(self, signum: int | None = None, frame: Any = None) -> None:
        """Signal handler: only sets a flag; the loop acts on it."""
        self.signals.stop = True

    def request_reload(self, signum: int | None = None, frame: Any = None) -> None:
        """SIGHUP handler: only sets a flag; the loop reloads."""
        self.signals.reload = True

    @property
    def stopping(self) -> bool:
        return self.signals.stop or self.reloaded is not None

    def _try_reload(self) -> None:
        """Read the configuration again; stop for a restart with it, or refuse
        it (logged, STATUS=) and go on with the running one."""
        self.signals.reload = False
        self._reload_at = None
        if self.prepare is None:
            logger.warning("reload_ignored", reason="this daemon cannot read its configuration")
            return
        notify.notify("RELOADING=1", self.environ)
        try:
            if self.db_down is not None:
                raise ConfigError(f"the database is unavailable ({self.db_down})")
            self.reloaded = self.prepare(self.settings)
        except Exception as exc:  # ConfigError, or whatever the new settings ran into
            # The daemon's own trouble (the database away, no descriptor or
            # memory free) is not the file's: the reload is tried again.
            retry = self.db_down is not None or _short_of_resources(exc)
            delay = self._reload_delay if retry else None
            message = f"reload refused, the running configuration is kept: {exc}"
            if delay is None:
                self._reload_delay = RELOAD_RETRY_FIRST
            else:
                message += f"; tried again in {delay:g} s"
                self._reload_at = self.clock() + delay
                self._reload_delay = min(RELOAD_RETRY_MAX, delay * 2)
            logger.error("reload_refused", error=str(exc), retry_in_seconds=delay)
            self.last_error = message
            notify.notify(f"READY=1\nSTATUS={message}", self.environ)
            return
        new = self.reloaded[0]
        logger.info("reloading", config=str(new.source) if new.source else None)
        self._tell_unwatched(new)

    def _tell_unwatched(self, new: Settings) -> None:
        """A reload that stops watching a partner's inbox (dropped, or moved)
        says what is left in it: nobody will take those files any more."""
        watched = {p.inbox for p in new.partners.with_inbox()}
        for lane, claims in self.lanes.items():
            inbox = claims.paths.inbox
            if not lane or inbox in watched or not claims.is_open:  # a shut one: unread
                continue
            try:
                left = [e.name for e in scan(claims.inbox_fd)]
            except OSError:
                continue
            if left:
                logger.warning(
                    "inbox_unwatched",
                    partner=lane,
                    inbox=str(inbox),
                    files=len(left),
                    reason="no longer watched after this reload; its files stay there",
                )

    @property
    def pending(self) -> list[PendingMove]:
        """Finished jobs whose files wait for a move that failed."""
        return self.mover.pending

    def _error(self, message: str) -> None:
        self.last_error = message

    # -- the loop --------------------------------------------------------------

    def run(self, *, once: bool = False, max_jobs: int | None = None) -> int:
        """Watch, process, and return an exit code (0: stopped cleanly).
        ``max_jobs``: stop after that many jobs, claiming no more files than
        that (the rest stay in the inbox, untouched)."""
        self.max_jobs, self._once = max_jobs, once
        try:
            self._open_inboxes()
        except (WatchError, OSError) as exc:
            for claims in self.lanes.values():
                claims.close()
            return self._fatal("cannot_start", exc)
        try:
            self._beat()  # before the first claim: other hosts must see this one alive
            try:
                self._start_workers()
            except RuntimeError as exc:
                return self._fatal("cannot_start_workers", exc)
            if not once:
                try:
                    for inbox in self.inboxes.values():
                        inbox.start_observer()
                except WatchError as exc:
                    return self._fatal("cannot_watch", exc)
            self._recover(start=True)
            self._remove_temporaries()
            self._rescan()
            notify.notify("READY=1\n" + self._status_line(), self.environ, timeout=NOTIFY_WAIT)
            logger.info(
                "daemon_ready",
                inbox=str(self.settings.paths.inbox),
                partner_inboxes=len(self.inboxes) - 1,
                observer=self.inboxes[""].observer_kind or "none (once)",
                workers=self.daemon.workers,
                host=self.host,
            )
            return self._loop(once=once, max_jobs=max_jobs)
        finally:
            self._shutdown()

    def _open_inboxes(self) -> None:
        """Open every lane's inbox and processing folder, and its watch; a
        partner's inbox the daemon may not open is shut (``self.shut``)."""
        for lane, claims in self.lanes.items():
            try:
                claims.open()
            except InboxDenied as exc:
                if not lane:
                    raise
                self.shut[lane] = f"partner {lane}'s {exc}: its files wait, the other inboxes go on"
                logger.error(
                    "inbox_shut",
                    partner=lane,
                    inbox=str(claims.paths.inbox),
                    error=str(exc),
                    reason="the daemon may not open it (its mode changed?); the other inboxes"
                    f" go on; tried again every {SHUT_RETRY_EVERY:.0f} s",
                )
                self.last_error = self.shut[lane]
                continue
            self._watch(lane, claims)

    def _watch(self, lane: str, claims: Claims) -> None:
        """``claims``' inbox (open) watched: its ``WatchedInbox``."""
        partner = self.settings.partners.get(lane) if lane else None
        self.inboxes[lane] = WatchedInbox(
            claims,
            self.daemon,
            partner,
            self.events.put,
            clock=self.clock,
            on_error=self._error,
            inotify_factory=self.inotify_factory,
        )
        # by the inbox's path: a reload may rename the partner whose inbox it is
        carried = self.carried_opens.get(str(claims.paths.inbox), {})
        self.inboxes[lane].tracker.carried = dict(carried)
        self.inboxes[lane].reported = set(self.left_reported.get(str(claims.paths.inbox), ()))

    def _open_shut(self, now: float) -> None:
        """Try again each partner's inbox shut at the start: one that opens now
        is watched, its claims left from before resumed, and scanned."""
        if not self.shut or now < self._next_shut_try:
            return
        self._next_shut_try = now + SHUT_RETRY_EVERY
        for lane in list(self.shut):
            claims = self.lanes[lane]
            try:
                claims.open()
            except (WatchError, OSError):
                continue
            if self.last_error == self.shut.pop(lane):  # said no more once it is back
                self.last_error = None
            self._watch(lane, claims)
            inbox = self.inboxes[lane]
            if not self._once:
                try:
                    inbox.start_observer()
                except WatchError as exc:  # check_observer tries again
                    logger.error("observer_restart_failed", error=str(exc))
            logger.info("inbox_back", inbox=str(claims.paths.inbox), partner=lane)
            self._recover(start=True, only=lane)
            inbox.rescan()

    def _remove_temporaries(self) -> None:
        """At start: the hidden temporaries of writes a stop cut short (a
        SIGKILL while an error report or a 997 was written), in every folder
        the daemon writes files into; another host's, still being written,
        are left alone (``files.remove_temporaries``)."""
        folders = {
            path
            for claims in self.lanes.values()
            for name, path in claims.paths.folders().items()
            if name not in ("inbox", "processing")  # the claims' own
        }
        folders.update(self.settings.partners.outboxes().values())
        for folder in sorted(folders):
            try:
                removed = files.remove_temporaries(folder)
            except OSError as exc:  # a folder it cannot read: its writes will say so
                logger.warning("temporaries_not_removed", folder=str(folder), error=os_message(exc))
                continue
            if removed:
                logger.info("temporaries_removed", folder=str(folder), files=len(removed))

    def _fatal(self, event: str, exc: BaseException) -> int:
        message = str(exc) if isinstance(exc, EdiInboxError) else os_message(exc)
        logger.error(event, error=message)
        self.last_error = message
        return EXIT_FAILURE

    def _loop(self, *, once: bool, max_jobs: int | None) -> int:
        now = self.clock()
        next_rescan = now + self.daemon.rescan_seconds
        next_heartbeat = now + self.daemon.heartbeat_seconds
        ping_every = notify.watchdog_interval(self.environ)
        next_ping = now
        next_status = now + STATUS_EVERY
        next_health = now
        while not self.stopping:
            if self.signals.reload and not once:
                self._try_reload()
                continue
            now = self.clock()
            wait = LOOP_WAIT_MAX
            # With the queue full, what is due waits: an outcome wakes the loop.
            dues = [i.tracker.due() for i in self.inboxes.values()] if self._room() else []
            owed_due = self._next_acks_try if self.owing else None
            for due in (*dues, self.mover.next_due(), owed_due, self._reload_at):
                if due is not None:
                    wait = min(wait, max(0.0, due - now))
            for item in drain(self.events, wait):
                self._handle(item)
            if self.db_down is None or not self._paused(now):
                self._take()
            now = self.clock()
            self.mover.retry_due(now)
            self._retry_owed_acks(now)
            if self._reload_at is not None and now >= self._reload_at:
                self.signals.reload = True
            if now >= next_rescan or self.events_lost:
                self.events_lost = False
                self._rescan()
                if self.db_down is None:
                    self._recover(start=False)
                next_rescan = now + self.daemon.rescan_seconds
            if now >= next_health:
                if not once and not self._follow_inboxes(now):
                    return EXIT_FAILURE
                self._open_shut(now)
                if self.pool is not None and not self.pool.alive():
                    # Killed (out of memory?) mid-job: its claims stay, and
                    # the next start resumes them as after the daemon's death
                    # (``[daemon] max_crashes`` counts it).
                    logger.error("worker_process_died")
                    self.last_error = "a worker process died"
                    self.worker_died = True
                    return EXIT_FAILURE
                if not all(t.is_alive() for t in self.threads):  # its claim resumes at the start
                    logger.error("worker_thread_died")
                    self.last_error = "a worker thread died"
                    self.worker_died = True
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
        waiting = sum(inbox.tracker.waiting() for inbox in self.inboxes.values())
        return self.outstanding == 0 and waiting == 0 and not self.pending and not self.memory_wait

    def healthy(self) -> bool:
        """Observers (if any), every worker (and worker process) alive: the
        condition for WATCHDOG=1."""
        if not all(inbox.alive() for inbox in self.inboxes.values()):
            return False
        if self.pool is not None and not self.pool.alive():
            return False
        return all(t.is_alive() for t in self.threads)

    # -- observer, scans, claims left behind ------------------------------------------

    def _follow_inboxes(self, now: float) -> bool:
        """Each inbox followed (re-created: watched again) and its observer
        alive (restarted). False: the shared inbox is gone for good, or an
        observer keeps dying (exit 1)."""
        for inbox in self.inboxes.values():
            gone = inbox.follow(now)
            if gone is not None and not inbox.lane:  # the shared inbox: nothing to do
                logger.error("inbox_gone", inbox=str(inbox.path), error=gone)
                self.last_error = gone
                notify.notify(f"STATUS={gone}; exiting", self.environ)
                return False
            if gone is not None:  # a partner's: it waits, the others go on
                said = f"{gone}; its files wait until it is back, the other inboxes go on"
                logger.error("inbox_gone", inbox=str(inbox.path), partner=inbox.lane, error=said)
                self.last_error = said
            if not inbox.check_observer(now):
                return False
        return True

    def _rescan(self) -> None:
        """Feed every name in every inbox to its tracker (start-up, overflow, polling)."""
        for inbox in self.inboxes.values():
            inbox.rescan()

    def _died_hosts(self) -> Collection[str] | None:
        """The hosts that left a heartbeat row, or None if that cannot be
        known (each counted as dead)."""
        if self.recorded_hosts is None:
            return None
        try:
            return self.recorded_hosts()
        except Exception as exc:  # the database away
            logger.warning("hosts_unknown", error=repr(exc))
            return None

    def _recover(self, *, start: bool, only: str | None = None) -> None:
        """Queue claims left behind in each lane's processing folder (``only``:
        that lane's): at start this host's own (and the flat layout's); always
        those of hosts without a fresh heartbeat. A shut lane's wait."""
        taken: list[str] = []  # the jobs of the files taken over
        # The hosts that died (None: not known), looked up at the first takeover.
        died: Collection[str] | None = None
        looked = False
        found: list[Work] = []
        for lane, claims in self.lanes.items():
            if lane in self.shut or (only is not None and lane != only):
                continue
            leftovers: Iterable[Claim] = claims.leftovers(
                start=start, lookup_job=self.lookup_job, live_hosts=self.live_hosts
            )
            unstarted = self._unstarted()
            if unstarted is not None:  # the rest not taken (the generator moves each in)
                leftovers = itertools.islice(leftovers, max(0, unstarted - len(found)))
            try:
                for claim in leftovers:  # each is in this host's folder already
                    self.counters["taken_over" if claim.taken_from else "resumed"] += 1
                    # A job parked before this start (here, or on a host taken
                    # over) owes only its record (its 997 went out): written,
                    # not run again.
                    owed = claims.owed(claim.retry_of) if claim.retry_of else None
                    if claim.taken_from and claim.retry_of and owed is None:
                        taken.append(claim.retry_of)
                    size = 0 if owed is not None else _claimed_size(claims, claim.pname)
                    resumed = self.died_before  # left by a daemon that died (max_crashes)
                    if claim.taken_from is not None:
                        if not looked:
                            died, looked = self._died_hosts(), True
                        resumed = died is None or claim.taken_from in died
                    found.append(
                        Work(
                            claim.name,
                            pname=claim.pname,
                            job_id=claim.job_id,
                            retry_of=claim.retry_of,
                            owed=owed,
                            lane=lane,
                            size=size,
                            resumed=resumed,
                        )
                    )
            except OSError as exc:
                logger.error("recover_failed", error=os_message(exc))
                self.last_error = f"cannot read {claims.paths.processing}: {os_message(exc)}"
        self._set_apart(found)
        for work in found:
            self._admit(work)
        if start:
            self._tell_orphaned()
        if taken and self.interrupt_jobs is not None:
            try:
                self.interrupt_jobs(taken)
            except Exception as exc:  # a record's detail: the files are taken over all the same
                logger.error("interrupt_failed", jobs=taken, error=repr(exc))

    def _set_apart(self, resumed: list[Work]) -> None:
        """Mark the claims to run apart: a file that reached ``max_crashes``
        deaths in a row is set aside only if it ran alone at the last (the
        daemon cannot tell which of several files in flight killed it); one
        that ran beside others, or did not run, runs alone first."""
        counted = []
        for work in resumed:
            if work.resumed and work.owed is None and work.pname is not None:
                try:
                    st = os.stat(work.pname, dir_fd=self.lanes[work.lane].fd, follow_symlinks=False)
                except OSError:
                    continue  # the worker's to tell
                counted.append((work, *self.lanes[work.lane].deaths(st, work.retry_of)))
        ran = sum(r for _, _, r in counted)
        for work, deaths, was_running in counted:
            if deaths >= self.daemon.max_crashes and not (was_running and ran == 1):
                work.apart = True
                logger.warning(
                    "run_apart",
                    file=files.display_name(work.name),
                    job_id=work.job_id,
                    deaths=deaths,
                    beside=ran - was_running,
                )

    def _tell_orphaned(self) -> None:
        """Claims in the processing folder of a partner no longer configured:
        no lane resumes them (run from the shared inbox, a file from that
        partner's folder would skip its sender check). Said at every start,
        and counted by ``status``, until the partner is configured again (they
        are resumed) or an operator moves them."""
        for folder, owner in processing_folders(self.settings).items():
            if owner is not None:
                continue
            held: list[str] = []
            with contextlib.suppress(OSError), os.scandir(folder) as hosts:
                for host in hosts:
                    if host.is_dir(follow_symlinks=False) and not host.name.startswith("."):
                        held += [n for n in os.listdir(host.path) if not n.startswith(".")]
            if held:
                message = (
                    f"{len(held)} file(s) claimed in {folder}, the processing folder of a"
                    " partner no longer configured, are not run: configure the partner"
                    " again, or move them into an inbox"
                )
                logger.warning("orphaned_claims", folder=str(folder), files=len(held))
                self.last_error = message

    # -- events, tickets, outcomes ------------------------------------------------------

    def _handle(self, item: Any) -> None:
        kind = item[0]
        if kind == "fs":
            inbox = self.inboxes.get(item[3])
            if inbox is not None:
                inbox.tracker.event(item[1], item[2])
        elif kind == "lost":  # the kernel's event queue overflowed: what it dropped is found
            logger.warning("inbox_events_lost", inbox=item[1], action="rescan")
            self.events_lost = True
        elif kind == "done":
            self._on_outcome(item[1])

    def _room(self) -> int:
        """Units the queue may take now (``queue_limit`` less those out), and
        with ``max_jobs`` no more than the jobs not yet started: those
        finished, out, or parked to be queued again all count."""
        room = self.queue_limit - self.outstanding - len(self.memory_wait)
        unstarted = self._unstarted()
        return max(0, room if unstarted is None else min(room, unstarted))

    def _unstarted(self) -> int | None:
        """The jobs ``max_jobs`` leaves to start (None: no limit): those
        finished, out, waiting for memory, or parked to be queued again have
        started."""
        if self.max_jobs is None:
            return None
        waiting = len(self.memory_wait) + len(self.parked) + len(self.owing)
        started = self.finished + self.outstanding + waiting
        return max(0, self.max_jobs - started)

    def _take(self) -> None:
        """Queue what the trackers find ready, no more than there is room for,
        each inbox in turn taking an equal share (the first in turn changes
        every time), so one partner's backlog does not hold another's files."""
        while self.memory_wait and self._fits(self.memory_wait[0]):
            self._queue(self.memory_wait.popleft())
        room = self._room()
        inboxes = list(self.inboxes.values())
        if not room or not inboxes or self.memory_wait:
            return
        start = self._turn % len(inboxes)
        self._turn += 1
        share = max(1, room // len(inboxes))
        for inbox in inboxes[start:] + inboxes[:start]:
            room = self._room()
            if not room:
                break
            for ticket in inbox.tracker.poll(limit=min(share, room)):
                if not inbox.left_in_place(ticket):
                    size = _size(ticket)
                    self._admit(
                        Work(ticket.name, ticket, job_id=new_job_id(), lane=inbox.lane, size=size)
                    )

    def _fits(self, work: Work) -> bool:
        """Whether ``work`` may run now: nothing beside a file run apart, a
        file run apart with nothing else in flight, any other file's bytes
        and those in flight within ``max_bytes_in_flight``, or nothing in
        flight."""
        if self.apart_out:
            return False
        if work.apart:
            return not self.outstanding
        return not self.bytes_out or self.bytes_out + work.size <= self.daemon.max_bytes_in_flight

    def _admit(self, work: Work) -> None:
        """Queue ``work`` now, or after those waiting (for memory, for a file
        run apart), oldest first."""
        if self.memory_wait or not self._fits(work):
            self.memory_wait.append(work)
        else:
            self._queue(work)

    def _queue(self, work: Work) -> None:
        self.apart_out |= work.apart
        self.outstanding += 1
        self.bytes_out += work.size
        self.most_queued = max(self.most_queued, self.outstanding)
        self.most_bytes = max(self.most_bytes, self.bytes_out)
        self.work.put(work)

    def _on_outcome(self, outcome: Outcome) -> None:
        self.outstanding -= 1
        if not self.outstanding:  # a file run apart ended (nothing runs beside it)
            self.apart_out = False
        self.bytes_out -= outcome.size
        if outcome.error is not None:  # told by a worker process
            self.last_error = outcome.error
        if outcome.status in ("unacknowledged", "halted") and outcome.parked is not None:
            self._owe_acks(outcome.parked)  # claimed, run again after a pause
        elif outcome.parked is not None:  # unrecorded: the file stays claimed
            self.parked.append(outcome.parked)
            self._pause(outcome.error or "a job could not be recorded")
        self._follow_halted(outcome)
        if outcome.job_id in self.owing_jobs and outcome.status != "unacknowledged":
            self.owing_jobs.discard(outcome.job_id)  # written at last (or parked for the database)
            if not self.owing_jobs:
                self._acks_delay = ACKS_RETRY_FIRST
        if outcome.status in FINISHED:
            self.finished += 1
            if not self.owing and not self.owing_jobs:  # the next trouble waits afresh
                self._acks_delay = ACKS_RETRY_FIRST
        if outcome.status in (*FINISHED, "taken", "changed", "lost"):
            self.counters[outcome.status] += 1
        inbox = self.inboxes.get(outcome.lane)
        if inbox is not None and outcome.ticket_ino is not None:
            delay = None
            key = (outcome.lane, outcome.name)
            if outcome.status == "error":
                failures = self.claim_failures.get(key, 0) + 1
                self.claim_failures[key] = failures
                delay = min(60.0, 0.5 * 2**failures)
            else:
                self.claim_failures.pop(key, None)
            inbox.tracker.release(
                outcome.name, ino=outcome.ticket_ino, recheck=outcome.recheck, delay=delay
            )
        elif inbox is not None and outcome.recheck:
            # A resumed or parked unit handed its file back: the name may be
            # a new upload's meanwhile, watched (or queued) already.
            inbox.tracker.look(outcome.name)
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
        """Run units of work until the stop sentinel. What ``run_one`` cannot
        catch (memory exhausted while it handles an error) ends the thread; the
        loop then stops the daemon (exit 1, systemd starts it again)."""
        try:
            while True:
                item = self.work.get()
                if item is None:
                    return
                self.events.put(("done", run_one(self.worker, item)))
        except BaseException as exc:  # told by the loop (exit 1), not a traceback
            with contextlib.suppress(BaseException):
                logger.error("worker_thread_failed", error=repr(exc))

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
        jobs back to the inbox (a claim the child never made is not there). A
        parked job's stays claimed, as does one whose child had kept what it
        owes (its 997 may have gone out): the next start writes that."""
        count = 0
        for item in [item for sent in list(self.relayed.values()) for item in sent]:
            claims = self.lanes[item.lane]
            if item.owed is not None or (item.job_id and claims.owed(item.job_id)):
                continue
            pname = item.pname or processing_name(item.name, item.job_id or "")
            if not os.path.lexists(claims.path(pname)):
                continue
            try:
                back = claims.hand_back(item.name, pname, ran=item.job_id)
            except OSError as exc:
                logger.error(
                    "hand_back_failed",
                    file=files.display_name(item.name),
                    job_id=item.job_id,
                    error=os_message(exc),
                )
                continue
            log_handed_back(item.name, back.name, item.job_id, "shutdown")
            count += 1
        self.relayed.clear()
        return count

    # -- stopping ------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop intake, let jobs finish within the timeout, hand back the rest."""
        reloading = self.reloaded is not None and not self.signals.stop
        if reloading:
            logger.info("daemon_stopping", in_flight=self._in_flight(), reason="reload")
        elif self.stopping:
            notify.notify("STOPPING=1", self.environ, timeout=NOTIFY_WAIT)
            logger.info("daemon_stopping", in_flight=self._in_flight())
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
        self.draining = True  # the queue holds only those stop markers now
        # A reload lets every job in flight finish (nothing handed back, no job
        # run twice), unless a SIGTERM comes meanwhile: then, as for a stop.
        if reloading:
            self._drain_for_reload()
        self._stop_watching()
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
            if not self.worker_died:
                self.counters["handed_back"] += self._hand_back_relayed()
        for item in drain(self.events, 0):
            if item[0] == "done" and item[1].pending is not None:
                self.mover.add(item[1].pending)
        self._settle_parked(deadline)
        self.mover.flush()  # one last try; else resumed at the next start
        if self.db_down is not None and not reloading:  # a beat would wait for it again
            self.stop_unrecorded = True
        else:
            self._beat(stopping=not reloading)
        for claims in self.lanes.values():
            claims.close()

    def _stop_watching(self) -> None:
        """Stop the observers (watching on while the jobs in flight finished,
        taking nothing), count the events they queued, and keep what is open
        now for the next configuration's (a reload): an upload closed during
        the drain, or whose close is still queued, is not carried open (it
        would wait out the grace)."""
        for inbox in self.inboxes.values():
            inbox.stop_observer()
        outcomes = []
        for item in drain(self.events, 0):
            if item[0] == "fs":
                self._handle(item)
            else:
                outcomes.append(item)  # the jobs', for the drain that follows
        for item in outcomes:
            self.events.put(item)
        self.open_at_stop = {str(i.path): i.tracker.open_uploads() for i in self.inboxes.values()}
        self.left_reported = {str(i.path): i.reported for i in self.inboxes.values()}

    def _drain_for_reload(self) -> None:
        """Wait for the jobs in flight, however long (an ERP retrying), unless a
        SIGTERM comes; meanwhile the daemon still beats and pings the watchdog
        (systemd would kill a silent one; other hosts would take its claims),
        and STATUS= says what the reload waits for."""
        ping_every = notify.watchdog_interval(self.environ)
        next_tell = 0.0
        while not self.signals.stop and any(t.is_alive() for t in self.threads):
            now = self.clock()
            if now >= next_tell:
                waiting = f"STATUS=reloading: waiting for {self._in_flight()} job(s) in flight"
                notify.notify(waiting, self.environ)
                if ping_every:
                    notify.notify("WATCHDOG=1", self.environ)
                self._beat()
                next_tell = now + min(ping_every or STATUS_EVERY, self.daemon.heartbeat_seconds)
            for thread in self.threads:
                thread.join(LOOP_WAIT_MAX / max(1, len(self.threads)))

    # -- reporting -------------------------------------------------------------------

    def snapshot(self) -> dict[str, int]:
        """Counters and queue lengths, for the heartbeat and STATUS=."""
        tracked: dict[str, int] = {}
        for inbox in self.inboxes.values():
            for key, count in inbox.tracker.counts().items():
                tracked[key] = tracked.get(key, 0) + count
        self.counters["observer_restarts"] = sum(i.restarts for i in self.inboxes.values())
        return {
            **self.counters,
            "in_flight": self._in_flight(),
            "queue": 0 if self.draining else self.work.qsize(),
            "tracked": tracked.get("tracked", 0),
            "held": tracked.get("held", 0),
            "open": tracked.get("open", 0),  # open for writing past the grace
            "pending_moves": len(self.pending),
            "parked": len(self.parked),
            "acks_owed": len(self.owing_jobs),
            "halted": self.halted,  # cut short by the daemon's trouble, run again later
            **self._waiting(),
            "bytes_in_flight": self.bytes_out,
        }

    def _waiting(self) -> dict[str, int]:
        """What waits to be queued: for ``max_bytes_in_flight`` (memory), or
        for files run apart (``run_apart``: those that reached max_crashes
        beside others, run or to run alone; ``waiting_for_apart``: the
        files queued behind them)."""
        apart = sum(w.apart for w in self.memory_wait)
        waiting = len(self.memory_wait)
        if not (apart or self.apart_out):
            return {"waiting_for_memory": waiting, "run_apart": 0, "waiting_for_apart": 0}
        return {
            "waiting_for_memory": 0,
            "run_apart": self.apart_out + apart,
            "waiting_for_apart": waiting - apart,
        }

    def _status_line(self) -> str:
        s = self.snapshot()
        if self.db_down is not None:
            waiting = s["tracked"] + s["queue"] + len(self.parked)
            return f"STATUS=database unavailable, intake paused ({waiting} waiting): {self.db_down}"
        owing = f"; {s['acks_owed']} owing their 997 (folder unwritable)" if s["acks_owed"] else ""
        memory, halted = s["waiting_for_memory"], s["halted"]
        waits = f", {memory} waiting for max_bytes_in_flight" if memory else ""
        waits += f", {halted} cut short by the daemon's trouble" if halted else ""
        apart, behind = s["run_apart"], s["waiting_for_apart"]
        waits += f", {apart} run one at a time (in flight at each death)" if apart else ""
        waits += f", {behind} waiting for them" if behind else ""
        return (
            f"STATUS=queue {s['queue']}, in flight {s['in_flight']}{waits}, held {s['held']}; "
            f"done {s['succeeded']}, partial {s['partial']}, duplicate {s['duplicate']}, "
            f"failed {s['failed']}, "
            f"refused {s['refused']}{owing}"
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
            if stopping:  # the stop's other writes would wait the same: not tried
                self.stop_unrecorded = True
            elif not is_permanent(exc):
                self._pause(f"database unavailable: {exc}")

    # -- the database unavailable: intake paused ------------------------------------

    def _pause(self, reason: str) -> None:
        """Stop taking files from the inbox until a probe reaches the database
        (logged once per pause; STATUS= shows the latest reason)."""
        reason = one_line(reason)  # a driver's error spans lines; STATUS= is one
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
        waiting = self.snapshot()["tracked"] + len(self.parked)
        logger.error("intake_paused", reason=reason, waiting=waiting)
        notify.notify(self._status_line(), self.environ)

    def _settle_parked(self, deadline: float) -> None:
        """At shutdown, with the workers gone: the records parked jobs owe, if
        the database answers now. The rest stay claimed; the next start
        resumes them."""
        # (Those halted by the daemon's trouble owe no record: they run at the next start.)
        for item in [w for w in (*self.owing, *self.parked) if w.owed is not None]:
            if time.monotonic() > deadline:
                break
            outcome = run_one(self.worker, item)
            if outcome.parked is not None:
                if item in self.parked:
                    break  # the database is still unavailable
                continue  # its acknowledgements' folder still cannot take them
            for waiting in (self.owing, self.parked):
                if item in waiting:
                    waiting.remove(item)
            if outcome.pending is not None:
                self.mover.add(outcome.pending)
        if self.parked or self.owing:
            jobs = len(self.parked) + len(self.owing)
            logger.warning("parked_at_shutdown", jobs=jobs, reason=self.db_down or self.last_error)

    # -- acknowledgements owed -------------------------------------------------------

    def _owe_acks(self, item: Work) -> None:
        """A job's acknowledgements could not be written, or the daemon's
        trouble cut it short (``halted``: no room in the order outbox): its
        unit waits, claimed, with the others owing, for the next try (the
        delay doubles, up to ``ACKS_RETRY_MAX``, while any stays owed);
        intake goes on."""
        if not self.owing:
            self._next_acks_try = self.clock() + self._acks_delay
        self.owing.append(item)
        if item.job_id is not None:
            self.owing_jobs.add(item.job_id)

    def _follow_halted(self, outcome: Outcome) -> None:
        """Count the units cut short by the daemon's trouble while they wait,
        and once each of their files ran to an end (the trouble over), say
        that trouble no more."""
        key = (outcome.lane, outcome.name)
        if outcome.status == "halted" and outcome.parked is not None:
            self.halted += 1
            self.halted_files.add(key)
            self.halt_error = outcome.error or self.last_error
        elif key in self.halted_files:
            self.halted_files.discard(key)
            if not self.halted_files and self.last_error == self.halt_error:
                self.last_error = self.halt_error = None

    def _retry_owed_acks(self, now: float) -> None:
        if not self.owing or now < self._next_acks_try:
            return
        owing, self.owing = self.owing, []
        self.halted = 0  # queued again: counted as queued, then in flight
        for item in owing:
            self.outstanding += 1
            self.work.put(item)
        self._acks_delay = min(self._acks_delay * 2, ACKS_RETRY_MAX)

    def _paused(self, now: float) -> bool:
        """While paused: probe the database when due (the heartbeat write);
        once it answers, queue the parked jobs again and resume intake."""
        if now < self._next_probe:
            return True
        if self.heartbeat is not None:
            try:
                self.heartbeat(self.snapshot(), self.last_error)
                if self.liveness is not None:  # the claim checks of the jobs queued below
                    self.liveness.beat()
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
        if self._reload_at is not None:  # a reload refused meanwhile: now
            self._reload_at = now
        parked, self.parked = self.parked, []
        for item in parked:
            self._admit(item)
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
    be opened, an ERP's URL or token file cannot be used or the observer keeps
    dying. READY=1 is sent only once the
    database is open and the first scan is queued.
    """
    assert settings.paths.processing is not None
    host = socket.gethostname()
    # Before any descriptor is opened; the worker processes inherit it.
    short = limits.raise_open_files(settings.daemon.workers)
    if short is not None:
        logger.error("cannot_start", error=short, host=host)
        print(f"edi-inbox: {short}", file=sys.stderr)
        return EXIT_FAILURE
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
        owed = owed_jobs(settings, host)
        interrupted = store.mark_interrupted(db, host, claimed_only=True, owed=owed)
        died = _died(settings, host, store.take_left_behind(db, host))
    except Exception as exc:
        logger.error("cannot_open_database", url=safe_url(settings.database_url), error=str(exc))
        return EXIT_FAILURE
    _tell_interrupted(interrupted, "a previous run stopped while it ran", logger.warning)
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
            heartbeat_seconds=settings.daemon.heartbeat_seconds,
        )

    def lookup_job(job_id: str) -> Mapping[str, Any] | None:
        return store.job_brief(db, job_id)

    def live_hosts() -> Collection[str]:
        return admin.live_hosts(settings, db)

    def recorded_hosts() -> Collection[str]:
        return admin.recorded_hosts(db)

    def interrupt_jobs(job_ids: list[str]) -> None:
        taken = store.mark_interrupted(db, host, job_ids=job_ids)
        _tell_interrupted(taken, "its host went quiet; its file was taken over", logger.info)

    def interrupt_own(reason: str) -> None:
        """The jobs this host left running become interrupted, once none of
        its workers runs (a stop, a reload's drain); the database away: the
        next start marks them."""
        try:
            owed = owed_jobs(settings, host)
            interrupted = store.mark_interrupted(db, host, claimed_only=True, owed=owed)
        except Exception as exc:
            logger.warning("interrupt_failed", error=repr(exc))
        else:
            _tell_interrupted(interrupted, reason, logger.info)

    def prepare(running: Settings) -> tuple[Settings, Pipeline]:
        """A reload's settings, read again and checked: what only a restart
        can change, every inbox and processing folder opened (and closed), the
        pipeline built (its ERP URLs). ConfigError (or OSError) if not."""
        new = load(running.source)
        check_reload(running, new)
        for lane, claims in lanes(new, host).items():
            try:
                claims.open()
            except (WatchError, OSError) as exc:
                if lane and isinstance(exc, InboxDenied):
                    continue  # the new service shuts it, and tries it again
                said = str(exc) if isinstance(exc, WatchError) else os_message(exc)
                raise ConfigError(
                    f"{f'[partners.{lane}]' if lane else '[paths]'}: cannot use the inbox"
                    f" {claims.paths.inbox} with the processing folder"
                    f" {claims.paths.processing}: {said}"
                ) from None
            finally:
                claims.close()
        if new.daemon.observer == "inotify":  # a new inbox the kernel will not let it watch
            watched = set()
            if running.daemon.observer == "inotify":  # else each inbox may be polled now
                watched = {p.inbox for p in running.partners.with_inbox()} | {running.paths.inbox}
            inboxes = [new.paths.inbox, *(p.inbox for p in new.partners.with_inbox())]
            try:
                probe_inotify([i for i in inboxes if i is not None and i not in watched])
            except WatchError as exc:
                raise ConfigError(str(exc)) from None
        return new, Pipeline(new, store.DatabaseRecorder(db), host=host)

    try:  # its ERPs: a URL or token file that cannot be used stops the start
        pipeline = Pipeline(settings, store.DatabaseRecorder(db), host=host)
    except ConfigError as exc:
        logger.error("cannot_start", error=str(exc), host=host)
        print(f"edi-inbox: {exc}", file=sys.stderr)
        store.close_database(db)
        return EXIT_FAILURE
    signals = Signals()
    checkpointer = store.Checkpointer(db) if isinstance(db, store.SqliteStore) else None
    if checkpointer is not None:
        checkpointer.start()
    opened: dict[str, dict[str, tuple[int, Fingerprint]]] = {}  # carried through a reload
    left: dict[str, set[tuple[str, int]]] = {}  # and the entries left in place, logged
    counters: dict[str, int] = {}
    try:
        with _signals(signals):
            while True:  # once more per reload (SIGHUP), with the settings read again
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
                    prepare=prepare,
                    signals=signals,
                    open_uploads=opened,
                    left_reported=left,
                    counters=counters,
                    died_before=died,
                    recorded_hosts=recorded_hosts,
                )
                died = False  # a reload's next service follows a clean drain
                try:
                    code = service.run(once=once, max_jobs=max_jobs)
                finally:
                    pipeline.close()
                if service.reloaded is None:
                    break
                opened, counters = service.open_at_stop, service.counters
                left = service.left_reported
                if max_jobs is not None:  # those ended count toward it after the reload too
                    max_jobs -= service.finished
                settings, pipeline = service.reloaded
                if code != EXIT_OK or signals.stop:  # a SIGTERM while the reload drained
                    pipeline.close()
                    break
                # No job of the drained service runs now (workers killed
                # during the drain handed theirs back): ended, not left running.
                interrupt_own("handed back at the reload")
                log.configure(settings.log.level, settings.log.format, stream=sys.stdout)
    finally:
        if checkpointer is not None:
            checkpointer.stop()
    # The jobs handed back or parked at the stop are interrupted now, not at
    # the next start: meanwhile no job shows running with no daemon to run it.
    # Not if the stop's heartbeat could not be written (the database locked
    # or away): each write would wait as long, past systemd's TimeoutStopSec.
    if not service.stop_unrecorded:
        if code == EXIT_OK:
            interrupt_own("handed back or parked at the stop")
            with contextlib.suppress(Exception):
                store.remove_daemon(db, daemon_id)  # a clean stop: no stale heartbeat
        else:  # its row stays, marked exited; the next start counts its claims
            why = f"the daemon exited with status {code}"
            interrupt_own(f"{why}: {service.last_error}" if service.last_error else why)
            exited = {"exited": code, "crashed": int(service.worker_died)}
            with contextlib.suppress(Exception):  # only after a death (store.died)
                heartbeat(exited, f"{why}: {service.last_error}" if service.last_error else why)
    elif not service.worker_died:  # said beside the lock: the next start counts no death
        with contextlib.suppress(OSError):
            _stop_note(settings, host).write_text(f"{daemon_id}\n")
    with contextlib.suppress(Exception):
        store.close_database(db)
    logger.info("daemon_stopped", handed_back=service.counters["handed_back"])
    return code


def _stop_note(settings: Settings, host: str) -> Path:
    """``processing/.<host>.stopped``: a stop (or an exit on the daemon's own
    failure) the database could not record (locked, away)."""
    assert settings.paths.processing is not None
    return settings.paths.processing / f".{host_folder(host)}.stopped"


def _died(settings: Settings, host: str, left: dict[str, bool]) -> bool:
    """Whether one of this host's earlier daemons died: it ``left`` a
    heartbeat row telling a death (``store.died``), unless it noted beside
    the lock that it stopped when the database could not record it (the note
    names that daemon and is used up; another's death still counts)."""
    note = _stop_note(settings, host)
    try:
        stopped = note.read_text().strip()
        note.unlink()
    except OSError:
        stopped = ""
    return any(death for daemon_id, death in left.items() if daemon_id != stopped)


def _tell_interrupted(
    interrupted: list[dict[str, Any]], reason: str, level: Callable[..., Any]
) -> None:
    """``job_interrupted`` for each job just marked so, under its ``job_id`` and
    ``file`` (the journal follows a job by them), then ``jobs_interrupted``,
    how many."""
    for job in interrupted:
        level("job_interrupted", job_id=job["job_id"], file=job["file_name"], reason=reason)
    if interrupted:
        level("jobs_interrupted", count=len(interrupted))


@contextlib.contextmanager
def _signals(signals: Signals) -> Iterator[None]:
    """For the daemon's life (main thread only): SIGTERM and SIGINT set
    ``signals.stop``, SIGHUP ``signals.reload``. A handler only sets a flag (one
    that took a lock could meet the loop holding it), and the services running
    one after the other share ``signals``, so no signal falls between them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        signals.stop = True

    def reload(signum: int, frame: Any) -> None:
        signals.reload = True

    # SIGIO ignored: the watcher's read lease (``watch.writing``) is broken,
    # with a SIGIO, by a partner's open in the instant it is held.
    actions: dict[signal.Signals, Callable[[int, Any], None] | signal.Handlers] = {
        signal.SIGTERM: stop,
        signal.SIGINT: stop,
        signal.SIGHUP: reload,
        signal.SIGIO: signal.SIG_IGN,
    }
    old = {sig: signal.signal(sig, action) for sig, action in actions.items()}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


__all__ = ["EXIT_FAILURE", "EXIT_OK", "Service", "run"]
