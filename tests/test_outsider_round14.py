"""Outsider round 14: real deployments, data loss first — hostile sizes and
shapes a partner can send, run through the real pipeline in a fresh
interpreter (``edi-inbox process`` and the pipeline ``bench/hostile.py``
measures). About 25 s.

Found (strict xfails, each fails on the code as found):

* ``test_segments_the_order_keeps_cost_no_more_than_segments_it_skips``:
  many tiny segments that the order *does* keep (``REF*DP*1`` or ``N1``
  loops in the header, each one a ``references[]``/``parties[]`` entry)
  cost ~150-200x the file's size in peak RSS, where README promises ~25x
  ("Each job may hold its whole file in memory (~25x its size while it is
  read)") and bench/README.md "a hostile file costs no more than a plain one
  of the same size". Measured with ``edi-inbox process`` (outbox ERP):
  2 MB of ``REF*DP*1`` in one order 341 MB peak, 4 MB 655 MB, 15 MB
  (1.5 million segments, under ``max_segments_per_file`` and 1/4 of
  ``max_file_bytes``) 2.1 GB and 55 s — past the unit's ``MemoryMax=2G``;
  200,000 ``N1`` loops (5.4 MB) 876 MB and 26 s. The test only rechecks
  the tested 20x bound of ``tests/test_hostile.py`` with such segments.

Held (probed with ``edi-inbox process``, outbox ERP, not kept as tests for
their time): 10,000 PO1 lines in one order (288 KB) succeeded in 3.7 s at
104 MB; 1,000 orders in one file succeeded in 7.8 s at 53 MB, each in
``outbox/``; a 5 MB REF02 and a 20 MB PID05 element are refused at once
("segment 6: no segment terminator '~' in the 1048576 characters after
segment 5", 1.2 s, 53-82 MB). Growth with REF and N1 count is linear in
time (no quadratic step): 25,000/50,000 N1 loops 4.8/9.6 s, 200,000/400,000
REFs 9.3/15.5 s.

Real parts: a fresh Python interpreter running the product's pipeline on
a real file under ``tmp_path``, SQLite, the outbox ERP. No mocks, no sleeps.
"""

from __future__ import annotations

from collections import Counter

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DAEMON = Path(__file__).resolve().parent.parent / "daemon"

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


