"""Round five of an outsider's tries, at two changes: a job the database
failed keeps what it owes in processing/.owed/<host>/ before its TA1 and
997 go out (commit 8811bec), and a failed file's NAME.error.json is in
failed/ before the file (commit 5b508a6). The real daemon as a subprocess,
uploads owned by a partner's uid, a real HTTP ERP on 127.0.0.1, a real
SQLite file locked by another process, real SIGKILLs, folders on tmpfs
mounts of their own. Each "Was a bug" below was found by this round and
fixed the same night."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import struct
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest
from daemons import daemons, erp
from test_outages import fill
from test_outsider_round3 import acks, assert_distinct, failed_files, with_defaults
from test_outsider_round4 import (
    acme,
    break_acks,
    held_997_out,
    none_running,
    per_file,
    quick_busy,
    rejected,
    start_with_held,
)

import uids
from helpers import claimed, database_locked, make_po, poll_until, sent_by

pytestmark = pytest.mark.e2e
__all__ = ["daemons", "erp"]  # fixtures


@contextlib.contextmanager
def immutable(*folders: Path):
    """``chattr +i`` on ``folders`` (not even root may create a file there), undone after."""
    done = []
    try:
        for folder in folders:
            subprocess.run(["chattr", "+i", str(folder)], check=True)
            done.append(folder)
        yield
    finally:
        for folder in done:
            subprocess.run(["chattr", "-i", str(folder)], check=False)


def owed_folders(processing: Path) -> list[Path]:
    base = processing / ".owed"
    return sorted(p for p in base.iterdir() if p.is_dir()) if base.exists() else []


# -- 1. a job the database failed: what it owes kept before its 997 -----------------------------


def test_held_acks_wait_when_what_is_owed_cannot_be_kept(tmp_path, erp, daemons):
    """The defaults, SQLite's busy timeout 3 s; processing/.owed/<host>/
    made immutable (a full or read-only processing/ folder would do the
    same); a good file (ISA14 = 1) waits at the ERP; the SQLite file is
    locked; the ERP answers: the order's record fails, the job holds its
    acknowledgements until what it owes is kept - which cannot be: parked,
    nothing written. SIGKILL, lock gone and folder mended, restart: one TA1,
    one 997, posted under one key. Was a bug: the failure to keep was only
    logged, the TA1 and 997 went out, and the restart sent a second pair."""
    daemon = daemons(erp.url)
    with_defaults(daemon, "[daemon]\nheartbeat_seconds = 1.0\n")
    quick_busy(daemon, 3.0)
    start_with_held(daemon, erp, 5100)
    with (
        immutable(*owed_folders(daemon.processing)),
        database_locked(daemon.root / "edi-inbox.db"),
    ):
        erp.gate.set()
        held = "held until what the job owes can be kept"
        poll_until(
            lambda: any(held in e["reason"] for e in daemon.events("job_parked")),
            timeout=25,
            what="the job parked, its acknowledgements held",
        )
        assert per_file(tmp_path) == {}
        daemon.kill()
    assert daemon.events("owed_record_not_kept")
    daemon.start()
    poll_until(lambda: daemon.listing(daemon.done) == ["held.edi"], timeout=30, what="filed")
    none_running(daemon)
    assert len(erp.keys_by_po()) == 1
    assert per_file(tmp_path) == {"held.edi": Counter({"TA1": 1, "997": 1})}
    assert daemon.terminate(15) == 0


def one_good_then_rejected(po: int, rejects: int) -> bytes:
    """One file: a good interchange (ISA14 = 1, PO ``po``), then ``rejects``
    interchanges of a rejected order each (ISA14 = 1): a TA1 and a 997 each.
    All sent by 08:1111111111 (acme's id)."""
    good = sent_by(make_po(po), "08:1111111111")
    parts = [good] + [rejected(po + 1 + n, ta1=True) for n in range(rejects)]
    return b"".join(parts)


def test_a_held_job_of_many_interchanges_writes_each_ack_once(tmp_path, erp, daemons):
    """The first order of 91 interchanges (ISA14 = 1) accepted while the
    SQLite file is locked (its record fails): the job holds, keeps, then
    writes its 182 acknowledgements, and once the lock is gone is filed in
    failed/ (partial: the 90 rejected orders); each TA1 and 997 once."""
    daemon = daemons(erp.url)
    with_defaults(daemon, "[daemon]\nheartbeat_seconds = 1.0\n")
    quick_busy(daemon, 1.0)
    daemon.start()
    erp.gate.clear()
    uids.upload(daemon.inbox / "held.edi", one_good_then_rejected(5200, 90))
    poll_until(lambda: erp.requests, timeout=20, what="the POST held by the ERP")
    with database_locked(daemon.root / "edi-inbox.db"):
        erp.gate.set()
        poll_until(lambda: per_file(tmp_path).get("held.edi"), timeout=25, what="the 997")
    poll_until(lambda: failed_files(daemon) or daemon.listing(daemon.done), timeout=30)
    none_running(daemon)
    assert failed_files(daemon) == ["held.edi"]
    assert_distinct(acks(tmp_path))
    assert len(erp.keys_by_po()) == 1
    assert per_file(tmp_path) == {"held.edi": Counter({"TA1": 91, "997": 91})}
    assert daemon.terminate(15) == 0


@pytest.mark.parametrize("where", ["acks", "outbox"])
def test_a_sigkill_while_held_acks_are_being_written_sends_none_twice(
    tmp_path, erp, daemons, where
):
    """The defaults, SQLite's busy timeout 3 s; one file of 91 interchanges
    (ISA14 = 1), the first a good order held at the ERP, the rest rejected
    orders: 91 TA1s and 91 997s (into acks/, or acme's outbox). The SQLite
    file is locked, the ERP answers: the order's record fails, the job keeps
    what it owes, then writes its 182 acknowledgements. SIGKILL as soon as
    the first is there (the rest still being written), lock gone, restart.
    Promise: each of them once.
    Was a bug: the restart wrote them all again (105 TA1s, 105 997s)."""
    daemon = daemons(erp.url)
    with_defaults(daemon, "[daemon]\nheartbeat_seconds = 1.0\n")
    quick_busy(daemon, 3.0)
    folder = "acks"
    if where == "outbox":
        acme(daemon, tmp_path / "acme-out")
        folder = "acme-out"
    daemon.start()
    erp.gate.clear()
    uids.upload(daemon.inbox / "held.edi", one_good_then_rejected(5300, 90))
    poll_until(lambda: erp.requests, timeout=20, what="the POST held by the ERP")
    with database_locked(daemon.root / "edi-inbox.db"):
        erp.gate.set()
        poll_until(lambda: per_file(tmp_path, folder).get("held.edi"), timeout=25, what="an ack")
        daemon.kill()
    before = per_file(tmp_path, folder)["held.edi"]
    if sum(before.values()) == 182:
        pytest.skip("the kill came after every acknowledgement was written")
    daemon.start()
    poll_until(lambda: failed_files(daemon) == ["held.edi"], timeout=30, what="filed")
    none_running(daemon)
    assert len(erp.keys_by_po()) == 1
    assert per_file(tmp_path, folder) == {"held.edi": Counter({"TA1": 91, "997": 91})}
    assert daemon.terminate(15) == 0


@pytest.mark.parametrize(
    ("stop", "processes"),
    [
        ("SIGKILL", 1),
        ("SIGKILL", 2),
        ("SIGTERM", 1),
        ("SIGTERM", 2),
    ],
)
def test_a_stop_once_the_held_997_is_out_sends_no_second_one(
    tmp_path, erp, daemons, stop, processes
):
    """Round four's case (a good file, ISA14 = 1, held at the ERP; the
    SQLite file locked; the ERP answers; the TA1 and 997 go out while the
    final record waits 3 s on the lock), with worker processes, and with
    SIGTERM (shutdown timeout 1 s: shorter than the record's wait) as well
    as SIGKILL, the moment the 997 is there. Restart, lock gone: one TA1,
    one 997, one post, filed in done/.
    Was a bug with worker processes and SIGTERM: the file was handed back and ran afresh."""
    daemon = daemons(erp.url)
    extra = f"processes = {processes}\nshutdown_timeout_seconds = 1.0\n"
    with held_997_out(daemon, erp, 5150 + processes, extra):
        if stop == "SIGKILL":
            daemon.kill()
        else:
            assert daemon.terminate(30) == 0
    before = per_file(tmp_path)
    daemon.start()
    poll_until(lambda: daemon.listing(daemon.done) == ["held.edi"], timeout=30, what="filed")
    none_running(daemon)
    assert len(erp.keys_by_po()) == 1 and set(erp.posts_per_key().values()) == {1}
    assert_distinct(acks(tmp_path))
    assert per_file(tmp_path) == before == {"held.edi": Counter({"TA1": 1, "997": 1})}
    assert daemon.terminate(15) == 0


@pytest.mark.parametrize("stop", ["none", "SIGKILL"])
def test_a_held_job_whose_acks_folder_is_broken_too_writes_them_once(tmp_path, erp, daemons, stop):
    """The defaults; a good file (ISA14 = 1) held at the ERP; acks/ replaced
    by a plain file and the SQLite file locked: the order's record fails,
    the held TA1 and 997 cannot be written either: the job is parked owing
    them (and SIGKILLed then, in one case). acks/ mended, the lock gone
    (and restarted): one TA1 and one 997, one post, filed in done/."""
    daemon = daemons(erp.url)
    with_defaults(daemon, "[daemon]\nheartbeat_seconds = 1.0\n")
    quick_busy(daemon, 1.0)
    start_with_held(daemon, erp, 5170 + (stop == "SIGKILL"))
    mend = break_acks(tmp_path)
    with database_locked(daemon.root / "edi-inbox.db"):
        erp.gate.set()
        poll_until(lambda: daemon.events("job_parked"), timeout=25, what="parked")
        if stop == "SIGKILL":
            daemon.kill()
        mend()
        assert per_file(tmp_path) == {}
    if stop == "SIGKILL":
        daemon.start()
    poll_until(lambda: daemon.listing(daemon.done) == ["held.edi"], timeout=40, what="filed")
    none_running(daemon)
    assert len(erp.keys_by_po()) == 1 and set(erp.posts_per_key().values()) == {1}
    assert per_file(tmp_path) == {"held.edi": Counter({"TA1": 1, "997": 1})}
    assert daemon.terminate(15) == 0


# -- 2. a failed file's report in failed/ before the file ----------------------------------------

IN_MODIFY, IN_CREATE, IN_MOVED_TO = 0x2, 0x100, 0x80


class Watch:
    """A real inotify watch on ``folder`` (IN_CREATE, IN_MOVED_TO): the names
    that appeared there, in order, read by a thread of its own."""

    def __init__(self, folder: Path) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_CLOEXEC)
        assert self.fd >= 0
        mask = IN_CREATE | IN_MOVED_TO | IN_MODIFY
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(folder), mask)
        assert wd >= 0
        self.seen: list[tuple[str, bool]] = []  # (name, report readable at that moment)
        self.sizes: list[tuple[str, int]] = []  # (name, its size at that moment; -1: gone)
        self.modified: list[str] = []  # names written to once they were there
        self.folder = folder
        self.closing = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                return
            at = 0
            while at < len(data):
                _, mask, _, size = struct.unpack_from("iIII", data, at)
                name = data[at + 16 : at + 16 + size].rstrip(b"\0").decode()
                at += 16 + size
                if mask & IN_MODIFY:
                    self.modified.append(name)
                    continue
                if name.startswith(".") or name.endswith(".error.json"):
                    self.seen.append((name, True))
                    continue
                report = self.folder / (name + ".error.json")
                try:  # what a script acting on the arrival does: read the report
                    ok = json.loads(report.read_bytes())["file"] == name
                except (OSError, ValueError, KeyError):
                    ok = False
                try:
                    size = (self.folder / name).stat().st_size
                except OSError:
                    size = -1
                self.seen.append((name, ok))
                self.sizes.append((name, size))

    def sync(self) -> None:
        """Wait until every event before now has been read (inotify keeps
        order: a marker file's arrival comes after them)."""
        marker = f".marker-{len(self.seen)}-{os.getpid()}"
        (self.folder / marker).write_bytes(b"")
        poll_until(lambda: any(n == marker for n, _ in self.seen), what="the watch caught up")
        (self.folder / marker).unlink()

    def close(self) -> None:
        os.close(self.fd)


