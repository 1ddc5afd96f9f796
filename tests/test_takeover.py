"""One daemon per host, and a claim that is no longer ours is never posted or filed:
the host lock, the claim check, a paused host that lost its files to another host."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest
from conftest import make_job
from daemons import Daemon, child_pids, daemon_command, daemons, erp

from edi_inbox import claims as claims_module
from edi_inbox import queries, store
from edi_inbox.claims import Claims, Inbox, Liveness, lock_host
from edi_inbox.config import ErpSettings, PathSettings, Settings
from edi_inbox.erp import HttpErp
from edi_inbox.errors import AlreadyRunning, ClaimLost, NotRecorded
from edi_inbox.jobs import JobStatus
from edi_inbox.outcomes import Mover
from edi_inbox.pipeline import Pipeline
from edi_inbox.worker import Work, Worker, run_one

from helpers import claimed, make_po, poll_until

__all__ = ["daemons", "erp"]  # fixtures


# -- the claim check -----------------------------------------------------------------


@pytest.fixture
def claims(tmp_path):
    """This host's claims, one file claimed (``po.edi.J1``), no liveness yet."""
    made = Claims(PathSettings(root=tmp_path), "alpha")
    (tmp_path / "inbox").mkdir()
    made.open()
    (tmp_path / "inbox" / "po.edi").write_bytes(make_po(1))
    made.claim("po.edi", "J1")
    yield made
    made.close()


def test_check_claim_passes_for_the_file_claimed_and_only_for_it(claims):
    """The claimed file passes; once renamed away (taken over) or replaced by another
    file of the same name, the check raises ClaimLost."""
    st = os.stat(claims.path("po.edi.J1"))
    claims.check_claim("po.edi.J1", st)
    other = claims.paths.processing / "beta"
    other.mkdir()
    os.rename(claims.path("po.edi.J1"), other / "po.edi.J2")  # host beta took it
    with pytest.raises(ClaimLost, match="no longer claimed by host alpha"):
        claims.check_claim("po.edi.J1", st)
    claims.path("po.edi.J1").write_bytes(make_po(1))  # the same name, another inode
    with pytest.raises(ClaimLost):
        claims.check_claim("po.edi.J1", st)


def test_check_claim_waits_for_a_fresh_heartbeat_then_looks_again(claims, monkeypatch):
    """With this host's heartbeat stale (it was paused), the check waits until the
    heartbeat is written again and only then looks at the file: a takeover that
    happened while it waited is seen."""
    claims.liveness = Liveness(takeover_seconds=30.0)  # never written: stale
    st = os.stat(claims.path("po.edi.J1"))
    waits = []

    def paused(seconds: float) -> None:  # meanwhile: taken over, then our heartbeat
        waits.append(seconds)
        os.rename(claims.path("po.edi.J1"), claims.paths.processing / "po.edi.J2")
        claims.liveness.beat()

    monkeypatch.setattr(claims_module.time, "sleep", paused)
    with pytest.raises(ClaimLost):
        claims.check_claim("po.edi.J1", st)
    assert waits  # it waited before looking


def test_check_claim_with_a_fresh_heartbeat_does_not_wait(claims, monkeypatch):
    """A fresh heartbeat: the file is checked at once."""
    claims.liveness = Liveness(takeover_seconds=30.0)
    claims.liveness.beat()
    monkeypatch.setattr(claims_module.time, "sleep", pytest.fail)
    claims.check_claim("po.edi.J1", os.stat(claims.path("po.edi.J1")))


def test_check_claim_gives_up_when_the_heartbeat_stays_stale(claims):
    """A heartbeat that is not written again within the takeover age (the database is
    away): the claim cannot be vouched for, ClaimLost, though the file is still here."""
    claims.liveness = Liveness(takeover_seconds=0.2)
    with pytest.raises(ClaimLost, match=r"heartbeat is .* old"):
        claims.check_claim("po.edi.J1", os.stat(claims.path("po.edi.J1")))
    assert claims.path("po.edi.J1").exists()


def _report_safe(liveness: Liveness, channel) -> None:
    """In a worker process: whether the parent's heartbeat is fresh, each time asked."""
    while channel.recv():
        channel.send(liveness.safe())


def test_owed_jobs_are_the_records_kept_beside_their_claims(claims, tmp_path):
    """A job whose owed record lies beside its claim goes on as that job at
    the next start (never marked interrupted); a record whose claim was
    removed by hand is no such job."""
    claims.owed_dir.mkdir(parents=True, exist_ok=True)
    for job_id in ("J1", "J2"):  # J1 claimed as po.edi.J1; J2's claim gone
        (claims.owed_dir / job_id).write_bytes(pickle.dumps({"kept": job_id}))
    (claims.owed_dir / ".J3.tmp").write_bytes(b"half written")
    settings = Settings(paths=PathSettings(root=tmp_path))
    assert claims_module.owed_jobs(settings, "alpha") == {"J1"}
    (claims.owed_dir / "J1").write_bytes(b"not a record")  # unreadable: its file runs anew
    assert claims_module.owed_jobs(settings, "alpha") == set()
    assert claims_module.owed_jobs(settings, "beta") == set()


