"""Outside tester, round 55: the last hour's changes attacked for data loss
and double posting.

The real ``edi-inbox run`` (threads, or ``processes = 2``), no ERP (the
order outbox, a tmpfs of round 51's rig remounted read-only or with too few
inodes) or a real HTTP ERP on 127.0.0.1 (``daemons.Erp``); two hosts (UTS
namespaces) on one PostgreSQL; ``max_crashes = 1``. About 40 s at -n0.

What I tried
- A job cut short by the outbox's trouble (``worker._halt``; the file
  waiting claimed, run again after a doubling pause with ``retry_of``):
  SIGKILL after one cut-short try and after two (threads, worker
  processes), SIGTERM and SIGKILL after two tries of a three-order file
  that wrote one order each, a retry that ended (order written, 997 out)
  whose move to done/ failed (done/ a plain file) and then SIGKILL, a
  retry whose 997 was owed (acks/ a plain file) and then SIGKILL; the
  same file taken over by another host on PostgreSQL after its host was
  SIGKILLed; a SIGHUP while the file waits, then a SIGKILL;
  ``status``/``status --json``/``jobs list`` meanwhile.
- Crash counting after a clean stop: SIGTERM, a start, a SIGKILL while a
  POST is held at the ERP, a start (``take_left_behind``).
- The log writer (``LineWriter`` on a dup'ed descriptor): ``process
  --json`` of 150 files with stdout and stderr one pipe read only after
  3 s, with stdout or stderr closed (``>&-``, ``2>&-``), ``| head -c 1``;
  ``status --json`` the same ways (by hand, not kept: all held: every
  ``job_finished`` line whole and at a line's start, the JSON exact, the
  uploads untouched by a descriptor reused for fd 2).

What held
- After one cut-short try, a SIGKILL with ``max_crashes = 1`` counts no
  death: the order written once, the file in done/, one TA1 and one 997.
- Orders written by two cut-short tries of one file, then SIGTERM or
  SIGKILL: each of three orders written once, one 997 accepting all three.
- A retry that ended before a SIGKILL (its move pending) with the default
  ``max_crashes``: not answered twice (``acks_sent_before``), filed once.
- A retry owing its 997 at a SIGKILL (default ``max_crashes``): the order
  written once, one 997 accepting it, the file in done/.
- A reload while a cut-short file waits resumes it under a new job (its
  claim renamed): a SIGKILL after its next try counts no death.
- ``status`` names the outbox's trouble, the file "in processing".
- A file in flight at a SIGKILL after a clean stop and a start is still set
  aside (``crashed``, ``max_crashes = 1``), posted once.

Found (strict xfails, all fixed the same session, each test failing
before: a claimed file now runs under its job's name, renamed when a job
is cut short and when its rerun starts (``Claims.rename_claim``). One
cause behind all four: a retry of a cut-short job ran under a new job id
while its claim kept the first job's in its name; its parked note, owed
record and ended record were under the retry's id, but a start or a
takeover looked them up under the name's)
1. ``test_sigkill_while_a_cut_short_file_waits_sets_nothing_aside[2-1]``
   and ``[2-2]`` (worker processes): a file cut short twice (the
   first try and one retry after the pause) waits claimed; SIGKILL;
   ``max_crashes = 1``: the next start sets it aside in failed/
   (``crashed``) though no job of it was running at the death (the retry's
   ``note_parked`` names the retry, ``count_crash`` is given the first
   job). README: a parked job "never counts". Should: run, written, done.
2. ``test_a_cut_short_file_taken_over_from_a_killed_host_is_not_set_aside``:
   the same through a takeover: alpha (PostgreSQL) cut short twice and
   SIGKILLed, beta takes the claim over and sets it aside ``crashed``.
3. ``test_a_retry_that_ended_before_a_sigkill_is_filed_once[1]``: the
   retry ended (order written, its 997 accepting written), its move to
   done/ pending; SIGKILL; ``max_crashes = 1``: ``_ended`` looks up the
   first job (interrupted), not the retry that ended, so the file counts a
   death and is set aside ``crashed`` in failed/ with an error report,
   after the partner was told 997 A. Should: filed in done/ (as a first
   job's that ended is: ``resumed_job_had_ended``).
4. ``test_a_retry_owing_its_997_at_a_sigkill_is_answered_once[1]``: the
   retry wrote the order and parked owing its 997; SIGKILL;
   ``max_crashes = 1``: set aside ``crashed``. And
   ``test_a_retry_owing_its_997_at_a_sigkill_settles_what_it_owes``
   (default ``max_crashes``): the owed record kept under the retry's job
   is looked up under the first's, never used nor removed (left in
   ``processing/.owed/<host>/`` for good); the file runs a third time, the
   retry that posted the order is recorded ``interrupted`` and the last
   job ``duplicate``. Should: what the retry owes settled (its 997
   written, its record ended), nothing left behind.

Not reached: partners' own inboxes and outboxes (the same claims code),
the outbox coming back while a stop drains, ``ShortOfResources`` from
descriptors with an HTTP ERP.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from daemons import Daemon, daemons, erp
from test_outsider_round24 import on_database
from test_outsider_round51 import Rig, acks_say, filed, rig, settled
from test_outsider_round52 import one_interchange

import uids
from helpers import make_po, poll_until

pytestmark = pytest.mark.e2e
__all__ = ["daemons", "erp", "rig"]  # the fixtures


def written(outbox: Path) -> list[str]:
    """The orders in the outbox, by PO number."""
    return sorted(n.split(".")[0] for n in os.listdir(outbox) if n.endswith(".json"))


def cut_short(daemon: Daemon) -> list[dict]:
    return [e for e in daemon.events("job_finished") if e.get("status") == "interrupted"]


def quiet(daemon: Daemon, tries: int) -> bool:
    """At least ``tries`` jobs cut short and none running now."""
    jobs = json.loads(daemon.cli("jobs", "list", "--json").stdout)
    done = [j for j in jobs if j["status"] == "interrupted"]
    return len(done) >= tries and not any(j["status"] == "running" for j in jobs)


def waiting_on_a_read_only_outbox(rig: Rig, tries: int, **options: object) -> tuple[Daemon, Path]:
    """No ERP; the order outbox read-only; one upload (PO 00055001) cut
    short ``tries`` times, its file waiting claimed, no job running."""
    outbox = rig.tmpfs(rig.root / "outbox", "size=1m")
    daemon = rig.daemon("", **options)
    daemon.start()
    subprocess.run(["mount", "-o", "remount,ro", str(outbox)], check=True)
    uids.upload(daemon.inbox / "850.edi", make_po(55001))
    poll_until(lambda: quiet(daemon, tries), timeout=20, what=f"cut short {tries} times")
    assert daemon.listing(daemon.inbox) == []
    return daemon, outbox


@pytest.mark.parametrize(
    ("tries", "processes"),
    [(1, 1), (2, 1), (2, 2)],
)
def test_sigkill_while_a_cut_short_file_waits_sets_nothing_aside(rig, tries, processes):
    daemon, outbox = waiting_on_a_read_only_outbox(rig, tries, max_crashes=1, processes=processes)
    daemon.kill()
    subprocess.run(["mount", "-o", "remount,rw", str(outbox)], check=True)
    daemon.start()
    poll_until(lambda: settled(daemon, 1), timeout=20, what="filed")
    assert daemon.listing(daemon.failed) == []
    assert daemon.listing(daemon.done) == ["850.edi"]
    assert written(outbox) == ["00055001"]


def remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True)


@pytest.mark.parametrize("stop", ["term", "kill"])
def test_orders_written_by_two_cut_short_tries_are_each_accepted_once(rig, stop):
    outbox = rig.tmpfs(rig.root / "outbox", "size=1m,nr_inodes=2")
    daemon = rig.daemon("")
    daemon.start()
    orders = [("PO55101", "A"), ("PO55102", "B"), ("PO55103", "C")]
    uids.upload(daemon.inbox / "three.edi", one_interchange(orders))
    poll_until(lambda: quiet(daemon, 1), what="cut short after the first order")
    assert written(outbox) == ["PO55101"]
    remount(outbox, "nr_inodes=3")
    poll_until(lambda: written(outbox) == ["PO55101", "PO55102"], what="the second written")
    poll_until(lambda: quiet(daemon, 2), what="cut short after the second order")
    if stop == "term":
        assert daemon.terminate(20) == 0
    else:
        daemon.kill()
    remount(outbox, "nr_inodes=100")
    daemon.start()
    poll_until(lambda: settled(daemon, 1), timeout=20, what="filed")
    assert daemon.listing(daemon.done) == ["three.edi"], filed(daemon)
    assert written(outbox) == ["PO55101", "PO55102", "PO55103"]
    said = acks_say(daemon.root / "acks")
    assert list(said.values()) == [["AK5*A~", "AK5*A~", "AK5*A~", "AK9*A*3*3*3~"]], said


@pytest.mark.postgres
def test_a_cut_short_file_taken_over_from_a_killed_host_is_not_set_aside(rig, pg_url):
    tries = 2
    outbox = rig.tmpfs(rig.root / "outbox", "size=1m")
    alpha = rig.daemon("", host="alpha", max_crashes=1)
    beta = rig.daemon("", host="beta", max_crashes=1)  # (writes the config: alpha's below)
    on_database(alpha, pg_url)
    beta.config = rig.root / "beta.toml"
    beta.base_config = alpha.base_config
    beta.config.write_text(beta.base_config)
    alpha.start()
    remount(outbox, "ro")
    uids.upload(alpha.inbox / "850.edi", make_po(55301))
    poll_until(lambda: quiet(alpha, tries), timeout=20, what=f"cut short {tries} times")
    alpha.kill()
    remount(outbox, "rw")
    beta.start()
    poll_until(lambda: settled(beta, 1), timeout=30, what="filed by beta")
    assert beta.listing(beta.failed) == []
    assert beta.listing(beta.done) == ["850.edi"]
    assert written(outbox) == ["00055301"]
    assert any(e.get("from_host") == "alpha" for e in beta.events("taken_over"))


@pytest.mark.parametrize(
    "max_crashes",
    [
        5,
        1,
    ],
)
def test_a_retry_that_ended_before_a_sigkill_is_filed_once(rig, max_crashes):
    daemon, outbox = waiting_on_a_read_only_outbox(rig, 1, max_crashes=max_crashes)
    real = rig.root / "done.real"
    daemon.done.rename(real)
    daemon.done.write_bytes(b"")  # done/ a plain file: the move cannot happen
    remount(outbox, "rw")
    poll_until(
        lambda: any(e.get("status") == "succeeded" for e in daemon.events("job_finished")),
        what="the retry succeeded",
    )
    poll_until(lambda: os.listdir(daemon.root / "acks"), what="its 997")
    daemon.kill()
    daemon.done.unlink()
    real.rename(daemon.done)
    daemon.start()
    poll_until(lambda: settled(daemon, 1), timeout=20, what="filed")
    assert daemon.listing(daemon.failed) == []
    assert daemon.listing(daemon.done) == ["850.edi"]
    assert written(outbox) == ["00055001"]
    assert sorted(os.listdir(daemon.root / "acks")) == [
        "850.edi.000055001.TA1",
        "850.edi.123456789.997",
    ]


def owing_at_a_sigkill(rig: Rig, max_crashes: int) -> tuple[Daemon, Path]:
    """A file cut short once; acks/ then a plain file and the outbox
    writable: the retry writes the order, its 997 owed (parked); SIGKILL;
    acks/ back; the daemon started again and the file filed."""
    daemon, outbox = waiting_on_a_read_only_outbox(rig, 1, max_crashes=max_crashes)
    acks = daemon.root / "acks"
    real = rig.root / "acks.real"
    acks.rename(real)
    acks.write_bytes(b"")  # acks/ a plain file: the 997 is owed
    remount(outbox, "rw")
    poll_until(lambda: written(outbox), what="the order written")
    poll_until(lambda: daemon.events("job_parked"), what="the retry parked, its 997 owed")
    daemon.kill()
    acks.unlink()
    real.rename(acks)
    daemon.start()
    poll_until(lambda: settled(daemon, 1), timeout=20, what="filed")
    return daemon, outbox


def answers(acks: Path) -> list[list[str]]:
    return [[seg.rstrip("~") for seg in said] for said in acks_say(acks).values()]


@pytest.mark.parametrize(
    "max_crashes",
    [
        5,
        1,
    ],
)
def test_a_retry_owing_its_997_at_a_sigkill_is_answered_once(rig, max_crashes):
    daemon, outbox = owing_at_a_sigkill(rig, max_crashes)
    assert daemon.listing(daemon.failed) == []
    assert daemon.listing(daemon.done) == ["850.edi"]
    assert written(outbox) == ["00055001"]
    assert answers(daemon.root / "acks") == [["AK5*A", "AK9*A*1*1*1"]]


def test_a_retry_owing_its_997_at_a_sigkill_settles_what_it_owes(rig):
    daemon, _ = owing_at_a_sigkill(rig, 5)
    owed = daemon.processing / ".owed" / os.uname().nodename
    assert os.listdir(owed) == []
    assert daemon.events("resumed_job_had_ended") or any(
        e.get("status") == "succeeded" for e in daemon.events("job_finished")[-1:]
    )


def test_a_file_in_flight_at_a_sigkill_after_a_clean_stop_is_still_set_aside(daemons, erp):
    daemon = daemons(erp.url, max_crashes=1)
    daemon.start()
    assert daemon.terminate(20) == 0
    daemon.start()
    erp.gate.clear()
    uids.upload(daemon.inbox / "850.edi", make_po(55401))
    poll_until(lambda: erp.requests, what="the POST held at the ERP")
    daemon.kill()
    erp.gate.set()
    daemon.start()
    poll_until(lambda: "850.edi" in daemon.listing(daemon.failed), what="set aside")
    report = json.loads((daemon.failed / "850.edi.error.json").read_text())
    assert [d["code"] for d in report["error_details"]] == ["crashed"]
    assert max(erp.posts_per_key().values()) == 1


def test_a_reload_while_a_cut_short_file_waits_then_a_sigkill_sets_nothing_aside(rig):
    daemon, outbox = waiting_on_a_read_only_outbox(rig, 1, max_crashes=1)
    daemon.reload("")
    poll_until(lambda: quiet(daemon, 2), timeout=20, what="cut short again after the reload")
    daemon.kill()
    remount(outbox, "rw")
    daemon.start()
    poll_until(lambda: settled(daemon, 1), timeout=20, what="filed")
    assert daemon.listing(daemon.failed) == []
    assert daemon.listing(daemon.done) == ["850.edi"]
    assert written(outbox) == ["00055001"]
