"""Worker processes: jobs on more than one core (``[daemon] processes``).

A job is mostly Python (parsing, the recorder, HTTP), and one process runs one
thread of Python at a time, so worker threads alone keep the daemon on one
core. With ``processes = N`` (N > 1) the main process keeps everything that
decides — the observer, the readiness tracker, the heartbeat, crash recovery,
stopping — and N child processes run the jobs. The ``workers`` threads of the
main process become relays: each owns a pipe to one thread in a child, sends it
a unit of work (``worker.Work``) and passes the ``Outcome`` back to the loop.
A child is the same ``Worker`` the threads run in one process: it claims the
file, runs ``Pipeline.run`` with its own database connection and ERP pool, and
moves the file. The claim folder is the host's, as before.

Children are started with ``spawn`` (a fresh interpreter: nothing of the
parent's threads or connections is inherited), ignore SIGINT, SIGTERM and
SIGHUP (a Ctrl-C reaches the terminal's whole process group, ``systemctl
kill`` every process of the unit; the main process decides when a job is
given up: it closes the pipes, then SIGKILLs what is left), and die with the
main process (``PR_SET_PDEATHSIG``): after a SIGKILL of the daemon no child
goes on working on a claim the next start resumes. A child that dies on its
own stops the daemon with an error; systemd restarts it and the claims are
resumed.

``spawn`` also starts multiprocessing's resource tracker, a process of its own
that would outlive the main process by a moment (it ends when it reads EOF),
long enough for systemd to SIGKILL it at every stop (``KillMode=mixed``): the
pool stops it once the children are gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import multiprocessing
import os
import signal
import sys
import threading
import time
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from typing import Any

import structlog

from .claims import Liveness, open_lanes
from .config import Settings

logger = structlog.get_logger("edi_inbox.procs")

PR_SET_PDEATHSIG = 1
START_TIMEOUT = 60.0  # seconds for a child to import, open the database and say "ready"


def shares(workers: int, processes: int) -> list[int]:
    """``workers`` threads spread over ``processes`` children, as evenly as can be."""
    base, extra = divmod(workers, processes)
    return [base + (1 if n < extra else 0) for n in range(processes) if base or n < extra]


class ProcessPool:
    """The children and one pipe per relay thread (``channels``)."""

    # Pools started and not yet stopped in this process (tests run two daemons in
    # one): the resource tracker is the process's, stopped with the last of them.
    live = 0
    live_lock = threading.Lock()

    def __init__(
        self,
        settings: Settings,
        host: str,
        processes: int,
        workers: int,
        liveness: Liveness | None = None,
    ) -> None:
        self.settings = settings
        self.host = host
        self.liveness = liveness  # the main process's heartbeat time, in shared memory
        self.counts = shares(workers, processes)
        self.children: list[Any] = []
        self.channels: list[Connection] = []
        self.write_turn: Any = None  # SQLite's write turn among the children (database.py)

    def start(self) -> None:
        """Start every child (from the calling thread: a child dies with it) and
        wait until each is ready. Raises RuntimeError if one is not."""
        context = multiprocessing.get_context("spawn")
        with ProcessPool.live_lock:
            ProcessPool.live += 1
        self.write_turn = context.Lock()
        readies = []
        for n, count in enumerate(self.counts):
            ends = [context.Pipe() for _ in range(count)]
            ready_here, ready_there = context.Pipe(duplex=False)
            child = context.Process(
                target=child_main,
                args=(
                    self.settings,
                    self.host,
                    [there for _, there in ends],
                    ready_there,
                    self.write_turn,
                    self.liveness,
                ),
                name=f"edi-inbox-jobs-{n}",
                daemon=True,
            )
            child.start()
            ready_there.close()
            for _, there in ends:
                there.close()
            self.children.append(child)
            self.channels.extend(here for here, _ in ends)
            readies.append(ready_here)
        deadline = time.monotonic() + START_TIMEOUT
        for child, ready in zip(self.children, readies, strict=True):
            try:
                if not ready.poll(max(0.0, deadline - time.monotonic())):
                    raise RuntimeError(f"worker process {child.pid} did not start in time")
                message = ready.recv()
            except EOFError:
                raise RuntimeError(
                    f"worker process {child.pid} exited while starting (code {child.exitcode})"
                ) from None
            finally:
                ready.close()
            if message != "ready":
                raise RuntimeError(f"worker process {child.pid} could not start: {message}")
        logger.info("worker_processes_started", pids=[c.pid for c in self.children])

    def alive(self) -> bool:
        return all(child.is_alive() for child in self.children)

    def stop(self, timeout: float) -> None:
        """With every relay idle: close the pipes (each child thread then ends,
        and each child) and wait up to ``timeout``; then kill what still runs."""
        for channel in self.channels:
            channel.close()
        self.channels = []
        deadline = time.monotonic() + timeout
        for child in self.children:
            child.join(max(0.0, deadline - time.monotonic()))
        self.kill()
        self._stop_resource_tracker()

    def _stop_resource_tracker(self) -> None:
        """With the children gone: drop the write-turn lock (the children's
        arguments hold it too), whose finalizer unlinks its semaphore and tells the
        tracker; then, if no other pool runs in this process, stop the tracker and
        wait for it. Without this it outlives the main process and systemd
        SIGKILLs it at stop."""
        if self.write_turn is None:  # not started, or stopped already
            return
        self.children = []
        self.write_turn = None
        with ProcessPool.live_lock:
            ProcessPool.live -= 1
            if ProcessPool.live == 0:
                resource_tracker._resource_tracker._stop()  # type: ignore[attr-defined]

    def kill(self) -> None:
        """SIGKILL the children still running (their jobs are given up) and reap
        them; a relay waiting on one of them gets EOFError."""
        for child in self.children:
            if child.is_alive():
                child.kill()
        for child in self.children:
            child.join(5.0)


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the thread that started it ends (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def child_main(
    settings: Settings,
    host: str,
    channels: list[Connection],
    ready: Connection,
    write_turn: Any = None,
    liveness: Liveness | None = None,
) -> None:
    """A worker process: a ``Worker`` with its own database and ERP, one thread per
    channel; its claim checks read the main process's heartbeat time (``liveness``)."""
    # The main process decides when a job is given up and when children end
    # (through the pipes, then SIGKILL): a signal to every process of the unit
    # (`systemctl kill`, a terminal's Ctrl-C) must not end a job half done.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    parent = os.getppid()
    _die_with_parent(parent)
    from . import log, store
    from .outcomes import Mover
    from .pipeline import Pipeline
    from .worker import Worker, run_one

    log.configure(settings.log.level, settings.log.format, stream=sys.stdout)  # as `run`
    try:
        # The daemon's main process checkpoints SQLite's WAL (store.Checkpointer);
        # this process's threads share one SQLite connection (its page cache).
        db = store.open_database(
            settings.database_url, settings, checkpoints=False, create=False, shared=True
        )
        if isinstance(db, store.SqliteStore):
            db.process_lock = write_turn
        recorder = store.DatabaseRecorder(db)
        pipeline = Pipeline(settings, recorder, host=host)
        lanes = open_lanes(settings, host, liveness)
    except Exception as exc:
        ready.send(f"{type(exc).__name__}: {exc}")
        return

    errors = threading.local()  # what the unit of work on this thread had to report

    def note_error(message: str) -> None:
        errors.last = message

    mover = Mover(
        settings.paths,
        clock=time.monotonic,
        final_path=functools.partial(store.record_final_path, db),
        outboxes=settings.partners.outboxes(),
        on_error=note_error,
    )
    worker = Worker(settings, pipeline, lanes, mover, host=host, on_error=note_error)

    def serve(channel: Connection) -> None:
        while True:
            try:
                item = channel.recv()
            except (EOFError, OSError):  # the main process closed the pipe: stop
                return
            errors.last = None
            # The main process found the unit's file in the inbox it watches:
            # if that is a re-created inbox, follow it here too (one stat). One
            # shut when this process started is opened by the unit (Worker.do).
            if lanes[item.lane].is_open:
                lanes[item.lane].follow_inbox()
            outcome = run_one(worker, item)
            outcome.error = errors.last  # for the daemon's last error (status, heartbeat)
            channel.send(outcome)

    threads = [threading.Thread(target=serve, args=(c,), daemon=True) for c in channels]
    for thread in threads:
        thread.start()
    ready.send("ready")
    ready.close()
    for thread in threads:
        thread.join()
    pipeline.close()
    for claims in lanes.values():
        claims.close()
    store.close_database(db)
    log.drain()  # this process ends with os._exit: no atexit