def test_same_named_failures_from_worker_processes_each_have_their_report_first(
    tmp_path, erp, daemons
):
    """Worker processes (2) and 4 workers; four partners, each with an inbox
    of its own; 850.edi (a rejected order) uploaded into the four inboxes at
    once, five rounds: twenty failures under one name, several at the same
    moment. failed/ watched with inotify, each file's report read the
    moment the file appears. Holds: every file's report is there and names
    it; twenty files, twenty reports, no report without its file; nothing
    acknowledged twice."""
    daemon = daemons(erp.url, processes=2, workers=4)
    inboxes = []
    for n in range(4):
        inbox = tmp_path / f"p{n}-in"
        inbox.mkdir()
        inboxes.append(inbox)
        daemon.base_config += f'[partners.p{n}]\nids = ["ZZ:P{n}"]\ninbox = "{inbox}"\n'
    daemon.config.write_text(daemon.base_config)
    daemon.start()
    watch = Watch(daemon.failed)
    try:
        for r in range(5):
            for n, inbox in enumerate(inboxes):
                uids.upload(inbox / "850.edi", rejected(5400 + 10 * r + n))
            poll_until(
                lambda: not any(os.listdir(i) for i in inboxes), timeout=20, what=f"round {r}"
            )
        poll_until(lambda: len(failed_files(daemon)) == 20, timeout=30, what="twenty failed")
        none_running(daemon)
        watch.sync()
    finally:
        watch.close()
    files = [(n, ok) for n, ok in watch.seen if not n.endswith(".error.json")]
    assert [n for n, ok in files if not ok] == [], watch.seen
    listing = daemon.listing(daemon.failed)
    reports = sorted(n for n in listing if n.endswith(".error.json"))
    assert reports == sorted(n + ".error.json" for n in failed_files(daemon))
    paths = sorted(Path(j["file_path"]).name for j in daemon.jobs())
    assert paths == sorted(failed_files(daemon))
    assert_distinct(acks(tmp_path))
    assert daemon.terminate(15) == 0


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str):
    """A tmpfs of ``size`` mounted on ``folder`` (another file system: the
    move into it is a copy), unmounted after."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def big_rejected(n: int, pads: int = 5000) -> bytes:
    """A rejected order (ISA13 ``n``) padded to about 300 KB by MSG segments:
    a small report, a big file."""
    pad = b"MSG*" + b"P" * 56 + b"~\n"
    return rejected(n).replace(b"MSG*PICKUP NO. E450562~", pad * pads, 1)


def test_a_full_failed_folder_files_the_file_with_its_report_once_freed(tmp_path, erp, daemons):
    """failed/ a tmpfs of its own, full; a rejected file arrives: its
    report cannot be written, the move is retried; the space freed, the file
    is in failed/ with its report (read the moment the file appears), one
    997, no temporary file left, its record saying where it is."""
    daemon = daemons(erp.url)
    with small_tmpfs(daemon.failed, "256k"):
        filler = fill(daemon.failed)
        daemon.start()
        watch = Watch(daemon.failed)
        try:
            uids.upload(daemon.inbox / "r.edi", rejected(5500))
            poll_until(lambda: daemon.events("move_failed"), timeout=20, what="move failed")
            assert daemon.listing(daemon.failed) == []
            filler.unlink()
            poll_until(lambda: failed_files(daemon) == ["r.edi"], timeout=30, what="filed")
            watch.sync()
        finally:
            watch.close()
        assert [ok for n, ok in watch.seen if n == "r.edi"] == [True]
        assert sorted(os.listdir(daemon.failed)) == ["r.edi", "r.edi.error.json"]
        (job,) = daemon.jobs()
        assert job["file_path"] == str(daemon.failed / "r.edi"), job["file_path"]
        assert per_file(tmp_path) == {"r.edi": Counter({"997": 1})}
        assert daemon.terminate(15) == 0


def test_a_file_copied_into_a_failed_folder_of_its_own_is_never_seen_half_there(
    tmp_path, erp, daemons
):
    """failed/ a tmpfs of its own (so the move is a copy, as the README
    allows: "across file systems by copy, fsync, then unlink"); a 450 KB
    rejected file. A script acting on each arrival in failed/ (inotify,
    stat at the event) should find the file whole, as its report is: no
    write to it once it is there (IN_MODIFY).
    Was a bug: the copy was made under the file's own name."""
    data = big_rejected(5600, 40000)
    daemon = daemons(erp.url)
    with small_tmpfs(daemon.failed, "16m"):
        daemon.start()
        watch = Watch(daemon.failed)
        try:
            uids.upload(daemon.inbox / "big.edi", data)
            poll_until(lambda: failed_files(daemon) == ["big.edi"], timeout=30, what="filed")
            watch.sync()
        finally:
            watch.close()
        sizes = [size for n, size in watch.sizes if n == "big.edi"]
        assert daemon.terminate(15) == 0
        assert sizes == [len(data)] and "big.edi" not in watch.modified, (sizes, len(data))


