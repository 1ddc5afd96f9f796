"""Outsider round 15: a chaos soak with reconciliation. About 16 s.

What was tried (by hand, with a soak script not kept in the repository): a
real daemon with worker processes (``processes = "auto"``, 8 workers, the
shipped ERP retry policy), 60-300 uploads owned by the partner's uid (distinct
POs, exact resends, the same order under a new ISA13, two or three
interchanges per file, corpus files of several partners, a rule-failing PO,
truncated files, not-X12, empty files, some written in three chunks with
pauses), and meanwhile, in random order: the ERP answering 500 / 429
(Retry-After) / 409 / slowly / booking the order and then resetting the
connection; SIGHUP (also with ``workers`` changed); SIGKILL then restart;
SIGTERM mid-backlog then restart; the SQLite file locked by another process
for 2-6 s. Then, with PostgreSQL (a throwaway cluster stopped for 1-6 s, three
times), two hosts sharing the inbox, one SIGKILLed. Then a strict
reconciliation: every upload in done/ or failed/ once, byte-identical; the
ERP's bookings per order content (an ERP honouring Idempotency-Key: a key seen
again is a replay, not a booking); every generated order booked or rejected
with a reason; AK5 "A" count equal to the orders posted or duplicate; ``jobs
list/show --json`` and ``stats --json`` against the ERP's ledger (no job
running, each booked order shown posted by exactly one job, stats' Decimal
total equal to the ERP's booked amounts); the journal without traceback.

Held, over six soak runs (SQLite: 60, 200, 250 and 300 files; PostgreSQL,
two hosts: 200 and 250 files; in all 13 SIGKILLs, 8 SIGTERMs, 12 reloads, 7
locks, 5 PostgreSQL stops, up to 27 replays after connection resets), apart
from the findings below: no file lost, overwritten or left in processing/, all
byte-identical; no order booked twice; no order shown posted by two jobs or
by none; stats' total exact; no job left running; no traceback. (An ERP
away longer than the retry policy fails the job with "the ERP did not take
order N (HTTP 500 after 3 attempts)": clearly rejected, as documented.)

Found (each test failed on the code as found; fixed and plain now — the
third's restart case, a strict xfail until a later session: no open event
from before a start can be seen, so the daemon asks the kernel,
``watch.writing``, a read lease refused while the file is open for writing):

* ``test_a_kill_after_the_997_before_the_final_record_sends_no_second_997``:
  a SIGKILL (OOM kill, power loss) after the job's 997 and TA1 are written
  into acks/ and before its final record commits: on restart the job is
  ``interrupted``, run again (``resuming``, ``order_already_accepted``: not
  posted again, good) and a *second* 997 and TA1 go to the partner for the
  same interchange, under new control numbers (soak: f0103.edi,
  ``f0103.edi.123456789.997`` ISA13 218699054 and
  ``f0103.edi.123456789.1.997`` ISA13 218699070, both AK5*A). The
  pipeline's docstring promises this never happens "while the final record
  waits on the database" (round 4's fix, the ``held`` path); the ordinary
  path, database up, has the same window.
* ``test_a_kill_mid_write_leaves_no_temporary_behind``: a SIGKILL while
  ``failed/NAME.error.json`` is being written leaves
  ``failed/.NAME.error.json.<uuid>.tmp`` for good (soak:
  ``.f0106.edi.error.json.5135cc05….tmp``); the same ``write_new`` writes
  the 997s, also into a partner's outbox.
* ``test_a_reload_mid_upload_does_not_take_the_file_before_it_is_closed``
  [reload, restart]: an upload open for writing whose written part already
  ends in IEA (here all but its final newline) is claimed and posted while
  the partner's session still writes, if the daemon was reloaded (SIGHUP)
  or restarted since the open: the last bytes then make it "changed while
  it was processed (1098 bytes read, 1099 now); it runs again", the first
  job ``interrupted`` and the partner gets two 997s and two TA1s. Soak:
  f0141.edi, SIGHUP at 05:49:34, claimed 1 s after READY. Without the
  reload the open keeps it waiting (the plain [None] case). Round 14 found
  the same for an *empty* file; its fix holds only empty files.

Also held, a burst (by hand, a script not kept): 3,001 uploads at once
(2,700 distinct POs, 300 corpus files of a dozen sources, 60 three-byte
files) with a 3 MB order of 100,000 PO1 lines in the middle, worker
processes: all filed in 66 s, byte-identical, 2,674 POSTs, no key twice,
the huge order succeeded (29.8 s), ``stats`` by_status equal to the jobs, no
job running, no traceback.

Observed, not called a bug (a mistake of the soak's own): two hosts on one
inbox whose configs named different databases (one SQLite, one
PostgreSQL) take each other's claimed files over while both are alive and
posting ("taken_over ... from_host alpha", then back "from_host beta"), each
seeing no heartbeat of the other; the orders still went out once per key.

Not tried (time): a SIGKILL of one host while the other is at the ERP with
its file in the PostgreSQL soak more than the three kills it drew; a huge
file near ``max_file_bytes`` among the burst; SIGTERM with a changed
``[erp] url`` reload mid-backlog.

Real parts: ``edi-inbox run`` subprocesses (threads here, worker processes in
the soak), a real HTTP ERP on 127.0.0.1, SQLite, uploads by the partner's
uid, real signals. No mocks; the SIGKILL windows are hit by SIGSTOPping the
daemon the moment a file shows, not by sleeps.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from daemons import Daemon, daemons, erp

from edi_inbox.x12 import X12Reader

import uids
from helpers import claimed, make_po, poll_until

__all__ = ["daemons", "erp"]  # fixtures

ATTEMPTS = 40  # files tried until a SIGKILL lands in the window


def job_statuses(daemon: Daemon, name: str) -> list[str]:
    path = daemon.root / "edi-inbox.db"
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
        rows = conn.execute("SELECT status FROM jobs WHERE file_name = ?", (name,))
        return [r[0] for r in rows]


def stop_when(daemon: Daemon, seen, deadline: float = 15.0) -> bool:
    """Spin until ``seen()``, then SIGSTOP the daemon (threads: the whole
    process); False if it never came."""
    assert daemon.proc is not None
    end = time.monotonic() + deadline
    while not seen():
        if time.monotonic() > end:
            return False
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    return True


def settled(daemon: Daemon, names: list[str], timeout: float = 30) -> None:
    def filed() -> bool:
        there = set(daemon.listing(daemon.done)) | set(daemon.listing(daemon.failed))
        return (
            all(n in there for n in names)
            and not claimed(daemon.processing)
            and all(j["status"] not in ("running", "received") for j in daemon.jobs())
        )

    poll_until(filed, timeout=timeout, interval=0.05, what=f"{names} filed, no job running")


def acks_for(daemon: Daemon, name: str, kind: str) -> list[str]:
    return sorted(
        a
        for a in os.listdir(daemon.root / "acks")
        if a.startswith(name + ".") and a.endswith("." + kind)
    )


# -- 1. SIGKILL after the 997 is written, before the job's final record ------------------


def test_a_kill_after_the_997_before_the_final_record_sends_no_second_997(erp, daemons):
    """Found in the soak (f0103.edi: job_finished logged, SIGKILL, job_interrupted,
    resuming, order_already_accepted, a second 997). Here made certain: a good
    order at a fast ERP; the daemon (threads) is SIGSTOPped the moment its 997
    appears in acks/; if its job is still ``running`` in the database the window
    is hit: SIGKILL, restart. Holds if the partner gets one 997 (one TA1) for
    the interchange, as before the crash."""
    daemon = daemons(erp.url, workers=1)
    daemon.start()
    hit = None
    for n in range(ATTEMPTS):
        name = f"k{n:02d}.edi"
        ack = daemon.root / "acks" / f"{name}.123456789.997"
        uids.upload(daemon.inbox / name, make_po(15100 + n))
        assert stop_when(daemon, ack.exists), f"no 997 for {name}"
        if job_statuses(daemon, name) == ["running"]:
            hit = name
            break
        os.kill(daemon.proc.pid, signal.SIGCONT)
        settled(daemon, [name])
    assert hit, f"no SIGKILL landed in the window in {ATTEMPTS} files"
    daemon.kill()
    daemon.start()
    settled(daemon, [hit])
    assert erp.posts_per_key()  # the order went to the ERP
    keys = erp.keys_by_po()[f"{15100 + int(hit[1:3]):08d}"]
    assert len(keys) == 1
    codes = []
    for a in acks_for(daemon, hit, "997"):
        reader = X12Reader(io.BytesIO((daemon.root / "acks" / a).read_bytes()))
        codes += [s.elements[1] for s in reader.scanner if s.elements[0] == "AK5"]
    assert acks_for(daemon, hit, "997") == [f"{hit}.123456789.997"], (
        f"997s for {hit}: {acks_for(daemon, hit, '997')} (AK5 {codes}); TA1s: "
        f"{acks_for(daemon, hit, 'TA1')}; jobs {job_statuses(daemon, hit)}"
    )


# -- 2. SIGKILL while a report or 997 is being written: its hidden temporary stays -------


def test_a_kill_mid_write_leaves_no_temporary_behind(erp, daemons):
    """Found in the soak (failed/.f0106.edi.error.json.5135….tmp left after a
    SIGKILL). Here: files the daemon refuses (not X12); the daemon is SIGSTOPped
    the moment a hidden ``*.tmp`` shows in failed/, SIGKILLed, restarted. Holds
    if, once settled, failed/ and acks/ hold no temporary."""
    daemon = daemons(erp.url, workers=1)
    daemon.start()

    def temporaries() -> list[str]:
        return [
            f"{d}/{x}"
            for d in ("failed", "acks", "done")
            if (daemon.root / d).exists()
            for x in os.listdir(daemon.root / d)
            if x.endswith(".tmp")
        ]

    hit = None
    for n in range(ATTEMPTS):
        name = f"t{n:02d}.edi"
        uids.upload(daemon.inbox / name, b"not X12 at all\n" * 2000)
        filed = daemon.failed / name
        stop_when(daemon, lambda filed=filed: temporaries() or filed.exists())
        if temporaries():
            hit = name
            break
        os.kill(daemon.proc.pid, signal.SIGCONT)
        settled(daemon, [name])
    assert hit, f"no SIGKILL landed mid-write in {ATTEMPTS} files"
    left = temporaries()
    daemon.kill()
    daemon.start()
    settled(daemon, [hit])
    assert not temporaries(), f"left after the restart: {temporaries()} (seen at the kill: {left})"


# -- 3. a reload while a partner's upload is still open ------------------------------------

WRITER = textwrap.dedent(
    """
    import os, sys
    first = int(sys.argv[2])
    with open(sys.argv[1], "wb") as f:  # sftp-server: open, then writes in place
        os.fchown(f.fileno(), int(sys.argv[3]), int(sys.argv[3]))  # the partner's file
        f.write(sys.stdin.buffer.read(first))
        f.flush()
        print("written", flush=True)
        f.write(sys.stdin.buffer.read())  # the rest, once the test sends it
    """
)


def open_upload(target: Path, data: bytes) -> subprocess.Popen:
    """A partner's session (its own process, the file its uid's) that has
    written all of ``data`` but its last byte into ``target`` and holds the
    file open; the rest goes in when the test writes it to its stdin."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target), str(len(data) - 1), str(uids.PARTNER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert writer.stdin is not None and writer.stdout is not None
        writer.stdin.write(data[:-1])
        writer.stdin.flush()
        assert writer.stdout.readline() == b"written\n"
    except BaseException:
        writer.kill()
        raise
    return writer


