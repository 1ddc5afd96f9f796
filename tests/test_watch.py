"""The watcher: event handler, readiness tracker, safe open, observer start-up."""

from __future__ import annotations

import errno
import os
import queue
import random
import signal
import socket
import stat
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs
from watchdog.events import (
    DirCreatedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)

from edi_inbox.config import DaemonSettings
from edi_inbox.files import display_name, real_name
from edi_inbox.watch import (
    Event,
    InboxHandler,
    Refused,
    Tracker,
    Verdict,
    WatchError,
    is_ignored,
    may_be_x12,
    names_oldest_first,
    observer_alive,
    peek,
    safe_open,
    scan,
    start_observer,
    stop_observer,
    writing,
)

from helpers import poll_until

CORPUS = Path(__file__).parent / "data" / "corpus"
GOOD = (CORPUS / "botsplugins__850-004010-04.x12").read_bytes()
SETTLE = 1.0
GRACE = 10.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._wall_offset = time.time() - self.now

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        """The wall clock (what a file's ctime is read against), moved with this one."""
        return self.now + self._wall_offset

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def inbox(tmp_path):
    path = tmp_path / "inbox"
    path.mkdir()
    return path


@pytest.fixture
def inbox_fd(inbox):
    fd = os.open(inbox, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


@pytest.fixture
def clock():
    return Clock()


def make_tracker(inbox_fd, clock, wall_clock=time.time, **overrides) -> Tracker:
    values = {
        "settle_seconds": SETTLE,
        "incomplete_grace_seconds": GRACE,
        "max_file_bytes": 1 << 20,
        **overrides,
    }
    return Tracker(inbox_fd, DaemonSettings(**values), clock, wall_clock=wall_clock)


def tickets(tracker: Tracker) -> dict[str, object]:
    return {t.name: t for t in tracker.poll()}


# -- names and the handler ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ignored"),
    [
        (".hidden", True),
        ("po.edi.filepart", True),
        ("po.part", True),
        ("po.tmp", True),
        (".in.po.edi.", True),
        ("po.edi", False),
        ("-leading dash.x12", False),
        ("po.partner.edi", False),
    ],
)
def test_ignore_patterns(name, ignored):
    """Upload temporaries (dot-files, *.filepart, *.part, *.tmp) are ignored, real names are not."""
    assert is_ignored(name, DaemonSettings().ignore_patterns) is ignored


def test_handler_turns_events_into_names(inbox):
    """Created, modified, closed, moved-in, opened, closed-no-write events each enqueue the name."""
    got: list = []
    handler = InboxHandler(inbox, got.append, DaemonSettings().ignore_patterns)
    p = str(inbox / "po.edi")
    handler.dispatch(FileCreatedEvent(p))
    handler.dispatch(FileModifiedEvent(p))
    handler.dispatch(FileOpenedEvent(p))
    handler.dispatch(FileClosedEvent(p))
    handler.dispatch(FileClosedNoWriteEvent(p))
    handler.dispatch(FileMovedEvent(str(inbox / "po.edi.filepart"), str(inbox / "renamed.edi")))
    assert got == [
        ("fs", Event.CHANGED, "po.edi", ""),
        ("fs", Event.CHANGED, "po.edi", ""),
        ("fs", Event.OPENED, "po.edi", ""),
        ("fs", Event.CLOSED_WRITE, "po.edi", ""),
        ("fs", Event.CLOSED, "po.edi", ""),
        ("fs", Event.CHANGED, "renamed.edi", ""),
    ]


def test_handler_ignores_temp_names_deletes_and_other_folders(inbox, tmp_path):
    """Temp names, deletions, moves out of the inbox and events elsewhere enqueue nothing."""
    got: list = []
    handler = InboxHandler(inbox, got.append, DaemonSettings().ignore_patterns)
    handler.dispatch(FileCreatedEvent(str(inbox / "po.edi.filepart")))
    handler.dispatch(FileCreatedEvent(str(inbox / ".po.edi")))
    handler.dispatch(FileDeletedEvent(str(inbox / "po.edi")))
    handler.dispatch(FileMovedEvent(str(inbox / "po.edi"), str(tmp_path / "elsewhere.edi")))
    handler.dispatch(FileCreatedEvent(str(tmp_path / "po.edi")))
    handler.dispatch(FileCreatedEvent(str(inbox / "sub" / "po.edi")))
    assert got == []


def test_handler_never_raises(inbox):
    """A failing sink or a malformed event is counted, never raised into the observer thread."""

    def broken_sink(item):
        raise RuntimeError("queue is broken")

    handler = InboxHandler(inbox, broken_sink)
    handler.dispatch(FileCreatedEvent(str(inbox / "po.edi")))
    handler.dispatch(object())  # type: ignore[arg-type]
    assert handler.errors == 2


def test_handler_keeps_odd_names(inbox):
    """Names with spaces, a newline, non-UTF-8 bytes or a leading dash reach the queue intact."""
    got: list = []
    handler = InboxHandler(inbox, got.append)
    odd = ["po 1.edi", "po\nforged.edi", os.fsdecode(b"po\xff.edi"), "-rf.edi"]
    for name in odd:
        handler.dispatch(FileCreatedEvent(os.path.join(str(inbox), name)))
    assert [item[2] for item in got] == odd
    assert display_name(odd[1]) == "po\\nforged.edi"
    assert display_name(odd[2]) == "po\\xff.edi"


