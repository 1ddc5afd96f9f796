"""Round four of an outsider's tries, at acknowledgements numbered only by the
database's sequence (commit 076adba): a job that ended before the ERP call and
cannot get its 997's number is parked and runs again once the database is
back. The real daemon as a subprocess with the defaults as deployed, real
uploads owned by a partner's uid, a real HTTP ERP on 127.0.0.1, a real
PostgreSQL stopped and started, a real SQLite file locked by another process,
real SIGKILLs. A check that holds is a plain test; a bug found is a strict
xfail naming it. Not tried: ``edi-inbox process`` with the database away
throughout (its 30 s patience, cli.RECORD_PATIENCE, has no knob). The
PostgreSQL cases are slow (about 95 s together): each database call of the
daemon waits 10 s of reconnecting (``[database] reconnect_seconds``, the
default: the cases' timing is built on it), and the outage must outlast
several."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import pg_ctl, start_again
from daemons import Daemon, daemons, erp
from test_outsider_round3 import (
    acks,
    assert_distinct,
    failed_files,
    many_orders,
    numbers,
    with_defaults,
)

import uids
from helpers import BAD, claimed, database_locked, make_po, poll_until, sent_by

pytestmark = pytest.mark.e2e
__all__ = ["daemons", "erp"]  # fixtures


def rejected(n: int, *, ta1: bool = False) -> bytes:
    """BAD (a line of quantity 0: rejected before any ERP call) under ISA13
    ``n``; ``ta1``: ISA14 = 1 (a TA1 asked for)."""
    data = BAD.replace(b"*000001403*0*", f"*{n:09d}*{int(ta1)}*".encode(), 1)
    return data.replace(b"IEA*1*000001403", f"IEA*1*{n:09d}".encode(), 1)


def per_file(root: Path, folder: str = "acks") -> dict[str, Counter[str]]:
    """For each uploaded name, how many acknowledgements of each kind it got in
    ``root/folder`` (a second one for the same group is written under a
    suffixed name; a partner's outbox also gets the error reports, not
    counted)."""
    found: dict[str, Counter[str]] = {}
    listed = sorted((root / folder).iterdir()) if (root / folder).exists() else []
    for ack in [a for a in listed if not a.name.startswith(".") and a.suffix != ".json"]:
        name = ack.name.split(".edi.", 1)[0] + ".edi"
        kind = "TA1" if ".TA1" in ack.name else "997" if ".997" in ack.name else ack.name
        found.setdefault(name, Counter())[kind] += 1
    return found


def with_database(daemon: Daemon, url: str) -> None:
    daemon.base_config = daemon.base_config.replace(
        f'url = "sqlite:///{daemon.root / "edi-inbox.db"}"', f"url = {json.dumps(url)}", 1
    )
    daemon.config.write_text(daemon.base_config)


def quick_busy(daemon: Daemon, seconds: float = 0.3) -> None:
    """SQLite's busy timeout 0.3 s: a locked file is an unavailable database at once."""
    daemon.base_config = daemon.base_config.replace(
        "[erp]\n", f"busy_timeout_seconds = {seconds}\n[erp]\n", 1
    )
    daemon.config.write_text(daemon.base_config)


def start_with_held(daemon: Daemon, erp, po: int) -> None:
    """Start the daemon and upload held.edi (PO ``po``): its POST waits at the ERP."""
    daemon.start()
    erp.gate.clear()
    uids.upload(daemon.inbox / "held.edi", make_po(po))
    poll_until(lambda: erp.requests, what="the POST held by the ERP")


@contextlib.contextmanager
def held_997_out(daemon: Daemon, erp, po: int, extra: str = "") -> Iterator[None]:
    """A heartbeat a second (the claim stays safe through the lock on a
    loaded machine), SQLite's busy timeout 3 s, ``extra`` in ``[daemon]``;
    held.edi (PO ``po``, ISA14 = 1) held at the ERP, the SQLite file locked,
    the ERP answers: inside, the held job's acknowledgements are out (what
    it owes kept first) and its final record waits on the lock."""
    with_defaults(daemon, "[daemon]\nheartbeat_seconds = 1.0\n" + extra)
    quick_busy(daemon, 3.0)
    start_with_held(daemon, erp, po)
    with database_locked(daemon.root / "edi-inbox.db"):
        erp.gate.set()
        both = Counter({"TA1": 1, "997": 1})  # a stop between the two is another case
        poll_until(lambda: per_file(daemon.root).get("held.edi") == both, timeout=25, what="both")
        yield