def test_worker_processes_see_the_main_processs_heartbeat():
    """A spawned process given the ``Liveness`` reads the heartbeat time the main
    process writes after it started (shared memory, not a copy)."""
    context = multiprocessing.get_context("spawn")
    liveness = Liveness(takeover_seconds=30.0)
    here, there = context.Pipe()
    child = context.Process(target=_report_safe, args=(liveness, there), daemon=True)
    child.start()
    try:
        here.send(True)
        assert here.recv() is False  # never written
        liveness.beat()
        here.send(True)
        assert here.recv() is True
    finally:
        here.send(False)
        child.join(10)


def test_a_lost_claim_stops_the_post_and_writes_no_997(tmp_path, erp):
    """The pipeline checks the claim before posting: a lost one ends the job
    ``interrupted`` (claim_lost) with nothing posted, no 997 and no destination asked."""
    settings = Settings(paths=PathSettings(root=tmp_path), erp=ErpSettings(url=erp.url))
    path = tmp_path / "po.edi"
    path.write_bytes(make_po(1))

    def lost() -> None:
        raise ClaimLost("po.edi is no longer claimed by host alpha")

    asked: list[object] = []  # where to file it: never asked, the file is not ours
    with Pipeline(settings) as pipeline:
        job = pipeline.run(path, guard=lost, destination=asked.append)
    assert job.status is JobStatus.INTERRUPTED and asked == []
    assert job.error_details == [{"code": "claim_lost", "message": job.error}]
    assert erp.requests == []
    assert not settings.paths.acks.exists() or not os.listdir(settings.paths.acks)


def test_a_claim_lost_after_the_post_writes_no_997(tmp_path, erp):
    """The claim is checked again before the 997: a host that lost the file after
    posting leaves the acknowledgement to the host that took it over."""
    settings = Settings(paths=PathSettings(root=tmp_path), erp=ErpSettings(url=erp.url))
    path = tmp_path / "po.edi"
    path.write_bytes(make_po(1))

    def lost_after_the_post() -> None:
        if erp.requests:
            raise ClaimLost("po.edi is no longer claimed by host alpha")

    asked: list[object] = []  # where to file it: never asked, the file is not ours
    with Pipeline(settings) as pipeline:
        job = pipeline.run(path, guard=lost_after_the_post, destination=asked.append)
    assert job.status is JobStatus.INTERRUPTED and asked == []
    assert len(erp.requests) == 1
    assert not settings.paths.acks.exists() or not os.listdir(settings.paths.acks)


def test_a_claim_unsure_only_for_a_stale_heartbeat_runs_again_once_it_is_fresh(tmp_path, erp):
    """The heartbeat stays stale (the database away) past the takeover age
    while a job waits to post: the job stops, nothing posted; the file is
    still in this host's folder (no host took it), so the unit comes back
    parked, not "lost" for good; with a fresh heartbeat it runs, posts once
    and is filed (it used to stay in processing/ until a restart)."""
    settings = Settings(paths=PathSettings(root=tmp_path), erp=ErpSettings(url=erp.url))
    settings.paths.create()
    liveness = Liveness(takeover_seconds=0.2)  # never written: stale, given up after 0.2 s
    lane = Claims(settings.paths, "alpha", liveness)
    lane.open()
    (settings.paths.inbox / "po.edi").write_bytes(make_po(1))
    pname = lane.claim("po.edi", "J1")
    mover = Mover(settings.paths, clock=time.monotonic)
    with Pipeline(settings) as pipeline:
        worker = Worker(settings, pipeline, {"": lane}, mover, host="alpha")
        outcome = run_one(worker, Work("po.edi", pname=pname, job_id="J1"))
        assert outcome.status == "lost" and erp.requests == []
        assert outcome.parked == Work("po.edi", pname=pname, job_id="J1", lane="")
        assert claimed(settings.paths.processing) == [pname]
        # The service's probe wrote a heartbeat; a long takeover age keeps it
        # fresh through the second run however slow a loaded machine is.
        liveness.takeover_seconds = 60.0
        liveness.beat()
        again = run_one(worker, outcome.parked)
    lane.close()
    assert again.status == "succeeded" and len(erp.requests) == 1
    assert os.listdir(settings.paths.done) == ["po.edi"]
    assert claimed(settings.paths.processing) == []