@given(st.text(st.characters(codec="utf-8"), max_size=40) | st.binary(max_size=40).map(os.fsdecode))
def test_display_name_escapes_every_control_character_and_stray_byte(name):
    """What reaches a log line: no control character, no undecodable byte; a
    name without any comes out as it is."""
    shown = display_name(name)
    codes = [ord(c) for c in shown]
    assert not any(c < 0x20 or 0x7F <= c < 0xA0 or 0xD800 <= c < 0xE000 for c in codes)
    if name.isprintable() and "\\" not in name:
        assert shown == name
    assert real_name(shown) == name  # two names never show alike


def test_real_name_refuses_what_display_name_never_shows():
    """A name recorded before the backslash was escaped is not read back
    as another: ``a\\b.edi`` (a backslash, then b) is no escape of ours."""
    assert real_name("a\\b.edi") is None
    assert real_name("tab\\t.edi") == "tab\t.edi"
    assert real_name("m\\xfcller.edi") == os.fsdecode(b"m\xfcller.edi")
    assert display_name("twin\nname") != display_name("twin\\nname")


# -- readiness --------------------------------------------------------------------


def test_complete_file_ready_after_settle(inbox, inbox_fd, clock):
    """A complete upload is ready once unchanged for settle_seconds, not before."""
    tracker = make_tracker(inbox_fd, clock)
    (inbox / "po.edi").write_bytes(GOOD)
    tracker.event(Event.CHANGED, "po.edi")
    clock.advance(SETTLE * 0.9)
    assert tickets(tracker) == {}
    clock.advance(SETTLE * 0.1)
    ready = tickets(tracker)
    assert ready["po.edi"].verdict is Verdict.PROCESS
    assert tracker.poll() == []  # one ticket per file
    assert tracker.due() is None


def test_change_restarts_settle_timer(inbox, inbox_fd, clock):
    """A write during settling restarts the timer: never processed half-written."""
    tracker = make_tracker(inbox_fd, clock)
    path = inbox / "po.edi"
    path.write_bytes(GOOD[:100])
    tracker.event(Event.CHANGED, "po.edi")
    clock.advance(SETTLE * 0.8)
    with open(path, "ab") as fh:
        fh.write(GOOD[100:])
    tracker.event(Event.CHANGED, "po.edi")
    clock.advance(SETTLE * 0.8)
    assert tickets(tracker) == {}
    clock.advance(SETTLE * 0.2)
    assert tickets(tracker)["po.edi"].verdict is Verdict.PROCESS


def test_open_writer_blocks_readiness(inbox, inbox_fd, clock):
    """A file still open for writing is not ready, however long unchanged (within the grace)."""
    tracker = make_tracker(inbox_fd, clock)
    (inbox / "po.edi").write_bytes(GOOD)
    tracker.event(Event.CHANGED, "po.edi")
    tracker.event(Event.OPENED, "po.edi")
    clock.advance(SETTLE * 3)
    assert tickets(tracker) == {}
    tracker.event(Event.CLOSED_WRITE, "po.edi")
    clock.advance(SETTLE)
    assert tickets(tracker)["po.edi"].verdict is Verdict.PROCESS


@pytest.fixture
def sigio_ignored():
    """SIGIO ignored, as the service does: the condition of ``writing``."""
    old = signal.signal(signal.SIGIO, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGIO, old)


def test_writing_is_the_kernels_word_on_open_writers(inbox, sigio_ignored):
    """``writing``: True while any descriptor has the file open for writing
    (a read lease refused), False once none has; None, untried, when SIGIO
    is not ignored."""
    path = inbox / "po.edi"
    path.write_bytes(GOOD)
    fd = os.open(path, os.O_RDONLY)
    try:
        with open(path, "ab"):
            assert writing(fd) is True
        assert writing(fd) is False
        signal.signal(signal.SIGIO, signal.SIG_DFL)
        assert writing(fd) is None
    finally:
        os.close(fd)


def test_a_writer_open_since_before_the_daemon_looked_blocks_readiness(
    inbox, inbox_fd, clock, sigio_ignored
):
    """An upload opened before a restart (outsider round 15): no open event
    was seen, but the kernel says it is open for writing. Complete-looking,
    it waits (within the grace) until its close."""
    path = inbox / "po.edi"
    path.write_bytes(GOOD)
    tracker = make_tracker(inbox_fd, clock)
    with open(path, "ab"):
        tracker.seen("po.edi", lambda: os.stat(path))
        clock.advance(SETTLE * 3)
        assert tickets(tracker) == {}
    tracker.event(Event.CLOSED_WRITE, "po.edi")
    clock.advance(SETTLE)
    assert tickets(tracker)["po.edi"].verdict is Verdict.PROCESS


