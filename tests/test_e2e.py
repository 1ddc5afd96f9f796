"""End to end: the real daemon process, a real inotify observer, real files, real signals,
a real HTTP ERP on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from daemons import GRACE, SETTLE, Daemon, daemons, erp, running
from test_outsider_round3 import failed_files, with_defaults

import uids
from helpers import BAD, claimed, make_po, poll_until
from uids import shared_root

pytestmark = pytest.mark.e2e
__all__ = ["daemons", "erp", "shared_root"]  # fixtures


def write_slowly(path: Path, data: bytes, parts: int, pause: float, *, keep_open: bool) -> None:
    """An upload that grows in bursts: in place with one descriptor (OpenSSH's
    sftp-server), or reopened per burst (a resumed ``reput``)."""
    size = -(-len(data) // parts)
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    if keep_open:
        with open(path, "wb") as fh:
            for i, chunk in enumerate(chunks):
                fh.write(chunk)
                fh.flush()
                if i < len(chunks) - 1:
                    time.sleep(pause)
        return
    for i, chunk in enumerate(chunks):
        with open(path, "ab" if i else "wb") as fh:
            fh.write(chunk)
        if i < len(chunks) - 1:
            time.sleep(pause)


def upload_many(inbox: Path, count: int, *, first: int) -> list[str]:
    """``count`` distinct good 850s written into the inbox at once; their names, sorted."""
    uploaded = [f"po{n:04d}.edi" for n in range(count)]
    for n, name in enumerate(uploaded):
        (inbox / name).write_bytes(make_po(first + n))
    return uploaded


CORPUS = Path(__file__).parent / "data" / "corpus"
ALONE = Path(__file__).parent / "data" / "corpus_outcomes.txt"


def test_the_public_corpus_uploaded_at_once_by_a_partner(tmp_path, erp, daemons):
    """All 57 public X12 files (tests/data/corpus, SOURCES.md aside) uploaded
    at once by a partner's uid into the real daemon with its defaults
    (``incomplete_grace_seconds`` 2 s: four of them end without their
    trailer). Each is filed once, where its job's status says (failed and
    partial ones in failed/ with their report and reason); a file that
    fails alone (tests/data/corpus_outcomes.txt) fails here too; each order
    is posted once; ``stats`` and ``status`` agree with the jobs on record."""
    daemon = daemons(erp.url)
    with_defaults(daemon, "[daemon]\nincomplete_grace_seconds = 2.0\n")
    daemon.start()
    names = sorted(p.name for p in CORPUS.iterdir() if p.name != "SOURCES.md")
    for name in names:
        uids.upload(daemon.inbox / name, (CORPUS / name).read_bytes())
    poll_until(
        lambda: len(daemon.listing(daemon.done)) + len(failed_files(daemon)) == len(names),
        timeout=GRACE + 30,
        what="every file filed",
    )
    poll_until(lambda: all(j["status"] != "running" for j in daemon.jobs()), what="none running")
    assert daemon.listing(daemon.inbox) == [] and claimed(daemon.processing) == []
    jobs = {j["file_name"]: j for j in daemon.jobs()}
    assert sorted(jobs) == names  # one job a file
    in_failed = sorted(n for n, j in jobs.items() if j["status"] in ("failed", "partial"))
    assert sorted(failed_files(daemon)) == in_failed
    for name in failed_files(daemon):
        report = json.loads((daemon.failed / f"{name}.error.json").read_text())
        assert report["error"] and report["error"] == jobs[name]["error"], name
    alone = dict(
        line.split(": ", 1) for line in ALONE.read_text().splitlines() if not line.startswith(" ")
    )
    for name in names:
        if alone[name].split()[0] == "failed":
            assert jobs[name]["status"] == "failed", (name, jobs[name]["error"])
    posts = erp.posts_per_key()
    assert posts and set(posts.values()) == {1}, posts

    statuses = Counter(j["status"] for j in jobs.values())
    stats = json.loads(daemon.cli("stats", "--json").stdout)
    assert stats["total_jobs"] == len(names)
    assert stats["failed_jobs"] == statuses["failed"]
    with contextlib.closing(sqlite3.connect(daemon.root / "edi-inbox.db")) as conn:
        posted = [
            r[0] for r in conn.execute("SELECT total_amount FROM orders WHERE status = 'posted'")
        ]
    assert len(posted) == len(posts)
    assert Decimal(stats["total_amount_processed"]) == sum(Decimal(t) for t in posted if t)
    status = daemon.cli("status").stdout
    counts = ", ".join(
        f"{statuses[s]} {s}" for s in ("succeeded", "partial", "failed", "duplicate")
    )
    assert f"last 24 h: {counts}" in status, status
    assert daemon.terminate(timeout=10) == 0


def test_status_tells_an_upload_held_for_its_trailer(tmp_path, erp, daemons):
    """An upload that stops before its IEA waits ``incomplete_grace_seconds``
    (here 30 s) in the inbox: ``status`` says why, not only that it waits."""
    daemon = daemons(erp.url, incomplete_grace_seconds=30.0)
    daemon.start()
    uids.upload(daemon.inbox / "stalled.edi", make_po(1)[:400])
    said = "1 upload(s) held for their X12 trailer (stalled?)"

    def telling() -> str | None:
        out = daemon.cli("status").stdout
        return out if said in out else None

    status = poll_until(telling, what="status telling the held upload")
    assert "inbox: 1 waiting" in status
    assert daemon.listing(daemon.inbox) == ["stalled.edi"]
    assert daemon.terminate(timeout=10) == 0


def test_a_restart_fails_at_once_an_upload_stalled_past_the_grace(tmp_path, erp, daemons):
    """A truncated upload held by a daemon that is then restarted (watchdog,
    Restart=on-failure, a reload) is failed as truncated as soon as it settles
    once unchanged for the grace by its ctime, not a whole grace after the
    restart (a daemon restarted often used to hold it for ever)."""
    grace = 6.0
    daemon = daemons(erp.url, incomplete_grace_seconds=grace)
    daemon.start()
    path = uids.upload(daemon.inbox / "stalled.edi", make_po(1)[:400])
    poll_until(lambda: daemon.events("upload_held"), what="the upload held")
    assert daemon.terminate(timeout=10) == 0
    changed = path.stat().st_ctime
    poll_until(lambda: time.time() - changed > grace, timeout=grace + 5, what="past the grace")
    daemon.start()
    # Well within the grace of the restart: only settling is left to wait.
    poll_until(lambda: failed_files(daemon), timeout=grace / 2, what="the upload failed")
    report = json.loads((daemon.failed / "stalled.edi.error.json").read_text())
    assert "truncated" in report["error"]
    [incomplete] = daemon.events("upload_incomplete")
    assert incomplete["unchanged_seconds"] > grace
    assert erp.requests == []
    assert daemon.terminate(timeout=10) == 0


@pytest.mark.parametrize("processes", [1, 2])
def test_mixed_uploads_each_end_where_they_must(tmp_path, erp, daemons, processes):
    """Slow, resumed, aborted, renamed, moved-in, unsafe, empty, bad, odd and duplicate uploads
    each end in the right folder; every job is recorded; each good order is posted once
    (the jobs in the daemon's threads, or in its worker processes)."""
    daemon = daemons(erp.url, processes=processes)
    inbox = daemon.inbox
    (inbox / "before-start.edi").write_bytes(make_po(1))  # present before the daemon starts
    daemon.start()

    pause = SETTLE + 0.2  # longer than settle_seconds, while the trailer is still missing
    writers = [
        threading.Thread(
            target=write_slowly,
            args=(inbox / "in-place.edi", make_po(2), 3, pause),
            kwargs={"keep_open": True},
        ),
        threading.Thread(  # stalls past settle_seconds (held: no trailer), then resumes
            target=write_slowly,
            args=(inbox / "resumed.edi", make_po(3), 2, SETTLE + 0.4),
            kwargs={"keep_open": False},
        ),
    ]
    for writer in writers:
        writer.start()
    (inbox / "aborted.edi").write_bytes(make_po(9)[:400])  # never finished
    (inbox / "winscp.edi.filepart").write_bytes(make_po(4))
    os.rename(inbox / "winscp.edi.filepart", inbox / "winscp.edi")
    (tmp_path / "elsewhere.edi").write_bytes(make_po(5))
    os.rename(tmp_path / "elsewhere.edi", inbox / "moved-in.edi")
    (inbox / "first-name.edi").write_bytes(make_po(6))
    os.rename(inbox / "first-name.edi", inbox / "second-name.edi")
    (inbox / "odd\nname -x.edi").write_bytes(make_po(7))
    (inbox / "dup-original.edi").write_bytes(make_po(8))
    os.symlink("/etc/hostname", inbox / "link.edi")
    os.mkfifo(inbox / "pipe.edi")
    (tmp_path / "hard-target").write_bytes(make_po(10))
    os.link(tmp_path / "hard-target", inbox / "hard.edi")
    (inbox / "empty.edi").touch()
    (inbox / "bad.edi").write_bytes(BAD)

    poll_until(lambda: (daemon.done / "dup-original.edi").exists(), what="first copy done")
    (inbox / "dup-copy.edi").write_bytes(make_po(8))  # the same bytes again
    for writer in writers:
        writer.join()

    expected_done = [
        "before-start.edi",
        "dup-copy.edi",
        "dup-original.edi",
        "in-place.edi",
        "moved-in.edi",
        "odd\nname -x.edi",
        "resumed.edi",
        "second-name.edi",
        "winscp.edi",
    ]
    refused = ["aborted.edi", "bad.edi", "empty.edi", "hard.edi", "link.edi", "pipe.edi"]
    expected_failed = sorted([*refused, *(f"{n}.error.json" for n in refused)])
    poll_until(
        lambda: (
            daemon.listing(daemon.done) == expected_done
            and daemon.listing(daemon.failed) == expected_failed
        ),
        timeout=GRACE + 10,
        what="every upload in its final folder",
    )
    assert daemon.alive()
    assert daemon.listing(inbox) == []
    assert claimed(daemon.processing) == []
    assert (daemon.done / "in-place.edi").read_bytes() == make_po(2)  # never half-written
    assert (daemon.done / "resumed.edi").read_bytes() == make_po(3)
    assert os.readlink(daemon.failed / "link.edi") == "/etc/hostname"
    aborted = json.loads((daemon.failed / "aborted.edi.error.json").read_text())
    assert "truncated" in aborted["error"]

    posts = erp.posts_per_key()
    assert len(posts) == 8 and set(posts.values()) == {1}  # POs 1..8, each posted once
    statuses = Counter(job["status"] for job in daemon.jobs())
    assert statuses == {"succeeded": 8, "duplicate": 1, "failed": 6}

    assert daemon.terminate(timeout=10) == 0


def test_partners_uploads_filed_by_the_daemons_own_user(shared_root, erp):
    """Partners own their uploads (0644); the daemon runs as a user of its own, which may
    not link() them (fs.protected_hardlinks). Every file is claimed, posted once, filed
    under one name and recorded where it is; a restart runs nothing again. (Worker
    processes file through the same ``Mover``; they re-exec the interpreter, which the
    test's venv may keep out of the daemon user's reach.)"""
    daemon = Daemon(shared_root, erp.url, user=True)
    try:
        uids.upload(daemon.done / "po1.edi", b"an older file of the same name")
        for n in range(1, 6):
            uids.upload(daemon.inbox / f"po{n}.edi", make_po(n))
        uids.upload(daemon.inbox / "bad.edi", BAD)
        daemon.start()
        expected_done = ["po1.1.edi", "po1.edi", "po2.edi", "po3.edi", "po4.edi", "po5.edi"]
        poll_until(
            lambda: (
                daemon.listing(daemon.done) == expected_done
                and daemon.listing(daemon.failed) == ["bad.edi", "bad.edi.error.json"]
            ),
            what="every upload filed",
        )
        poll_until(lambda: all(j["status"] != "running" for j in daemon.jobs()))
        assert claimed(daemon.processing) == [] and daemon.listing(daemon.inbox) == []
        assert (daemon.done / "po1.edi").read_bytes() == b"an older file of the same name"
        assert (daemon.done / "po1.1.edi").read_bytes() == make_po(1)
        for name in expected_done:
            st = os.stat(daemon.done / name)
            assert (st.st_uid, st.st_nlink) == (uids.PARTNER, 1)
        acks = os.listdir(shared_root / "acks")
        assert len([a for a in acks if a.endswith(".997")]) == 6  # for each, the bad one too
        # The good files' ISA14 is 1: each asks for a TA1 as well (issue 10).
        assert len([a for a in acks if a.endswith(".TA1")]) == 5
        places = sorted(job["file_path"] for job in daemon.jobs())
        filed = [daemon.done / n for n in expected_done if n != "po1.edi"]
        assert places == sorted(str(path) for path in [daemon.failed / "bad.edi", *filed])
        assert daemon.terminate(timeout=10) == 0
        daemon.start()  # nothing is left to run again
        assert daemon.terminate(timeout=10) == 0
        posts = erp.posts_per_key()
        assert len(posts) == 5 and set(posts.values()) == {1}
        assert len(daemon.jobs()) == 6
        assert "move_failed" not in daemon.log.read_text()
    finally:
        daemon.close()


@pytest.mark.parametrize("processes", [1, 2])
def test_sigkill_repeatedly_every_order_once(tmp_path, erp, daemons, processes):
    """SIGKILL again and again with hundreds of files in flight: after restarts every file is in
    done/, no order lost, none accepted under two different Idempotency-Keys. With worker
    processes, SIGKILL of the daemon takes them down too (``Daemon.kill`` waits for that)."""
    erp.delay = 0.02
    daemon = daemons(erp.url, workers=6, processes=processes)
    daemon.start()
    assert len(daemon.worker_processes()) == (processes if processes > 1 else 0)
    uploaded = upload_many(daemon.inbox, 300, first=1000)
    for threshold in (40, 110, 180):
        poll_until(lambda t=threshold: len(os.listdir(daemon.done)) >= t, what=f"{threshold} done")
        daemon.kill()
        daemon.start()
    poll_until(
        lambda: len(os.listdir(daemon.done)) == len(uploaded), timeout=40, what="all in done/"
    )
    assert daemon.alive()
    assert daemon.listing(daemon.done) == uploaded
    assert daemon.listing(daemon.inbox) == [] and claimed(daemon.processing) == []
    keys = erp.keys_by_po()
    assert len(keys) == len(uploaded)  # none lost
    assert all(len(k) == 1 for k in keys.values())  # never under two different keys
    jobs = daemon.jobs()
    finished = {j["file_name"] for j in jobs if j["status"] in ("succeeded", "duplicate")}
    assert finished == set(uploaded)
    # Control numbers reserved by running records that a SIGKILL cut short
    # are skipped, never given twice: each acknowledgement has its own ISA13.
    acks = [a for a in (daemon.root / "acks").iterdir() if not a.name.startswith(".")]
    isa13s = [ack.read_text().split("~", 1)[0].split("*")[13] for ack in acks]
    assert len(isa13s) >= len(uploaded) and len(set(isa13s)) == len(isa13s)
    assert daemon.terminate(timeout=10) == 0


@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_mid_run_exits_zero_and_loses_nothing(tmp_path, erp, daemons, processes):
    """SIGTERM mid-run: exit 0 within the stop timeout, nothing left in processing/, and a
    restart finishes the rest."""
    erp.delay = 0.03
    daemon = daemons(erp.url, shutdown_timeout_seconds=3.0, processes=processes)
    daemon.start()
    uploaded = upload_many(daemon.inbox, 60, first=5000)
    poll_until(lambda: len(os.listdir(daemon.done)) >= 10, what="10 done")
    started = time.monotonic()
    assert daemon.terminate(timeout=3.0 + 5) == 0
    assert time.monotonic() - started < 3.0 + 2
    assert claimed(daemon.processing) == []
    done, left = daemon.listing(daemon.done), daemon.listing(daemon.inbox)
    assert sorted(done + left) == uploaded
    daemon.start()
    poll_until(lambda: len(os.listdir(daemon.done)) == len(uploaded), what="the rest done")
    assert all(len(k) == 1 for k in erp.keys_by_po().values())
    assert len(erp.keys_by_po()) == len(uploaded)
    assert daemon.terminate(timeout=10) == 0


def four_jobs_in_worker_processes(erp, daemons, *, erp_delay: float, first: int, **options):
    """A daemon with two worker processes and four jobs in flight, each waiting for the ERP."""
    erp.delay = erp_delay
    daemon = daemons(erp.url, workers=4, processes=2, **options)
    daemon.start()
    uploaded = upload_many(daemon.inbox, 4, first=first)
    poll_until(lambda: len(erp.posts_per_key()) == 4, what="four POSTs in flight")
    return daemon, uploaded


def restart_and_finish(erp, daemon: Daemon, uploaded: list[str]) -> None:
    """Start again with a prompt ERP: every file done, each order under one Idempotency-Key,
    then a clean stop."""
    erp.delay = 0.0
    daemon.start()
    poll_until(lambda: daemon.listing(daemon.done) == uploaded, what="all done after restart")
    assert all(len(k) == 1 for k in erp.keys_by_po().values())
    assert daemon.terminate(timeout=10) == 0


@pytest.mark.parametrize("processes", [1, 2])
def test_every_event_of_a_job_carries_its_job_id_and_file(tmp_path, erp, daemons, processes):
    """README, "Read the journal": every event of a job carries ``job_id`` and
    ``file``, also those after its run (acknowledgements owed while acks/ is a
    plain file, then written late), with its job in a thread or a worker process."""
    d = daemons(erp.url, processes=processes)
    d.start()
    acks = d.root / "acks"
    acks.mkdir(exist_ok=True)
    acks.rename(d.root / "acks-aside")
    acks.write_bytes(b"not a folder")
    uids.upload(d.inbox / "late.edi", make_po(1))
    poll_until(lambda: d.events("acks_owed"), 20, what="acks_owed")
    acks.unlink()
    (d.root / "acks-aside").rename(acks)
    poll_until(lambda: (d.done / "late.edi").exists(), 30, what="filed once acks/ is back")
    [job_id] = [j["job_id"] for j in d.jobs()]
    lines = [json.loads(line) for line in d.log.read_text().splitlines() if line.startswith("{")]
    of_job = [e for e in lines if e.get("job_id") == job_id]
    events = {e["event"] for e in of_job}
    assert {"acks_owed", "job_finished", "acks_written_late", "job_recorded_late"} <= events
    assert [e for e in of_job if e.get("file") != "late.edi"] == []


def test_sigterm_gives_up_jobs_past_the_deadline_in_worker_processes(tmp_path, erp, daemons):
    """Worker processes whose jobs outlast shutdown_timeout_seconds are killed at the deadline;
    their files go back to the inbox, the daemon exits 0, and a restart posts each order under
    its one Idempotency-Key."""
    daemon, uploaded = four_jobs_in_worker_processes(
        erp, daemons, erp_delay=4.0, first=7000, shutdown_timeout_seconds=1.0
    )
    workers = daemon.worker_processes()
    started = time.monotonic()
    assert daemon.terminate(timeout=1.0 + 5) == 0
    assert time.monotonic() - started < 1.0 + 3
    assert not any(running(pid) for pid in workers)
    assert claimed(daemon.processing) == []
    assert daemon.listing(daemon.inbox) == uploaded and daemon.listing(daemon.done) == []
    restart_and_finish(erp, daemon, uploaded)


def test_sigkill_takes_worker_processes_down_mid_job(tmp_path, erp, daemons):
    """A SIGKILLed daemon's worker processes die at once, mid-job (PR_SET_PDEATHSIG), rather
    than finish jobs whose claims the next start resumes; the restart then does them all."""
    daemon, uploaded = four_jobs_in_worker_processes(erp, daemons, erp_delay=4.0, first=8000)
    workers = daemon.worker_processes()
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)
    poll_until(lambda: not any(running(pid) for pid in workers), timeout=2.0, what="workers gone")
    assert len(claimed(daemon.processing)) == 4  # left for the next start
    restart_and_finish(erp, daemon, uploaded)