def test_a_claim_taken_over_meanwhile_is_lost_for_good(tmp_path, erp):
    """A fresh heartbeat, but while the ERP holds the POST another host takes
    the file over (renames it into its folder): "lost", nothing parked, no
    997, the file left where that host put it."""
    settings = Settings(paths=PathSettings(root=tmp_path), erp=ErpSettings(url=erp.url))
    settings.paths.create()
    liveness = Liveness(takeover_seconds=30.0)
    liveness.beat()
    lane = Claims(settings.paths, "alpha", liveness)
    lane.open()
    (settings.paths.inbox / "po.edi").write_bytes(make_po(1))
    pname = lane.claim("po.edi", "J1")
    beta = settings.paths.processing / "beta"
    beta.mkdir()
    outcomes = []
    erp.gate.clear()
    with Pipeline(settings) as pipeline:
        mover = Mover(settings.paths, clock=time.monotonic)
        worker = Worker(settings, pipeline, {"": lane}, mover, host="alpha")
        unit = Work("po.edi", pname=pname, job_id="J1")
        thread = threading.Thread(target=lambda: outcomes.append(run_one(worker, unit)))
        thread.start()
        poll_until(lambda: erp.requests, what="the POST held by the ERP")
        os.rename(lane.path(pname), beta / pname)  # the other host's takeover
        erp.gate.set()
        thread.join(30)
    lane.close()
    (outcome,) = outcomes
    assert outcome.status == "lost" and outcome.parked is None
    assert os.listdir(beta) == [pname] and os.listdir(settings.paths.acks) == []


def test_an_owed_record_is_kept_across_a_restart_and_dropped_once_written(claims):
    """A parked job's owed record (NotRecorded) is kept in processing/.owed/
    <host>/ and read back as it was; one this version cannot read is None (the
    job runs again, as without it); dropped, it is gone."""
    job = make_job(status=JobStatus.SUCCEEDED)
    job.acks = ["po.edi.1.997"]
    claims.keep_owed(NotRecorded(job, True, "database is locked"))
    kept = claims.owed(job.job_id)
    assert kept.job == job and kept.posted is True and kept.reason == "database is locked"
    assert os.listdir(claims.owed_dir) == [job.job_id]
    claims.drop_owed(job.job_id)
    assert claims.owed(job.job_id) is None and os.listdir(claims.owed_dir) == []
    (claims.owed_dir / "J9").write_bytes(b"not a pickle")
    assert claims.owed("J9") is None


def test_a_lost_claim_stops_the_erp_retries(erp):
    """HttpErp checks the guard before each retry: the ERP's 503 is not answered by
    another POST once the claim is lost."""
    erp.answers = [503, 503, 503]
    checks = []

    def guard() -> None:
        checks.append(1)
        raise ClaimLost("lost")

    sink = HttpErp(ErpSettings(url=erp.url, max_attempts=3), sleep=lambda s: None)
    with sink, pytest.raises(ClaimLost):
        sink.deliver({"po_number": "1"}, "key-1", guard=guard)
    assert len(erp.requests) == 1 and checks == [1]


def test_taken_over_jobs_are_marked_interrupted(db, recorder):
    """``mark_interrupted(job_ids=...)``: the running jobs of the files taken over, of
    whichever host, and no other; the reason names the host that took them."""
    jobs = [make_job(n) for n in (41, 42)]
    for job in jobs:
        job.status = JobStatus.RUNNING
        job.host = "host-b"
        recorder.job_started(job)
    found = store.mark_interrupted(db, "host-a", job_ids=[jobs[0].job_id])
    assert [j["job_id"] for j in found] == [jobs[0].job_id]
    shown = queries.show_job(db, jobs[0].job_id)
    assert shown["status"] == "interrupted" and "host-a took the file over" in shown["error"]
    assert queries.show_job(db, jobs[1].job_id)["status"] == "running"


# -- the inbox re-created ------------------------------------------------------------


def test_follow_inbox_opens_a_recreated_inbox_behind_the_same_descriptor(claims):
    """Deleted: MISSING; made again: REPLACED, and the same descriptor number now lists
    the new directory; then SAME."""
    inbox, fd = claims.paths.inbox, claims.inbox_fd
    assert claims.follow_inbox() is Inbox.SAME
    os.rmdir(inbox)
    assert claims.follow_inbox() is Inbox.MISSING
    inbox.mkdir()
    (inbox / "new.edi").write_bytes(make_po(2))
    assert claims.follow_inbox() is Inbox.REPLACED
    assert claims.inbox_fd == fd and os.listdir(fd) == ["new.edi"]
    assert claims.follow_inbox() is Inbox.SAME


# -- the host lock ------------------------------------------------------------------


