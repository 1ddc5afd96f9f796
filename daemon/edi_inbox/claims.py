"""Claims: files in ``processing/``, who holds them, and claims left behind.

Each host claims into a folder of its own::

    inbox/NAME --rename--> processing/<host>/NAME.<job_id>

``<host>`` is ``files.safe_name`` of the host name (never starting with a dot,
so it cannot meet ``.retry/``). The rename is the lock: it is atomic on one
file system, and a worker (or host) that finds the name gone has lost the race.

A file stays claimed until the worker moves it to ``done/`` or ``failed/``.
Claims left behind by a crash are found by ``Claims.leftovers``, each moved by
one more rename into this host's folder under a new job id (``retry_of`` the
old one); a rename that finds the name gone means another daemon was first:

- this host's own folder, at start: it can only be this host's previous run
  (one daemon per host);
- files directly in ``processing/`` (the flat layout of earlier versions), at
  start: as before, unless the job row says another host is running it;
- another host's folder, at start and at every rescan: only when that host has
  no fresh heartbeat (``live_hosts``). A daemon writes its heartbeat before it
  claims anything, and the folder is listed *before* the heartbeats are read,
  so a file seen there belongs to a host that was alive at that moment unless
  the host has gone quiet. Without liveness information nothing is taken.

One daemon per host: ``lock_host`` holds an flock on
``processing/.<host>.lock`` for the daemon's life, taken before anything else.

A claim is checked before each ERP post and retry and before filing
(``Claims.check_claim``): a host frozen (SIGSTOP, a stalled VM) past the
takeover age may have lost its files to another host, and must post nothing
of them when it wakes. The check waits until this host's heartbeat is fresh
again (from then on no host takes its files) and then looks whether the file
is still the one it claimed. A host that read the stale heartbeat just before
it was refreshed may still be renaming; that window is the few milliseconds
between its read and its rename.

The inbox is held open by descriptor; ``Claims.follow_inbox`` notices when
its path names another directory (deleted and re-created) and puts the new
one behind the same descriptor number.

Retry markers: ``processing/.retry/<dev>-<ino>.json`` (keyed by the inode,
which a same-file-system move keeps, and checked against size and mtime) tells
the daemon that the next job for that file is a retry of the old one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import multiprocessing
import os
import pickle
import threading
import time
import typing
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

import structlog

from . import files
from .config import PathSettings, Settings
from .errors import AlreadyRunning, ClaimLost
from .watch import InboxDenied, WatchError, scan

logger = structlog.get_logger("edi_inbox.claims")

RETRY_DIR = ".retry"
# processing/.crashes/<dev>-<ino>.json: the jobs that started to run a claimed
# file resumed after the daemon running it died, since it last ran to an end.
CRASHES_DIR = ".crashes"
OWED_DIR = ".owed"  # processing/.owed/<host>/<job_id>: parked jobs' owed records
# processing/.names/<dev>-<ino>.json: the name of a claimed file whose claim
# ``NAME.<job_id>`` had to cut it to fit (a name over ~218 bytes).
NAMES_DIR = ".names"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_LOCK_FLAGS = os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
LOCK_MODE = 0o640
FRESH_WAIT_STEP = 0.05  # how often a claim check looks whether the heartbeat is fresh again

LookupJob = Callable[[str], Mapping[str, Any] | None]
LiveHosts = Callable[[], Collection[str]]


def new_job_id() -> str:
    return str(uuid.uuid4())


def os_message(exc: BaseException) -> str:
    """An OSError in words, with the (escaped) file name it concerns."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {files.display_name(os.fsdecode(exc.filename))}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc)


def host_folder(host: str) -> str:
    """The name of ``host``'s folder in ``processing/``."""
    return files.safe_name(host, fallback="host")