def pg_jobs(url: str) -> list[dict]:
    """The jobs table of the PostgreSQL at ``url`` (its private schema)."""
    import psycopg2
    import psycopg2.extras

    conn = psycopg2.connect(url, connect_timeout=10)
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SELECT * FROM jobs")
            return [dict(r) for r in cur.fetchall()]
    finally:
        conn.close()


def none_running(daemon: Daemon, url: str | None = None) -> None:
    def jobs() -> list[dict]:
        return pg_jobs(url) if url else daemon.jobs()

    poll_until(lambda: all(j["status"] != "running" for j in jobs()), what="no job running")


# -- 1. PostgreSQL stopped while rejected, duplicate and TA1-asking files flow ------------------


STRANDED = "neither posted nor filed"
UNPOSTED = "find_sent"


def acme(daemon: Daemon, outbox: Path) -> None:
    """A partner, the rejected files' sender, whose acknowledgements go to ``outbox``."""
    outbox.mkdir()
    daemon.base_config += '[partners.acme]\nids = ["08:1111111111"]\n'
    daemon.base_config += f"outbox = {json.dumps(str(outbox))}\n"
    daemon.config.write_text(daemon.base_config)


@pytest.mark.postgres
def test_rejected_files_during_a_long_postgres_outage_are_filed_and_acknowledged(
    tmp_path, erp, daemons, own_pg_cluster, own_pg_url
):
    """The defaults as deployed, the test's own PostgreSQL, a partner (the
    rejected files' sender) with an outbox. PostgreSQL is stopped; rejected
    files arrive (ISA14 0 and 1); each database call waits its 10 s of
    reconnecting; once their jobs have given up, PostgreSQL is started.
    Holds: nothing acknowledged while it is down; each file filed once with
    its own 997 (and TA1) in the partner's outbox. Was a bug: the jobs' claim
    checks gave up on the stale heartbeat and the files stayed in this host's
    processing/ folder until a restart."""
    daemon = daemons(erp.url)
    with_defaults(daemon)
    with_database(daemon, own_pg_url)
    acme(daemon, tmp_path / "acme-out")
    daemon.start()
    bad = {f"r{n}.edi": rejected(4300 + n) for n in range(2)}
    bad |= {f"t{n}.edi": rejected(4310 + n, ta1=True) for n in range(2)}
    pg_ctl("stop", "-m", "fast", datadir=own_pg_cluster.datadir)
    try:
        for name, data in bad.items():
            uids.upload(daemon.inbox / name, data)
        poll_until(
            lambda: len([e for e in daemon.events("job_finished") if STRANDED in str(e)]) == 4,
            timeout=60,
            what="the rejected files' jobs given up",
        )
        assert acks(tmp_path) == [] and os.listdir(tmp_path / "acme-out") == []
    finally:
        start_again(own_pg_cluster)
    try:
        poll_until(lambda: sorted(failed_files(daemon)) == sorted(bad), timeout=20)
    except AssertionError:
        raise AssertionError(f"stranded in processing/: {claimed(daemon.processing)}") from None
    none_running(daemon, own_pg_url)
    theirs = per_file(tmp_path, "acme-out")
    for name in bad:
        want = Counter({"TA1": 1, "997": 1}) if name.startswith("t") else Counter({"997": 1})
        assert theirs.get(name) == want, (name, theirs)
    assert daemon.terminate(20) == 0


