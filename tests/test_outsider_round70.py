"""Outside tester, round 70: the changes of the last hour -- a set refused for
its syntax judged by the rules too (``Pipeline._judged_beside``), the new
structure rules (a loop's segment past its maximum use, loop-only segments
alone in the header, 003040's lengths and maximum uses), ``status`` telling a
daemon of this host gone by its free lock and its gone pid
(``admin.alive``), and a job owing its 997 kept
``running`` by its owed record (``claims.owed_jobs``).

Rigs: round 49's ``Harness`` (the real Pipeline in this process, round 17's
recording ERP) and a copy of its run returning the JobResult; round 51's
``rig`` (root, a tmpfs outbox of two inodes: ENOSPC, the 997 owed) with
round 55's ``remount``; ``admin.alive`` called on a heartbeat row.
Structures were checked against bots-edi/bots-grammars ``x12/3040/
850003040.py``, ``x12/3060/850003060.py``, ``x12/4010/850004010.py`` before
being called valid.

What I tried
- False accusations beside a syntax error (4010 and 5010/999): a broken BEG
  (BEG03 too long, BEG05 empty, a second BEG, broken or not), a broken PO1
  (PO101/PO104/PO107 too long) with a quantity 0 or a duplicate line number,
  a broken CUR (CUR02 short), a broken CTT, a broken CTP price, a CTP in
  another unit beside a broken REF, 11 header DTMs, a 26th SAC with a bad
  SAC05, a line's second CUR broken, a DTM with an impossible date beside a
  broken REF; AK3 positions, order, codes; the job's error text.
- False rejections of valid orders: 4010 a line's LS/LDT/QTY/MSG/REF/LM/LQ/
  LE, a line's N1 with N4, DTM, LDT/MAN, SLN loops with MSG, PID, PO3, DTM,
  CTP, PO4, N9/MSG, SAC/CUR/CTP, QTY/SI, N1/N2/N3/N4/REF/PER, two SLNs each
  with an N4, SAC/CUR/CTP twice, CTP/CUR twice, N9 DTM MEA MSG, AMT REF PCT,
  PKG/MEA, SCH/TD5/REF, PID/MEA; the header's SPI with REF/DTM/MSG, N1 (N2
  N3 N4 REF G61 MSG) and CB1 (REF DTM LDT MSG), two SPIs each with N1/N4,
  AMT with DTM/FA1/FA2 twice, SAC/CUR twice, N9 with DTM and MSGs, ADV
  DTM MTX; 3040 12 header REFs and an N1 loop of 2 N2, 2 N3, N4, 12 REF, 3
  PER, a line's 12 REFs and its N1 loop's 12, an SLN's N1 with 12 REFs,
  every 3040 length at its maximum (PO1, PID of 8, N1, N2, N3, PER), CTP and
  SAC repeated in a 3040 line; 3060 AMT AT REF DTM PCT, a line's SAC CUR
  CTP; 4030 the header's LDT loop and AMT FA1 FA2; 5010 a line's N1/N4/LDT,
  N9/MSG/MTX/EFI (header and line), LS...LE, SPI/N1/CB1/LDT/MTX. Every
  file of the corpus (``tests/corpus_outcomes.py``: the table unchanged).
- ``status``: two configurations on one host (``admin.alive`` on a row).
- Owed jobs: an owed record made unreadable between a SIGKILL and a start;
  a reload that drops the partner whose inbox's claim owes its 997 (then
  added again).

What held
- ``test_held_a_second_broken_beg_is_named_once``: AK3 BEG 3 5 alone.
- Seen, not pinned: no rule problem beside a syntax error was a consequence
  of it (rules judging the broken segment itself are left out by its
  number; ACROSS waits); AK3s in segment order, positions from ST; the 999
  the same with IK3/IK4; every valid placement above posted AK5 A; the
  corpus outcomes as pinned; after a clean stop and a start the job of an
  unreadable owed record is marked (interrupted).

Found (strict xfails; all 4 fixed the same session, each test failing
before: ``claims.owed_jobs`` counts only records it can read, in every
processing folder (a dropped partner's too); a second header CUR is
refused before its elements are checked; ``admin.alive`` judges a daemon
of this machine by its pid alone, the host lock dropped)
- ``test_an_unreadable_owed_record_leaves_no_job_running_once_its_file_ran_again``:
  the file runs again as a new job (retry_of the first) and succeeds, but
  the first job stays ``running`` as long as the daemon runs (until its next
  stop), the unreadable record left in ``.owed/``. ``claims.owed_jobs``
  counts records by name without reading them, ``Claims.owed`` then says
  None and the resume runs the file anew; nothing marks the first job.
- ``test_an_owed_job_of_a_partner_dropped_by_a_reload_is_not_marked_ended``:
  the reload's drain marks the owed job ``interrupted``; re-adding the
  partner later writes its owed record as that job, ``succeeded``: an end
  that was not one. ``claims.owed_jobs`` scans only the configured lanes.
- ``test_a_second_broken_header_cur_is_named_once_like_a_second_beg``: a
  second header CUR with CUR02 too short: the job's error names segment 6
  twice and the 997 gives an AK4 under AK3 CUR 4 5 for a segment never read
  (a second BEG or CTT: once). ``orders.from_transaction`` checks a header
  CUR's elements before raising ``_once_only``.
- ``test_status_with_another_configs_lock_held_calls_a_killed_daemon_gone``:
  two configurations on one host and database: a killed daemon B is called
  alive by a status of configuration A while A runs: ``admin.alive`` reads
  the caller's processing lock for every row of the host.

About 25 s at -n0 (two root-only daemon tests: skipped without root).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from daemons import erp
from test_outsider_round17 import RecordingErp
from test_outsider_round49 import LINE, Harness, interchange, order
from test_outsider_round51 import rig
from test_outsider_round55 import remount

import uids
from helpers import http_server, make_po, poll_until

__all__ = ["erp", "rig"]  # the fixtures


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Iterator[Harness]:
    with http_server() as server:
        recording = RecordingErp(server)
        yield Harness(recording, tmp_path_factory.mktemp("r70"))
        recording.gate.set()


def statuses(daemon) -> list[str]:
    return sorted(j["status"] for j in daemon.jobs())


def owed_shown(daemon) -> bool:
    return "waiting to write their acknowledgements" in daemon.cli("status").stdout


def owed_records(daemon) -> list:
    base = daemon.processing / ".owed"
    return sorted(p for p in base.glob("*/*") if not p.name.startswith("."))


@pytest.mark.e2e
def test_an_unreadable_owed_record_leaves_no_job_running_once_its_file_ran_again(rig, erp):
    out = rig.tmpfs(rig.root / "acme-out", "size=1m,nr_inodes=2")
    sect = f'[partners.acme]\nids = ["08:AAAAAAAAAA"]\noutbox = "{out}"\n'
    daemon = rig.daemon(erp.url, extra=sect, max_crashes=1)
    daemon.start()
    uids.upload(daemon.inbox / "a.edi", make_po(70001))
    poll_until(lambda: owed_shown(daemon), what="its 997 owed", timeout=25)
    poll_until(lambda: owed_records(daemon), what="the owed record kept", timeout=25)
    daemon.kill()
    (record,) = owed_records(daemon)
    record.write_bytes(b"not a pickle")  # a torn or foreign record: Claims.owed says None
    remount(out, "nr_inodes=100")
    daemon.start()
    poll_until(lambda: daemon.listing(daemon.done) == ["a.edi"], what="filed")
    poll_until(lambda: "succeeded" in statuses(daemon), what="the file's second run recorded")
    assert len(erp.requests) == 1  # the retry's key: posted once
    poll_until(lambda: "running" not in statuses(daemon), what="no job left running", timeout=10)


def run_job(harness: Harness, data: bytes):
    """The file through the real Pipeline (as ``Harness.run``): the JobResult and the 997."""
    from test_outsider_round49 import segments_of

    job, settings = harness.job(data)
    (ack,) = [p for p in settings.paths.acks.iterdir() if p.suffix == ".997"]
    return job, segments_of(ack.read_bytes())


# ST 1, BEG 2, CUR 3, CUR 4: the second CUR both once too often and with CUR02 too short.
SECOND_CUR_BROKEN = interchange(order("CUR*BY*USD~", "CUR*BY*US~", LINE))


def test_held_a_second_broken_beg_is_named_once(harness):
    """The comparison: a second BEG with BEG03 too long is named once, over
    its maximum use (AK304 5), its elements not judged (it is not read)."""
    job, ack = run_job(harness, interchange(order("BEG*00*SA*" + "P" * 30 + "**20240102~", LINE)))
    assert [s for s in ack if s[0] in ("AK3", "AK4")] == [["AK3", "BEG", "3", "", "5"]], ack
    assert job.error.count("segment 5 (BEG)") == 1, job.error


def test_a_second_broken_header_cur_is_named_once_like_a_second_beg(harness):
    job, ack = run_job(harness, SECOND_CUR_BROKEN)
    assert [s for s in ack if s[0] in ("AK3", "AK4")] == [["AK3", "CUR", "4", "", "5"]], ack
    assert job.error.count("segment 6 (CUR)") == 1, job.error


@pytest.mark.e2e
def test_an_owed_job_of_a_partner_dropped_by_a_reload_is_not_marked_ended(rig, erp):
    out = rig.tmpfs(rig.root / "acme-out", "size=1m,nr_inodes=2")
    inbox = rig.root / "acme-in"
    inbox.mkdir()
    os.chmod(inbox, 0o777)
    sect = f'[partners.acme]\nids = ["08:AAAAAAAAAA"]\ninbox = "{inbox}"\noutbox = "{out}"\n'
    daemon = rig.daemon(erp.url, extra=sect, max_crashes=1)
    daemon.start()
    uids.upload(inbox / "a.edi", make_po(70011))
    poll_until(lambda: owed_shown(daemon), what="its 997 owed", timeout=25)
    assert statuses(daemon) == ["running"]
    daemon.reload("")  # acme dropped: waits for daemon_ready, after the drain
    try:
        assert statuses(daemon) == ["running"], daemon.jobs()[0]["error"]
    finally:
        remount(out, "nr_inodes=100")


def test_status_with_another_configs_lock_held_calls_a_killed_daemon_gone(tmp_path):
    import socket
    import subprocess

    from edi_inbox import admin, claims
    from edi_inbox.config import PathSettings, Settings

    host = socket.gethostname()
    settings_a = Settings(paths=PathSettings(root=tmp_path / "a"))
    settings_a.paths.create()
    os.close(claims.lock_host(settings_a.paths.processing, host))  # A's lock file, free
    # daemon B (root tmp_path / "b"): killed; its lock is free with it, its pid gone
    b_processing = tmp_path / "b" / "processing"
    os.close(claims.lock_host(b_processing, host))
    gone = subprocess.Popen(["true"])
    gone.wait()
    row_b = {
        "host": host,
        "pid": gone.pid,
        "heartbeat_age_seconds": 0.5,  # killed a moment ago
        "heartbeat_seconds": settings_a.daemon.heartbeat_seconds,
        "counters": {},
    }
    assert admin.alive(row_b, settings_a) is False  # the control: A stopped too, B gone
    fd_a = claims.lock_host(settings_a.paths.processing, host)  # daemon A starts
    try:
        assert admin.alive(row_b, settings_a) is False  # B is as gone as before
    finally:
        os.close(fd_a)