def lock_host(processing: Path, host: str) -> int:
    """Lock ``processing/.<host>.lock`` (flock, exclusive); the descriptor holds the
    lock until it is closed or the process ends. ``AlreadyRunning`` if another
    daemon holds it.

    The descriptor is close-on-exec and worker processes are spawned (a fresh
    interpreter), so only the main process holds the lock; its children die
    with it (``procs.py``), so a lock set free by a dead daemon leaves no
    worker of it running for long."""
    processing.mkdir(parents=True, exist_ok=True)
    fd = os.open(processing / f".{host_folder(host)}.lock", _LOCK_FLAGS, LOCK_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(f"another edi-inbox is running for host {host}") from None
    except OSError:
        os.close(fd)
        raise
    return fd


def host_locked(processing: Path, host: str) -> bool:
    """Whether a process holds ``host``'s lock (``lock_host``) now, as the
    kernel lists it (``/proc/locks``): looked at, never taken, so that a
    ``status`` never makes a starting daemon find it held. False if it
    cannot be told."""
    try:
        st = os.stat(processing / f".{host_folder(host)}.lock", follow_symlinks=False)
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            table = fh.read()
    except OSError:
        return False
    file = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2146450 0 EOF"; "1: -> FLOCK ..." waits
    return any(
        len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == file
        for fields in (line.split() for line in table.splitlines())
    )


def lanes(settings: Settings, host: str, liveness: Liveness | None = None) -> dict[str, Claims]:
    """The inboxes the daemon watches, by lane: ``""`` for ``[paths] inbox``,
    the partner's name for each ``[partners.NAME] inbox`` (claimed into its
    own ``processing`` folder). Not open yet."""
    found = {"": Claims(settings.paths, host, liveness)}
    for partner in settings.partners.with_inbox():
        paths = dataclasses.replace(
            settings.paths, inbox=partner.inbox, processing=partner.processing
        )
        found[partner.name] = Claims(paths, host, liveness, partner=partner.name)
    return found


def owed_jobs(settings: Settings, host: str) -> set[str]:
    """The jobs whose records this host keeps owed beside their claims
    (``Claims.keep_owed``) in any processing folder, a dropped partner's
    too: each goes on as that job at the next start (or once its partner is
    configured again), and writes its acknowledgements then. A record
    whose claim is gone (removed by hand), or that cannot be read (its file
    runs anew), is no such job."""
    found: set[str] = set()
    for processing in processing_folders(settings):
        claims = Claims(dataclasses.replace(settings.paths, processing=processing), host)
        with contextlib.suppress(OSError):
            owed = {n for n in os.listdir(claims.owed_dir) if not n.startswith(".")}
            claimed = {n.rpartition(".")[2] for n in os.listdir(claims.dir)}
            found.update(j for j in owed & claimed if claims.owed(j) is not None)
    return found


PARTNERS_DIR = ".partners"  # [paths] processing/.partners/NAME: a partner's by default


def processing_folders(settings: Settings) -> dict[Path, str | None]:
    """Every processing folder, with whose it is: ``[paths] processing``
    (``""``), each configured partner's (its name), and any other folder in
    ``[paths] processing/.partners/`` (None: a partner no longer configured,
    whose claims no lane resumes)."""
    assert settings.paths.processing is not None
    found: dict[Path, str | None] = {settings.paths.processing: ""}
    for partner in settings.partners.with_inbox():
        found.setdefault(typing.cast(Path, partner.processing), partner.name)
    with contextlib.suppress(OSError), os.scandir(settings.paths.processing / PARTNERS_DIR) as it:
        for entry in it:
            if entry.is_dir(follow_symlinks=False):
                found.setdefault(Path(entry.path), None)
    return found


_OPENING = threading.Lock()  # a worker process's threads opening a shut lane: one opens it


def open_lanes(
    settings: Settings, host: str, liveness: Liveness | None = None
) -> dict[str, Claims]:
    """``lanes``, each open (WatchError or OSError if one cannot be; none left
    open) but a partner's inbox the daemon may not open (``InboxDenied``: its
    owner changed its mode), left shut: the main process says so and tries it
    again, and a unit for it opens it here then (``Claims.ensure_open``)."""
    found = lanes(settings, host, liveness)
    try:
        for lane, claims in found.items():
            try:
                claims.open()
            except InboxDenied:
                if not lane:
                    raise
    except BaseException:
        for claims in found.values():
            claims.close()
        raise
    return found


def _may_be_cut(pname: str) -> bool:
    """Whether the claim name ``NAME.<job_id>`` is long enough for ``fit`` to
    have cut NAME (it backs up to three bytes to a character's start)."""
    return len(os.fsencode(pname)) >= files.MAX_NAME_BYTES - 3


def names_marker(claimed: Path) -> Path | None:
    """The ``NAMES_DIR`` marker that may hold the full name of the file
    claimed as ``claimed`` (``processing/<host>/NAME.<job_id>``), if its
    claim's name is long enough to have been cut (else None)."""
    if not _may_be_cut(claimed.name):
        return None
    try:
        st = os.stat(claimed, follow_symlinks=False)
    except OSError:
        return None
    return claimed.parent.parent / _marker_name(st, NAMES_DIR)


def drop_marker(marker: Path | None) -> None:
    """Remove a marker of a file no longer claimed (if any)."""
    if marker is not None:
        with contextlib.suppress(OSError):
            marker.unlink()


def processing_name(name: str, job_id: str) -> str:
    """``NAME.<job_id>``, with NAME cut (bytewise) so the whole fits a file name."""
    return files.fit(name, "." + job_id)


def split_processing_name(pname: str) -> tuple[str, str | None]:
    """The original name and job id of a claimed file."""
    base, dot, job_id = pname.rpartition(".")
    if not dot or not base or not job_id:
        return pname, None
    return base, job_id


def retry_marker(processing: Path, st: os.stat_result) -> Path:
    """Where the retry marker of the file with stat ``st`` lives."""
    return processing / _marker_name(st)


def _marker_name(st: os.stat_result, folder: str = RETRY_DIR) -> str:
    return f"{folder}/{st.st_dev}-{st.st_ino}.json"


def write_retry_marker(processing: Path, st: os.stat_result, retry_of: str) -> Path:
    """Mark the file with stat ``st``: its next job is a retry of ``retry_of``."""
    marker = retry_marker(processing, st)
    marker.parent.mkdir(parents=True, exist_ok=True)
    body = {"retry_of": retry_of, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    tmp = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body))
    os.replace(tmp, marker)
    return marker