def test_a_file_seen_in_a_full_failed_folder_stays_there(tmp_path, erp, daemons):
    """failed/ a tmpfs of its own with room for a report but not for a
    450 KB rejected file; then grown (remount). Every arrival of big.edi a
    watcher sees is the file that stays: seen once, whole.
    Was a bug: the file appeared empty, then vanished with its report."""
    data = big_rejected(5600)
    daemon = daemons(erp.url)
    with small_tmpfs(daemon.failed, "128k"):
        daemon.start()
        watch = Watch(daemon.failed)
        try:
            uids.upload(daemon.inbox / "big.edi", data)
            poll_until(lambda: daemon.events("move_failed"), timeout=20, what="move failed")
            subprocess.run(["mount", "-o", "remount,size=16m", str(daemon.failed)], check=True)
            poll_until(lambda: failed_files(daemon) == ["big.edi"], timeout=30, what="filed")
            watch.sync()
        finally:
            watch.close()
        arrivals = [n for n, _ in watch.seen]
        assert daemon.terminate(15) == 0
        assert arrivals.count("big.edi") == 1, (watch.seen, watch.sizes)


def test_names_taken_in_failed_by_a_report_alone_or_a_folder_are_skipped(tmp_path, erp, daemons):
    """failed/ holds a report without its file (850.edi.error.json, moved
    away by hand: left untouched), a folder named like the next candidate's
    report (850.1.edi.error.json/), and a file without a report (850.2.edi).
    A rejected 850.edi arrives: it goes to 850.3.edi with its report; the
    others untouched; the record says where it is."""
    daemon = daemons(erp.url)
    stray = daemon.failed / "850.edi.error.json"
    stray.write_text('{"stray": true}')
    (daemon.failed / "850.1.edi.error.json").mkdir()
    (daemon.failed / "850.2.edi").write_bytes(b"someone else's")
    daemon.start()
    uids.upload(daemon.inbox / "850.edi", rejected(5700))
    poll_until(lambda: "850.3.edi" in daemon.listing(daemon.failed), timeout=20, what="filed")
    none_running(daemon)
    assert stray.read_text() == '{"stray": true}'
    assert (daemon.failed / "850.2.edi").read_bytes() == b"someone else's"
    report = json.loads((daemon.failed / "850.3.edi.error.json").read_text())
    assert report["file"] == "850.3.edi"
    (job,) = daemon.jobs()
    assert job["file_path"] == str(daemon.failed / "850.3.edi")
    # The job's final record foresaw the name (no second write after the
    # move): its job_finished line names it and no job_done line corrects it.
    (finished,) = daemon.events("job_finished")
    assert finished["moved_to"].endswith("/850.3.edi"), finished
    assert daemon.events("job_done") == []
    assert sorted(daemon.listing(daemon.failed)) == sorted(
        [
            "850.edi.error.json",
            "850.1.edi.error.json",
            "850.2.edi",
            "850.3.edi",
            "850.3.edi.error.json",
        ]
    )
    assert daemon.terminate(15) == 0