@pytest.mark.parametrize("seen_open", [True, False], ids=["open-event", "open-before"])
def test_a_writer_still_open_past_the_grace_is_never_taken(
    inbox, inbox_fd, clock, sigio_ignored, seen_open
):
    """A complete-looking upload whose writer stalls open (an SFTP client
    between two interchanges), past the grace: with the kernel saying it is
    open for writing it is never taken (``upload_open_past_grace`` once),
    whether inotify saw the open or not; its close lets it go."""
    path = inbox / "po.edi"
    path.write_bytes(GOOD)
    tracker = make_tracker(inbox_fd, clock)
    with open(path, "ab"), capture_logs() as logs:
        if seen_open:
            tracker.event(Event.OPENED, "po.edi")
        else:
            tracker.seen("po.edi", lambda: os.stat(path))
        for _ in range(int(GRACE / SETTLE) * 3):
            clock.advance(SETTLE * 2)
            assert tickets(tracker) == {}
    events = [e["event"] for e in logs]
    assert events.count("upload_open_past_grace") == 1 and "open_count_reset" not in events
    tracker.event(Event.CLOSED_WRITE, "po.edi")
    clock.advance(SETTLE)
    assert tickets(tracker)["po.edi"].verdict is Verdict.PROCESS


def test_an_open_upload_is_remembered_across_a_reload(inbox, inbox_fd, clock):
    """A reload starts a new tracker (and watch): the uploads the old one saw
    open (``open_uploads``) are carried, so a complete-looking file still being
    written waits for its close (outsider round 15), found by a scan or by
    the close itself."""
    before = make_tracker(inbox_fd, clock)
    (inbox / "po.edi").write_bytes(GOOD)
    (inbox / "other.edi").write_bytes(GOOD)
    before.event(Event.OPENED, "po.edi")
    before.event(Event.OPENED, "other.edi")
    before.event(Event.CLOSED_WRITE, "other.edi")
    assert {n: c[0] for n, c in before.open_uploads().items()} == {"po.edi": 1}
    after = make_tracker(inbox_fd, clock)
    after.carried = before.open_uploads()
    after.scanned(["other.edi", "po.edi"])
    clock.advance(SETTLE * 3)
    assert set(tickets(after)) == {"other.edi"}
    after.event(Event.CLOSED_WRITE, "po.edi")
    clock.advance(SETTLE)
    assert tickets(after)["po.edi"].verdict is Verdict.PROCESS
    again = make_tracker(inbox_fd, clock)  # the close the first event the new watch tells
    again.carried = before.open_uploads()
    again.event(Event.CLOSED_WRITE, "po.edi")
    clock.advance(SETTLE)
    assert tickets(again)["po.edi"].verdict is Verdict.PROCESS
    # Written to (its last bytes, then closed) or replaced while nothing
    # watched (a reload drains its jobs first): it starts afresh, not held.
    for change in ("append", "replace"):
        carried = before.open_uploads()
        if change == "append":
            with open(inbox / "po.edi", "ab") as f:
                f.write(b"\n")
        else:
            (inbox / "po.edi").unlink()
            (inbox / "po.edi").write_bytes(GOOD)
        fresh = make_tracker(inbox_fd, clock)
        fresh.carried = carried
        fresh.scanned(["po.edi"])
        clock.advance(SETTLE * 3)
        assert tickets(fresh)["po.edi"].verdict is Verdict.PROCESS, change


def test_lost_close_event_does_not_hold_forever(inbox, inbox_fd, clock):
    """An open count whose close event was lost is reset after the grace, with a warning."""
    tracker = make_tracker(inbox_fd, clock)
    (inbox / "po.edi").write_bytes(GOOD)
    tracker.event(Event.OPENED, "po.edi")
    with capture_logs() as logs:
        for _ in range(int(GRACE / SETTLE) + 2):
            clock.advance(SETTLE)
            ready = tickets(tracker)
            if ready:
                break
    assert ready["po.edi"].verdict is Verdict.PROCESS
    assert [e["event"] for e in logs].count("open_count_reset") == 1


def test_own_reads_cause_no_hot_loop(inbox, inbox_fd, clock):
    """Open/close pairs from reading a held file schedule nothing: no re-check loop."""
    tracker = make_tracker(inbox_fd, clock)
    (inbox / "po.edi").write_bytes(GOOD[:200])  # no trailer: held
    tracker.event(Event.CHANGED, "po.edi")
    clock.advance(SETTLE)
    assert tickets(tracker) == {}
    for _ in range(5):
        tracker.event(Event.OPENED, "po.edi")
        tracker.event(Event.CLOSED, "po.edi")
    assert tracker.due() == pytest.approx(clock.now - SETTLE + GRACE)


def test_empty_file_failed_once_settled_where_opens_are_seen(inbox, inbox_fd, clock):
    """With inotify, a zero-byte file seen to appear (its writer's open would
    keep it waiting) waits settle_seconds, then is refused as empty."""
    tracker = make_tracker(inbox_fd, clock)
    tracker.sees_opens = True
    (inbox / "empty.edi").touch()
    tracker.event(Event.CHANGED, "empty.edi")
    assert tickets(tracker) == {}
    clock.advance(SETTLE)
    ticket = tickets(tracker)["empty.edi"]
    assert (ticket.verdict, ticket.code) == (Verdict.REFUSE, "empty")
    assert "empty" in ticket.reason