@pytest.mark.postgres
def test_an_order_unanswered_for_while_postgres_is_away_is_never_acknowledged_as_rejected(
    tmp_path, erp, daemons, own_pg_cluster, own_pg_url
):
    """The defaults as deployed, the test's own PostgreSQL. A good file is
    done; PostgreSQL is stopped; a new good file (ISA14 = 1) and the first
    one's bytes again arrive; once they could not ask the database whether
    their orders were posted (find_sent), PostgreSQL is started (their
    running records land; post_to_erp says "not posted: the database is
    unavailable"; the jobs are interrupted, to run again). Holds: nothing
    posted while it is down, each filed in done/, posted once, one TA1 and
    one accepting 997 each. Was a bug: the interrupted run wrote a TA1 and a
    997 rejecting the order, the next run a second pair accepting it."""
    daemon = daemons(erp.url)
    with_defaults(daemon)
    with_database(daemon, own_pg_url)
    daemon.start()
    first = make_po(4200)
    uids.upload(daemon.inbox / "g0.edi", first)
    poll_until(lambda: daemon.listing(daemon.done) == ["g0.edi"], timeout=30, what="g0 done")
    pg_ctl("stop", "-m", "fast", datadir=own_pg_cluster.datadir)
    try:
        uids.upload(daemon.inbox / "again.edi", first)
        uids.upload(daemon.inbox / "g3.edi", make_po(4203))
        # Started while the running record waits (its 10 s of reconnecting),
        # after find_sent could not say whether the orders were posted.
        poll_until(
            lambda: (
                len([e for e in daemon.events("recorder_failed") if e["call"] == UNPOSTED]) == 2
            ),
            timeout=60,
            what="find_sent unanswered",
        )
        assert len(erp.requests) == 1
    finally:
        start_again(own_pg_cluster)
    good = ["again.edi", "g0.edi", "g3.edi"]
    poll_until(lambda: daemon.listing(daemon.done) == good, timeout=30, what="all done")
    none_running(daemon, own_pg_url)
    posts = erp.posts_per_key()
    assert len(erp.keys_by_po()) == 2 and set(posts.values()) == {1}, posts
    statuses = Counter(j["status"] for j in pg_jobs(own_pg_url))
    assert statuses["duplicate"] == 1, statuses
    assert_distinct(acks(tmp_path))
    rejecting = [a.name for a in acks(tmp_path) if "AK5*R" in a.read_text()]
    assert rejecting == [], rejecting
    found = per_file(tmp_path)
    for name in good:
        assert found.get(name) == Counter({"TA1": 1, "997": 1}), (name, found)
    assert daemon.terminate(20) == 0


# -- 2. SIGKILL while jobs are parked ----------------------------------------------------------


def test_rejected_files_parked_for_their_997_numbers_survive_a_sigkill(tmp_path, erp, daemons):
    """The defaults; a big file of rejected orders (ISA14 = 1) is claimed,
    the SQLite file is locked before its numbers are reserved, more rejected
    files arrive; the job is parked; SIGKILL; the lock gone, restart: every
    file in failed/ once, each with exactly one 997 (and the big one its
    TA1), all numbers distinct, nothing posted, no job running."""
    daemon = daemons(erp.url)
    with_defaults(daemon)
    quick_busy(daemon)
    daemon.start()
    uids.upload(daemon.inbox / "first.edi", rejected(4400))
    poll_until(lambda: per_file(tmp_path).get("first.edi"), what="the first 997")
    big = many_orders(3000).replace(b"PO1**6*EA*", b"PO1**0*EA*")
    uids.upload(daemon.inbox / "big.edi", big)
    poll_until(lambda: claimed(daemon.processing), what="big.edi claimed")
    with database_locked(daemon.root / "edi-inbox.db"):
        for n in range(6):
            uids.upload(daemon.inbox / f"r{n}.edi", rejected(4410 + n, ta1=n % 2 == 0))
        # Intake pauses with the database away: big.edi parks once it is read
        # and checked (3,000 orders: ~20 s on a slow CPU), the others wait.
        poll_until(lambda: daemon.events("job_parked"), timeout=90, what="a job parked")
        assert set(per_file(tmp_path)) == {"first.edi"}
        daemon.kill()
    daemon.start()
    names = sorted(["first.edi", "big.edi", *(f"r{n}.edi" for n in range(6))])
    poll_until(lambda: sorted(failed_files(daemon)) == names, timeout=90, what="all failed")
    poll_until(lambda: claimed(daemon.processing) == [], what="nothing claimed")
    none_running(daemon)
    found = per_file(tmp_path)
    for name in names:
        ta1 = name == "big.edi" or name in ("r0.edi", "r2.edi", "r4.edi")
        want = Counter({"TA1": 1, "997": 1}) if ta1 else Counter({"997": 1})
        assert found.get(name) == want, (name, found)
    assert_distinct(acks(tmp_path))
    assert erp.requests == []
    assert daemon.terminate(15) == 0


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM"])
def test_a_job_parked_after_its_997_went_out_gets_one_997_after_a_restart(
    tmp_path, erp, daemons, stop
):
    """The defaults; a good file (ISA14 = 1) whose running record reserved
    its TA1's and 997's numbers waits at the ERP; the SQLite file is locked
    by another process; the ERP answers: the TA1 and 997 are written, the
    final record cannot be, the job is parked. SIGKILL (or SIGTERM, which
    cannot write the record either), the lock gone, restart: the file in
    done/, posted under one key, and one TA1 and one 997 for it. Was a bug:
    the restart ran the job again and sent a second TA1 and 997 (the owed
    record is now kept in processing/.owed/<host>/)."""
    daemon = daemons(erp.url)
    with_defaults(daemon)
    quick_busy(daemon)
    start_with_held(daemon, erp, 4100)
    with database_locked(daemon.root / "edi-inbox.db"):
        erp.gate.set()
        poll_until(lambda: daemon.events("job_parked"), timeout=20, what="the job parked")
        before = per_file(tmp_path)
        if stop == "SIGKILL":
            daemon.kill()
        else:
            assert daemon.terminate(20) == 0
            assert daemon.events("parked_at_shutdown")
    assert before == {"held.edi": Counter({"TA1": 1, "997": 1})}, before
    daemon.start()
    poll_until(lambda: daemon.listing(daemon.done) == ["held.edi"], timeout=30, what="filed")
    none_running(daemon)
    assert len(erp.keys_by_po()) == 1
    assert_distinct(acks(tmp_path))
    after = per_file(tmp_path)
    assert after == before, sorted(os.listdir(tmp_path / "acks"))
    assert daemon.terminate(15) == 0


