"""Outsider round 16: today's three changes — flock-ed temporaries removed
at a start (4cd5322); a rerun of a job that never ended numbers its 997/TA1
as the first run did and skips those it finds written (72b5261, schema v7);
a reload carries the uploads it saw open (d5a5346). About 65 s (the
two-host case waits out the 15 s takeover age, on SQLite and PostgreSQL).

Tried: two hosts sharing an inbox (one SQLite file; one PostgreSQL), the
first SIGSTOPped the moment the first of 24 acknowledgements (a file of 12
interchanges) shows, the other taking the file over, the first continued; a
partner with its own outbox that fetches (removes) its 997s, a SIGKILL
after a 997, its job still running; an upload closed, opened, or dropped
and removed while a reload waits for a job in flight (the ERP held); a
burst of ten SIGHUPs (two at a time) with an upload open; temporaries of
dead writers, one flock-ed by a live writer in another process, a symlink,
a directory and a FIFO named like temporaries, a partner's inbox holding a
file named like one, before a start; one host SIGKILLed mid-acknowledgements
of 12 interchanges then restarted; ``edi-inbox retry`` of a job failed at
the ERP (500 three times).

Held: at a start only the dead writers' temporaries go (failed/, acks/,
done/, a partner's outbox); the live writer's, the link (and what it names),
the directory, the FIFO and the partner's inbox file stay, no hang; one host
killed mid-acknowledgements sends each of the 24 once after its restart
(``acks_sent_before``), no ISA13 twice; a reload burst keeps an open upload
waiting for its close (test dropped from this file for time: five rounds of
two SIGHUPs, nothing taken before the close); a retried failed job gets a
new 997 and TA1 under new ISA13s (also dropped for time).

Found (each test failed on the code as found; fixed the same session, but
the two of an upload opened during a reload's drain and of a partner
renamed by a reload, left as strict xfails then and fixed since: the watch
goes on through a reload's drain, and opens are carried by the inbox's
path):

* ``test_a_host_frozen_mid_acks_writes_none_the_host_that_took_over_wrote``
  [sqlite, postgresql]: the host that took the file over does it right
  (inherits the numbers, ``acks_sent_before`` for the one written, writes
  the other 23); the frozen host, continued, writes its remaining 23 too,
  as ``multi.edi.000016000.1.997``, ``….1.TA1`` …, under the *same* ISA13s:
  47 files for 24 acknowledgements, 23 ISA13s sent twice. Its claim is
  checked once before the acknowledgements (pipeline.py:1073), not between
  them (``_write_acks``, pipeline.py:1321), and ``write_new`` puts a taken
  name under a suffix.
* ``test_a_rerun_finds_its_997_behind_a_name_the_partner_fetched``: a
  partner always sending ``orders.edi`` with GS06 123456789 gets
  ``orders.edi.123456789.997``, ``….1.997`` …; killed after the second
  file's 997 (``….1.997``), the partner then fetching the oldest; the rerun
  writes ``orders.edi.123456789.997`` again with the ISA13 of ``….1.997``,
  still in the outbox: one ISA13 twice. ``_written`` stops at the first
  free name (pipeline.py:1386), assuming nothing before it was ever removed.
* ``test_an_upload_closed_while_a_reload_drains_is_not_held_for_the_grace``:
  the reload stops the watch (service.py:760) and then waits for the jobs
  in flight (service.py:774); an upload closed meanwhile keeps its carried
  open (service.py:1084, watch.py:563/607) with no close to come: the
  complete, closed file waits ``incomplete_grace_seconds`` (300 s by
  default; by hand with 12 s: taken after 12.0 s, ``open_count_reset``).
* ``test_an_upload_opened_while_a_reload_drains_is_not_taken_before_its_close``:
  an upload opened during that drain is unknown to the new watch;
  complete-looking (all but its final newline), it is claimed and posted
  mid-upload, the job ``interrupted`` when the last byte lands, run again:
  ``slow.edi.123456789.997`` and ``….1.997``, two TA1s (round 15's finding,
  through a reload this time).
* ``test_a_reload_renaming_a_partner_keeps_its_open_upload_waiting``: the
  opens are carried by lane, the partner's name (service.py:360): a reload
  renaming ``[partners.acme]`` to ``[partners.acmefoods]`` (same ids, same
  inbox) forgets the open upload in that inbox; it is taken mid-upload,
  ``interrupted``, run again: two 997s, two TA1s.
* ``test_a_rerun_answering_one_group_anew_resends_none_of_the_others``: a
  file of two interchanges, the ERP taking the first order and rejecting the
  second (422); SIGKILL after the four acknowledgements, before the final
  record; restarted, the ERP takes the second. The rerun finds all four
  under their ISA13s, one differing (``….000019001.997`` AK5*R, now A), and
  so renumbers and writes *all four* again (pipeline.py:1112-1121, ``all``
  then ``build`` anew): ``two00.edi.000019000.1.997`` AK5*A (ISA13
  218702948) beside ``….000019000.997`` AK5*A (218702944), and both TA1s
  twice, identical but for their numbers. The comment there says "One that
  said otherwise ... is answered anew".
* ``test_an_open_carried_for_an_upload_since_removed_does_not_hold_its_namesake``:
  an upload dropped (closed and removed) during the drain leaves its name
  in ``Tracker.carried`` until that name shows again: the next upload of
  ``slow.edi``, whole and closed, waits the whole grace.

Not tried (time): a reload that adds
or removes a partner's inbox with an upload open (a rename tried, above);
``db migrate`` from v6 with a job running; the polling observer; a worker
process killed mid-write while the daemon lives on (its temporary stays
until the next start).

Real parts: ``edi-inbox run`` subprocesses (threads), two hosts in UTS
namespaces of their own, a real HTTP ERP on 127.0.0.1, SQLite and
PostgreSQL, uploads by the partner's uid, a real writer holding an upload
open, real signals; windows hit by SIGSTOP the moment a file shows.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from daemons import Daemon, child_pids, daemons, erp
from test_outsider_round15 import close_upload, open_upload, settled, stop_when

import uids
from helpers import claimed, make_po, poll_until

__all__ = ["daemons", "erp"]  # fixtures


def interchanges(first: int, count: int) -> bytes:
    """``count`` good 850 interchanges in one file, each with its own ISA13
    and GS06 (``first`` + i): each answered by a TA1 and a 997 of its own name."""
    out = b""
    for n in range(first, first + count):
        one = make_po(n)
        one = one.replace(b"*123456789*X*", f"*{n:09d}*X*".encode())
        one = one.replace(b"GE*1*123456789", f"GE*1*{n:09d}".encode())
        out += one
    return out


def isa13_of(path) -> int:
    data = path.read_bytes()
    return int(data[:106].split(data[3:4])[13])


def ack_files(daemon: Daemon, name: str) -> dict[str, int]:
    """acks/ file name -> its ISA13, for the file ``name``."""
    acks = daemon.root / "acks"
    return {
        a: isa13_of(acks / a)
        for a in sorted(os.listdir(acks))
        if a.startswith(name + ".") and not a.endswith(".tmp")
    }


def rows(daemon: Daemon, sql: str, *params: object) -> list[tuple]:
    """``sql`` (``?`` placeholders) on the daemon's database: its SQLite file,
    or the PostgreSQL ``on_postgres`` gave it."""
    url = getattr(daemon, "pg_url", None)
    if url is None:
        with contextlib.closing(sqlite3.connect(daemon.root / "edi-inbox.db", timeout=10)) as c:
            return [tuple(r) for r in c.execute(sql, params)]
    import psycopg2

    with contextlib.closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
        cur.execute(sql.replace("?", "%s"), params)
        found = [tuple(r) for r in cur.fetchall()]
        conn.rollback()
        return found


def on_postgres(daemon: Daemon, url: str) -> None:
    sqlite = f"url = {json.dumps('sqlite:///' + str(daemon.root / 'edi-inbox.db'))}"
    daemon.base_config = daemon.base_config.replace(sqlite, f"url = {json.dumps(url)}", 1)
    daemon.config.write_text(daemon.base_config)
    daemon.pg_url = url  # type: ignore[attr-defined]


def statuses(daemon: Daemon, name: str) -> list[str]:
    sql = 'SELECT status FROM jobs WHERE file_name = ? ORDER BY "id"'
    return [r[0] for r in rows(daemon, sql, name)]


def details(daemon: Daemon, name: str) -> str:
    sql = "SELECT error_details FROM jobs WHERE file_name = ?"
    return " ".join(r[0] or "" for r in rows(daemon, sql, name))


# -- 1. two hosts: the frozen one wakes mid-acknowledgements ---------------------------------

COUNT = 48  # interchanges in the file: 96 acknowledgements, a window wide enough on a fast machine


@pytest.mark.e2e
@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_a_host_frozen_mid_acks_writes_none_the_host_that_took_over_wrote(
    erp, daemons, request, database
):
    """Host A (this host) is SIGSTOPped the moment the first acknowledgement of
    a 12-interchange file shows in acks/; host B takes the file over (A's
    job interrupted, B's a retry of it: it inherits A's control numbers,
    finds those A wrote, writes the rest under the same ISA13s). A is
    continued. Holds if every interchange has its TA1 and its 997 and no
    ISA13 is sent twice but, at most, the one A was naming as it froze: its
    claim is checked just before each name, and a pause between that check
    and the rename (microseconds, after the file's fsync) cannot be seen by
    either host (no file system fences a paused writer; README says so)."""
    name = "multi.edi"
    first = daemons(erp.url, workers=1)
    other = daemons(erp.url, host="other-host", workers=1)
    if database == "postgresql":
        for daemon in (first, other):
            on_postgres(daemon, request.getfixturevalue("pg_url"))
    first.start()
    acks = first.root / "acks"
    uids.upload(first.inbox / name, interchanges(16000, COUNT))
    assert stop_when(
        first, lambda: acks.exists() and any(not a.startswith(".") for a in os.listdir(acks))
    )
    frozen = [first.proc.pid, *child_pids(first.proc.pid)]
    for pid in frozen[1:]:
        os.kill(pid, signal.SIGSTOP)
    at_stop = ack_files(first, name)
    assert 0 < len(at_stop) < 2 * COUNT, f"not mid-acks: {at_stop}"

    other.start()
    poll_until(lambda: first.listing(first.done) == [name], timeout=45, what="taken over")
    poll_until(lambda: "succeeded" in statuses(first, name), what="B's job recorded")
    for pid in frozen:
        os.kill(pid, signal.SIGCONT)
    poll_until(lambda: "claim_lost" in details(first, name), timeout=20, what="A's job ends")
    found = ack_files(first, name)
    numbers = sorted(found.values())
    dupes = {a: n for a, n in found.items() if numbers.count(n) > 1}
    distinct = len(set(numbers))
    assert distinct == 2 * COUNT and len(found) - distinct <= 1, (
        f"{len(found)} acknowledgements for {COUNT} interchanges (expected {2 * COUNT}); "
        f"ISA13 sent twice: {dupes}; written before the stop: {sorted(at_stop)}; "
        f"jobs {statuses(first, name)}"
    )


# -- 2. a partner that fetches its 997s: the rerun looks only up to the first free name -------

ATTEMPTS = 30


def jobs_by_name(daemon: Daemon, name: str) -> list[tuple]:
    return rows(daemon, 'SELECT job_id, status FROM jobs WHERE file_name = ? ORDER BY "id"', name)


def outbox_997s(outbox) -> dict[str, int]:
    return {
        a: isa13_of(outbox / a)
        for a in sorted(os.listdir(outbox))
        if a.endswith(".997") and not a.startswith(".")
    }


@pytest.mark.e2e
def test_a_rerun_finds_its_997_behind_a_name_the_partner_fetched(erp, daemons, tmp_path):
    """A partner (its own outbox) always uploads ``orders.edi`` with GS06
    123456789: its 997s are ``orders.edi.123456789.997``, ``….1.997``, … The
    daemon is SIGKILLed after a 997 is written, its job still running; the
    partner then fetches (removes) the *first* 997 (an older file's, long
    answered), as an SFTP client that picks up its outbox does. Restarted,
    the rerun must find its 997 under its suffixed name. Holds if no ISA13
    is in the outbox twice."""
    outbox = tmp_path / "acme-out"
    outbox.mkdir()
    extra = f'[partners.acme]\nids = ["08:AAAAAAAAAA"]\noutbox = "{outbox}"\n'
    daemon = daemons(erp.url, workers=1, extra=extra)
    daemon.start()
    name = "orders.edi"
    uids.upload(daemon.inbox / name, make_po(17000))
    settled(daemon, [name])
    assert list(outbox_997s(outbox)) == [f"{name}.123456789.997"]
    hit = None
    for n in range(1, ATTEMPTS):
        before = len(outbox_997s(outbox))
        uids.upload(daemon.inbox / name, make_po(17000 + n))
        assert stop_when(daemon, lambda before=before: len(outbox_997s(outbox)) > before)
        if jobs_by_name(daemon, name)[-1][1] == "running":
            hit = n
            break
        os.kill(daemon.proc.pid, signal.SIGCONT)
        poll_until(lambda: all(s != "running" for _, s in jobs_by_name(daemon, name)))
        poll_until(lambda: not os.listdir(daemon.inbox) and not claimed(daemon.processing))
    assert hit, f"no SIGKILL landed in the window in {ATTEMPTS} files"
    daemon.kill()
    sent = outbox_997s(outbox)
    os.unlink(outbox / f"{name}.123456789.997")  # the partner fetched the oldest
    fetched = sent.pop(f"{name}.123456789.997")
    daemon.start()
    poll_until(lambda: all(s != "running" for _, s in jobs_by_name(daemon, name)), timeout=30)
    settled(daemon, [name])
    now = outbox_997s(outbox)
    numbers = [*now.values(), fetched]
    twice = {a: x for a, x in now.items() if numbers.count(x) > 1}
    assert not twice, (
        f"ISA13 in the partner's outbox twice: {twice}; before the restart {sent} "
        f"(fetched {fetched}); jobs {jobs_by_name(daemon, name)}"
    )


# -- 3. an upload closed, opened or dropped while a reload drains --------------------------


def wait_filed(daemon, name: str, seconds: float = 4.0) -> float:
    """Wait up to ``seconds`` (past settle_seconds and a rescan) for ``name``
    in done/; the seconds waited, for the caller's message."""
    start = time.monotonic()
    with contextlib.suppress(AssertionError):
        poll_until(lambda: name in daemon.listing(daemon.done), timeout=seconds)
    return time.monotonic() - start


def draining_with_open_upload(
    erp, daemons, po: int
) -> tuple[Daemon, Path, bytes, subprocess.Popen]:
    """A daemon whose job (PO ``po``) waits at the ERP, a partner's upload
    ``slow.edi`` (PO ``po + 1``) open with all but its last byte, seen open
    (a file refused after the open: its events were read after the open's),
    then SIGHUP: the reload stops the watch and waits for the job in flight.
    Returns the daemon, the upload's path and bytes, and its writer."""
    daemon = daemons(erp.url, workers=2, incomplete_grace_seconds=30.0)
    daemon.start()
    erp.gate.clear()
    uids.upload(daemon.inbox / "first.edi", make_po(po))
    poll_until(lambda: len(erp.requests) == 1, what="first.edi at the ERP")
    data = make_po(po + 1)
    target = daemon.inbox / "slow.edi"
    writer = open_upload(target, data)
    try:
        uids.upload(daemon.inbox / "marker.edi", b"not X12\n")
        poll_until(lambda: "marker.edi" in daemon.listing(daemon.failed), what="marker refused")
        daemon.ready.clear()
        daemon.sighup("")
        poll_until(
            lambda: any(b"STATUS=reloading" in m for m in daemon.messages[-3:]),
            what="the reload draining",
        )
    except BaseException:
        writer.kill()
        raise
    return daemon, target, data, writer


@pytest.mark.e2e
def test_an_upload_closed_while_a_reload_drains_is_not_held_for_the_grace(erp, daemons):
    """A job waits at a slow ERP; a partner's upload is open (all but its last
    byte written; the daemon holds it, as it should). SIGHUP: the reload
    stops the watch and waits for the job in flight. Meanwhile the partner
    finishes and closes its upload. The ERP answers; the new configuration
    starts. Holds if the closed upload is taken promptly (well within
    ``incomplete_grace_seconds``, 300 s by default, 30 s here)."""
    daemon, _, data, writer = draining_with_open_upload(erp, daemons, 18000)
    try:
        close_upload(writer, data)
    finally:
        if writer.poll() is None:
            writer.kill()
    erp.gate.set()
    poll_until(daemon.ready.is_set, timeout=20, what="READY=1 after the reload")
    waited = wait_filed(daemon, "slow.edi")
    assert "slow.edi" in daemon.listing(daemon.done), (
        f"slow.edi, closed during the reload, still waits {waited:.0f} s after READY "
        f"(inbox {os.listdir(daemon.inbox)}; statuses {daemon.messages[-1:]})"
    )


@pytest.mark.e2e
def test_an_upload_opened_while_a_reload_drains_is_not_taken_before_its_close(erp, daemons):
    """A job waits at a slow ERP; SIGHUP: the reload stops the watch and waits
    for it. Meanwhile a partner opens an upload and writes all but its final
    newline (an interchange ending in IEA), and keeps it open. The ERP
    answers; the new configuration starts. Holds if the upload is not taken
    before its close (then one job, one 997, one TA1)."""
    daemon = daemons(erp.url, workers=2, incomplete_grace_seconds=30.0)
    daemon.start()
    erp.gate.clear()
    uids.upload(daemon.inbox / "first.edi", make_po(18100))
    poll_until(lambda: len(erp.requests) == 1, what="first.edi at the ERP")
    daemon.ready.clear()
    daemon.sighup("")
    poll_until(
        lambda: any(b"STATUS=reloading" in m for m in daemon.messages[-3:]),
        what="the reload draining",
    )
    data = make_po(18101)
    target = daemon.inbox / "slow.edi"
    writer = open_upload(target, data)
    try:
        erp.gate.set()
        poll_until(daemon.ready.is_set, timeout=20, what="READY=1 after the reload")
        # Past settle_seconds and a rescan: taken, or (as it should) still waiting.
        with contextlib.suppress(AssertionError):
            poll_until(lambda: statuses(daemon, "slow.edi"), timeout=4)
        taken_early = statuses(daemon, "slow.edi")
        close_upload(writer, data)
    finally:
        if writer.poll() is None:
            writer.kill()
    settled(daemon, ["first.edi", "slow.edi"])
    acks = daemon.root / "acks"
    sent = sorted(a for a in os.listdir(acks) if a.startswith("slow.edi."))
    assert not taken_early and statuses(daemon, "slow.edi") == ["succeeded"], (
        f"taken while open (jobs then {taken_early}); jobs {statuses(daemon, 'slow.edi')}; "
        f"acks {sent}"
    )


@pytest.mark.e2e
def test_an_open_carried_for_an_upload_since_removed_does_not_hold_its_namesake(erp, daemons):
    """As above, but the partner's session aborts during the reload's drain
    (closes and removes its partial upload). After READY=1, the partner
    uploads ``slow.edi`` again, whole, in one go (open, write, close).
    Holds if it is taken promptly."""
    daemon, target, data, writer = draining_with_open_upload(erp, daemons, 18400)
    try:
        writer.kill()  # the session drops
        writer.wait(10)
        target.unlink()  # and its partial upload with it
    finally:
        if writer.poll() is None:
            writer.kill()
    erp.gate.set()
    poll_until(daemon.ready.is_set, timeout=20, what="READY=1 after the reload")
    poll_until(lambda: daemon.listing(daemon.done) == ["first.edi"], what="first.edi filed")
    uids.upload(target, data)  # whole, closed
    waited = wait_filed(daemon, "slow.edi")
    assert "slow.edi" in daemon.listing(daemon.done), (
        f"slow.edi, uploaded whole after the reload, still waits {waited:.0f} s "
        f"(inbox {os.listdir(daemon.inbox)})"
    )


# -- 4. held: temporaries at start ------------------------------------------------------------

LOCKER = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"a writer still at work")
    print("locked", flush=True)
    sys.stdin.read()  # until the test closes it
    """
)


@pytest.mark.e2e
def test_a_start_removes_only_dead_writers_temporaries(erp, daemons, tmp_path):
    """Before a start: in failed/, acks/ and a partner's outbox, temporaries
    of dead writers (no lock); one held by a live writer in another process
    (another host's, flock-ed); a symlink, a directory and a FIFO named like
    temporaries; a partner's inbox holding a file named like one. Holds: only
    the dead writers' are removed, nothing followed, no hang."""
    outbox, partner_in = tmp_path / "acme-out", tmp_path / "acme-in"
    outbox.mkdir()
    partner_in.mkdir()
    extra = (
        f'[partners.acme]\nids = ["08:AAAAAAAAAA"]\noutbox = "{outbox}"\ninbox = "{partner_in}"\n'
    )
    daemon = daemons(erp.url, workers=1, extra=extra)
    acks = daemon.root / "acks"
    acks.mkdir()
    hexa = "0123456789abcdef" * 2
    dead = [
        daemon.failed / f".a.edi.error.json.{hexa}.tmp",
        acks / f".a.edi.123456789.997.{hexa}.tmp",
        outbox / f".a.edi.123456789.997.{hexa}.tmp",
        daemon.done / f".a.edi.{hexa}.tmp",
    ]
    for path in dead:
        path.write_bytes(b"cut short")
    bystander = tmp_path / "precious"
    bystander.write_bytes(b"keep")
    kept = [
        daemon.failed / f".link.{hexa}.tmp",
        daemon.failed / f".dir.{hexa}.tmp",
        daemon.failed / f".fifo.{hexa}.tmp",
        partner_in / f".upload.edi.{hexa}.tmp",
    ]
    kept[0].symlink_to(bystander)
    kept[1].mkdir()
    os.mkfifo(kept[2])
    uids.upload(kept[3], b"a partner's")
    live = acks / f".b.edi.123456789.997.{'f' * 32}.tmp"
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(live)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline() == b"locked\n"
        daemon.start()
        left = [p.name for p in dead if os.path.lexists(p)]
        gone = [p.name for p in [*kept, live] if not os.path.lexists(p)]
        assert not left and not gone, f"left: {left}; removed: {gone}"
        assert bystander.read_bytes() == b"keep"
        assert live.read_bytes() == b"a writer still at work"
    finally:
        locker.kill()
        locker.wait(10)


# -- 5. held: one host, SIGKILL mid-acknowledgements of a 12-interchange file -----------------


@pytest.mark.e2e
def test_a_kill_mid_acks_then_restart_sends_each_ack_once(erp, daemons):
    """The daemon is SIGSTOPped the moment the first acknowledgement of a
    12-interchange file shows in acks/, then SIGKILLed and restarted. Holds:
    24 acknowledgements, no ISA13 twice, the rerun logs acks_sent_before."""
    name = "multi.edi"
    daemon = daemons(erp.url, workers=1)
    daemon.start()
    acks = daemon.root / "acks"
    uids.upload(daemon.inbox / name, interchanges(16100, COUNT))
    assert stop_when(
        daemon, lambda: acks.exists() and any(not a.startswith(".") for a in os.listdir(acks))
    )
    at_stop = ack_files(daemon, name)
    assert 0 < len(at_stop) < 2 * COUNT, f"not mid-acks: {at_stop}"
    daemon.kill()
    daemon.start()
    settled(daemon, [name])
    found = ack_files(daemon, name)
    numbers = sorted(found.values())
    assert len(found) == 2 * COUNT and len(set(numbers)) == len(numbers), (found, at_stop)
    assert daemon.events("acks_sent_before")


@pytest.mark.e2e
def test_a_reload_renaming_a_partner_keeps_its_open_upload_waiting(erp, daemons, tmp_path):
    """A partner's own inbox with an upload open (all but its final newline);
    a reload renames the partner (``[partners.acme]`` to
    ``[partners.acmefoods]``, same ids, same inbox). Holds if nothing is
    taken before the close."""
    inbox = tmp_path / "acme-in"
    inbox.mkdir()
    section = '[partners.{}]\nids = ["08:AAAAAAAAAA"]\ninbox = "{}"\n'
    daemon = daemons(
        erp.url, workers=2, incomplete_grace_seconds=30.0, extra=section.format("acme", inbox)
    )

    daemon.start()
    data = make_po(18500)
    target = inbox / "slow.edi"
    writer = open_upload(target, data)
    try:
        uids.upload(inbox / "marker.edi", b"not X12\n")
        poll_until(lambda: "marker.edi" in daemon.listing(daemon.failed), what="marker refused")
        daemon.reload(section.format("acmefoods", inbox))
        with contextlib.suppress(AssertionError):
            poll_until(lambda: statuses(daemon, "slow.edi") or erp.requests, timeout=3)
        taken_early = statuses(daemon, "slow.edi")
        close_upload(writer, data)
    finally:
        if writer.poll() is None:
            writer.kill()
    poll_until(lambda: "slow.edi" in daemon.listing(daemon.done), timeout=30, what="filed")
    settled(daemon, ["slow.edi"])
    sent = sorted(a for a in os.listdir(daemon.root / "acks") if a.startswith("slow.edi."))
    assert not taken_early and statuses(daemon, "slow.edi") == ["succeeded"], (
        f"taken while open (jobs then {taken_early}); jobs {statuses(daemon, 'slow.edi')}; "
        f"acks {sent}"
    )


# -- 6. a rerun whose answer for one group differs: the others are sent again ------------------


@pytest.mark.e2e
def test_a_rerun_answering_one_group_anew_resends_none_of_the_others(erp, daemons):
    """A file of two interchanges; the ERP takes the first order and rejects
    the second (HTTP 422): 997s AK5*A and AK5*R, and two TA1s, are written;
    the daemon is SIGKILLed before the job's final record. Restarted, the
    ERP now takes the second order: its 997 says otherwise and is answered
    anew (as documented). Holds if only that one is sent again: the first
    group's 997 and the two TA1s, identical, are not."""
    daemon = daemons(erp.url, workers=1)
    daemon.start()
    acks = daemon.root / "acks"
    hit = None
    for n in range(ATTEMPTS):
        name = f"two{n:02d}.edi"
        erp.answers = [201, 422]
        uids.upload(daemon.inbox / name, interchanges(19000 + 10 * n, 2))

        def four(name=name) -> bool:
            return (
                acks.exists()
                and len([a for a in os.listdir(acks) if a.startswith(name + ".")]) >= 4
            )

        assert stop_when(daemon, four), f"no acks for {name}"
        if statuses(daemon, name) != ["running"]:
            os.kill(daemon.proc.pid, signal.SIGCONT)
            settled(daemon, [name])
            continue
        before = ack_files(daemon, name)
        daemon.kill()
        erp.answers = []
        daemon.start()
        settled(daemon, [name])
        # Stopped between the final record's WAL commit and the WAL index the
        # test reads (a "running" that had ended): no run again to judge.
        if len(statuses(daemon, name)) > 1:
            hit = name
            break
    assert hit, f"no SIGKILL landed in the window in {ATTEMPTS} files"
    after = ack_files(daemon, hit)
    again = sorted(set(after) - set(before))
    assert len(again) == 1 and again[0].endswith(".997"), (
        f"sent again: {again}; before the kill: {sorted(before)}; jobs {statuses(daemon, hit)}"
    )
