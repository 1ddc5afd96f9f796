"""A file that kills the daemon (killed, out of memory, a crash) every time it
runs is set aside in failed/ after ``[daemon] max_crashes`` deaths in a row,
instead of the service restarting for ever; stops and parked jobs never count.
Real ``edi-inbox run`` subprocesses, real SIGKILLs, a real HTTP ERP on
127.0.0.1 holding the order until the kill, uploads by a partner's uid; the
counting itself on a real processing folder."""

from __future__ import annotations

import json
import os

from daemons import daemons, erp

from edi_inbox.claims import CRASHES_DIR, Claims
from edi_inbox.config import PathSettings

import uids
from helpers import make_po, poll_until

__all__ = ["daemons", "erp"]  # fixtures


def killed_while_posting(daemon, erp, data: bytes, deaths: int) -> None:
    """``killer.edi`` (``data``) uploaded, the ERP holding its POSTs: the
    daemon SIGKILLed at each POST and started again, ``deaths`` times."""
    erp.gate.clear()
    daemon.start()
    uids.upload(daemon.inbox / "killer.edi", data)
    for n in range(1, deaths + 1):
        poll_until(lambda n=n: len(erp.requests) == n, what=f"POST {n}")
        daemon.kill()
        daemon.start()


def test_a_file_in_flight_at_every_death_is_set_aside_and_retry_runs_it(erp, daemons):
    """The ERP holds the order; the daemon is SIGKILLed while it waits, twice
    (``max_crashes = 2``). The start after the second death files the upload
    in failed/ unrun, code ``crashed``, and takes the next upload; ``retry``
    then runs it once more: done, its order under the one key it was sent
    under both times."""
    daemon = daemons(erp.url, max_crashes=2)
    killed_while_posting(daemon, erp, make_po(7100), deaths=2)
    poll_until(lambda: "killer.edi.error.json" in daemon.listing(daemon.failed), what="set aside")
    report = json.loads((daemon.failed / "killer.edi.error.json").read_text())
    assert [e["code"] for e in report["error_details"]] == ["crashed"], report
    assert "stopped 2 times in a row" in report["error"]
    assert len(erp.requests) == 2  # not run a third time
    erp.gate.set()
    uids.upload(daemon.inbox / "next.edi", make_po(7101))
    poll_until(lambda: daemon.listing(daemon.done) == ["next.edi"], what="the next file done")
    (failed,) = [j for j in daemon.jobs() if j["status"] == "failed"]
    assert daemon.cli("retry", failed["job_id"]).returncode == 0
    poll_until(lambda: "killer.edi" in daemon.listing(daemon.done), what="retried, done")
    po = erp.requests[0][1]
    assert [p for _, p in erp.requests].count(po) == 3
    assert len(erp.keys_by_po()[po]) == 1  # one key each time: the ERP books it once
    assert os.listdir(daemon.processing / CRASHES_DIR) == []
    assert daemon.alive()
    assert daemon.terminate(15) == 0


def test_one_death_then_an_end_clears_the_count(erp, daemons):
    """Killed once with the order at the ERP (``max_crashes = 2``), then the
    file's resumed job ends: done, and no count is left behind for it."""
    daemon = daemons(erp.url, max_crashes=2)
    erp.gate.clear()
    daemon.start()
    uids.upload(daemon.inbox / "once.edi", make_po(7200))
    poll_until(lambda: len(erp.requests) == 1, what="POST")
    daemon.kill()
    erp.gate.set()
    daemon.start()
    poll_until(lambda: daemon.listing(daemon.done) == ["once.edi"], what="done after one death")
    assert os.listdir(daemon.processing / CRASHES_DIR) == []
    assert daemon.terminate(15) == 0