def _marks(info: dict[str, Any], st: os.stat_result) -> bool:
    """A marker's ``info`` is the file's with stat ``st``, not that of an
    earlier file whose inode it reuses."""
    return info.get("size") == st.st_size and info.get("mtime_ns") == st.st_mtime_ns


def _crash_jobs(info: dict[str, Any]) -> list[str]:
    noted = info.get("jobs")
    return [j for j in noted if isinstance(j, str)] if isinstance(noted, list) else []


class Claim(NamedTuple):
    """A claim left behind, now in this host's folder under a new job id."""

    name: str
    pname: str
    job_id: str
    retry_of: str | None
    taken_from: str | None  # the dead host's folder it was taken from


class Inbox(StrEnum):
    """What ``Claims.follow_inbox`` found at the inbox's path."""

    SAME = "same"
    REPLACED = "replaced"  # another directory, now open instead of the old one
    MISSING = "missing"  # nothing, or no directory that can be opened


class Liveness:
    """When this host's heartbeat was last written, by ``time.monotonic()`` (one
    clock for every process of the machine, running on while a process is
    stopped), in shared memory that worker processes are given at start.

    A claim is safe while the heartbeat is younger than half ``takeover_seconds``
    (the age at which other hosts take this host's files)."""

    def __init__(self, takeover_seconds: float) -> None:
        self.takeover_seconds = takeover_seconds
        self.last = multiprocessing.RawValue("d", 0.0)  # 0: no heartbeat written yet

    def beat(self) -> None:
        """The heartbeat was just written."""
        self.last.value = time.monotonic()

    def age(self) -> float:
        return time.monotonic() - self.last.value

    def safe(self) -> bool:
        return self.age() < self.takeover_seconds / 2


