"""Watching the inbox: which names to look at, and when an upload is finished.

The watchdog observer thread only enqueues: ``InboxHandler`` turns each event
into ``(kind, name)`` on a queue and never raises (one exception in a handler
kills the observer thread while the process lives on). The service's main
thread feeds those events, and full scans of the inbox, into a ``Tracker``,
which decides per name when a file is ready:

* no writer holds it open: inotify open/close pairs, where available, and
  the kernel's own word when the file is looked at (``writing``: a read
  lease, refused while any process has the file open for writing — an
  upload opened before a restart or a reload too; the unit grants
  ``CAP_LEASE`` for files partners own). A file the kernel says is open for
  writing is never taken, however long its writer stalls (an SFTP client
  stopped between two interchanges would write the rest into a file already
  filed); an open count the kernel denies (a reader's open, or a lost close
  event) is not waited for, and one it cannot confirm (no lease) is taken
  for a lost close event after ``incomplete_grace_seconds``;
* its size, mtime, inode and link count have not changed for ``settle_seconds``;
* it ends with an X12 trailer (IEA), or it has been unchanged for
  ``incomplete_grace_seconds`` (then the pipeline fails it as truncated), or it
  does not start like an interchange at all (waiting would not help). That
  wait counts from the file's own last change (its ctime, measured against the
  clock of the inbox's file system: a share's server may be minutes off) when
  the file was already there before the daemon looked, so a restart does not
  start it anew.

An empty file is refused, unread, once settled when the daemon saw it appear
with inotify (an open writer keeps it waiting); under polling, or when it was
there before the daemon looked, no writer can be seen (an SFTP client creates
the name before it writes), and it waits as one without its trailer does
first. Anything that is not a regular file with one link, or is over
``max_file_bytes``, is refused without being read. Files are only ever opened
with ``O_NOFOLLOW | O_NONBLOCK`` relative to the inbox's directory descriptor
and judged by ``fstat`` of that descriptor, so a symlink to ``/etc/shadow``, a
FIFO without a writer or a swap between check and use cannot trick the reader.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import errno
import fcntl
import functools
import heapq
import itertools
import os
import queue
import signal
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, NamedTuple

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler

from .config import DaemonSettings
from .errors import EdiInboxError, UnsafeFile
from .files import display_name, short_of_resources
from .x12 import trailer_present

logger = structlog.get_logger("edi_inbox.watch")

TAIL_BYTES = 4096
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class WatchError(EdiInboxError):
    """The inbox cannot be watched (missing, or inotify limits reached)."""


class InboxDenied(WatchError):
    """The inbox is there but the daemon may not open it (its mode changed:
    a partner owns its folder and may ``chmod`` it over SFTP)."""


class Refused(UnsafeFile):
    """A path that must not be read, with a stable ``code`` for error.json."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# -- names ------------------------------------------------------------------