def test_an_immutable_failed_folder_files_the_file_with_its_report_once_mended(
    tmp_path, erp, daemons
):
    """failed/ made immutable (``chattr +i``) while two rejected files of
    one name arrive: neither is filed (the move retried, nothing in failed/);
    mended: 850.edi and 850.1.edi, each with its own report (read the moment
    the file appears), each job's record saying where."""
    daemon = daemons(erp.url)
    daemon.start()
    watch = Watch(daemon.failed)
    try:
        with immutable(daemon.failed):
            uids.upload(daemon.inbox / "850.edi", rejected(5710))
            poll_until(lambda: daemon.events("move_failed"), timeout=20, what="move failed")
            uids.upload(daemon.inbox / "850.edi", rejected(5711))
            poll_until(
                lambda: len({e["job_id"] for e in daemon.events("move_failed")}) == 2,
                timeout=20,
                what="both failing",
            )
            assert os.listdir(daemon.failed) == []
        poll_until(lambda: len(failed_files(daemon)) == 2, timeout=30, what="filed")
        poll_until(
            lambda: len([n for n, _ in watch.seen if n.endswith(".edi")]) == 2,
            timeout=30,
            what="both arrivals seen",
        )
    finally:
        watch.close()
    assert [ok for n, ok in watch.seen if n.endswith(".edi")] == [True, True], watch.seen
    assert sorted(daemon.listing(daemon.failed)) == [
        "850.1.edi",
        "850.1.edi.error.json",
        "850.edi",
        "850.edi.error.json",
    ]

    # Each record says where its file went once the retried move is recorded,
    # a moment after the file arrives.
    def recorded_in_failed() -> list[dict] | None:
        jobs = [j for j in daemon.jobs() if Path(j["file_path"]).parent == daemon.failed]
        return jobs if len(jobs) == 2 else None

    jobs = poll_until(recorded_in_failed, timeout=30, what="both records saying failed/")
    for job in jobs:
        report = json.loads(Path(job["file_path"] + ".error.json").read_text())
        assert report["job_id"] == job["job_id"]
    assert_distinct(acks(tmp_path))
    assert daemon.terminate(15) == 0