@pytest.mark.parametrize("how", ["polling", "there at start"])
def test_empty_file_held_for_the_grace_where_no_writer_is_seen(inbox, inbox_fd, clock, how):
    """A zero-byte file may be an upload whose writer has not written yet (an
    SFTP client creates the name first). Under polling (no open events), or
    found by the start-up scan (opened before the daemon watched), it is held
    as a file without its trailer is, then refused as empty once unchanged
    for incomplete_grace_seconds."""
    tracker = make_tracker(inbox_fd, clock)
    tracker.sees_opens = how == "there at start"
    (inbox / "empty.edi").touch()
    if how == "there at start":
        tracker.scanned(["empty.edi"])
    else:
        tracker.event(Event.CHANGED, "empty.edi")
    assert tickets(tracker) == {}
    clock.advance(SETTLE)
    assert tickets(tracker) == {}
    assert tracker.counts()["held"] == 1
    clock.advance(GRACE)
    ticket = tickets(tracker)["empty.edi"]
    assert (ticket.verdict, ticket.code) == (Verdict.REFUSE, "empty")
    assert "empty" in ticket.reason


def test_missing_trailer_held_then_processed_after_grace(inbox, inbox_fd, clock):
    """A settled file without IEA is held; handed on (to fail as truncated) only after the grace."""
    tracker = make_tracker(inbox_fd, clock)
    (inbox / "stalled.edi").write_bytes(GOOD[: len(GOOD) // 2])
    tracker.event(Event.CHANGED, "stalled.edi")
    with capture_logs() as logs:
        clock.advance(SETTLE)
        assert tickets(tracker) == {}
        assert tracker.counts()["held"] == 1
        clock.advance(GRACE - SETTLE - 0.01)
        assert tickets(tracker) == {}
        clock.advance(0.01)
        ticket = tickets(tracker)["stalled.edi"]
    assert ticket.verdict is Verdict.PROCESS and ticket.grace_expired
    assert [e["event"] for e in logs] == ["upload_held", "upload_incomplete"]


def test_resumed_upload_within_grace_processed_once(inbox, inbox_fd, clock):
    """An upload resumed (appended) within the grace is processed once, complete."""
    tracker = make_tracker(inbox_fd, clock)
    path = inbox / "resumed.edi"
    path.write_bytes(GOOD[:300])
    tracker.event(Event.CHANGED, "resumed.edi")
    clock.advance(SETTLE * 4)
    assert tickets(tracker) == {}
    with open(path, "ab") as fh:
        fh.write(GOOD[300:])
    tracker.event(Event.CHANGED, "resumed.edi")
    clock.advance(SETTLE)
    ticket = tickets(tracker)["resumed.edi"]
    assert ticket.verdict is Verdict.PROCESS and not ticket.grace_expired
    assert ticket.fingerprint.size == len(GOOD)


def test_a_restart_does_not_start_the_grace_anew(inbox, inbox_fd, clock):
    """The grace counts from the upload's own last change (its ctime), not from
    when a restarted daemon first looks: a truncated file already unchanged for
    the grace is handed on (to fail as truncated) as soon as it settles."""
    (inbox / "stalled.edi").write_bytes(GOOD[:300])
    before = make_tracker(inbox_fd, clock, wall_clock=clock.wall)
    before.look("stalled.edi")
    clock.advance(SETTLE)
    assert tickets(before) == {}  # held
    clock.advance(GRACE)  # the daemon is restarted meanwhile
    after = make_tracker(inbox_fd, clock, wall_clock=clock.wall)
    after.look("stalled.edi")
    assert tickets(after) == {}  # it settles first
    clock.advance(SETTLE)
    with capture_logs() as logs:
        ticket = tickets(after)["stalled.edi"]
    assert ticket.verdict is Verdict.PROCESS and ticket.grace_expired
    [incomplete] = [e for e in logs if e["event"] == "upload_incomplete"]
    assert incomplete["unchanged_seconds"] > GRACE + SETTLE


def test_a_read_first_after_a_restart_does_not_start_the_grace_anew(inbox, inbox_fd, clock):
    """A restarted daemon that first hears of an old upload by someone reading
    it (a backup's open and close: no change) still dates it by its ctime."""
    (inbox / "stalled.edi").write_bytes(GOOD[:300])
    clock.advance(GRACE)  # written before the daemon started
    tracker = make_tracker(inbox_fd, clock, wall_clock=clock.wall)
    tracker.event(Event.OPENED, "stalled.edi")
    tracker.event(Event.CLOSED, "stalled.edi")
    clock.advance(SETTLE)
    assert tickets(tracker) == {}  # it settles from the tracker's first stat
    clock.advance(SETTLE)
    assert tickets(tracker)["stalled.edi"].grace_expired


def test_an_upload_resumed_after_a_restart_is_held_the_whole_grace(inbox, inbox_fd, clock):
    """A change the tracker sees is dated by the tracker, not by the file's ctime:
    an upload that grows again after a restart is held for the whole grace
    after that change (here its ctime, real time, reads GRACE behind the wall
    clock, as on a share whose server's clock is behind)."""
    path = inbox / "stalled.edi"
    path.write_bytes(GOOD[:300])
    clock.advance(GRACE)  # written before the daemon started
    tracker = make_tracker(inbox_fd, clock, wall_clock=clock.wall)
    tracker.look("stalled.edi")
    with open(path, "ab") as fh:  # resumed; no event (polling): found by stat
        fh.write(GOOD[300:400])
    clock.advance(SETTLE)
    assert tickets(tracker) == {}  # changed: it settles anew
    clock.advance(SETTLE)
    assert tickets(tracker) == {}  # held
    clock.advance(GRACE - SETTLE - 0.01)
    assert tickets(tracker) == {}
    clock.advance(0.01)
    assert tickets(tracker)["stalled.edi"].grace_expired


def test_a_ctime_in_the_future_holds_no_longer_than_the_grace(inbox, inbox_fd, clock):
    """A ctime ahead of the daemon's wall clock (a share's server ahead) dates
    nothing: the upload is held for the grace from the tracker's first look."""
    (inbox / "stalled.edi").write_bytes(GOOD[:300])
    tracker = make_tracker(inbox_fd, clock, wall_clock=lambda: clock.wall() - 3600)
    tracker.look("stalled.edi")
    clock.advance(GRACE - 0.01)
    assert tickets(tracker) == {}
    clock.advance(0.01)
    assert tickets(tracker)["stalled.edi"].grace_expired


@pytest.mark.parametrize("padding", [b"\0" * 5000, b"\r\n" * 2500, b" " * 9000 + b"\x1a"])
def test_a_complete_file_padded_past_the_tail_is_not_held(inbox, inbox_fd, clock, padding):
    """A complete file with kilobytes of padding after its IEA (a block-padded
    transfer: NULs, line breaks, blanks, Ctrl-Z) is handed on once settled,
    not held for a trailer the last 4 KiB do not show. Found by outsider
    round 10: it waited the whole grace."""
    tracker = make_tracker(inbox_fd, clock)
    (inbox / "padded.edi").write_bytes(GOOD + padding)
    tracker.event(Event.CHANGED, "padded.edi")
    clock.advance(SETTLE)
    ticket = tickets(tracker)["padded.edi"]
    assert ticket.verdict is Verdict.PROCESS and not ticket.grace_expired
    assert tracker.counts()["held"] == 0


def test_non_x12_not_held(inbox, inbox_fd, clock):
    """A file that does not start like an interchange is handed on at once: waiting cannot help."""
    tracker = make_tracker(inbox_fd, clock)
    (inbox / "notes.txt").write_bytes(b"hello, this is not EDI\n")
    tracker.event(Event.CHANGED, "notes.txt")
    clock.advance(SETTLE)
    assert tickets(tracker)["notes.txt"].verdict is Verdict.PROCESS


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"ISA*00*", True),
        (b"\xef\xbb\xbf\r\nISA|00", True),
        (b"IS", True),
        (b"", True),
        (b"\xc9\xe2\xc1", True),  # EBCDIC
        (b"UNA:+.? '", False),
        (b"<?xml", False),
    ],
)
def test_may_be_x12(head, expected):
    """Only what could begin an interchange (or its upload) is held for a trailer."""
    assert may_be_x12(head) is expected


