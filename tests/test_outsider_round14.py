"""Outsider round 14: real deployments, data loss first — databases taken
away mid-job, hosts frozen mid-post, uploads as partners send them, hostile
sizes and shapes, db commands and a broken reload beside a running daemon.
About 25 s.

Found (each test failed on the code as found; the two empty-upload ones
are fixed and plain now — an empty file no writer can be seen for waits
``incomplete_grace_seconds`` — the memory one is a strict xfail):

* ``test_segments_the_order_keeps_cost_no_more_than_segments_it_skips``:
  tiny segments that the order *keeps* (``REF*DP*1`` or ``N1`` loops in the
  header, each a ``references[]``/``parties[]`` entry of its JSON) cost
  ~100-200x the file's size in peak RSS. README: "Each job may hold its whole
  file in memory (~25x its size while it is read)"; bench/README.md: "a
  hostile file costs no more than a plain one of the same size".
  ``tests/test_hostile.py`` holds the 20x bound only for ``N9*1``, which the
  order skips. Measured with ``edi-inbox process`` (outbox ERP): 1.1 MB of
  ``REF*DP*1`` 107x growth; 2 MB 341 MB peak; 4 MB 655 MB; 15 MB (1.5
  million segments, within ``max_segments_per_file`` and a quarter of
  ``max_file_bytes``) 2.1 GB and 55 s, over the unit's ``MemoryMax=2G``;
  200,000 ``N1`` loops (5.4 MB) 876 MB and 26 s. Under an address-space
  limit the job ends ``failed`` with "internal error in post_to_erp:
  MemoryError()" (its 997 written); under a cgroup limit the worker would be
  OOM-killed instead.

* ``test_an_upload_open_for_writing_across_a_start_waits_for_its_data``:
  a partner's SFTP session has created ``po.edi`` (``O_CREAT|O_TRUNC``,
  nothing written yet, the file still open) when the daemon (re)starts; the
  start-up scan sees 0 bytes, and after ``settle_seconds`` the file is
  refused "the file is empty (0 bytes, unchanged for 0.3 s)" and moved to
  failed/. The partner's write then succeeds into the moved file: failed/
  holds the whole 1,099-byte order, its job and error.json still say
  "empty", and the order is never posted (the partner's close returned 0).
  README, "What the daemon guarantees": "A file is picked up only once its
  upload is complete: ... a file still open for writing waits". (With the
  inotify observer already watching, the open is seen and the file waits
  up to ``incomplete_grace_seconds``, 300 s by default, then
  ``open_count_reset`` and the same refusal: probed with the test
  harness's 2 s grace. A start or restart mid-open loses it after
  ``settle_seconds``, 2 s by default.)
* ``test_an_upload_open_for_writing_waits_under_the_polling_observer``: the
  same without any restart under ``observer = "polling"``, which README's
  "Scale out" tells shared (NFS/SMB) inboxes to set: the poller sees no
  open, so any upload whose first write comes more than ``settle_seconds``
  after its open is refused as empty and its data lands in failed/, never
  posted, its record saying "empty".

Held (plain test here: ``db migrate``/``db init`` and a SIGHUP with a config
that does not parse while a job waits at the ERP, the daemon as its own
user). Probed and held, left out as tests for their time (20-25 s each; the
code is in commits d90561e and 8403e18 of branch round14):

* PostgreSQL (a throwaway cluster) stopped while the ERP held its answer to
  an order, the 201 then given while it was down and a second file uploaded,
  the defaults (worker processes): both files in done/, one key per PO, one
  accepting 997 each, both jobs succeeded, no job left running.
* Two hosts on one SQLite inbox, the first SIGSTOPped (worker processes)
  while the ERP's 201 waited in its socket, the second taking the file over
  and posting under the same key, then SIGCONT: one key, the file once in
  done/, one 997, one succeeded job, ``stats`` counting the order once.
* A partner's 0600 upload the daemon's user cannot read, beside a good one:
  the good one done, the other in failed/ with "secret.edi was not read:
  the file cannot be read: Permission denied" in its error.json, ``jobs
  list`` and ``status``'s last error.
* ``status``, ``jobs list`` and ``db migrate`` run as root while the
  service user's daemon is stopped: no root-owned ``-wal``/``-shm`` left;
  the daemon starts again and runs a file.
* Hostile shapes through ``edi-inbox process``: 10,000 PO1 lines (3.7 s,
  104 MB), 1,000 orders (7.8 s, 53 MB), 4,000 copies of one order (4.8 s),
  10,000 lines all numbered 1 (6.5 s); time linear in REF/N1 count; a 5 MB
  REF02 or 20 MB PID05 refused at the 1 MiB segment limit; 300-900 KB values
  in REF02/03, N102, N201, N401, PER04, PO109, BEG06, DTM03, CTT02, AMT01,
  CUR02 each refused naming the element and its maximum (MSG, NTE, TD5, ITD,
  FOB, N9 of that size are posted, but none of them is in the ERP body).

Observed, not called a bug: the SQLite ``-wal`` deleted under a running
daemon (an operator's act that destroys SQLite's committed data by
definition). The main file then held no table at all (nothing had been
checkpointed), some jobs went on "succeeding", others failed with "disk I/O
error" and stayed parked while intake flipped between ``intake_resumed`` and
``intake_paused`` until a restart.

Real parts: fresh interpreters running the product's pipeline on real files,
``edi-inbox`` subprocesses, a real daemon as its own user, uploads by the
partner's uid, a real HTTP ERP on 127.0.0.1, SQLite. No mocks, no sleeps.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from daemons import Daemon, erp
from test_hostile import peak_growth

import uids
from helpers import make_po, poll_until
from uids import shared_root

__all__ = ["erp", "shared_root"]  # fixtures

ISA = (
    b"ISA*00*          *00*          *08*AAAAAAAAAA     *ZZ*test22222      "
    b"*971107*1220*U*00401*112240001*0*P*>~"
)


def one_order(extra: list[bytes], po: bytes = b"R14") -> bytes:
    """One 850 with ``extra`` header segments after BEG, one priced line."""
    segs = [
        b"ST*850*0001",
        b"BEG*00*SA*" + po + b"**19971107",
        b"DTM*002*19980301",
        *extra,
        b"PO1*1*1*EA*2.5**VP*X1",
        b"CTT*1",
    ]
    segs.append(b"SE*%d*0001" % (len(segs) + 1))
    body = [ISA, b"GS*PO*test111111*test22222*971107*1220*123456789*X*004010~"]
    body += [s + b"~" for s in segs]
    body += [b"GE*1*123456789~", b"IEA*1*112240001~"]
    return b"\n".join(body) + b"\n"


@pytest.mark.xfail(
    strict=True,
    reason="tiny segments the order keeps (REF, N1 in the header) cost ~100-200x the file's "
    "size in memory, not the ~25x README promises: 15 MB (1.5 million REF*DP*1, within "
    "every cap) peaks at 2.1 GB, past the unit's MemoryMax=2G",
)
def test_segments_the_order_keeps_cost_no_more_than_segments_it_skips(tmp_path):
    """1 MB of ``REF*DP*1`` in one order's header: it succeeds, and its peak RSS
    grows by less than 20x the file (the bound tests/test_hostile.py holds for
    ``N9*1`` the order skips, and README's ~25x)."""
    data = one_order([b"REF*DP*1"] * 110_000)
    status, grown = peak_growth(tmp_path, data)
    print(f"{len(data)} bytes, peak grew {grown / len(data):.1f}x")
    assert status == "succeeded"
    assert grown < 20 * len(data), f"peak grew {grown / len(data):.0f}x the file"


# -- a daemon at work: db commands and a broken reload while a job waits at the ERP ----------


def test_db_migrate_init_and_a_broken_reload_while_a_job_waits_at_the_erp(shared_root, erp):
    """`db migrate` and `db init` run beside the daemon (its own user) while its job
    waits for the ERP's answer, then a SIGHUP with a config that does not parse:
    the commands succeed, the reload is refused, and the job ends succeeded with
    its order posted once; a later upload runs as usual."""
    daemon = Daemon(shared_root, erp.url, user=True)
    try:
        run_beside_a_held_job(daemon, erp)
    finally:
        daemon.close()


def run_beside_a_held_job(daemon, erp) -> None:
    daemon.start()
    erp.gate.clear()
    uids.upload(daemon.inbox / "a.edi", make_po(1401))
    poll_until(lambda: erp.requests, what="the ERP holds the first request")
    for command in (("db", "migrate"), ("db", "init")):
        done = daemon.cli(*command)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    daemon.sighup("[daemon\nworkers = ")
    poll_until(lambda: daemon.events("reload_refused"), what="reload refused")
    assert daemon.alive()
    erp.gate.set()
    poll_until(lambda: daemon.listing(daemon.done) == ["a.edi"], what="a.edi in done/")
    uids.upload(daemon.inbox / "b.edi", make_po(1402))
    poll_until(lambda: "b.edi" in daemon.listing(daemon.done), what="b.edi in done/")
    poll_until(
        lambda: [j["status"] for j in daemon.jobs()] == ["succeeded", "succeeded"],
        what="both jobs succeeded",
    )
    assert sorted(erp.posts_per_key().values()) == [1, 1]
    assert daemon.alive()


# -- an upload the partner's SFTP session opened before the daemon started --------------------

WRITER = textwrap.dedent(
    """
    import sys
    with open(sys.argv[1], "wb") as f:  # sftp-server's SSH_FXP_OPEN: O_CREAT|O_TRUNC
        print("opened", flush=True)
        data = sys.stdin.buffer.read()  # the first SSH_FXP_WRITE comes later
        f.write(data)
    """
)


def test_an_upload_open_for_writing_across_a_start_waits_for_its_data(shared_root, erp):
    """The partner's SFTP session has ``po.edi`` open (created, nothing written
    yet) when the daemon (re)starts; its data arrives a little later, then it
    closes. README: "a file still open for writing waits". Holds if the file
    is taken once written: its order posted, the file in done/."""
    daemon = Daemon(shared_root, erp.url, user=True, incomplete_grace_seconds=30.0)
    try:
        open_then_write(daemon, erp, start_after_open=True)
    finally:
        daemon.close()


def test_an_upload_open_for_writing_waits_under_the_polling_observer(shared_root, erp):
    """The daemon runs with ``observer = "polling"``; the partner's SFTP session
    creates ``po.edi`` and its first write comes after ``settle_seconds``.
    Holds if the file is taken once written: its order posted, in done/."""
    daemon = Daemon(
        shared_root, erp.url, user=True, observer="polling", incomplete_grace_seconds=30.0
    )
    try:
        daemon.start()
        open_then_write(daemon, erp, start_after_open=False)
    finally:
        daemon.close()


def open_then_write(daemon: Daemon, erp, *, start_after_open: bool) -> None:
    target = daemon.inbox / "po.edi"
    group = uids.GROUP
    command = ["setpriv", f"--reuid={uids.PARTNER}", f"--regid={group}", f"--groups={group}"]
    writer = subprocess.Popen(
        [*command, sys.executable, "-c", WRITER, str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == b"opened\n"
        if start_after_open:
            daemon.start()
        # The daemon has seen it (start-up scan, or a poll) and, settled and
        # empty with no writer it can see, holds it (incomplete_grace_seconds,
        # 30 s here) rather than failing it as empty.
        poll_until(
            lambda: any(e.get("file") == "po.edi" for e in daemon.events("upload_held")),
            timeout=15,
            what="the empty upload held",
        )
        assert writer.stdin is not None
        writer.stdin.write(make_po(1431))
        writer.stdin.close()
        assert writer.wait(10) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
    try:
        poll_until(lambda: daemon.listing(daemon.done) == ["po.edi"], timeout=8)
    except AssertionError:
        jobs = [(j["file_name"], j["status"], j["error"]) for j in daemon.jobs()]
        kept = {n: (daemon.failed / n).stat().st_size for n in daemon.listing(daemon.failed)}
        raise AssertionError(f"not posted: jobs {jobs}, failed/ {kept}") from None
    assert list(erp.keys_by_po()) == ["00001431"]