def test_a_sigkill_while_the_record_waits_after_the_997_sends_no_second_one(tmp_path, erp, daemons):
    """The defaults, SQLite's busy timeout 3 s (a heartbeat a second, so that
    this host's claim stays safe through the lock on a loaded machine); a
    good file (ISA14 = 1) waits at the ERP; the SQLite file is locked by
    another process; the ERP answers (the order's record waits 3 s, then
    fails): the TA1 and 997 go
    out while the final record waits on the lock, before the job is parked.
    SIGKILL the moment they are there, the lock gone, restart: still one TA1
    and one 997, the order posted under one key. Was a bug (an outside
    tester's soak: a lock flapping, a SIGKILL): the owed record was kept only
    once the final record had failed, so the restart ran the job again and
    sent a second TA1 and 997 with new numbers. The acknowledgements of a
    job the database has failed now go out once what it owes is kept."""
    daemon = daemons(erp.url)
    with held_997_out(daemon, erp, 4150):
        daemon.kill()
        assert not daemon.events("job_parked")  # the final record was still waiting
    before = per_file(tmp_path)
    daemon.start()
    poll_until(lambda: daemon.listing(daemon.done) == ["held.edi"], timeout=30, what="filed")
    none_running(daemon)
    assert len(erp.keys_by_po()) == 1
    assert_distinct(acks(tmp_path))
    assert per_file(tmp_path) == before == {"held.edi": Counter({"TA1": 1, "997": 1})}
    assert daemon.terminate(15) == 0


# -- 3. the control-number sequence at its end ------------------------------------------------


def test_the_sequence_wraps_at_nine_digits_without_repeating_a_number(tmp_path, erp, daemons):
    """The defaults; the sequence set two short of 999999999 in the database;
    three good files (ISA14 = 1: a TA1 and a 997 each, two numbers a job):
    every ISA13 nine digits, none zero, none repeated, and the numbers after
    the wrap start again at 1."""
    daemon = daemons(erp.url)
    with_defaults(daemon)
    daemon.start()
    with sqlite3.connect(daemon.root / "edi-inbox.db", timeout=10) as conn:
        conn.execute("UPDATE control_numbers SET value = 999999996 WHERE name = 'isa13'")
    for n in range(3):
        uids.upload(daemon.inbox / f"w{n}.edi", make_po(4500 + n))
        poll_until(lambda n=n: len(daemon.listing(daemon.done)) == n + 1, what=f"w{n} done")
    found = acks(tmp_path)
    assert len(found) == 6
    isa13 = [numbers(a)["ISA13"] for a in found]
    assert all(len(x) == 9 and x.isdigit() for x in isa13), isa13
    assert sorted(assert_distinct(found)) == [1, 2, 3, 4, 999999997, 999999998]
    assert daemon.terminate(15) == 0