def test_scan_finds_files_without_events(inbox, inbox_fd, clock):
    """Files found by a scan (present at start, lost to overflow, polling) are ready once."""
    tracker = make_tracker(inbox_fd, clock)
    for i in range(3):
        (inbox / f"po{i}.edi").write_bytes(GOOD)
    (inbox / "po.edi.filepart").write_bytes(GOOD)
    for _ in range(2):  # a second scan changes nothing
        for entry in scan(inbox_fd):
            tracker.seen(entry.name, lambda e=entry: e.stat(follow_symlinks=False))
    clock.advance(SETTLE)
    assert sorted(tickets(tracker)) == ["po0.edi", "po1.edi", "po2.edi"]


def test_a_backlog_found_by_a_scan_is_handed_out_oldest_first(inbox, inbox_fd, clock):
    """Files present at start come out of one poll by age (mtime), not in the
    directory's order or their names': the oldest upload is processed first."""
    tracker = make_tracker(inbox_fd, clock)
    names = [f"po{i:03d}.edi" for i in range(200)]
    order = names[:]
    random.Random(13).shuffle(order)  # the age order: neither by name nor by creation
    for name in names:
        (inbox / name).write_bytes(GOOD)
    for age, name in enumerate(order):
        os.utime(
            inbox / name, ns=(1_700_000_000_000_000_000 + age, 1_700_000_000_000_000_000 + age)
        )
    for entry in scan(inbox_fd):
        tracker.seen(entry.name, lambda e=entry: e.stat(follow_symlinks=False))
    clock.advance(SETTLE)
    assert [t.name for t in tracker.poll()] == order


def aged_backlog(inbox: Path, names: list[str], *, seed: int) -> list[str]:
    """``names`` written into ``inbox`` with mtimes in a shuffled order: that
    order (oldest first)."""
    order = names[:]
    random.Random(seed).shuffle(order)
    for name in names:
        (inbox / name).write_bytes(GOOD)
    for age, name in enumerate(order):
        os.utime(inbox / name, ns=(1_700_000_000_000_000_000 + age,) * 2)
    return order