def test_another_host_taking_over_a_held_job_sends_no_second_997(tmp_path, erp, daemons):
    """Host one: a good file (ISA14 = 1) held at the ERP, the SQLite file
    locked, the ERP answers: the order's record fails, what the job owes is
    kept, its TA1 and 997 go out; SIGKILL while the record waits. Host one
    never comes back; host two, sharing the folders, takes the claim over
    once the heartbeat is stale (15 s). Promise: no second TA1/997.
    Was a bug: the taking host ignored what that host's job owed."""
    first = daemons(erp.url)
    with held_997_out(first, erp, 5180):
        first.kill()
    assert any((first.processing / ".owed").rglob("*-*"))  # what it owes, kept
    other = daemons(erp.url, host="other-host")
    other.start()
    poll_until(lambda: other.listing(other.done) == ["held.edi"], timeout=40, what="taken over")
    none_running(other)
    assert len(erp.keys_by_po()) == 1
    assert per_file(tmp_path) == {"held.edi": Counter({"TA1": 1, "997": 1})}
    assert other.terminate(15) == 0


def test_a_held_job_of_two_orders_cut_short_by_the_database_is_acknowledged_once(
    tmp_path, erp, daemons
):
    """One file of two good interchanges (ISA14 = 1); the first POST held at
    the ERP; the SQLite file locked; the ERP answers: the first order's
    record fails, the second is not posted (the job cannot be recorded): the
    job is interrupted and runs again once the lock is gone. Holds: each
    order posted under one key, and the file gets one TA1 and one 997 per
    interchange, all told."""
    daemon = daemons(erp.url)
    with_defaults(daemon, "[daemon]\nheartbeat_seconds = 1.0\n")
    quick_busy(daemon, 1.0)
    daemon.start()
    erp.gate.clear()
    uids.upload(daemon.inbox / "two.edi", make_po(5190) + make_po(5191))
    poll_until(lambda: erp.requests, timeout=20, what="the first POST held")
    with database_locked(daemon.root / "edi-inbox.db"):
        erp.gate.set()
        poll_until(lambda: daemon.events("order_not_recorded"), timeout=25, what="not recorded")
        poll_until(lambda: daemon.events("job_finished"), timeout=25, what="the first run over")
    poll_until(lambda: daemon.listing(daemon.done) == ["two.edi"], timeout=40, what="filed")
    none_running(daemon)
    assert sorted(erp.keys_by_po()) == ["00005190", "00005191"]
    assert all(len(k) == 1 for k in erp.keys_by_po().values())
    assert per_file(tmp_path) == {"two.edi": Counter({"TA1": 2, "997": 2})}
    assert_distinct(acks(tmp_path))
    assert daemon.terminate(15) == 0