def test_a_worker_process_that_dies_stops_the_daemon_with_an_error(tmp_path, erp, daemons):
    """A worker process killed from outside (the OOM killer): the daemon stops with exit 1 for
    systemd to restart it, the dead process's files stay claimed (the next start resumes
    them as after the daemon's death: ``[daemon] max_crashes`` counts it), the other's jobs
    finish; after the restart every file is done, each order under one Idempotency-Key."""
    daemon, uploaded = four_jobs_in_worker_processes(erp, daemons, erp_delay=1.0, first=9000)
    os.kill(daemon.worker_processes()[0], signal.SIGKILL)
    assert daemon.proc is not None and daemon.proc.wait(15) == 1
    assert "worker_process_died" in daemon.log.read_text()
    left = [name.rsplit(".", 1)[0] for name in claimed(daemon.processing)]  # NAME.<job id>
    assert left  # the dead process's files, for the next start
    assert sorted(left + daemon.listing(daemon.inbox) + daemon.listing(daemon.done)) == uploaded
    restart_and_finish(erp, daemon, uploaded)


@pytest.mark.parametrize("processes", [1, 2])
def test_an_inbox_deleted_and_recreated_is_watched_again(tmp_path, erp, daemons, processes):
    """The inbox removed and made again: the daemon notices (``inbox_replaced``), watches
    and scans the new directory, and a file uploaded there is processed (by the worker
    processes too, which follow the new inbox)."""
    daemon = daemons(erp.url, processes=processes)
    daemon.start()
    (daemon.inbox / "po1.edi").write_bytes(make_po(1))
    poll_until(lambda: daemon.listing(daemon.done) == ["po1.edi"], what="po1 done")
    os.rmdir(daemon.inbox)
    daemon.inbox.mkdir()
    (daemon.inbox / "po2.edi").write_bytes(make_po(2))
    poll_until(lambda: daemon.listing(daemon.done) == ["po1.edi", "po2.edi"], what="po2 done")
    (daemon.inbox / "po3.edi").write_bytes(make_po(3))  # seen by the new observer
    poll_until(lambda: len(daemon.listing(daemon.done)) == 3, what="po3 done")
    assert "inbox_replaced" in daemon.log.read_text()
    assert len(erp.posts_per_key()) == 3
    assert daemon.terminate(timeout=10) == 0


def test_an_inbox_that_stays_missing_stops_the_daemon_with_exit_1(tmp_path, erp, daemons):
    """The inbox removed and not made again: after a few seconds the daemon logs
    ``inbox_gone``, says so on the STATUS= line and exits 1 (systemd restarts it, and the
    start fails clearly until the inbox is back)."""
    daemon = daemons(erp.url)
    daemon.start()
    os.rmdir(daemon.inbox)
    assert daemon.proc is not None and daemon.proc.wait(15) == 1
    assert "inbox_gone" in daemon.log.read_text()
    assert any(m.startswith(b"STATUS=the inbox") for m in daemon.messages)