def test_a_backlog_settling_while_it_is_scanned_is_handed_out_oldest_first(inbox, inbox_fd, clock):
    """A scan of a large inbox takes longer than settle_seconds: its names come
    due one after another, over many polls. ``names_oldest_first`` feeds them
    to the tracker by age, so the polls still hand them out oldest first."""
    tracker = make_tracker(inbox_fd, clock)
    names = [f"po{i:03d}.edi" for i in range(100)]
    order = aged_backlog(inbox, names, seed=17)
    for name in names_oldest_first(inbox_fd):
        tracker.seen(name, lambda n=name: os.stat(n, dir_fd=inbox_fd, follow_symlinks=False))
        clock.advance(SETTLE / 10)  # each stat takes a while in a large inbox
    got: list[str] = []
    while len(got) < len(names):
        clock.advance(SETTLE / 10)
        got += [t.name for t in tracker.poll()]
    assert got == order


def test_a_backlog_beyond_the_window_waits_as_names_and_goes_out_oldest_first(
    inbox, inbox_fd, clock
):
    """A scan enters at most ``window`` names; the rest wait as names and are
    admitted (and settle) as names leave: all handed out once, oldest first;
    an upload told by an event meanwhile is watched at once."""
    tracker = make_tracker(inbox_fd, clock)
    tracker.window = 8
    names = [f"po{i:03d}.edi" for i in range(40)]
    order = aged_backlog(inbox, names, seed=5)
    tracker.scanned(names_oldest_first(inbox_fd))
    assert len(tracker) == 40 and tracker.waiting() == 40
    (inbox / "new.edi").write_bytes(GOOD)
    tracker.event(Event.CHANGED, "new.edi")
    got: list[str] = []
    for _ in range(200):
        if len(got) == 41:
            break
        clock.advance(SETTLE)
        tickets = tracker.poll(limit=3)
        assert len(tracker._entries) <= tracker.window + 1  # + the event's name
        for ticket in tickets:
            got.append(ticket.name)
            (inbox / ticket.name).unlink()  # claimed
            tracker.release(ticket.name)
    assert sorted(got) == sorted([*names, "new.edi"])
    assert [n for n in got if n != "new.edi"] == order
    assert got.index("new.edi") < 10  # not behind the whole backlog
    assert len(tracker) == 0


def test_change_seen_only_by_stat_restarts_timer(inbox, inbox_fd, clock):
    """Without events (polling, overflow), a change found by stat restarts the settle timer."""
    tracker = make_tracker(inbox_fd, clock)
    path = inbox / "po.edi"
    path.write_bytes(GOOD[:500])
    tracker.seen("po.edi", lambda: os.stat(path))
    clock.advance(SETTLE * 0.5)
    path.write_bytes(GOOD)
    clock.advance(SETTLE * 0.5)
    assert tickets(tracker) == {}  # changed since the scan: timer restarted
    clock.advance(SETTLE)
    assert tickets(tracker)["po.edi"].verdict is Verdict.PROCESS


def test_burst_of_20000_each_ready_once(inbox, inbox_fd, clock):
    """20,000 files with repeated events and scans give exactly one ticket each."""
    tracker = make_tracker(inbox_fd, clock)
    names = [f"po{i:05d}.edi" for i in range(20_000)]
    for name in names:
        fd = os.open(inbox / name, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, GOOD)
        os.close(fd)
    for name in names[::2]:  # events for half, as if the rest overflowed
        tracker.event(Event.CHANGED, name)
        tracker.event(Event.CLOSED_WRITE, name)
    for entry in scan(inbox_fd):
        tracker.seen(entry.name, lambda e=entry: e.stat(follow_symlinks=False))
    clock.advance(SETTLE)
    got = tracker.poll()
    got += tracker.poll()
    assert sorted(t.name for t in got) == names
    assert all(t.verdict is Verdict.PROCESS for t in got)


def test_release_rechecks_a_changed_name(inbox, inbox_fd, clock):
    """A name that changed while its ticket was out is looked at again on release."""
    tracker = make_tracker(inbox_fd, clock)
    (inbox / "po.edi").write_bytes(GOOD)
    tracker.event(Event.CHANGED, "po.edi")
    clock.advance(SETTLE)
    assert "po.edi" in tickets(tracker)
    tracker.event(Event.CHANGED, "po.edi")  # a new upload under the same name
    assert tickets(tracker) == {}
    tracker.release("po.edi")
    clock.advance(SETTLE)
    assert "po.edi" in tickets(tracker)
    tracker.release("po.edi")
    assert len(tracker) == 0