def close_upload(writer: subprocess.Popen, data: bytes) -> None:
    """The session ``open_upload`` started writes ``data``'s last byte and
    closes the file: the upload is complete."""
    assert writer.stdin is not None
    writer.stdin.write(data[-1:])
    writer.stdin.close()
    assert writer.wait(10) == 0


@pytest.mark.parametrize(
    "event",
    [
        None,
        "reload",
        "restart",
    ],
)
def test_a_reload_mid_upload_does_not_take_the_file_before_it_is_closed(erp, daemons, event):
    """Found in the PostgreSQL soak (f0141.edi: written in chunks, a SIGHUP at
    05:49:34, claimed at 1,098 of its 1,099 bytes, 997 written, then "changed
    while it was processed (1098 bytes read, 1099 now); it runs again",
    order_already_accepted, a second 997). Here: the partner's session has
    written all of an interchange but its final newline and keeps the file
    open (inotify sees the open); the daemon is reloaded (SIGHUP, same
    config). Holds if nothing is taken before the close: then one job, one 997,
    one TA1, no job ``interrupted``."""
    # The grace long (an open file unchanged for it is taken as one whose close
    # event was lost), as round 14 did: only the open keeps it waiting.
    daemon = daemons(erp.url, workers=2, incomplete_grace_seconds=30.0)
    daemon.start()
    data = make_po(15300)
    assert data.endswith(b"\n")
    target = daemon.inbox / "slow.edi"
    writer = open_upload(target, data)
    try:
        assert writer.stdin is not None
        if event == "reload":
            daemon.reload("")
        elif event == "restart":
            daemon.kill()
            daemon.start()
        # Past settle_seconds and a rescan: taken, or (as it should) still waiting.
        with contextlib.suppress(AssertionError):
            poll_until(lambda: job_statuses(daemon, "slow.edi") or erp.requests, timeout=4)
        taken_early = bool(job_statuses(daemon, "slow.edi") or erp.requests)
        close_upload(writer, data)
    finally:
        if writer.poll() is None:
            writer.kill()
    settled(daemon, ["slow.edi"])
    statuses = job_statuses(daemon, "slow.edi")
    assert (
        not taken_early
        and statuses == ["succeeded"]
        and acks_for(daemon, "slow.edi", "997") == ["slow.edi.123456789.997"]
    ), (
        f"taken while open: {taken_early}; jobs {statuses}; 997s "
        f"{acks_for(daemon, 'slow.edi', '997')}; TA1s {acks_for(daemon, 'slow.edi', 'TA1')}; "
        f"done/ {daemon.listing(daemon.done)}"
    )
    assert len(erp.keys_by_po()["00015300"]) == 1
