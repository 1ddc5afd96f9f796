"""Outside tester, round 52: hostile sizes and counts, and the kernel's watch limits.

Real daemons (``daemons.Daemon``) posting to a real HTTP ERP on 127.0.0.1,
uploads written and renamed by a partner's uid (``uids``), ``edi-inbox
process`` as a real process, the kernel's inotify limits met for real: the
event queue overflowed (the daemon SIGSTOPped while its queue is filled past
``fs.inotify.max_queued_events`` by opens and closes of a hidden file, then
the uploads renamed in; the tester lowered the global limit to 16 for the
daemon's start instead, which gave every other test's observer starting in
that second a queue of 16 too: changed the same session), and the watch and
instance limits in a user
namespace of the daemon's own (``/proc/sys/user/max_inotify_*``: the kernel
answers ``ENOSPC``/``EMFILE`` as for the global ``max_user_*``, without
starving the other processes of this host). No mocks, no fixed sleeps.
About 50 s at -n0.

What I tried
- The event queue overflowing: 300 uploads renamed into the inbox at once
  with the daemon's queue at 16 events; as root and (by hand) as the
  daemon's own user on partner-owned files (no read lease: no
  ``open_count_reset``, nothing held).
- Watch and instance limits too low for the shared inbox plus a partner's
  folder, with ``observer = "auto"`` (the default) and ``"inotify"``; at
  start and on a reload that adds the partner.
- Bursts: 2,000 uploads written and renamed by the partner's uid while the
  ERP held its answers (by hand: each posted once under one key, started
  oldest first within the workers' lag of 3, the main process's peak RSS
  50 MB, 11 s for all); ``status``, ``jobs list``, ``stats`` each answered
  in 0.2-0.3 s with 1,996 waiting. 20,000 uploads at once, present at the
  start or renamed in after it: the main process at 50-56 MB. The file
  keeps 600.
- Non-EDI entries: 10,000 dotfiles or 10,000 directories beside an upload
  (inotify: 0.4 % of a CPU idle, an upload taken in 0.3 s; polling: 10 %,
  watchdog's snapshot); 2,100 directories older than an upload there at
  the start.
- Sizes: a file of exactly ``max_file_bytes`` and one byte more; an N102 of
  1,000,000 and 4,000,000 characters; one interchange of 500 to 50,000
  sets (``max_sets_per_file`` is 50,000 by default; by ``edi-inbox
  process``, whose job is recorded as the daemon's are); 5,000 interchanges of
  one group each; 1,000 to 5,000 interchanges with no group, asking for a
  TA1 (ISA14 1) or with a wrong IEA02; a partner's folder 3,700 bytes deep
  holding a 204-byte name; a root that deep (SQLite's 512-byte path limit:
  "unable to open database file", not pursued).

What held
- An overflowed queue loses no file: each is posted once, without a
  restart, once the periodic rescan finds it (but see finding 2).
- ``observer = "auto"`` at a watch limit (1 watch, or none) or an instance
  limit (0): the daemon starts, warns ``inotify_unavailable`` with the
  sysctl to raise, and polls what it cannot watch: uploads in both inboxes
  are posted. ``observer = "inotify"``: exit 1 before READY, the error
  naming the folder and ``max_user_watches``. ``"auto"``, a reload adding
  the partner at the limit (by hand): its folder polled, both posted.
  300 partners' folders with 50 watches (by hand): READY in 1.7 s, 3 % of
  a CPU idle, an upload in a polled folder posted in 0.4 s.
- FIFOs (one held open by a writer), listening sockets, symlinks (to
  /dev/zero, to an order outside, dangling) and character devices, 50 of
  each, beside 500 dotfiles and an order: the order posted, each of the 200
  refused into failed/ with its reason, nothing followed or opened, the
  dotfiles left alone.
- 600 uploads renamed into place by the partner's uid at once: each posted
  once, started oldest first (within the workers' room), ``status``
  answering meanwhile.
- ``max_file_bytes``: a file of exactly that size is posted; one byte more
  is refused unread, the reason naming both sizes and the key.
- An element of a MB: the order rejected naming N102 and its length, the
  997's AK4 copying 99 characters, the job in well under a second; a
  segment over 1 MiB is refused as having no terminator within 1 MiB.
- 5,000 interchanges of a group each: refused at once naming
  ``max_groups_per_file``, no acknowledgement. 1,000 wrong IEA02s: 1,000
  TA1s (one over is refused whole by the 1,000-error cap).
- A partner's folder near PATH_MAX with a long name: claimed, posted, filed.

Found (strict xfails; all fixed the same session, each test failing
before: directories left in the inbox out of the tracker's window; an
overflow rescans at once; a reload refused when inotify cannot watch a new
inbox (``watch.probe_inotify``); ``inotify_unavailable`` names the inbox;
search keys looked up in a set; interchanges counted against
``max_groups_per_file``; ``process --partner`` under the partner's
``max_file_bytes``)
1. ``test_directories_in_the_inbox_do_not_keep_an_upload_waiting``: 2,100
   directories in the inbox (older than the upload, as partners' folders
   are) fill the tracker's window of 2,048 names closely watched: each
   stays an entry (``inbox_entry_left``, state reported) for as long as it
   is there, so an upload found by a scan (present at start, lost to an
   overflow) waits in the backlog for ever: ``status`` says "1 waiting",
   it is never posted; ``run --once`` on that inbox never exits
   (``test_run_once_with_directories_in_the_inbox_takes_the_upload_and_exits``;
   with 100 directories: done, exit 0 in 0.5 s). Should: left-in-place
   entries take no room an upload needs (README: a directory "is left in
   place ... and not counted by status as an upload waiting").
2. ``test_uploads_lost_to_an_overflow_are_taken_without_waiting_for_the_rescan``:
   watchdog 7 tells the daemon of the overflow (an ``events_lost`` event,
   and its own "Inotify queue overflowed" warning in the daemon's log), but
   the handler drops it: the lost uploads wait, the workers idle, until
   the next periodic rescan, up to ``rescan_seconds`` (60 s by default;
   measured 30 s with 30). Should: a rescan as soon as the overflow is
   known (DESIGN's "dropped silently" is no longer watchdog's behaviour).
3. ``test_a_reload_at_the_watch_limit_is_refused_not_fatal``: ``observer =
   "inotify"``, the watch limit reached, a SIGHUP adding a partner with a
   folder: the daemon stops (``cannot_watch``, exit 1) instead of refusing
   the reload; under systemd it restarts with the new file and fails again
   the same way, every partner unserved. Should: ``reload_refused`` naming
   the limit, the running configuration kept (README: a reload is refused
   when an inbox cannot be opened, or the daemon is short of resources).
4. ``test_the_inotify_fallback_warning_names_the_inbox_it_polls``: with
   ``observer = "auto"`` and the watch limit reached at the partner's
   folder, the warning reads "inotify watch limit reached (raise ...)"
   with no inbox or partner, and ``daemon_ready`` says ``observer:
   inotify``: with many partners, nothing tells which folders are polled
   (300 partners, 50 watches, by hand: 251 identical warnings).
   Should: the warning names the inbox (and partner) it falls back for.
5. ``test_an_interchange_of_thousands_of_orders_is_recorded_in_linear_time``:
   one interchange of N posted orders: the job's final record compares its
   PO search keys with those its running record wrote as lists
   (``recorder._unwritten``: ``k not in list``), quadratic in the orders:
   500 orders 2.5 s, 1,000 3.5 s, 2,000 10 s, 4,000 42 s; 50,000 (within
   ``max_sets_per_file``) still running after 10 minutes, every order
   posted and the 997 written, the job ``running`` and its worker busy for
   hours. Should: linear (a set), as every other step of the job is.
6. ``test_thousands_of_empty_interchanges_give_one_failure_not_thousands_of_ta1s``:
   1,500 interchanges without a group (190 KB), each asking for a TA1:
   1,500 TA1 files written into the partner's acknowledgements, each
   taking a number of the shared sequence, before the file fails as
   holding no set (5,000 took 5.7 s; within ``max_file_bytes``, ~540,000).
   No limit counts interchanges. Should: refused once naming a limit, as
   5,000 empty groups are (``test_hostile``), with no acknowledgement.
7. ``test_process_as_a_partner_takes_a_file_within_that_partners_max_file_bytes``:
   a partner whose ``max_file_bytes`` is above ``[daemon]``'s: its upload
   is posted by the daemon (the worker reads under the partner's cap), but
   ``edi-inbox process --partner acme FILE`` of the same size fails unread,
   "over the limit of N bytes (max_file_bytes)", N the daemon's
   (``pipeline.run`` reads under ``settings.daemon.max_file_bytes``).
   Should: the partner's cap, as README says of ``--partner``: "Its
   settings apply".
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest
from daemons import Daemon, daemon_command, daemons, erp  # noqa: F401  (fixtures)

import uids
from helpers import make_po, poll_until, sent_by
from uids import shared_root  # noqa: F401  (fixture)

QUEUED_EVENTS = Path("/proc/sys/fs/inotify/max_queued_events")


def stop(daemon: Daemon) -> None:
    """SIGSTOP the daemon and wait until the kernel has it stopped: until
    then its observer may still read events off its queue."""
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGSTOP)
    stat = Path(f"/proc/{daemon.proc.pid}/stat")
    poll_until(lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "T", what="stopped")


def flood(inbox: Path) -> None:
    """More events than an inotify queue holds (a stopped daemon's): a hidden
    file (the daemon passes it by) opened and closed, an IN_OPEN and an
    IN_CLOSE_NOWRITE each time (alike events in a row would be merged)."""
    try:
        limit = int(QUEUED_EVENTS.read_text())
    except OSError as exc:
        pytest.skip(f"cannot read {QUEUED_EVENTS}: {exc}")
    hidden = inbox / ".flood"
    hidden.write_bytes(b"")
    for _ in range(limit // 2 + 1024):
        os.close(os.open(hidden, os.O_RDONLY))


class LimitedDaemon(Daemon):
    """The daemon as root of a user namespace of its own whose inotify watch
    and instance limits are lowered (the kernel checks them as it checks
    ``fs.inotify.max_user_watches``/``max_user_instances``)."""

    def __init__(self, *args, watches=None, instances=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limits = {"watches": watches, "instances": instances}

    def start(self, wait: bool = True) -> None:
        uids.need_root()
        probe = subprocess.run(["unshare", "--user", "--map-root-user", "true"], timeout=10)
        if probe.returncode != 0:
            pytest.skip("no user namespaces here")
        self.ready.clear()
        env = {**os.environ, "NOTIFY_SOCKET": "@" + self.notify_name}
        env.pop("EDI_INBOX_CONFIG", None)
        sets = [
            f"echo {value} >/proc/sys/user/max_inotify_{key}"
            for key, value in self.limits.items()
            if value is not None
        ]
        script = " && ".join([*sets, 'exec "$@"'])
        command = ["unshare", "--user", "--map-root-user", "sh", "-c", script, "sh"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                command + daemon_command(self.config), env=env, stdout=log, stderr=subprocess.STDOUT
            )
        if wait:
            deadline = time.monotonic() + 20
            while not self.ready.wait(0.05):
                assert self.proc.poll() is None, f"daemon exited: {self.log.read_text()[-2000:]}"
                assert time.monotonic() < deadline, "no READY=1 within 20 s"


def partner_folder(root: Path) -> tuple[Path, str]:
    folder = root / "acme-in"
    folder.mkdir()
    return folder, f'[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{folder}"\n'


def limited(tmp_path: Path, erp_url: str, **options) -> tuple[LimitedDaemon, Path, str]:
    folder, section = partner_folder(tmp_path)
    extra = options.pop("extra", section)
    daemon = LimitedDaemon(tmp_path, erp_url, extra=extra, **options)
    return daemon, folder, section


def both_posted(daemon: Daemon, folder: Path) -> None:
    (folder / "a.edi").write_bytes(sent_by(make_po(1), "ZZ:ACME"))
    (daemon.inbox / "s.edi").write_bytes(make_po(2))
    poll_until(lambda: daemon.listing(daemon.done) == ["a.edi", "s.edi"], what="both done")


def done_count(daemon: Daemon) -> int:
    return len(daemon.listing(daemon.done))


# --- the event queue overflowing ----------------------------------------------------


def rename_in(daemon: Daemon, count: int, stage: Path) -> list[str]:
    """``count`` orders written under a staging folder, then renamed into
    the inbox (each rename one ``IN_MOVED_TO``) while the daemon is stopped
    (SIGSTOP) and its event queue full (``flood``): their events are lost
    whatever the machine's speed; SIGCONT after."""
    stage.mkdir()
    names = [f"po{i:05d}.edi" for i in range(count)]
    for i, name in enumerate(names):
        (stage / name).write_bytes(make_po(i + 1))
    stop(daemon)
    try:
        flood(daemon.inbox)
        for name in names:
            os.rename(stage / name, daemon.inbox / name)
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
    return names


def overflowed(daemon: Daemon) -> bool:
    return "overflow" in daemon.log.read_text(errors="replace")


def test_an_overflowed_queue_loses_no_upload(daemons, erp, tmp_path):  # noqa: F811
    daemon = daemons(erp.url, rescan_seconds=2.0, workers=8)
    daemon.start()
    pid = daemon.proc.pid
    names = rename_in(daemon, 300, tmp_path / "stage")
    poll_until(lambda: done_count(daemon) == len(names), timeout=30, what="all done")
    assert overflowed(daemon)  # the test did what it says
    assert daemon.alive() and daemon.proc.pid == pid  # without a restart
    keys = erp.posts_per_key()
    assert len(keys) == len(names) and set(keys.values()) == {1}


def test_uploads_lost_to_an_overflow_are_taken_without_waiting_for_the_rescan(
    daemons,  # noqa: F811
    erp,  # noqa: F811
    tmp_path,
):
    daemon = daemons(erp.url, rescan_seconds=60.0, workers=8)  # the default rescan
    daemon.start()
    names = rename_in(daemon, 300, tmp_path / "stage")
    poll_until(lambda: overflowed(daemon), what="the overflow in the daemon's log")
    poll_until(lambda: done_count(daemon) == len(names), timeout=8, what="all done in 8 s")


# --- watch and instance limits ------------------------------------------------------


@pytest.mark.parametrize("limit", [{"watches": 1}, {"watches": 0}, {"instances": 0}])
def test_at_an_inotify_limit_auto_polls_and_serves_every_inbox(tmp_path, erp, limit):  # noqa: F811
    daemon, folder, _ = limited(tmp_path, erp.url, observer="auto", **limit)
    try:
        daemon.start()
        (warning, *_) = daemon.events("inotify_unavailable")
        assert "limit reached" in warning["error"] and "max_user_watches" in warning["error"]
        both_posted(daemon, folder)
    finally:
        daemon.close()


def test_at_the_watch_limit_inotify_mode_exits_naming_the_limit(tmp_path, erp):  # noqa: F811
    daemon, folder, _ = limited(tmp_path, erp.url, observer="inotify", watches=1)
    try:
        daemon.start(wait=False)
        assert daemon.proc.wait(20) == 1
        assert not daemon.ready.is_set()
        (error,) = daemon.events("cannot_watch")
        assert str(folder) in error["error"] and "max_user_watches" in error["error"]
    finally:
        daemon.close()


def test_a_reload_at_the_watch_limit_is_refused_not_fatal(tmp_path, erp):  # noqa: F811
    daemon, _, section = limited(tmp_path, erp.url, observer="inotify", watches=1, extra="")
    try:
        daemon.start()
        daemon.sighup(section)
        poll_until(
            lambda: daemon.events("reload_refused") or not daemon.alive(), what="reload judged"
        )
        assert daemon.alive(), daemon.events("cannot_watch")
        (daemon.inbox / "s.edi").write_bytes(make_po(2))
        poll_until(lambda: daemon.listing(daemon.done) == ["s.edi"], what="shared inbox served")
    finally:
        daemon.close()


def test_the_inotify_fallback_warning_names_the_inbox_it_polls(tmp_path, erp):  # noqa: F811
    daemon, folder, _ = limited(tmp_path, erp.url, observer="auto", watches=1)
    try:
        daemon.start()
        (warning,) = daemon.events("inotify_unavailable")
        assert str(folder) in str(warning) or warning.get("partner") == "acme", warning
    finally:
        daemon.close()


# --- non-EDI entries ----------------------------------------------------------------


def test_directories_in_the_inbox_do_not_keep_an_upload_waiting(daemons, erp):  # noqa: F811
    daemon = daemons(erp.url)
    old = time.time() - 3600
    for i in range(2100):  # partners' folders, older than any upload
        folder = daemon.inbox / f"folder{i:05d}"
        folder.mkdir()
        os.utime(folder, (old, old))
    (daemon.inbox / "po.edi").write_bytes(make_po(1))  # there before the start: found by a scan
    daemon.start()
    poll_until(lambda: daemon.listing(daemon.done) == ["po.edi"], timeout=4, what="po.edi done")


def test_run_once_with_directories_in_the_inbox_takes_the_upload_and_exits(tmp_path):
    """The same inbox under ``run --once`` (a timer's run): with 100
    directories it posts the upload and exits 0 in 0.5 s; with 2,100 it
    never exits (still running after 60 s, by hand) and never takes it."""
    root = tmp_path / "state"
    (root / "inbox").mkdir(parents=True)
    old = time.time() - 3600
    for i in range(2100):
        folder = root / "inbox" / f"folder{i:05d}"
        folder.mkdir()
        os.utime(folder, (old, old))
    (root / "inbox" / "po.edi").write_bytes(make_po(1))
    config = tmp_path / "edi-inbox.toml"
    config.write_text(f'[paths]\nroot = "{root}"\n[daemon]\nprocesses = 1\nsettle_seconds = 0.2\n')
    proc = subprocess.Popen(
        daemon_command(config, "run", "--once"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.wait(6) == 0
        assert os.listdir(root / "done") == ["po.edi"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# --- bursts -------------------------------------------------------------------------


def _upload_all(stage: Path, inbox: Path, uploads: list[tuple[str, bytes]]) -> None:
    for name, data in uploads:
        (stage / name).write_bytes(data)
    for name, _ in uploads:
        os.rename(stage / name, inbox / name)


def test_a_burst_of_partner_uploads_is_posted_once_oldest_first(shared_root, erp):  # noqa: F811
    daemon = Daemon(shared_root, erp.url, user=True)
    try:
        stage = shared_root / "stage"
        stage.mkdir()
        os.chown(stage, uids.PARTNER, uids.GROUP)
        daemon.start()
        erp.gate.clear()  # a backlog forms behind the first jobs
        uploads = [(f"po{i:05d}.edi", make_po(i + 1)) for i in range(600)]
        uids.run_as(uids.PARTNER, uids.GROUP, _upload_all, stage, daemon.inbox, uploads)
        poll_until(lambda: len(erp.requests) >= 4, what="the first jobs at the ERP")
        started = time.monotonic()
        status = daemon.cli("status")
        assert status.returncode == 0 and time.monotonic() - started < 5
        assert " waiting" in status.stdout
        erp.gate.set()
        poll_until(lambda: done_count(daemon) == len(uploads), timeout=40, what="all done")
        keys = erp.posts_per_key()
        assert len(keys) == len(uploads) and set(keys.values()) == {1}
        db = shared_root / "edi-inbox.db"
        with contextlib.closing(sqlite3.connect(db)) as conn:
            order = [r[0] for r in conn.execute("SELECT file_name FROM jobs ORDER BY started_at")]
        ranks = [int(name[2:7]) for name in order]
        # oldest first: none started before one uploaded more than the workers' room ahead
        assert max(max(ranks[: k + 1]) - ranks[k] for k in range(len(ranks))) <= 4 * 4
    finally:
        daemon.close()


# --- sizes at the edges -------------------------------------------------------------


def test_a_file_of_max_file_bytes_is_posted_one_byte_more_refused(daemons, erp):  # noqa: F811
    data = make_po(1)
    daemon = daemons(erp.url, max_file_bytes=len(data))
    daemon.start()
    (daemon.inbox / "exact.edi").write_bytes(data)
    (daemon.inbox / "over.edi").write_bytes(make_po(2) + b"\n")
    poll_until(lambda: daemon.listing(daemon.done) == ["exact.edi"], what="exact.edi done")
    poll_until(lambda: "over.edi" in daemon.listing(daemon.failed), what="over.edi failed")
    report = (daemon.failed / "over.edi.error.json").read_text()
    assert f"{len(data) + 1} bytes" in report and "max_file_bytes" in report
    assert [po for _, po in erp.requests] == [make_po_number(data)]


def make_po_number(data: bytes) -> str:
    beg = next(s for s in data.decode("latin-1").split("\n") if s.startswith("BEG"))
    return beg.split("*")[3]


ISA = (
    "ISA*00*          *00*          *ZZ*HOSTILE        *ZZ*RECEIVER       "
    "*240102*1200*U*00401*000000001*0*P*>"
)


def one_interchange(orders: list[tuple[str, str]]) -> bytes:
    """One interchange, one group, an 850 per (PO number, vendor name)."""
    segs = [ISA, "GS*PO*HOSTILE*RECEIVER*20240102*1200*1*X*004010"]
    for n, (po, name) in enumerate(orders, 1):
        body = [
            f"ST*850*{n:09d}",
            f"BEG*00*SA*{po}**20240102",
            f"N1*VN*{name}",
            "PO1*1*2*EA*3.50**VN*W-1",
            "CTT*1",
        ]
        segs += [*body, f"SE*{len(body) + 1}*{n:09d}"]
    segs += [f"GE*{len(orders)}*1", "IEA*1*000000001"]
    return "~\n".join(segs).encode() + b"~\n"


def test_an_element_of_a_megabyte_is_refused_naming_it(daemons, erp):  # noqa: F811
    daemon = daemons(erp.url)
    daemon.start()
    (daemon.inbox / "big.edi").write_bytes(one_interchange([("PO-1", "X" * 1_000_000)]))
    poll_until(lambda: "big.edi" in daemon.listing(daemon.failed), what="big.edi failed")
    report = (daemon.failed / "big.edi.error.json").read_text()
    assert "N102 is 1000000 characters long, over its maximum of 60" in report
    (ack,) = [p for p in (daemon.root / "acks").iterdir() if p.name.endswith(".997")]
    ak4 = next(s for s in ack.read_text().split("~") if s.strip().startswith("AK4"))
    assert len(ak4.split("*")[4]) == 99
    assert erp.requests == []


def test_an_interchange_of_thousands_of_orders_is_recorded_in_linear_time(tmp_path):
    """6,000 orders (22-character PO numbers: 20 search keys each) through
    ``edi-inbox process`` into the outbox: some seconds of linear work, some
    100 s as the record compared 120,000 keys with a list of 120,000 (3,000
    took 25 s). The bound is no timing but a guard ten times the linear
    work: the quadratic record never ended within it (fixed the same
    session: the keys written are looked up in a set)."""
    config = tmp_path / "edi-inbox.toml"
    config.write_text(f'[paths]\nroot = "{tmp_path / "state"}"\n[daemon]\nprocesses = 1\n')
    (tmp_path / "state" / "inbox").mkdir(parents=True)
    orders = [(f"ABCDEFGHIJKLMN-{n:07d}", "ACME SUPPLY") for n in range(6000)]
    path = tmp_path / "many.edi"
    path.write_bytes(one_interchange(orders))
    proc = subprocess.Popen(
        daemon_command(config, "process", str(path)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def process(tmp_path: Path, data: bytes, name: str) -> tuple[int, str, Path]:
    """``edi-inbox process`` on ``data`` (no ERP: orders into the outbox);
    its exit status, what it printed and the acknowledgements folder."""
    root = tmp_path / "state"
    (root / "inbox").mkdir(parents=True, exist_ok=True)
    config = tmp_path / "edi-inbox.toml"
    config.write_text(f'[paths]\nroot = "{root}"\n[daemon]\nprocesses = 1\n')
    path = tmp_path / name
    path.write_bytes(data)
    result = subprocess.run(
        daemon_command(config, "process", str(path)), capture_output=True, text=True, timeout=60
    )
    return result.returncode, result.stdout, root / "acks"


def empty_interchanges(count: int, ta1_requested: str = "1") -> bytes:
    """``count`` interchanges without a group, each asking for a TA1 (ISA14)."""
    isa = ISA.replace("*0*P*>", f"*{ta1_requested}*P*>")
    return b"".join(
        f"{isa.replace('000000001', f'{n:09d}')}~\nIEA*0*{n:09d}~\n".encode()
        for n in range(1, count + 1)
    )


def test_thousands_of_empty_interchanges_give_one_failure_not_thousands_of_ta1s(tmp_path):
    """1,500 interchanges of two segments each (190 KB), every one asking for
    a TA1: the file fails ("holds no transaction set"), after writing 1,500
    TA1 files into the partner's acknowledgements, each taking a number of
    the shared sequence (5,000 took 5.7 s; a 64 MiB file would hold
    ~540,000). 5,000 empty groups are refused once, naming a limit, with
    no acknowledgement (test_hostile): so should these be."""
    status, _, acks = process(tmp_path, empty_interchanges(1500), "empty.edi")
    assert status == 1
    assert not acks.exists() or len(os.listdir(acks)) <= 1


def test_5000_interchanges_in_one_file_are_refused_once_naming_the_limit(tmp_path):
    data = b"".join(
        one_interchange([(f"PO-{n}", "ACME")]).replace(b"000000001", f"{n:09d}".encode())
        for n in range(1, 5001)
    )
    status, said, acks = process(tmp_path, data, "many.edi")
    assert status == 1
    # its 101st ISA comes before its 101st GS (interchanges counted since this round)
    assert "more than 100 interchanges" in said and "max_groups_per_file = 100" in said
    assert not acks.exists() or os.listdir(acks) == []


def test_a_partner_folder_near_path_max_with_a_long_name_is_posted(tmp_path, erp):  # noqa: F811
    """A partner's folder 3,700 bytes deep, an upload named with 204 bytes
    (3,905 in all, under PATH_MAX): claimed, posted, filed."""
    folder = tmp_path
    while len(str(folder)) < 3700 - 250:
        folder = folder / ("d" * 200)
    folder = folder / ("e" * (3700 - len(str(folder)) - 1))
    folder.mkdir(parents=True)
    extra = f'[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{folder}"\n'
    daemon = Daemon(tmp_path, erp.url, extra=extra)
    try:
        daemon.start()
        name = "p" * 200 + ".edi"
        (folder / name).write_bytes(sent_by(make_po(1), "ZZ:ACME"))
        poll_until(lambda: daemon.listing(daemon.done) == [name], what="done")
        assert len(erp.requests) == 1 and os.listdir(folder) == []
    finally:
        daemon.close()


def test_fifos_sockets_links_and_devices_are_refused_unread_beside_an_order(
    daemons,  # noqa: F811
    erp,  # noqa: F811
    tmp_path,
):
    """50 each of FIFOs (one held open by a writer), listening sockets,
    symlinks (to /dev/zero, to a good order outside, dangling) and
    character devices (/dev/zero's numbers), 500 dotfiles, then one order:
    the order is posted, every other object refused into failed/ with its
    reason, nothing followed or opened (the ERP sees one order)."""
    daemon = daemons(erp.url, workers=8)
    outside = tmp_path / "outside.edi"
    outside.write_bytes(make_po(99))
    listeners = []
    try:
        for i in range(50):
            os.mkfifo(daemon.inbox / f"fifo{i}.edi")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(daemon.inbox / f"sock{i}.edi"))
            listener.listen(1)
            listeners.append(listener)
            target = ("/dev/zero", str(outside), str(tmp_path / "nowhere"))[i % 3]
            os.symlink(target, daemon.inbox / f"link{i}.edi")
            os.mknod(daemon.inbox / f"dev{i}.edi", 0o644 | stat.S_IFCHR, os.makedev(1, 5))
        for i in range(500):
            (daemon.inbox / f".hidden{i}.edi").write_bytes(make_po(1000 + i))
        writer = os.open(daemon.inbox / "fifo0.edi", os.O_RDWR | os.O_NONBLOCK)
        try:
            daemon.start()
            (daemon.inbox / "po.edi").write_bytes(make_po(1))
            poll_until(lambda: daemon.listing(daemon.done) == ["po.edi"], what="po.edi done")
            poll_until(
                lambda: len(daemon.listing(daemon.failed)) == 400, timeout=30, what="400 refused"
            )
        finally:
            os.close(writer)
        reports = [n for n in daemon.listing(daemon.failed) if n.endswith(".error.json")]
        assert len(reports) == 200
        reasons = {
            kind: (daemon.failed / f"{kind}1.edi.error.json").read_text()
            for kind in ("fifo", "sock", "link", "dev")
        }
        assert "FIFO" in reasons["fifo"] and "socket" in reasons["sock"]
        assert "symbolic link" in reasons["link"] and "device" in reasons["dev"]
        assert [po for _, po in erp.requests] == [make_po_number(make_po(1))]
        assert len([n for n in os.listdir(daemon.inbox) if n.startswith(".hidden")]) == 500
    finally:
        for listener in listeners:
            listener.close()


def test_process_as_a_partner_takes_a_file_within_that_partners_max_file_bytes(
    tmp_path,
    erp,  # noqa: F811
):
    """acme's folder takes files up to 100 bytes more than [daemon]
    max_file_bytes: its upload of that size is posted by the daemon, but
    the same size run by hand as acme's (README: "Its settings apply")
    fails unread: "over the limit of N bytes (max_file_bytes)", the
    daemon's limit."""
    folder = tmp_path / "acme-in"
    folder.mkdir()
    data = sent_by(make_po(1), "ZZ:ACME")
    extra = (
        f'[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{folder}"\n'
        f"max_file_bytes = {len(data) + 100}\n"
    )
    daemon = Daemon(tmp_path, erp.url, max_file_bytes=len(data) - 100, extra=extra)
    try:
        daemon.start()
        (folder / "a.edi").write_bytes(data)
        poll_until(lambda: daemon.listing(daemon.done) == ["a.edi"], what="a.edi done")
        by_hand = tmp_path / "by-hand.edi"
        by_hand.write_bytes(sent_by(make_po(2), "ZZ:ACME"))
        result = daemon.cli("process", "--partner", "acme", str(by_hand))
        assert result.returncode == 0, result.stdout
    finally:
        daemon.close()