def test_a_new_upload_under_a_claimed_name_settles_while_the_first_runs(
    inbox, inbox_fd, clock, tmp_path
):
    """850.edi ticketed and claimed (renamed away), then a new 850.edi: it gets
    its own ticket once settled, while the first is still out; each release
    (by the ticket's inode) forgets its own ticket, not the other's."""
    tracker = make_tracker(inbox_fd, clock)
    (inbox / "850.edi").write_bytes(GOOD)
    tracker.event(Event.CHANGED, "850.edi")
    clock.advance(SETTLE)
    first = tickets(tracker)["850.edi"]
    assert first.fingerprint is not None
    os.rename(inbox / "850.edi", tmp_path / "claimed.edi")  # the worker's claim
    (inbox / "850.edi").write_bytes(GOOD)  # a new file: another inode
    tracker.event(Event.OPENED, "850.edi")
    tracker.event(Event.CHANGED, "850.edi")
    clock.advance(SETTLE)
    assert tickets(tracker) == {}  # still open for writing
    tracker.event(Event.CLOSED_WRITE, "850.edi")
    assert tracker.counts()["queued"] == 1
    clock.advance(SETTLE)
    second = tickets(tracker)["850.edi"]
    assert second.fingerprint is not None and second.fingerprint != first.fingerprint
    assert tracker.counts()["queued"] == 2
    tracker.release("850.edi", ino=first.fingerprint.ino)  # the first job ends
    assert tracker.counts()["queued"] == 1
    tracker.event(Event.CHANGED, "850.edi")  # the second's file, not yet claimed
    tracker.release("850.edi", ino=second.fingerprint.ino, recheck=True)
    clock.advance(SETTLE)
    assert "850.edi" in tickets(tracker)


# -- unsafe objects -----------------------------------------------------------


@pytest.fixture
def unsafe_objects(inbox, tmp_path):
    """One of each thing that must never be read, dropped into the inbox."""
    secret = tmp_path / "secret.edi"
    secret.write_bytes(GOOD)
    os.symlink(secret, inbox / "link.edi")
    os.link(secret, inbox / "hardlink.edi")
    os.mkfifo(inbox / "fifo.edi")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(inbox / "socket.edi"))
    (inbox / "dir.edi").mkdir()
    with open(inbox / "huge.edi", "wb") as fh:
        fh.truncate(2 * 1024**3)  # sparse 2 GiB: the size cap refuses it unread
    yield {
        "link.edi": "symlink",
        "hardlink.edi": "hard_link",
        "fifo.edi": "fifo",
        "socket.edi": "socket",
        "dir.edi": "directory",
        "huge.edi": "too_large",
    }
    sock.close()


@pytest.mark.timeout(10)
def test_safe_open_refuses_unsafe_objects(inbox_fd, unsafe_objects):
    """Symlink, hard link, FIFO (no writer: no blocking), socket, directory, 2 GiB file: refused."""
    for name, code in unsafe_objects.items():
        with pytest.raises(Refused) as caught:
            safe_open(inbox_fd, name, 1 << 20)
        assert caught.value.code == code, name


def test_safe_open_reads_a_regular_file(inbox, inbox_fd):
    """A regular file with one link opens, with its fstat; head and tail are read by pread."""
    (inbox / "po.edi").write_bytes(GOOD)
    fd, st = safe_open(inbox_fd, "po.edi", 1 << 20)
    os.close(fd)
    assert stat.S_ISREG(st.st_mode) and st.st_size == len(GOOD)
    head, tail, _ = peek(inbox_fd, "po.edi", 1 << 20)
    assert head.startswith(b"ISA") and tail.rstrip().endswith(GOOD.rstrip()[-20:])


@pytest.mark.timeout(10)
def test_tracker_refuses_unsafe_objects_and_reports_directory_once(
    inbox, inbox_fd, clock, unsafe_objects
):
    """Unsafe objects become refusals (a directory: one report), never reads, never a hot loop."""
    tracker = make_tracker(inbox_fd, clock)
    for entry in scan(inbox_fd):
        tracker.seen(entry.name, lambda e=entry: e.stat(follow_symlinks=False))
    clock.advance(SETTLE)
    got = tickets(tracker)
    assert {n: t.code for n, t in got.items()} == unsafe_objects
    assert got["dir.edi"].verdict is Verdict.REPORT
    assert all(t.verdict is Verdict.REFUSE for n, t in got.items() if n != "dir.edi")
    for _ in range(3):  # events and rescans do not report the directory again
        tracker.event(Event.CHANGED, "dir.edi")
        for entry in scan(inbox_fd):
            tracker.seen(entry.name, lambda e=entry: e.stat(follow_symlinks=False))
        clock.advance(SETTLE)
        assert tracker.poll() == []


def test_unreadable_file_backs_off_then_refused(inbox, inbox_fd, clock):
    """An unreadable file is logged once, looked at with backoff, and refused after the grace."""
    (inbox / "secret.edi").write_bytes(GOOD)
    if os.geteuid() == 0:  # root reads anything: the permission error is injected

        def unreadable_peek(dir_fd, name, limit):
            raise PermissionError(errno.EACCES, "Permission denied")

        tracker = make_tracker(inbox_fd, clock)
        tracker.peek = unreadable_peek
    else:
        os.chmod(inbox / "secret.edi", 0)
        tracker = make_tracker(inbox_fd, clock)
    tracker.event(Event.CHANGED, "secret.edi")
    checks = 0
    with capture_logs() as logs:
        while not (got := tickets(tracker)):
            checks += 1
            clock.now = tracker.due()
    assert got["secret.edi"].code == "unreadable"
    assert "Permission denied" in got["secret.edi"].reason
    assert [e["event"] for e in logs] == ["file_unreadable"]
    assert checks < 8  # exponential backoff, not a hot loop