def test_lock_host_is_held_by_one_daemon_per_host(tmp_path):
    """A second lock for the same host is refused with a clear message; another host's
    is not; closing the descriptor sets the lock free."""
    processing = tmp_path / "processing"
    fd = lock_host(processing, "alpha")
    try:
        with pytest.raises(AlreadyRunning, match="another edi-inbox is running for host alpha"):
            lock_host(processing, "alpha")
        os.close(lock_host(processing, "beta"))
        mode = os.stat(processing / ".alpha.lock").st_mode
        assert stat.S_IMODE(mode) == 0o640
    finally:
        os.close(fd)
    os.close(lock_host(processing, "alpha"))


def test_lock_host_never_follows_a_symlink(tmp_path):
    """A symlink planted where the lock goes is not followed (nothing is created there)."""
    processing = tmp_path / "processing"
    processing.mkdir()
    os.symlink(tmp_path / "elsewhere", processing / ".alpha.lock")
    with pytest.raises(OSError):
        lock_host(processing, "alpha")
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.e2e
def test_a_second_daemon_for_the_host_refuses_to_start_touching_nothing(erp, daemons):
    """While a daemon has a job in flight, a second one for the same host exits 1 with
    "another edi-inbox is running for host X" on stderr, before it touches anything:
    the claimed file stays where it is, the job stays running, nothing more is posted."""
    daemon = daemons(erp.url)
    daemon.start()
    erp.gate.clear()  # the ERP holds the first POST: the file is mid-job
    (daemon.inbox / "po1.edi").write_bytes(make_po(1))
    poll_until(lambda: len(erp.requests) == 1, what="the POST in flight")
    before = (claimed(daemon.processing), daemon.jobs())
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "EDI_INBOX_CONFIG")}
    second = subprocess.run(
        daemon_command(daemon.config), env=env, capture_output=True, timeout=30, check=False
    )
    assert second.returncode == 1
    host = socket.gethostname()
    assert f"another edi-inbox is running for host {host}" in second.stderr.decode()
    assert '"event": "cannot_start"' in second.stdout.decode()  # logged too
    assert (claimed(daemon.processing), daemon.jobs()) == before
    assert [job["status"] for job in before[1]] == ["running"]
    erp.gate.set()
    poll_until(lambda: daemon.listing(daemon.done) == ["po1.edi"], what="the first daemon files it")
    assert len(erp.requests) == 1
    assert daemon.terminate(timeout=10) == 0


@pytest.mark.e2e
@pytest.mark.parametrize("processes", [1, 2])
def test_a_host_paused_past_the_takeover_posts_nothing_it_lost(erp, daemons, processes):
    """A daemon frozen (SIGSTOP) mid-POST past the takeover age loses the file to another
    host, which marks its job interrupted and posts and files the order. Continued, the
    frozen daemon gets the ERP's 503 and does not retry: nothing more is posted, its job
    ends interrupted (claim lost), the file is not moved again. With worker processes,
    the children check the main process's heartbeat time."""
    # Heartbeats every 5 s (the takeover age stays 15 s): the daemon is seldom frozen
    # inside a SQLite write that would hold up the other host's.
    options = {"processes": processes, "heartbeat_seconds": 5.0}
    first = daemons(erp.url, **options)
    first.start()
    erp.gate.clear()  # the first daemon's POST waits, then gets a 503
    erp.answers = [503]
    (first.inbox / "po1.edi").write_bytes(make_po(1))
    poll_until(lambda: len(erp.requests) == 1, what="the POST in flight")
    assert first.proc is not None
    frozen = [first.proc.pid, *child_pids(first.proc.pid)]
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    erp.gate.set()  # the 503 waits in the frozen daemon's socket

    other = daemons(erp.url, host="other-host", **options)
    other.start()
    poll_until(lambda: first.listing(first.done) == ["po1.edi"], timeout=45, what="taken over")
    (lost,) = [j for j in first.jobs() if j["host"] == socket.gethostname()]
    assert lost["status"] == "interrupted" and "other-host took the file over" in lost["error"]
    (theirs,) = [j for j in first.jobs() if j["host"] == "other-host"]
    assert theirs["retry_of"] == lost["job_id"]
    poll_until(lambda: job_of(first, theirs["job_id"])["status"] == "succeeded", what="recorded")
    assert len(erp.requests) == 2

    for pid in frozen:
        os.kill(pid, signal.SIGCONT)
    poll_until(
        lambda: "claim_lost" in (job_of(first, lost["job_id"])["error_details"] or ""),
        what="the frozen daemon's job ends",
    )
    assert job_of(first, lost["job_id"])["status"] == "interrupted"
    assert len(erp.requests) == 2  # nothing posted after it woke
    assert first.listing(first.done) == ["po1.edi"] and claimed(first.processing) == []
    assert first.alive()
    assert first.terminate(timeout=10) == 0 and other.terminate(timeout=10) == 0


def job_of(daemon: Daemon, job_id: str) -> dict:
    (job,) = [j for j in daemon.jobs() if j["job_id"] == job_id]
    return job