class Claims:
    """An inbox and this host's folder of its ``processing/``, by directory descriptor.

    ``liveness``: this host's heartbeat, for ``check_claim`` (None: no other
    host takes files over, as in ``process`` and tests without a database).
    ``partner``: the partner whose inbox it is (``[partners.NAME] inbox``;
    None: ``[paths] inbox``, open to every sender)."""

    def __init__(
        self,
        paths: PathSettings,
        host: str,
        liveness: Liveness | None = None,
        partner: str | None = None,
    ) -> None:
        assert paths.inbox is not None and paths.processing is not None
        self.paths = paths
        self.host = host
        self.liveness = liveness
        self.partner = partner
        self.inbox_id = (0, 0)  # (st_dev, st_ino) of the inbox open as inbox_fd
        self.folder = host_folder(host)
        self.dir = paths.processing / self.folder
        self.owed_dir = paths.processing / OWED_DIR / self.folder
        self.inbox_fd = self.processing_fd = self.fd = -1

    def open(self) -> None:
        """Open the inbox (WatchError if missing) and create the other folders."""
        paths = self.paths
        assert paths.inbox is not None and paths.processing is not None
        try:
            self.inbox_fd = os.open(paths.inbox, _DIR_FLAGS)
        except PermissionError as exc:
            raise InboxDenied(f"inbox {paths.inbox}: {os_message(exc)}") from None
        except OSError as exc:
            raise WatchError(f"inbox {paths.inbox}: {os_message(exc)}") from None
        st = os.fstat(self.inbox_fd)
        self.inbox_id = (st.st_dev, st.st_ino)
        try:
            self._check_same_mount()
            for name, path in paths.folders().items():
                if name in ("acks", "outbox"):  # where answers go: made here if it can be,
                    with contextlib.suppress(OSError):  # else their writer says why (owed)
                        path.mkdir(parents=True, exist_ok=True)
                elif name != "inbox":
                    path.mkdir(parents=True, exist_ok=True)
            (paths.processing / RETRY_DIR).mkdir(exist_ok=True)
            (paths.processing / CRASHES_DIR).mkdir(exist_ok=True)
            (paths.processing / NAMES_DIR).mkdir(exist_ok=True)
            self.owed_dir.mkdir(parents=True, exist_ok=True)
            self.dir.mkdir(exist_ok=True)
            self.processing_fd = os.open(paths.processing, _DIR_FLAGS)
            self.fd = os.open(self.dir, _DIR_FLAGS | os.O_NOFOLLOW)
        except (OSError, WatchError):
            self.close()
            raise

    def _check_same_mount(self) -> None:
        """A claim is a rename: the inbox and its processing folder must be
        under one mount (WatchError naming both if not)."""
        inbox, processing = self.paths.inbox, self.paths.processing
        assert inbox is not None and processing is not None
        existing = next(p for p in (processing, *processing.parents) if p.exists())
        here, there = files.mount_of(inbox), files.mount_of(existing)
        if here is not None and there is not None and here != there:
            raise WatchError(
                f"the inbox {inbox} (mounted at {here}) and its processing folder"
                f" {processing} (mounted at {there}) are on different mounts, and a"
                " claim is a rename: put the processing folder under the inbox's mount"
                " (under systemd, each ReadWritePaths= folder is a mount of its own)"
            )

    @property
    def is_open(self) -> bool:
        return self.inbox_fd >= 0

    def ensure_open(self) -> None:
        """Open it if it is not (a partner's inbox shut at the start: see
        ``open_lanes``), once however many threads ask (InboxDenied if it is
        shut still)."""
        if self.is_open:  # as every unit finds it but a shut one's first
            return
        with _OPENING:
            if not self.is_open:
                self.open()

    def close(self) -> None:
        for fd in (self.inbox_fd, self.processing_fd, self.fd):
            if fd >= 0:
                os.close(fd)
        self.inbox_fd = self.processing_fd = self.fd = -1

    def follow_inbox(self) -> Inbox:
        """Whether the inbox's path still names the directory held open. If it
        names another (the inbox was deleted and re-created), that one is opened
        behind the same descriptor number, so whatever holds ``inbox_fd`` (the
        tracker, the workers) reads the new directory from now on."""
        assert self.paths.inbox is not None
        try:
            st = os.stat(self.paths.inbox)
        except OSError:
            return Inbox.MISSING
        if (st.st_dev, st.st_ino) == self.inbox_id:
            return Inbox.SAME
        try:
            fd = os.open(self.paths.inbox, _DIR_FLAGS)
        except OSError:  # gone again, or not a directory
            return Inbox.MISSING
        st = os.fstat(fd)
        os.dup2(fd, self.inbox_fd, inheritable=False)
        os.close(fd)
        self.inbox_id = (st.st_dev, st.st_ino)
        return Inbox.REPLACED

    def path(self, pname: str) -> Path:
        return self.dir / pname

    def claim(self, name: str, job_id: str) -> str:
        """Rename ``inbox/NAME`` into this host's folder; FileNotFoundError: it
        is gone. A name the claim cuts is kept beside it (``NAMES_DIR``)."""
        pname = processing_name(name, job_id)
        files.rename_new(name, pname, src_dir_fd=self.inbox_fd, dst_dir_fd=self.fd)
        marker = names_marker(self.path(pname))
        if marker is not None and split_processing_name(pname)[0] != name:
            with contextlib.suppress(OSError):
                st = os.stat(pname, dir_fd=self.fd, follow_symlinks=False)
                body = {"name": os.fsencode(name).hex()}
                self._write_marker(_marker_name(st, NAMES_DIR), st, body, "claim_name_not_kept")
        else:  # not cut: no marker of an earlier file on this inode may name it
            drop_marker(marker)
        return pname

    def _name_of(self, fd: int, pname: str) -> str:
        """The name of the file claimed as ``pname`` in folder ``fd``: as the
        claim writes it, or in full where the claim cut it (``NAMES_DIR``)."""
        name = split_processing_name(pname)[0]
        if not _may_be_cut(pname):
            return name
        try:
            st = os.stat(pname, dir_fd=fd, follow_symlinks=False)
        except OSError:
            return name
        info = self._marker(_marker_name(st, NAMES_DIR), "claim_name_unreadable")
        if not info or not _marks(info, st):
            return name
        try:
            return os.fsdecode(bytes.fromhex(info["name"]))
        except (KeyError, TypeError, ValueError):
            return name

    def rename_claim(self, pname: str, job_id: str) -> str:
        """The claimed file ``pname`` under the name of job ``job_id``: a start
        after a death resumes it as that job's (its record, what it owes, its
        parked note). ``pname`` itself if it names that job already, or if the
        rename fails (logged)."""
        name, named = split_processing_name(pname)
        if named == job_id:
            return pname
        new = processing_name(name, job_id)
        try:
            files.rename_new(pname, new, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except OSError as exc:
            logger.warning(
                "claim_not_renamed", file=files.display_name(name), job_id=job_id,
                error=os_message(exc),
            )  # fmt: skip
            return pname
        return new

    def check_claim(self, pname: str, claimed: os.stat_result) -> None:
        """Raise ``ClaimLost`` unless ``pname`` is still this host's claim: the file
        of stat ``claimed`` (same device and inode) in this host's folder, checked
        while the heartbeat is fresh. A stale heartbeat (this host was paused, or
        the database is away) is waited for first, up to the takeover age."""
        shown = files.display_name(split_processing_name(pname)[0])
        if self.liveness is not None and not self.liveness.safe():
            deadline = time.monotonic() + self.liveness.takeover_seconds
            while not self.liveness.safe():
                if time.monotonic() > deadline:
                    raise ClaimLost(
                        f"{shown}: this host's heartbeat is {self.liveness.age():.0f} s old; "
                        "another host may take the file over, so it is neither posted nor filed"
                    )
                time.sleep(FRESH_WAIT_STEP)
        try:
            st = os.stat(pname, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != (claimed.st_dev, claimed.st_ino):
            raise ClaimLost(
                f"{shown} is no longer claimed by host {self.host} (another host took it "
                "over while this one was paused, or it was moved away); this job stops"
            )

    def keep_owed(self, owed: Any) -> None:
        """Keep the record a parked job owes (``NotRecorded``) beside the
        claims, so that the next start writes it instead of running the job
        again (its 997 went out: a second run would send another)."""
        name = files.safe_name(owed.job.job_id)
        path, tmp = self.owed_dir / name, self.owed_dir / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            pickle.dump(owed, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        files.sync_directory(self.owed_dir)

    def owed(self, job_id: str) -> Any:
        """The owed record kept for ``job_id``, or None (none kept, or one this
        version cannot read: the job runs again, as without it)."""
        try:
            with open(self.owed_dir / files.safe_name(job_id), "rb") as fh:
                return pickle.load(fh)  # written by this daemon, in its own folder
        except FileNotFoundError:
            return None
        except Exception as exc:
            logger.warning("owed_record_unreadable", job_id=job_id, error=repr(exc))
            return None

    def drop_owed(self, job_id: str) -> None:
        """The owed record of ``job_id`` was written: forget the copy kept."""
        try:
            os.unlink(self.owed_dir / files.safe_name(job_id))
        except FileNotFoundError:
            pass
        except OSError as exc:  # kept: a later start would write the record again, harmless
            logger.warning("owed_record_not_dropped", job_id=job_id, error=os_message(exc))

    def hand_back(self, name: str, pname: str, ran: str | None = None) -> Path:
        """Put a claimed file back into the inbox under its name (never
        overwriting). ``ran``: the job that ran it and did not end (a stop,
        the file changed): the next job for the file records it as its
        ``retry_of`` (a retry marker), and so carries on the orders it
        posted rather than taking them for another job's."""
        assert self.paths.inbox is not None and self.paths.processing is not None
        if ran is not None:
            try:
                st = os.stat(pname, dir_fd=self.fd, follow_symlinks=False)
                self.forget_crashes(st)  # it ran to a stop: no crash cut it short
                write_retry_marker(self.paths.processing, st, ran)
            except OSError as exc:  # then the next job judges its orders as a resend's
                logger.warning(
                    "retry_marker_not_written",
                    file=files.display_name(name),
                    job_id=ran,
                    error=os_message(exc),
                )
        marker = names_marker(self.path(pname))
        back = files.move_new(self.path(pname), self.paths.inbox, name)
        drop_marker(marker)
        return back

    def take_retry_marker(self, st: os.stat_result) -> str | None:
        """The job this file is a retry of, if ``retry`` marked it (the marker is used up)."""
        info = self._marker(_marker_name(st), "retry_marker_unreadable")
        if info is None:
            return None
        with contextlib.suppress(OSError):
            os.unlink(_marker_name(st), dir_fd=self.processing_fd)
        return info.get("retry_of") if _marks(info, st) else None

    def count_crash(self, st: os.stat_result, job_id: str, left_by: str | None) -> int:
        """Job ``job_id`` starts to run the claimed file that job ``left_by``
        left claimed: noted, and how many times in a row the daemon died
        while the file ran is returned (``deaths``)."""
        info = self._crash_marker(st)
        if left_by is not None and info.get("parked") == left_by:
            self.forget_crashes(st)  # no death: a death of this job's counts afresh
            return 0
        jobs = _crash_jobs(info)
        if job_id not in jobs:
            self._write_marker(_marker_name(st, CRASHES_DIR), st, {"jobs": [*jobs, job_id]})
        return self.deaths(st, left_by, job_id)[0]

    def deaths(
        self, st: os.stat_result, left_by: str | None, job_id: str | None = None
    ) -> tuple[int, bool]:
        """How many times in a row the daemon died while the claimed file
        with stat ``st`` ran (each job noted as it started, other than
        ``job_id``, ended in a death, as did the run the first resumed), and
        whether it ran when the daemon last died: job ``left_by``, which
        left it claimed, had started (a claim resumed but not yet run when
        the daemon died again is no death of its). A job parked (it stopped
        on its own) is no death."""
        info = self._crash_marker(st)
        if left_by is not None and info.get("parked") == left_by:
            return 0, False
        jobs = [j for j in _crash_jobs(info) if j != job_id]
        return len(jobs) + 1, not jobs or left_by in jobs

    def _crash_marker(self, st: os.stat_result) -> dict[str, Any]:
        info = self._marker(_marker_name(st, CRASHES_DIR), "crash_count_unreadable")
        return info if info is not None and _marks(info, st) else {}

    def note_parked(self, pname: str, job_id: str) -> None:
        """The job ``job_id`` of the claimed file ``pname`` is parked: it
        stays claimed, and a start that resumes it is not after a crash."""
        try:
            st = os.stat(pname, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return
        self._write_marker(_marker_name(st, CRASHES_DIR), st, {"parked": job_id})

    def forget_crashes(self, st: os.stat_result) -> None:
        """The claimed file's job ran to an end (or a stop): no crash in a row."""
        with contextlib.suppress(OSError):
            os.unlink(_marker_name(st, CRASHES_DIR), dir_fd=self.processing_fd)

    def _write_marker(
        self,
        name: str,
        st: os.stat_result,
        body: dict[str, Any],
        unwritten: str = "crash_count_not_written",
    ) -> None:
        """The marker ``name`` (a crash count, a cut name) for the file with
        stat ``st`` (processing/ is the daemon's alone: rewritten in place, no
        fsync: it needs to outlive the process, not the machine); failing,
        logged as ``unwritten``."""
        body = {**body, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, 0o600, dir_fd=self.processing_fd)
            with os.fdopen(fd, "wb") as fh:
                fh.write(json.dumps(body).encode())
        except OSError as exc:  # then the crashes are not counted, the name stays cut
            logger.warning(unwritten, marker=name, error=os_message(exc))

    def _marker(self, name: str, unreadable: str) -> dict[str, Any] | None:
        """The marker ``name`` in processing/ (``_marks`` says whose); None
        if there is none or it cannot be read (logged as ``unreadable``)."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:  # once per job, and almost never there: one failed open, no Path
            fd = os.open(name, flags, dir_fd=self.processing_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:  # e.g. written by root: not taken into account
            logger.warning(unreadable, marker=name, error=os_message(exc))
            return None
        try:
            with os.fdopen(fd, "rb") as fh:
                info = json.loads(fh.read(64 * 1024))
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    # -- claims left behind -----------------------------------------------------------

    def leftovers(
        self,
        *,
        start: bool,
        lookup_job: LookupJob | None = None,
        live_hosts: LiveHosts | None = None,
    ) -> Iterator[Claim]:
        """Claims to run again: at ``start`` this host's own and the flat layout's;
        always those in the folders of hosts without a fresh heartbeat."""
        flat: list[str] = []
        others: list[str] = []
        for entry in scan(self.processing_fd):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir(follow_symlinks=False):
                flat.append(entry.name)
            elif entry.name != self.folder:
                others.append(entry.name)
        if start:
            own = [e.name for e in scan(self.fd)]
            for pname in own:
                claim = self._move_in(self.fd, pname)
                if claim:
                    yield claim
            for pname in flat:
                claim = self._resume_flat(pname, lookup_job)
                if claim:
                    yield claim
        if others and live_hosts is not None:
            yield from self._take_over(others, live_hosts)

    def _resume_flat(self, pname: str, lookup_job: LookupJob | None) -> Claim | None:
        name, old_job = split_processing_name(pname)
        shown = files.display_name(name)
        info = None
        if lookup_job is not None and old_job:
            try:
                info = lookup_job(old_job)
            except Exception as exc:  # no record to go by: resume it (the rename decides)
                logger.warning("job_lookup_failed", file=shown, job_id=old_job, error=repr(exc))
        if (
            info
            and info.get("host") not in (None, self.host)
            and info.get("status") in ("running", "received")
        ):
            logger.info(
                "resume_skipped",
                file=shown,
                job_id=old_job,
                reason=f"job running on host {info.get('host')}",
            )
            return None
        return self._move_in(self.processing_fd, pname)

    def _take_over(self, folders: list[str], live_hosts: LiveHosts) -> Iterator[Claim]:
        # List first, read the heartbeats second: a claim made after a fresh
        # heartbeat was read is not in the listing.
        listed: dict[str, tuple[int, list[str]]] = {}
        try:
            for folder in folders:
                try:
                    fd = os.open(folder, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=self.processing_fd)
                except OSError:
                    continue
                listed[folder] = (fd, [e.name for e in scan(fd)])
            if not any(names for _, names in listed.values()):
                return
            try:
                alive = set(live_hosts())
            except Exception as exc:  # unknown: take nothing
                logger.warning("liveness_unknown", error=repr(exc))
                return
            for folder, (fd, names) in listed.items():
                if folder in alive:
                    continue
                for pname in names:
                    claim = self._move_in(fd, pname, taken_from=folder)
                    if claim:
                        yield claim
        finally:
            for fd, _ in listed.values():
                os.close(fd)

    def _move_in(self, src_fd: int, pname: str, taken_from: str | None = None) -> Claim | None:
        """Rename a claimed file into this host's folder under a new job id."""
        old_job = split_processing_name(pname)[1]
        name = self._name_of(src_fd, pname)
        job_id = new_job_id()
        new = processing_name(name, job_id)
        try:
            files.rename_new(pname, new, src_dir_fd=src_fd, dst_dir_fd=self.fd)
        except FileNotFoundError:
            return None  # another daemon was first
        if taken_from and old_job:  # what that host's job owes comes along (its 997 went out)
            kept = files.safe_name(old_job)
            try:
                os.rename(self.owed_dir.parent / taken_from / kept, self.owed_dir / kept)
            except FileNotFoundError:
                pass
            except OSError as exc:  # then the job runs again (its orders not posted twice)
                logger.error(
                    "owed_record_not_taken",
                    file=files.display_name(name),
                    job_id=old_job,
                    error=os_message(exc),
                )
        logger.info(
            "taken_over" if taken_from else "resuming",
            file=files.display_name(name),
            job_id=job_id,
            retry_of=old_job,
            from_host=taken_from,
        )
        return Claim(name, new, job_id, old_job, taken_from)