@pytest.mark.parametrize("outcome", ["failed", "done"])
def test_a_second_file_under_a_255_byte_name_is_filed(tmp_path, erp, daemons, outcome):
    """A partner's upload named with 255 bytes (the most a name may have),
    twice (a rejected order each, or a good one each): the first goes to
    failed/ (its report under the job's id) or done/ under its name; the
    second finds the name taken: it should be filed all the same (a suffix
    that fits), not retried for ever.
    Was a bug: NAME.1.edi was too long; the move was retried for ever."""
    daemon = daemons(erp.url)
    daemon.start()
    name = "a" * 251 + ".edi"

    def filed() -> list[str]:
        return failed_files(daemon) if outcome == "failed" else daemon.listing(daemon.done)

    for n in range(2):
        data = rejected(5800 + n) if outcome == "failed" else make_po(5800 + n)
        uids.upload(daemon.inbox / name, data)
        poll_until(lambda n=n: len(filed()) == n + 1, timeout=20, what=f"upload {n} filed")
    none_running(daemon)
    assert claimed(daemon.processing) == []
    assert daemon.terminate(15) == 0


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM"])
def test_rejected_files_while_the_database_is_locked_get_one_997_with_worker_processes(
    tmp_path, erp, daemons, stop
):
    """Worker processes (2), SQLite's busy timeout 0.3 s, shutdown timeout
    1 s; the SQLite file locked; three rejected files (ISA14 = 1, no ERP
    call) arrive: their 997s' numbers cannot be reserved, they are parked;
    SIGKILL or SIGTERM; the lock gone, restart: each in failed/ once with
    one TA1 and one 997, nothing posted, no job running."""
    daemon = daemons(erp.url, processes=2, workers=4, shutdown_timeout_seconds=1.0)
    quick_busy(daemon)
    daemon.start()
    names = [f"r{n}.edi" for n in range(3)]
    with database_locked(daemon.root / "edi-inbox.db"):
        for n, name in enumerate(names):
            uids.upload(daemon.inbox / name, rejected(5900 + n, ta1=True))
        poll_until(lambda: len(daemon.events("job_parked")) >= 3, timeout=30, what="parked")
        if stop == "SIGKILL":
            daemon.kill()
        else:
            assert daemon.terminate(30) == 0
        assert per_file(tmp_path) == {}
    daemon.start()
    poll_until(lambda: sorted(failed_files(daemon)) == names, timeout=40, what="all failed")
    none_running(daemon)
    assert per_file(tmp_path) == {n: Counter({"TA1": 1, "997": 1}) for n in names}
    assert_distinct(acks(tmp_path))
    assert erp.requests == []
    assert daemon.terminate(15) == 0