# -- 4. acks/ unwritable -----------------------------------------------------------------------


def break_acks(root: Path) -> Callable[[], None]:
    """Replace acks/ by a plain file (an outbox turned unwritable); the
    function returned puts the folder back."""
    folder = root / "acks"
    folder.rename(root / "acks-aside")
    folder.write_bytes(b"not a folder")

    def mend() -> None:
        folder.unlink()
        (root / "acks-aside").rename(folder)

    return mend


def test_a_997_that_cannot_be_written_is_written_later(tmp_path, erp, daemons):
    """The defaults; acks/ replaced by a plain file while a good file (ISA14
    = 1) runs: its orders are posted, its job stays ``running`` with its
    file in processing/ (an operator sees the partner has no answer yet:
    ``status``, the backlog metric), later files still run; once acks/ is a
    folder again its TA1 and 997 are written, once each, and the job
    succeeds. Each order posted once; every ISA13 distinct."""
    daemon = daemons(erp.url)
    with_defaults(daemon)
    daemon.start()
    uids.upload(daemon.inbox / "a.edi", make_po(4600))
    poll_until(lambda: daemon.listing(daemon.done) == ["a.edi"], timeout=30, what="a done")
    mend = break_acks(tmp_path)
    uids.upload(daemon.inbox / "b.edi", make_po(4601))
    poll_until(lambda: daemon.events("acks_owed"), timeout=30, what="b's acks owed")
    uids.upload(daemon.inbox / "d.edi", make_po(4603))  # intake goes on meanwhile
    poll_until(lambda: len(daemon.events("acks_owed")) >= 2, timeout=30, what="d's acks owed")
    assert len(erp.keys_by_po()) == 3
    assert {j["file_name"]: j["status"] for j in daemon.jobs()} == {
        "a.edi": "succeeded",
        "b.edi": "running",
        "d.edi": "running",
    }
    assert "b.edi" not in daemon.listing(daemon.done) + failed_files(daemon)
    poll_until(lambda: b"2 owing their 997" in b"".join(daemon.messages), what="STATUS= says so")
    said = daemon.cli("status")
    assert said.returncode == 0, said.stderr
    said = said.stdout
    assert "job(s) waiting to write their acknowledgements" in said and "acks" in said
    mend()
    uids.upload(daemon.inbox / "c.edi", make_po(4602))
    for name in ("b.edi", "c.edi", "d.edi"):
        poll_until(lambda n=name: n in daemon.listing(daemon.done), timeout=90, what=f"{name} done")
    assert per_file(tmp_path) == {f"{n}.edi": Counter({"TA1": 1, "997": 1}) for n in "abcd"}
    assert len(erp.keys_by_po()) == 4 and set(erp.posts_per_key().values()) == {1}
    jobs = {j["file_name"]: j for j in daemon.jobs()}
    assert {n: j["status"] for n, j in jobs.items()} == dict.fromkeys(jobs, "succeeded")
    assert_distinct(acks(tmp_path))
    assert daemon.terminate(15) == 0


def test_a_997_owed_at_a_sigkill_is_written_once_after_the_restart(tmp_path, erp, daemons):
    """SIGKILL once a job is parked owing its 997 (acks/ a plain file): the
    file stays claimed; the next start (it starts: acks/ is where answers
    go, not a folder it needs) keeps owing it, status says so; acks/ a
    folder again, the acknowledgements kept are written (not a new run: no
    second post, no second 997) and the file filed."""
    daemon = daemons(erp.url)
    with_defaults(daemon)
    daemon.start()
    mend = break_acks(tmp_path)
    uids.upload(daemon.inbox / "b.edi", make_po(4611))
    poll_until(lambda: daemon.events("job_parked"), timeout=30, what="b parked, owing")
    daemon.kill()
    assert daemon.listing(daemon.done) == [] and len(erp.keys_by_po()) == 1
    daemon.start()
    said = "1 job(s) waiting to write their acknowledgements"
    poll_until(lambda: said in daemon.cli("status").stdout, what="status says it is owed")
    mend()
    poll_until(lambda: daemon.listing(daemon.done) == ["b.edi"], timeout=30, what="b done")
    assert per_file(tmp_path) == {"b.edi": Counter({"TA1": 1, "997": 1})}
    assert set(erp.posts_per_key().values()) == {1}
    (job,) = daemon.jobs()
    assert job["status"] == "succeeded"
    assert daemon.events("acks_written_late")
    assert daemon.terminate(15) == 0