# The file through the pipeline in a fresh interpreter, as tests/test_hostile.py
# measures it: peak RSS growth over a first tiny run (imports, logging).
_PEAK = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from edi_inbox.config import DaemonSettings, PathSettings, Settings
    from edi_inbox.pipeline import Pipeline

    root = Path(sys.argv[1])
    settings = Settings(paths=PathSettings(root=root), daemon=DaemonSettings())
    settings.paths.create()
    with Pipeline(settings, host="peak") as pipeline:
        pipeline.run(root / "hostile.edi", data=b"ISA")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        job = pipeline.run(root / "hostile.edi")
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(job.status, (after - before) * 1024)
    """
)


def peak_growth(tmp_path: Path, data: bytes) -> tuple[str, int]:
    (tmp_path / "hostile.edi").write_bytes(data)
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(DAEMON)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    status, grown = out.stdout.split()
    return status, int(grown)


@pytest.mark.xfail(
    strict=True,
    reason="tiny segments the order keeps (REF, N1 in the header) cost ~150x the file's "
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

from daemons import Daemon, erp  # noqa: E402,F401  (fixtures)

import uids  # noqa: E402
from uids import shared_root  # noqa: E402,F401  (fixture)
from helpers import make_po, poll_until  # noqa: E402


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
    poll_until(lambda: all(j["status"] == "succeeded" for j in daemon.jobs()) and len(daemon.jobs()) == 2)
    assert sorted(erp.posts_per_key().values()) == [1, 1]
    assert daemon.alive()


# -- PostgreSQL stopped between the ERP's 2xx and the accepted order's record ---------------

from conftest import pg_ctl, start_again  # noqa: E402
from test_outsider_round3 import acks, with_defaults  # noqa: E402
from test_outsider_round4 import none_running, per_file, pg_jobs, with_database  # noqa: E402


@pytest.mark.postgres
def test_postgres_stopped_while_the_erp_holds_its_answer(
    tmp_path, erp, own_pg_cluster, own_pg_url
):
    """The defaults as deployed (worker processes), the test's own PostgreSQL.
    The ERP holds its answer to the first order; PostgreSQL is stopped; the ERP
    answers 201 (the accepted order's record cannot land) and a second file
    arrives; PostgreSQL is started once the daemon has failed a database call.
    Holds: each PO under one key at the ERP, both files in done/, no job left
    running, one accepting 997 each, the daemon alive."""
    daemon = Daemon(tmp_path, erp.url)
    try:
        with_defaults(daemon)
        with_database(daemon, own_pg_url)
        daemon.start()
        erp.gate.clear()
        uids.upload(daemon.inbox / "held.edi", make_po(1411))
        poll_until(lambda: erp.requests, what="the ERP holds the first request")
        pg_ctl("stop", "-m", "fast", datadir=own_pg_cluster.datadir)
        try:
            erp.gate.set()
            uids.upload(daemon.inbox / "later.edi", make_po(1412))
            poll_until(lambda: daemon.events("recorder_failed"), timeout=40, what="a failed call")
        finally:
            start_again(own_pg_cluster)
        want = ["held.edi", "later.edi"]
        poll_until(lambda: daemon.listing(daemon.done) == want, timeout=40, what="both done")
        none_running(daemon, own_pg_url)
        keys = erp.keys_by_po()
        assert {po: len(k) for po, k in keys.items()} == {"00001411": 1, "00001412": 1}, keys
        found = per_file(tmp_path)
        assert [found.get(n, Counter()).get("997") for n in want] == [1, 1], found
        assert not [a.name for a in acks(tmp_path) if "AK5*R" in a.read_text()]
        statuses = sorted(j["status"] for j in pg_jobs(own_pg_url))
        assert statuses.count("succeeded") == 2, statuses
        assert daemon.alive()
        assert daemon.terminate(30) == 0
    finally:
        daemon.close()


# -- a host frozen while the ERP's 201 waits in its socket, taken over ----------------------

import json as _json  # noqa: E402
import signal  # noqa: E402

from daemons import child_pids  # noqa: E402


def test_a_host_frozen_with_a_201_in_its_socket_counts_nothing_twice(tmp_path, erp):
    """Host one's POST is answered 201 while it is SIGSTOPped (worker processes);
    host two takes the file over past the takeover age and posts it under the
    same key; then host one wakes and reads its 201. Holds: one key at the ERP,
    the file once in done/, one 997, one succeeded job, and ``stats`` counts the
    order once."""
    options = {"processes": 2, "heartbeat_seconds": 5.0}
    first = Daemon(tmp_path, erp.url, **options)
    other = None
    try:
        first.start()
        erp.gate.clear()
        uids.upload(first.inbox / "po.edi", make_po(1421))
        poll_until(lambda: len(erp.requests) == 1, what="the POST in flight")
        assert first.proc is not None
        frozen = [first.proc.pid, *child_pids(first.proc.pid)]
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        erp.gate.set()  # the 201 waits in the frozen host's socket
        other = Daemon(tmp_path, erp.url, host="other-host", **options)
        other.start()
        poll_until(lambda: first.listing(first.done) == ["po.edi"], timeout=45, what="taken over")
        poll_until(lambda: any(j["status"] == "succeeded" for j in first.jobs()), what="recorded")
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        poll_until(
            lambda: all(j["status"] not in ("running",) for j in first.jobs()) and first.alive(),
            what="the frozen host's job ends",
        )
        poll_until(lambda: first.events("job_finished") or first.events("job_interrupted"))
        assert len(erp.keys_by_po()["00001421"]) == 1
        assert first.listing(first.done) == ["po.edi"]
        assert per_file(tmp_path).get("po.edi", Counter()).get("997") == 1, per_file(tmp_path)
        jobs = first.jobs()
        assert [j["status"] for j in jobs].count("succeeded") == 1, jobs
        (ok,) = [j for j in jobs if j["status"] == "succeeded"]
        stats = _json.loads(first.cli("stats", "--json").stdout)
        assert str(stats["total_amount_processed"]) == str(ok["total_amount"]), (stats, ok)
        assert first.alive() and other.alive()
        assert first.terminate(15) == 0
    finally:
        first.close()
        if other is not None:
            other.close()