# -- the observer ----------------------------------------------------------------


def test_real_inotify_events_for_uploads(inbox, tmp_path):
    """Real inotify: an in-place write, a rename in the inbox and a move-in reach the handler."""
    events: queue.Queue = queue.Queue()
    handler = InboxHandler(inbox, events.put, DaemonSettings().ignore_patterns)
    observer, kind = start_observer(DaemonSettings(observer="inotify"), inbox, handler)
    seen: list = []

    def got(item) -> bool:
        while not events.empty():
            seen.append(events.get()[1:3])
        return item in seen

    try:
        assert kind == "inotify" and observer_alive(observer)
        with open(inbox / "inplace.edi", "wb") as fh:
            fh.write(GOOD)
        poll_until(lambda: got((Event.CLOSED_WRITE, "inplace.edi")))
        assert (Event.OPENED, "inplace.edi") in seen
        (inbox / "up.edi.filepart").write_bytes(GOOD)
        os.rename(inbox / "up.edi.filepart", inbox / "up.edi")
        poll_until(lambda: got((Event.CHANGED, "up.edi")))
        (tmp_path / "outside.edi").write_bytes(GOOD)
        os.rename(tmp_path / "outside.edi", inbox / "moved-in.edi")
        poll_until(lambda: got((Event.CHANGED, "moved-in.edi")))
        assert not any(name.endswith(".filepart") for _, name in seen)
    finally:
        stop_observer(observer)
    assert not observer_alive(observer)


def test_renames_in_are_not_paired_by_searching_the_queue(inbox, tmp_path, monkeypatch):
    """IN_MOVED_FROM is not watched, so watchdog's move grouper must not search its
    queue for one on every IN_MOVED_TO: for a burst of renames that was quadratic."""
    from watchdog.utils.delayed_queue import DelayedQueue

    searches = []
    search = DelayedQueue._index_and_item
    monkeypatch.setattr(
        DelayedQueue, "_index_and_item", lambda self, p: searches.append(1) or search(self, p)
    )
    events: queue.Queue = queue.Queue()
    handler = InboxHandler(inbox, events.put, DaemonSettings().ignore_patterns)
    observer, _ = start_observer(DaemonSettings(observer="inotify"), inbox, handler)
    names = {f"po{n:03d}.edi" for n in range(200)}
    try:
        for name in sorted(names):
            (tmp_path / name).write_bytes(GOOD)
            os.rename(tmp_path / name, inbox / name)
        os.rename(inbox / "po000.edi", tmp_path / "claimed.edi")  # a claim: unwatched
        seen: set = set()

        def all_seen() -> bool:
            while not events.empty():
                seen.add(events.get()[2])
            return names <= seen

        assert poll_until(all_seen)
    finally:
        stop_observer(observer)
    assert searches == []


def test_polling_observer_finds_files(inbox):
    """observer = "polling" (network shares) reports new files without inotify."""
    events: queue.Queue = queue.Queue()
    handler = InboxHandler(inbox, events.put)
    settings = DaemonSettings(observer="polling", polling_interval_seconds=0.05)
    observer, kind = start_observer(settings, inbox, handler)
    try:
        assert kind == "polling"
        (inbox / "po.edi").write_bytes(GOOD)
        assert poll_until(lambda: not events.empty())
        assert events.get()[2] == "po.edi"
    finally:
        stop_observer(observer)


class _LimitReached:
    """Stands in for InotifyObserver when the kernel's limit is reached (cannot be had safely)."""

    def __init__(self) -> None:
        raise OSError(errno.EMFILE, "inotify instance limit reached")


def test_inotify_limit_falls_back_to_polling_in_auto_mode(inbox):
    """observer = "auto": an inotify limit logs a warning and polls instead."""
    handler = InboxHandler(inbox, lambda item: None)
    with capture_logs() as logs:
        observer, kind = start_observer(
            DaemonSettings(observer="auto"), inbox, handler, inotify_factory=_LimitReached
        )
    stop_observer(observer)
    assert kind == "polling"
    assert logs[0]["event"] == "inotify_unavailable" and "max_user_instances" in logs[0]["error"]


def test_inotify_limit_is_a_clear_error_in_inotify_mode(inbox):
    """observer = "inotify": an inotify limit is a WatchError that says what to raise."""
    handler = InboxHandler(inbox, lambda item: None)
    with pytest.raises(WatchError, match="max_user_watches"):
        start_observer(
            DaemonSettings(observer="inotify"), inbox, handler, inotify_factory=_LimitReached
        )


def test_missing_inbox_cannot_be_watched(tmp_path):
    """Watching a missing inbox is a WatchError, not a silent thread death."""
    handler = InboxHandler(tmp_path / "nope", lambda item: None)
    with pytest.raises(WatchError):
        start_observer(DaemonSettings(observer="inotify"), tmp_path / "nope", handler)


def test_directory_event_enqueues_for_report(inbox):
    """A directory created in the inbox reaches the tracker (to be reported once)."""
    got: list = []
    InboxHandler(inbox, got.append).dispatch(DirCreatedEvent(str(inbox / "sub")))
    assert got == [("fs", Event.CHANGED, "sub", "")]