def test_a_sigkill_while_owed_acks_are_written_late_sends_none_twice(tmp_path, erp, daemons):
    """Round four's owed case, bigger: acks/ a plain file while one file of
    91 interchanges (the first a good order, the rest rejected; ISA14 = 1)
    runs: the job is parked owing 182 acknowledgements. acks/ mended: the
    retry writes them; SIGKILL as soon as the first is there; restart: each
    once. Was a bug: the restart wrote again those already written."""
    daemon = daemons(erp.url)
    with_defaults(daemon)
    daemon.start()
    mend = break_acks(tmp_path)
    uids.upload(daemon.inbox / "owed.edi", one_good_then_rejected(6000, 90))
    poll_until(lambda: daemon.events("job_parked"), timeout=30, what="parked, owing")
    mend()
    poll_until(lambda: per_file(tmp_path).get("owed.edi"), timeout=30, what="a first ack")
    daemon.kill()
    before = per_file(tmp_path)["owed.edi"]
    if sum(before.values()) == 182:
        pytest.skip("the kill came after every acknowledgement was written")
    daemon.start()
    poll_until(lambda: failed_files(daemon) == ["owed.edi"], timeout=30, what="filed")
    none_running(daemon)
    assert len(erp.keys_by_po()) == 1
    assert per_file(tmp_path) == {"owed.edi": Counter({"TA1": 91, "997": 91})}
    assert daemon.terminate(15) == 0