def test_a_997_written_late_is_not_sent_again_when_a_stop_cuts_its_record_short(
    tmp_path, erp, daemons
):
    """Worker processes; a job owes its 997 (acks/ a plain file); the SQLite
    file is locked, acks/ mended: a child writes the TA1 and 997, then waits
    on the lock for the record; SIGTERM, past the shutdown timeout. The file
    stays claimed (a parked job's is never handed back to the inbox, where
    it would run again and be acknowledged twice); the lock gone, the next
    start records it and files it: one TA1 and one 997, one post."""
    daemon = daemons(erp.url, processes=2, workers=2, shutdown_timeout_seconds=0.5)
    quick_busy(daemon, 2.0)  # the record's wait outlasts the shutdown timeout
    daemon.start()
    mend = break_acks(tmp_path)
    uids.upload(daemon.inbox / "b.edi", make_po(4621))
    poll_until(lambda: daemon.events("acks_owed"), timeout=30, what="b's acks owed")
    with database_locked(daemon.root / "edi-inbox.db"):
        mend()
        poll_until(lambda: daemon.events("acks_written_late"), timeout=30, what="written late")
        assert daemon.terminate(30) == 0
        assert daemon.listing(daemon.inbox) == [] and len(claimed(daemon.processing)) == 1
    daemon.start()
    poll_until(lambda: daemon.listing(daemon.done) == ["b.edi"], timeout=30, what="b done")
    assert per_file(tmp_path) == {"b.edi": Counter({"TA1": 1, "997": 1})}
    assert len(erp.keys_by_po()) == 1 and set(erp.posts_per_key().values()) == {1}
    assert [j["status"] for j in daemon.jobs()] == ["succeeded"]
    assert daemon.terminate(15) == 0


def test_a_partners_outbox_it_may_not_write_gets_its_997s_once_it_may(tmp_path, erp, daemons):
    """The defaults; a partner with an outbox made immutable (``chattr +i``:
    not even root may create a file there) while two rejected files of its
    arrive: nothing is filed, their jobs are ``running`` (status counts them),
    other partners' files still run;
    the outbox writable again, each file gets its one 997 there, moded 0640
    for the partner's group, and goes to failed/."""
    daemon = daemons(erp.url)
    with_defaults(daemon)
    outbox = tmp_path / "acme-out"
    acme(daemon, outbox)
    daemon.start()
    subprocess.run(["chattr", "+i", str(outbox)], check=True)
    try:
        for n in range(2):
            uids.upload(daemon.inbox / f"r{n}.edi", rejected(4630 + n))
        poll_until(lambda: len(daemon.events("acks_owed")) == 2, timeout=30, what="owed")
        uids.upload(daemon.inbox / "good.edi", make_po(4632))  # not acme's: acks/
        poll_until(lambda: daemon.listing(daemon.done) == ["good.edi"], what="good done")
        assert failed_files(daemon) == [] and os.listdir(outbox) == []
        assert sorted(j["status"] for j in daemon.jobs()) == ["running", "running", "succeeded"]
        said = "2 job(s) waiting to write their acknowledgements"
        poll_until(lambda: said in daemon.cli("status").stdout, what="status says so")
    finally:
        subprocess.run(["chattr", "-i", str(outbox)], check=True)
    poll_until(lambda: sorted(failed_files(daemon)) == ["r0.edi", "r1.edi"], timeout=90)
    assert per_file(tmp_path, "acme-out") == {n: Counter({"997": 1}) for n in ("r0.edi", "r1.edi")}
    for ack in (a for a in outbox.iterdir() if a.suffix == ".997"):
        assert ack.stat().st_mode & 0o777 == 0o640
    assert sorted(j["status"] for j in daemon.jobs()) == ["failed", "failed", "succeeded"]
    assert erp.requests and len(erp.keys_by_po()) == 1
    assert daemon.terminate(15) == 0