def is_ignored(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """Upload temporaries (dot-files, ``*.filepart``…) are never picked up."""
    return any(fnmatchcase(name, pattern) for pattern in patterns)


# -- safe opening -----------------------------------------------------------


class Fingerprint(NamedTuple):
    """What must stay the same while a file settles."""

    ino: int
    size: int
    mtime_ns: int
    nlink: int
    mode: int

    @classmethod
    def of(cls, st: os.stat_result) -> Fingerprint:
        return cls(st.st_ino, st.st_size, st.st_mtime_ns, st.st_nlink, st.st_mode)


def refusal(st: os.stat_result, max_bytes: int) -> Refused | None:
    """Why this object must not be read, or None for a regular file with one
    link within the size cap (an empty file is judged separately)."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return Refused("symlink", "it is a symbolic link; links are never followed")
    if stat.S_ISDIR(mode):
        return Refused("directory", "it is a directory, not a file")
    if stat.S_ISFIFO(mode):
        return Refused("fifo", "it is a FIFO (named pipe), not a regular file")
    if stat.S_ISSOCK(mode):
        return Refused("socket", "it is a socket, not a regular file")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return Refused("device", "it is a device node, not a regular file")
    if not stat.S_ISREG(mode):
        return Refused("not_regular", "it is not a regular file")
    if st.st_nlink != 1:
        return Refused(
            "hard_link",
            f"it has {st.st_nlink} hard links; a hard-linked file could still be "
            "changed through another name, so it is not read",
        )
    if st.st_size > max_bytes:
        return Refused(
            "too_large",
            f"it is {st.st_size} bytes, over the limit of {max_bytes} bytes (max_file_bytes)",
        )
    return None


def safe_open(dir_fd: int, name: str, max_bytes: int) -> tuple[int, os.stat_result]:
    """Open ``name`` in the directory ``dir_fd`` for reading, or raise ``Refused``.

    ``lstat`` first, so a device node is never opened (opening one can have
    effects); then ``O_NOFOLLOW | O_NONBLOCK`` (a symlink swapped in fails, a
    FIFO swapped in does not block) and ``fstat`` of the descriptor, which must
    be the very inode that ``lstat`` saw. Returns the descriptor and its stat.
    """
    before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    problem = refusal(before, max_bytes)
    if problem:
        raise problem
    try:
        fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused("symlink", "it is a symbolic link; links are never followed") from None
        if exc.errno == errno.ENXIO:
            raise Refused("socket", "it is a socket, not a regular file") from None
        raise
    try:
        st = os.fstat(fd)
        problem = refusal(st, max_bytes)
        if problem:
            raise problem
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise Refused("swapped", "it was replaced by another file while being opened")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_all(fd: int, size: int) -> bytes:
    """Read up to ``size + 1`` bytes: one byte more than expected tells that
    the file grew after ``fstat``."""
    chunks = []
    left = size + 1
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class Peek(NamedTuple):
    head: bytes  # the first TAIL_BYTES
    tail: bytes  # the last TAIL_BYTES before any padding
    writing: bool | None  # ``writing(fd)``


def peek(dir_fd: int, name: str, max_bytes: int) -> Peek:
    """The first ``TAIL_BYTES`` of a file, opened safely, the last ones
    before any padding after them (``_content_end``), and whether another
    process has it open for writing."""
    fd, st = safe_open(dir_fd, name, max_bytes)
    try:
        head = os.pread(fd, TAIL_BYTES, 0)
        end = _content_end(fd, st.st_size)
        tail = os.pread(fd, TAIL_BYTES, max(0, end - TAIL_BYTES))
        return Peek(head, tail, writing(fd))
    finally:
        os.close(fd)


def writing(fd: int) -> bool | None:
    """Whether some process has the file of ``fd`` (open read-only) open for
    writing: the kernel refuses a read lease (``F_SETLEASE``) then; one it
    grants is given back at once. None when it cannot tell: a file the daemon
    does not own without ``CAP_LEASE``, a file system without leases (NFS), or
    SIGIO not ignored (a writer's open during the lease signals the holder,
    and SIGIO's default ends the process; the service ignores it)."""
    if signal.getsignal(signal.SIGIO) != signal.SIG_IGN:
        return None
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return True if exc.errno == errno.EAGAIN else None
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return False


# What may follow an IEA (``x12.trailer_present``): whitespace, NULs, Ctrl-Z.
_PADDING = b" \t\r\n\x00\x1a\x85"
PADDING_SCAN_BYTES = 1 << 20  # trailing padding looked past, at most


def _content_end(fd: int, size: int) -> int:
    """Where the file's bytes end before trailing padding (a block-padded
    transfer may add kilobytes of NULs or blanks after the IEA), looking back
    at most ``PADDING_SCAN_BYTES``."""
    end = size
    while end > 0 and size - end < PADDING_SCAN_BYTES:
        chunk = os.pread(fd, TAIL_BYTES, max(0, end - TAIL_BYTES))
        kept = chunk.rstrip(_PADDING)
        if kept or not chunk:
            return end - len(chunk) + len(kept)
        end -= len(chunk)
    return end


_BOM = b"\xef\xbb\xbf"
_ISA = (b"ISA", b"\xc9\xe2\xc1")  # ASCII, EBCDIC


def may_be_x12(head: bytes) -> bool:
    """Could these first bytes be the start of an interchange (or of its upload)?
    A file that cannot is not held for its trailer: waiting would not help."""
    text = head.lstrip(b" \t\r\n\x00")
    if text.startswith(_BOM):
        text = text[len(_BOM) :].lstrip(b" \t\r\n")
    start = text[:3]
    return any(prefix.startswith(start) for prefix in _ISA)


# -- the observer -----------------------------------------------------------


class Event(enum.StrEnum):
    CHANGED = "changed"  # created, modified, attrib, moved in
    OPENED = "opened"
    CLOSED = "closed"  # closed without writing
    CLOSED_WRITE = "closed_write"  # closed after writing: a change and a close


_EVENT_KINDS = {
    "created": Event.CHANGED,
    "modified": Event.CHANGED,
    "attrib": Event.CHANGED,
    "moved": Event.CHANGED,
    "opened": Event.OPENED,
    "closed": Event.CLOSED_WRITE,
    "closed_no_write": Event.CLOSED,
}


class InboxHandler(FileSystemEventHandler):
    """Puts ``("fs", Event, name, lane)`` on ``sink`` for names directly in the
    inbox, and ``("lost", inbox)`` when events were lost (an overflow).

    Runs on the observer thread, so it does nothing but filter and enqueue,
    and it never raises: an exception here would end the observer thread.
    """

    def __init__(
        self,
        inbox: Path | str,
        sink: Callable[[Any], None],
        ignore_patterns: tuple[str, ...] = (),
        *,
        lane: str = "",
    ) -> None:
        self.inbox = os.path.abspath(os.fsdecode(inbox))
        self.lane = lane
        self.sink = sink
        self.ignore_patterns = tuple(ignore_patterns)
        self.errors = 0

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            if event.event_type == "events_lost":  # inotify's queue overflowed
                self.sink(("lost", self.inbox))
                return
            kind = _EVENT_KINDS.get(event.event_type)
            if kind is None:  # deleted: the next check finds the name gone
                return
            path = event.dest_path if event.event_type == "moved" else event.src_path
            if not path:
                return
            path = os.fsdecode(path)
            directory, name = os.path.split(path)
            if directory != self.inbox or not name or is_ignored(name, self.ignore_patterns):
                return
            self.sink(("fs", kind, name, self.lane))
        except Exception:  # never let one event end the observer thread
            self.errors += 1


def inbox_inotify_observer() -> Any:
    """An inotify observer that does not listen for ``IN_MOVED_FROM``.

    Every claim renames a file out of the inbox; watchdog holds each
    unpaired ``IN_MOVED_FROM`` for half a second to pair it with an
    ``IN_MOVED_TO``, and every event behind it in its queue waits too, so a
    busy inbox would see all pick-ups late by up to 0.5 s. The daemon never
    needs to know a name left (the next check finds it gone); a rename into
    or inside the inbox still arrives, as ``IN_MOVED_TO``.

    With no ``IN_MOVED_FROM`` to pair, the watch group's move grouper does
    not look for one either: watchdog searches its whole queue of pending
    events twice for every ``IN_MOVED_TO``, which for a burst of thousands of
    renames was quadratic (a sixth of the daemon's main process). Falls back
    to the stock observer if watchdog's internals differ from 7.x.
    """
    from watchdog.observers.inotify import InotifyObserver

    try:
        from watchdog.observers.api import BaseObserver
        from watchdog.observers.inotify import InotifyEmitter, InotifyWatchGroup
        from watchdog.observers.inotify_c import InotifyConstants, InotifyFD, Mask
        from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper
    except ImportError:  # another watchdog: correct, only slower to pick up
        return InotifyObserver()

    class Grouper(InotifyMoveEventGrouper):
        def _group_moved_to_event(self, to_event: Any) -> Any:
            return to_event

        def get_queued_moved_from_event(self, cookie: int) -> None:
            return None

    @dataclass
    class WatchGroup(InotifyWatchGroup):
        _move_event_grouper: InotifyMoveEventGrouper = field(default_factory=Grouper, init=False)

    class Emitter(InotifyEmitter):
        def get_event_mask_from_filter(self) -> Any:
            mask = super().get_event_mask_from_filter()
            return Mask(mask & ~InotifyConstants.IN_MOVED_FROM)

        def on_thread_start(self) -> None:  # InotifyEmitter's, with our watch group
            self._inotify = WatchGroup(
                self._inotify_fd,
                os.fsencode(self.watch.path),
                is_recursive=self.watch.is_recursive,
                event_mask=self.get_event_mask_from_filter(),
                follow_symlink=self.watch.follow_symlink,
            )

    class Observer(InotifyObserver):
        def __init__(self) -> None:  # InotifyObserver.__init__: our emitter, the shared reader
            self._inotify_fd = _shared_reader(InotifyFD)
            BaseObserver.__init__(self, Emitter, inotify_fd=self._inotify_fd)

        def on_thread_stop(self) -> None:  # its watch goes; the reader serves the other inboxes
            BaseObserver.on_thread_stop(self)

    return Observer()


_reader: Any = None
_reader_lock = threading.Lock()


def _shared_reader(reader_class: Callable[[], Any]) -> Any:
    """The process's one inotify instance (and its reader thread), shared by
    every inbox it watches: a user gets 128 instances by default, and one an
    inbox would leave a daemon with many partners polling. A new one when the
    last one's thread has ended (its observers are found dead and restarted)."""
    global _reader
    with _reader_lock:
        if _reader is None or not _reader.is_alive():
            reader = reader_class()
            reader.start()
            _reader = reader
        return _reader


def probe_inotify(folders: list[Path]) -> None:
    """Raise ``WatchError`` unless inotify can watch each of ``folders`` now
    (one instance, a watch each, all given back): a reload adding an inbox
    at the kernel's watch limit is refused before it is applied. At the
    instance limit nothing is judged: the daemon's observer shares one."""
    if not folders:
        return
    from watchdog.observers.inotify_c import inotify_add_watch, inotify_init

    fd = inotify_init()
    if fd < 0:  # no instance of its own (the daemon's one shared instance may still do)
        return
    try:
        for folder in folders:
            if inotify_add_watch(fd, os.fsencode(folder), 0x00000100) < 0:  # IN_CREATE
                number = ctypes.get_errno()
                if number in (errno.ENOSPC, errno.EMFILE):  # others: the inbox is shut
                    raise WatchError(_inotify_failure(folder, number))
    finally:
        os.close(fd)


def _inotify_failure(folder: Path, number: int, reason: str | None = None) -> str:
    hint = ""
    if number in (errno.ENOSPC, errno.EMFILE):
        hint = (
            " (raise fs.inotify.max_user_watches / max_user_instances,"
            ' or set [daemon] observer = "polling")'
        )
    return f"cannot watch {folder} with inotify: {reason or os.strerror(number)}{hint}"


def start_observer(
    settings: DaemonSettings,
    inbox: Path,
    handler: FileSystemEventHandler,
    *,
    inotify_factory: Callable[[], Any] | None = None,
    polling_factory: Callable[[], Any] | None = None,
) -> tuple[Any, str]:
    """Start watching ``inbox``; returns the running observer and its kind.

    ``observer = "auto"`` tries inotify and falls back to polling with a
    warning (watch or instance limits reached); ``"inotify"`` raises
    ``WatchError`` instead; ``"polling"`` polls every ``polling_interval_seconds``
    (NFS/SMB shares, where inotify sees no remote writers).
    """
    mode = settings.observer
    if mode in ("auto", "inotify"):
        observer = None
        try:
            observer = (inotify_factory or inbox_inotify_observer)()
            observer.schedule(handler, str(inbox), recursive=False)
            observer.start()
            return observer, "inotify"
        except OSError as exc:
            _stop_quietly(observer)
            said = _inotify_failure(inbox, exc.errno or 0, exc.strerror or str(exc))
            if mode == "inotify":
                raise WatchError(said) from None
            error = said.removeprefix(f"cannot watch {inbox} with inotify: ")
            logger.warning("inotify_unavailable", inbox=str(inbox), error=error, fallback="polling")
    if polling_factory is None:
        from watchdog.observers.polling import PollingObserver

        def polling_factory() -> Any:
            return PollingObserver(timeout=settings.polling_interval_seconds)

    observer = polling_factory()
    try:
        observer.schedule(handler, str(inbox), recursive=False)
        observer.start()
    except OSError as exc:
        _stop_quietly(observer)
        raise WatchError(f"cannot watch {inbox}: {exc.strerror or exc}") from None
    return observer, "polling"


def observer_alive(observer: Any) -> bool:
    """The observer's dispatch thread and every emitter thread are running
    (and, for inotify, the thread reading the inotify descriptor)."""
    if observer is None or not observer.is_alive():
        return False
    if not all(emitter.is_alive() for emitter in observer.emitters):
        return False
    reader = getattr(observer, "_inotify_fd", None)  # watchdog 7: one reader thread
    return reader is None or not hasattr(reader, "is_alive") or reader.is_alive()


def stop_observer(observer: Any, timeout: float = 2.0) -> None:
    _stop_quietly(observer, timeout)


def _stop_quietly(observer: Any, timeout: float = 2.0) -> None:
    if observer is None:
        return
    try:
        observer.stop()
        if observer.is_alive():
            observer.join(timeout)
    except Exception as exc:  # a broken observer is being replaced anyway
        logger.debug("observer_stop_failed", error=repr(exc))


def scan(dir_fd: int) -> Iterator[os.DirEntry[str]]:
    """Every entry of the inbox (``os.scandir`` on its descriptor)."""
    with os.scandir(dir_fd) as entries:
        yield from entries


def names_oldest_first(dir_fd: int) -> list[str]:
    """Every name in the inbox, oldest (mtime) first, names only (what the
    tracker keeps for a backlog beyond its window: ~60 bytes a name)."""
    aged = []
    for entry in scan(dir_fd):
        try:
            age = entry.stat(follow_symlinks=False).st_mtime_ns
        except OSError:  # gone: the tracker will not find it either
            age = 0
        aged.append((age, entry.name))
    aged.sort()
    return [name for _, name in aged]


# -- readiness --------------------------------------------------------------


class Verdict(enum.StrEnum):
    PROCESS = "process"  # run the pipeline
    REFUSE = "refuse"  # never read: move to failed/ with the reason
    REPORT = "report"  # cannot be moved safely (a directory): left, reported once


@dataclass(frozen=True)
class Ticket:
    """The tracker's decision about one name in the inbox."""

    name: str
    verdict: Verdict
    fingerprint: Fingerprint | None = None
    code: str | None = None
    reason: str | None = None
    grace_expired: bool = False  # processed without a trailer: the pipeline will say why


def _age(ticket: Ticket) -> int:
    return ticket.fingerprint.mtime_ns if ticket.fingerprint is not None else 0


class _State(enum.Enum):
    PENDING = "pending"
    QUEUED = "queued"  # a ticket is out; a worker has or will claim it


# Names a tracker watches closely at once (an entry each: ~0.5 KB); the rest
# of a backlog found by a scan waits as names only, oldest first, and is
# admitted as entries leave. A file admitted settles from then on.
WINDOW = 2048
OPEN_RECHECK = 5.0  # seconds between looks at a file held open past the grace


@dataclass(eq=False, slots=True)
class _Entry:
    name: str
    stable_since: float
    # When the file last changed by its ctime, as of the daemon's first look
    # (it may have sat unchanged through a restart); None once the daemon
    # dates its changes itself (an event, a change seen).
    changed_before: float | None = None
    state: _State = _State.PENDING
    fp: Fingerprint | None = None
    last_event: float | None = None
    checked_at: float | None = None
    opens: int = 0
    deadline: float = 0.0
    scheduled: float | None = None
    dirty: bool = False
    held: bool = False
    open_told: bool = False  # upload_open_past_grace said
    trouble_since: float | None = None
    failures: int = 0


@dataclass
class Tracker:
    """Decides, name by name, when a file in the inbox is ready.

    Single-threaded: the service's main thread calls ``event``, ``seen``,
    ``scanned``, ``poll`` and ``release``. Every name watched has at most one
    live deadline in a heap, and ``poll`` touches only what is due. A scan
    (``scanned``) enters at most ``window`` names; the rest of a backlog waits
    in ``_backlog`` as names only, oldest first, and is admitted (looked at
    afresh: stat, settle) as names leave, so memory does not grow with the
    backlog. Names told by events are always entered at once (a writer's
    open/close pairs are counted from the first event).
    """

    dir_fd: int
    settings: DaemonSettings
    clock: Callable[[], float]
    peek: Callable[[int, str, int], Peek] = peek
    # What a file's ctime is measured against: the inbox's file system's clock
    # (``files.share_clock``, set at each scan by the inbox)
    wall_clock: Callable[[], float] = time.time
    # Whether the inbox's events tell opens and closes (inotify, not polling):
    # set by the inbox as its observer starts and stops.
    sees_opens: bool = False
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _heap: list[tuple[float, int, str]] = field(default_factory=list)
    _seq: Iterator[int] = field(default_factory=itertools.count)
    window: int = WINDOW
    _backlog: deque[str] = field(default_factory=deque)
    # Queued tickets whose name a new file took meanwhile (their own was
    # claimed): (name, the ticket's inode), released by inode.
    _away: set[tuple[str, int]] = field(default_factory=set)
    # Uploads open as a reload stopped the last watch (``open_uploads`` of the
    # tracker before): each such file's entry starts with its opens.
    carried: dict[str, tuple[int, Fingerprint]] = field(default_factory=dict)
    # Directories reported and left in place (name -> inode): out of the
    # window, so that thousands of them keep no upload waiting; a scan looks
    # again only at whether each is still the same directory.
    _left: dict[str, int] = field(default_factory=dict)

    def open_uploads(self) -> dict[str, tuple[int, Fingerprint]]:
        """The files open now (name -> opens, and the file as it is), for the
        tracker of the next configuration: a reload must not forget that an
        upload is still being written (its open came before the new watch)."""
        found = {}
        for name, entry in self._entries.items():
            if entry.opens > 0:
                with contextlib.suppress(OSError):
                    st = os.stat(name, dir_fd=self.dir_fd, follow_symlinks=False)
                    found[name] = (entry.opens, Fingerprint.of(st))
        return found

    def _carried_opens(self, name: str, st: os.stat_result | None = None) -> int:
        """The opens carried for ``name`` (``carried``), if it is still the very
        file that was open, unchanged: one written to (and so perhaps closed)
        or replaced meanwhile, unwatched, starts afresh."""
        carried = self.carried.pop(name, None)
        if carried is None:
            return 0
        try:
            st = st or os.stat(name, dir_fd=self.dir_fd, follow_symlinks=False)
        except OSError:
            return 0
        return carried[0] if Fingerprint.of(st) == carried[1] else 0

    # -- input --

    def event(self, kind: Event, name: str) -> None:
        """An inotify (or polling) event for ``name``."""
        now = self.clock()
        entry = self._entries.get(name)
        if entry is None:
            if name in self._left:
                if self._still_left(name, self._left[name]):
                    return  # a directory reported once is not looked at again
                del self._left[name]
            opens = self._carried_opens(name) if self.carried else 0
            entry = self._entries[name] = _Entry(name, stable_since=now, opens=opens)
            self._schedule(entry, now + self.settings.settle_seconds)
        if kind is Event.OPENED:
            entry.opens += 1
            return
        if kind in (Event.CLOSED, Event.CLOSED_WRITE):
            # Clamped: events can be lost, and a writer may have opened the
            # file before we started watching. A close alone schedules
            # nothing: our own reads cause open/close pairs too.
            entry.opens = max(0, entry.opens - 1)
            if kind is Event.CLOSED:
                return
        if entry.state is _State.QUEUED:
            if not self._replaced(entry):
                entry.dirty = True  # looked at again once its worker is done
                return
            # A new upload under the name of a file already claimed (partners
            # who send every order as 850.edi): it settles now, beside the
            # queued one, instead of waiting for that job to end.
            self._away.add((name, entry.fp.ino if entry.fp else 0))
            entry = self._entries[name] = _Entry(name, stable_since=now, opens=entry.opens)
        entry.last_event = now
        entry.stable_since = now
        entry.changed_before = None
        self._schedule(entry, now + self.settings.settle_seconds)

    def seen(self, name: str, stat_result: Callable[[], os.stat_result]) -> None:
        """A name found by a full scan; new names start settling now."""
        if name in self._entries or name in self._left:
            return
        if is_ignored(name, self.settings.ignore_patterns):
            return
        try:
            st = stat_result()
        except OSError:
            return  # gone already, or the next event or scan will tell
        now = self.clock()
        entry = self._entries[name] = _Entry(
            name,
            stable_since=now,
            changed_before=self._changed(st, now),
            fp=Fingerprint.of(st),
            opens=self._carried_opens(name, st) if self.carried else 0,
        )
        entry.checked_at = now
        regular = stat.S_ISREG(st.st_mode)
        self._schedule(entry, now + self.settings.settle_seconds if regular else now)

    def scanned(self, names: list[str]) -> None:
        """A full scan's names, oldest first: names not watched yet wait in
        the backlog (this scan's order replaces the last one's), watched
        names not found any more are forgotten (unless queued)."""
        found: set[str] = set()
        backlog: deque[str] = deque()
        ignore = self.settings.ignore_patterns
        left, self._left = self._left, {}
        for name in names:
            if name in self._entries:
                found.add(name)
            elif name in left and self._still_left(name, left[name]):
                self._left[name] = left[name]
            elif not is_ignored(name, ignore):
                backlog.append(name)
        for name in [n for n, e in self._entries.items() if e.state is not _State.QUEUED]:
            if name not in found:
                del self._entries[name]
        self._backlog = backlog
        self._admit()

    def _still_left(self, name: str, ino: int) -> bool:
        """Whether ``name`` is still the directory reported under it."""
        try:
            st = os.stat(name, dir_fd=self.dir_fd, follow_symlinks=False)
        except OSError:
            return False
        return stat.S_ISDIR(st.st_mode) and st.st_ino == ino

    def _admit(self) -> None:
        """Names from the backlog into the window, oldest first."""
        backlog = self._backlog
        while backlog and len(self._entries) < self.window:
            self.look(backlog.popleft())

    def look(self, name: str) -> None:
        """Watch ``name`` if it is in the inbox and not watched yet."""
        self.seen(name, functools.partial(os.stat, name, dir_fd=self.dir_fd, follow_symlinks=False))

    def _replaced(self, entry: _Entry) -> bool:
        """A queued entry's name holds another file now (an event told of it)."""
        try:
            st = os.stat(entry.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except OSError:
            return False
        return entry.fp is not None and st.st_ino != entry.fp.ino

    def release(
        self, name: str, *, ino: int = 0, recheck: bool = False, delay: float | None = None
    ) -> None:
        """A worker is done with the ticket for ``name`` (of inode ``ino``):
        forget it, or look again if it changed meanwhile (or was handed back
        into the inbox), not before ``delay`` seconds if given (a claim that
        failed: no hot loop). If a new file took the name meanwhile, its
        entry stays as it is."""
        if (name, ino) in self._away:
            self._away.discard((name, ino))
            self._admit()
            return
        entry = self._entries.pop(name, None)
        if entry is None or not (recheck or entry.dirty):
            self._admit()
            return
        self.look(name)
        fresh = self._entries.get(name)
        if fresh is not None:
            # The writers counted while it was queued still hold it (a new
            # upload of the name rewriting it in place, stalled open).
            fresh.opens = max(fresh.opens, entry.opens)
            if delay:
                fresh.deadline = max(fresh.deadline, self.clock() + delay)

    # -- output --

    def due(self) -> float | None:
        """When ``poll`` has something to do next (a clock value), or None."""
        if self._backlog and len(self._entries) < self.window:
            return self.clock()
        while self._heap:
            deadline, _, name = self._heap[0]
            entry = self._entries.get(name)
            if entry is not None and entry.scheduled == deadline:
                return deadline
            heapq.heappop(self._heap)  # stale
        return None

    def poll(self, limit: int | None = None) -> list[Ticket]:
        """Check every name whose deadline has passed (at most ``limit``
        decisions; the rest stay due); return the decisions."""
        self._admit()
        now = self.clock()
        tickets: list[Ticket] = []
        while self._heap and self._heap[0][0] <= now:
            if limit is not None and len(tickets) >= limit:
                break
            deadline, _, name = heapq.heappop(self._heap)
            entry = self._entries.get(name)
            if entry is None or entry.scheduled != deadline:
                continue
            entry.scheduled = None
            if entry.deadline > now:
                self._schedule(entry, entry.deadline)
                continue
            ticket = self._check(entry, now)
            if ticket is not None:
                tickets.append(ticket)
        # Oldest first: a scan finds a backlog in directory order (hash order
        # on ext4), all of it due in one poll, and the service queues the
        # tickets in the order given.
        tickets.sort(key=_age)
        return tickets

    def __len__(self) -> int:
        return len(self._entries) + len(self._backlog)

    def waiting(self) -> int:
        """Names still settling (not held for a trailer, not in trouble, not
        queued), and the backlog not yet looked at."""
        return len(self._backlog) + sum(
            1
            for e in self._entries.values()
            if e.state is _State.PENDING and not e.held and e.trouble_since is None
        )

    def counts(self) -> dict[str, int]:
        pending = [e for e in self._entries.values() if e.state is _State.PENDING]
        held = sum(1 for e in pending if e.held and not e.open_told)
        still_open = sum(1 for e in pending if e.open_told)
        queued = len(self._away) + sum(
            1 for e in self._entries.values() if e.state is _State.QUEUED
        )
        tracked = len(self._entries) + len(self._backlog)
        return {
            "tracked": tracked,
            "held": held,
            "open": still_open,
            "queued": queued,
            "backlog": len(self._backlog),
        }

    # -- the decision --

    def _schedule(self, entry: _Entry, when: float) -> None:
        entry.deadline = when
        if entry.scheduled is None or when < entry.scheduled:
            entry.scheduled = when
            heapq.heappush(self._heap, (when, next(self._seq), entry.name))

    def _ticket(self, entry: _Entry, verdict: Verdict, **kwargs: Any) -> Ticket:
        if verdict is not Verdict.REPORT:  # a reported entry is gone (``_left``)
            entry.state = _State.QUEUED
        entry.dirty = False
        return Ticket(entry.name, verdict, entry.fp, **kwargs)

    def _check(self, entry: _Entry, now: float) -> Ticket | None:
        settle = self.settings.settle_seconds
        grace = self.settings.incomplete_grace_seconds
        try:
            st = os.stat(entry.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            del self._entries[entry.name]
            return None
        except OSError as exc:
            return self._trouble(entry, now, exc)
        fp = Fingerprint.of(st)
        if fp != entry.fp:
            # With events, the last one dates the change; a change no event
            # told us about (polling, overflow) restarts the clock now.
            explained = entry.last_event is not None and (
                entry.checked_at is None or entry.last_event >= entry.checked_at
            )
            if not explained:
                entry.stable_since = now
            # A file's ctime dates only what happened before the daemon first
            # looked at it; a change seen since (or told by an event) is dated
            # by the daemon, whatever the clock of a share's server says.
            first_look = entry.fp is None and not explained
            entry.changed_before = self._changed(st, now) if first_look else None
            entry.fp = fp
            entry.held = entry.open_told = False
        entry.checked_at = now

        if stat.S_ISDIR(st.st_mode):
            del self._entries[entry.name]  # left in place, out of the window
            self._left[entry.name] = st.st_ino
            return self._ticket(
                entry, Verdict.REPORT, code="directory", reason="it is a directory, not a file"
            )
        entry.state = _State.PENDING
        if not stat.S_ISREG(st.st_mode):
            problem = refusal(st, self.settings.max_file_bytes)
            assert problem is not None
            return self._ticket(entry, Verdict.REFUSE, code=problem.code, reason=problem.reason)

        if entry.opens > 0:
            writer = self._writer_open(entry)
            if writer is False:  # the kernel says no writer has it: a reader's open
                entry.opens = 0
            elif now - entry.stable_since < grace:
                self._schedule(entry, now + max(settle, 0.05))
                return None
            elif writer:
                self._hold_open(entry, st, now)
                return None
        if entry.opens > 0:
            # Unchanged for the whole grace, "open" by the count but not by
            # the kernel (or it cannot tell): a close event was lost.
            logger.warning("open_count_reset", file=display_name(entry.name), opens=entry.opens)
            entry.opens = 0
        if now < entry.stable_since + settle:
            self._schedule(entry, entry.stable_since + settle)
            return None

        if st.st_size == 0:
            # Empty and settled. Refused now if its writers could be seen
            # (inotify since before it appeared: an open one keeps it waiting
            # above); else (polling, or there before the daemon looked) it may
            # be an upload not written yet (SFTP creates the name first): it
            # waits as a file without its trailer does.
            waited: float | None = round(now - entry.stable_since, 1)
            if not (self.sees_opens and entry.changed_before is None):
                waited = self._held(entry, st, now, "empty: nothing written yet")
                if waited is None:
                    return None
            return self._ticket(
                entry,
                Verdict.REFUSE,
                code="empty",
                reason=f"the file is empty (0 bytes, unchanged for {waited:g} s)",
            )
        problem = refusal(st, self.settings.max_file_bytes)
        if problem:
            return self._ticket(entry, Verdict.REFUSE, code=problem.code, reason=problem.reason)
        try:
            head, tail, open_for_writing = self.peek(
                self.dir_fd, entry.name, self.settings.max_file_bytes
            )
        except Refused as refused:
            return self._ticket(entry, Verdict.REFUSE, code=refused.code, reason=refused.reason)
        except FileNotFoundError:
            del self._entries[entry.name]
            return None
        except OSError as exc:
            return self._trouble(entry, now, exc)
        entry.trouble_since = None
        entry.failures = 0

        # Open since before the daemon looked (a restart, a reload): inotify
        # could not tell. Waited for as an upload without its trailer is.
        if open_for_writing:
            if self._held(entry, st, now, "open for writing") is not None:
                self._hold_open(entry, st, now)
            return None
        if trailer_present(tail) or not may_be_x12(head):
            return self._ticket(entry, Verdict.PROCESS)
        waited = self._held(entry, st, now, "no X12 trailer (IEA) yet")
        if waited is None:
            return None
        logger.warning("upload_incomplete", file=display_name(entry.name), unchanged_seconds=waited)
        return self._ticket(entry, Verdict.PROCESS, grace_expired=True)

    def _writer_open(self, entry: _Entry) -> bool | None:
        """Whether the kernel says a writer has ``entry``'s file open
        (``writing``); None when it cannot tell."""
        try:
            return self.peek(self.dir_fd, entry.name, self.settings.max_file_bytes).writing
        except (UnsafeFile, OSError):  # the next look says what it is
            return None

    def _hold_open(self, entry: _Entry, st: os.stat_result, now: float) -> None:
        """A file still open for writing past the grace: its writer stalled
        (the rest may yet come), so it is never taken while so; said once
        (``upload_open_past_grace``), looked at again every ``OPEN_RECHECK``."""
        if not entry.open_told:
            entry.open_told = True
            logger.warning(
                "upload_open_past_grace",
                file=display_name(entry.name),
                size=st.st_size,
                reason="still open for writing: it waits for its writer to close it",
            )
        self._schedule(entry, now + OPEN_RECHECK)

    def _held(self, entry: _Entry, st: os.stat_result, now: float, reason: str) -> float | None:
        """An upload not complete yet (``reason``) waits until it has been
        unchanged for ``incomplete_grace_seconds``: None while it does (logged
        once, ``upload_held``), then how long it was unchanged."""
        grace = self.settings.incomplete_grace_seconds
        unchanged_since = entry.stable_since
        if entry.changed_before is not None:
            unchanged_since = min(unchanged_since, entry.changed_before)
        if now - unchanged_since >= grace:
            return round(now - unchanged_since, 3)
        if not entry.held:
            entry.held = True
            logger.info(
                "upload_held",
                file=display_name(entry.name),
                size=st.st_size,
                reason=reason,
                grace_seconds=grace,
            )
        self._schedule(entry, unchanged_since + grace)
        return None

    def _changed(self, st: os.stat_result, now: float) -> float:
        """When the file last changed by its ctime (a rename into the inbox, a
        write, a chmod all set it; clients often preserve mtime), on the
        tracker's clock (monotonic, not the wall clock). A ctime in the future
        (a share's server ahead) is later than the daemon's own first look,
        which then dates the wait."""
        return now - (self.wall_clock() - st.st_ctime)

    def _trouble(self, entry: _Entry, now: float, exc: OSError) -> Ticket | None:
        """A file that cannot be looked at: logged once, looked at again with
        backoff (permissions may still change), refused after the grace — but
        never for the daemon's own shortage of descriptors or memory."""
        reason = exc.strerror or str(exc)
        if short_of_resources(exc):
            if not entry.failures:
                logger.warning("file_not_looked_at", file=display_name(entry.name), error=reason)
            entry.failures += 1
            self._schedule(entry, now + min(5.0, 0.1 * 2**entry.failures))
            return None
        if entry.trouble_since is None:
            entry.trouble_since = now
            logger.error("file_unreadable", file=display_name(entry.name), error=reason)
        grace = self.settings.incomplete_grace_seconds
        if now - entry.trouble_since >= grace:
            return self._ticket(
                entry,
                Verdict.REFUSE,
                code="unreadable",
                reason=f"the file cannot be read: {reason}",
            )
        entry.failures += 1
        delay = min(60.0, max(self.settings.settle_seconds, 0.05) * 2**entry.failures)
        self._schedule(entry, min(now + delay, entry.trouble_since + grace))
        return None


def drain(events: queue.SimpleQueue[Any] | queue.Queue[Any], timeout: float) -> list[Any]:
    """Everything on ``events``, waiting up to ``timeout`` seconds for the first item."""
    items = []
    try:
        items.append(events.get(timeout=timeout) if timeout > 0 else events.get_nowait())
        while True:
            items.append(events.get_nowait())
    except queue.Empty:
        pass
    return items