def test_a_sigkill_while_a_big_file_is_copied_into_failed_leaves_no_half_copy(
    tmp_path, erp, daemons
):
    """failed/ a tmpfs of its own; ``max_file_bytes`` 1 MB; a 100 MB upload
    (refused unread, filed in failed/ by copy). SIGKILL the moment its
    report is in failed/ (the copy under way); restart: in failed/ the file
    once, whole, beside its report; no half copy under a name a report
    vouches for. Was a bug: failed/huge.edi was left with 3,969,024 of its
    104,857,600 bytes. Left (README): the killed copy's hidden temporary
    file stays in failed/."""
    size = 100 * 1024 * 1024
    daemon = daemons(erp.url, max_file_bytes=1_000_000)
    with small_tmpfs(daemon.failed, "512m"):
        daemon.start()
        with open(daemon.inbox / "huge.edi", "wb") as fh:
            fh.truncate(size)
        os.chown(daemon.inbox / "huge.edi", uids.PARTNER, uids.PARTNER)
        poll_until(
            lambda: (daemon.failed / "huge.edi.error.json").exists(), timeout=30, what="report"
        )
        daemon.kill()
        at_kill = sorted(os.listdir(daemon.failed))
        daemon.start()
        poll_until(lambda: claimed(daemon.processing) == [], timeout=30, what="nothing claimed")
        none_running(daemon)
        listing = {p.name: p.stat().st_size for p in daemon.failed.iterdir()}
        jobs = [(j["status"], j["file_path"], j["retry_of"]) for j in daemon.jobs()]
        assert daemon.terminate(15) == 0
    files = {n: s for n, s in listing.items() if not n.endswith(".error.json") and n[0] != "."}
    assert list(files.values()) == [size], (at_kill, listing, jobs)
    assert f"{next(iter(files))}.error.json" in listing