def test_a_reload_while_a_997_is_owed_keeps_it_owed_and_writes_it_once(tmp_path, erp, daemons):
    """SIGHUP (a new partner) while a job owes its 997 (acks/ a plain file):
    the reload goes through, the job stays owed (its file claimed, not run
    again), and once acks/ is a folder its TA1 and 997 are written once."""
    daemon = daemons(erp.url)
    daemon.start()
    mend = break_acks(tmp_path)
    uids.upload(daemon.inbox / "b.edi", make_po(4641))
    poll_until(lambda: daemon.events("acks_owed"), timeout=30, what="b's acks owed")
    daemon.reload('[partners.zeta]\nids = ["ZZ:ZETA"]\n')
    mend()
    poll_until(lambda: daemon.listing(daemon.done) == ["b.edi"], timeout=30, what="b done")
    assert per_file(tmp_path) == {"b.edi": Counter({"TA1": 1, "997": 1})}
    assert len(erp.keys_by_po()) == 1 and set(erp.posts_per_key().values()) == {1}
    assert [j["status"] for j in daemon.jobs()] == ["succeeded"]  # one job: not run again
    assert daemon.terminate(15) == 0


def test_the_same_name_uploaded_again_while_its_997_is_owed_runs_at_once(tmp_path, erp, daemons):
    """Partners who send every order under one name: b.edi owes its 997
    (acks/ a plain file), then b.edi arrives again, the same bytes, then a
    third time with a new order. Each runs while the first still owes (the
    owed unit's retries once forgot the new upload's name: it sat in the
    inbox until a restart); the resend is a duplicate, not posted again;
    once acks/ is a folder each of the three gets its TA1 and 997."""
    daemon = daemons(erp.url)
    with_defaults(daemon)
    daemon.start()
    mend = break_acks(tmp_path)
    for n, po in enumerate([4650, 4650, 4651], start=1):
        uids.upload(daemon.inbox / "b.edi", make_po(po))
        poll_until(
            lambda n=n: len(daemon.events("acks_owed")) == n, timeout=30, what=f"upload {n} owes"
        )
    assert daemon.listing(daemon.inbox) == []
    assert sorted(j["status"] for j in daemon.jobs()) == ["running"] * 3
    mend()
    poll_until(lambda: len(daemon.listing(daemon.done)) == 3, timeout=30, what="all three done")
    assert per_file(tmp_path) == {"b.edi": Counter({"TA1": 3, "997": 3})}
    assert_distinct(acks(tmp_path))
    assert sorted(j["status"] for j in daemon.jobs()) == ["duplicate", "succeeded", "succeeded"]
    assert len(erp.keys_by_po()) == 2 and set(erp.posts_per_key().values()) == {1}
    assert daemon.terminate(15) == 0


@pytest.mark.parametrize("partner", [False, True], ids=["shared", "partner"])
def test_the_same_name_uploaded_while_its_namesake_is_at_the_erp_runs_at_once(
    tmp_path, erp, daemons, partner
):
    """Found by an outsider: 850.edi (A) held at a slow ERP; the partner's
    next order as 850.edi (B) waited in the inbox until A's job ended, with
    a worker idle, exposed to the partner's third 850.edi overwriting it
    (that order lost). Now B is claimed and posted while A is still held,
    in the shared inbox and in a partner's own; each order posted once."""
    daemon = daemons(erp.url, workers=2)
    inbox = daemon.inbox
    if partner:
        inbox = tmp_path / "acme-in"
        inbox.mkdir()
        daemon.base_config += f'[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{inbox}"\n'
        daemon.config.write_text(daemon.base_config)

    def po(n: int) -> bytes:
        return sent_by(make_po(n), "ZZ:ACME") if partner else make_po(n)

    daemon.start()
    erp.gate.clear()
    try:
        uids.upload(inbox / "850.edi", po(7801))
        poll_until(lambda: erp.requests, what="A's POST held")
        uids.upload(inbox / "850.edi", po(7802))
        poll_until(lambda: len(erp.requests) >= 2, timeout=15, what="B posted while A is held")
        assert os.listdir(inbox) == []
    finally:
        erp.gate.set()
    poll_until(lambda: len(daemon.listing(daemon.done)) == 2, timeout=30, what="both done")
    assert sorted(erp.keys_by_po()) == ["00007801", "00007802"]
    assert set(erp.posts_per_key().values()) == {1}
    assert daemon.terminate(15) == 0