def test_counted_per_job_reset_by_a_parked_job_and_by_another_file(tmp_path):
    """``count_crash``: each job that resumes the file after a death counts
    once (a job run again, after parking, does not count twice); a claim
    its job left parked is no death; a marker of an earlier file whose
    inode this one reuses (other size or mtime) counts nothing."""
    claims = Claims(PathSettings(root=tmp_path), "alpha")
    (tmp_path / "inbox").mkdir()
    claims.open()
    try:
        (tmp_path / "inbox" / "po.edi").write_bytes(make_po(1))
        claims.claim("po.edi", "J1")
        st = os.stat(claims.path("po.edi.J1"))
        assert claims.count_crash(st, "J2", "J1") == 1
        assert claims.count_crash(st, "J2", "J1") == 1  # J2 run again: once
        assert claims.count_crash(st, "J3", "J2") == 2
        claims.note_parked("po.edi.J1", "J3")  # J3 parked: the next start is no death
        assert claims.count_crash(st, "J4", "J3") == 0
        assert claims.count_crash(st, "J5", "J4") == 1  # J4 died: counting again
        os.utime(claims.path("po.edi.J1"), ns=(st.st_atime_ns, st.st_mtime_ns + 1))
        assert claims.count_crash(os.stat(claims.path("po.edi.J1")), "J6", "J5") == 1
        claims.forget_crashes(os.stat(claims.path("po.edi.J1")))
        assert os.listdir(tmp_path / "processing" / CRASHES_DIR) == []
    finally:
        claims.close()


def test_a_resume_that_never_ran_counts_no_death_of_its(tmp_path):
    """``deaths``: each job noted as it started died, as did the run the
    first resume took over; a claim resumed but never run when the daemon
    died again (its job not noted) counts no new death and did not run."""
    claims = Claims(PathSettings(root=tmp_path), "alpha")
    (tmp_path / "inbox").mkdir()
    claims.open()
    try:
        (tmp_path / "inbox" / "po.edi").write_bytes(make_po(2))
        claims.claim("po.edi", "J1")
        st = os.stat(claims.path("po.edi.J1"))
        assert claims.deaths(st, "J1") == (1, True)  # unmarked: its claim ran it
        assert claims.count_crash(st, "J2", "J1") == 1
        assert claims.deaths(st, "J2") == (2, True)  # J2 started, then died
        assert claims.deaths(st, "J3") == (2, False)  # J3 resumed, never started
        assert claims.count_crash(st, "J4", "J3") == 2
        assert claims.deaths(st, "J4") == (3, True)
    finally:
        claims.close()


def test_files_in_flight_together_at_every_death_run_apart_the_killer_alone_set_aside(erp, daemons):
    """Two uploads at the ERP at each of two deaths (``max_crashes = 2``):
    the daemon cannot tell which kills it, so the next start runs them one
    at a time (``run_apart``), none set aside. Killed again with one of them
    alone at the ERP, that one is set aside at the next start (it died
    alone), and the other runs alone to its end: done, posted under its one
    key."""
    daemon = daemons(erp.url, max_crashes=2)
    erp.gate.clear()
    daemon.start()
    uids.upload(daemon.inbox / "a.edi", make_po(7300))
    uids.upload(daemon.inbox / "b.edi", make_po(7301))
    for n in (1, 2):
        poll_until(lambda n=n: len(erp.requests) == 2 * n, what=f"both POSTs {n}")
        daemon.kill()
        daemon.start()
    poll_until(lambda: len(erp.requests) == 5, what="one run apart at the ERP")
    poll_until(lambda: len(daemon.events("run_apart")) == 2, what="both told")

    def counters() -> dict:
        (running,) = json.loads(daemon.cli("status", "--json").stdout)["daemons"]
        return running["counters"]

    # The heartbeat after the POST: one in flight, the other waiting to run alone.
    poll_until(
        lambda: (c := counters())["in_flight"] == 1 and c["run_apart"] == 2, what="one at a time"
    )
    assert len(erp.requests) == 5
    assert daemon.listing(daemon.failed) == []
    killer = erp.requests[-1][1]
    daemon.kill()
    erp.gate.set()
    daemon.start()

    def reports() -> list[str]:
        return [n for n in daemon.listing(daemon.failed) if n.endswith(".error.json")]

    poll_until(lambda: len(daemon.listing(daemon.done)) == 1, what="the innocent done")
    (report,) = poll_until(reports, what="the killer set aside")
    details = json.loads((daemon.failed / report).read_text())
    assert [e["code"] for e in details["error_details"]] == ["crashed"], details
    assert "3 times in a row" in details["error"]
    posted = [p for _, p in erp.requests]
    assert posted.count(killer) == 3  # not run after it died alone
    (innocent,) = {p for p in posted if p != killer}
    assert posted.count(innocent) == 3  # twice beside the killer, once alone
    assert len(erp.keys_by_po()[innocent]) == 1
    assert os.listdir(daemon.processing / CRASHES_DIR) == []
    assert daemon.terminate(15) == 0
