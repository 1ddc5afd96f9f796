"""Outsider round 24: faults combined and interleaved during realistic runs,
then the invariants checked once everything settles. About 95 s (-n0).

Tried: two hosts (``alpha`` threads, ``beta`` two worker processes; a UTS
namespace each, ``daemons.as_host``) on one inbox and one PostgreSQL (the
session's throwaway cluster, ``own_pg_cluster``, restarted or crashed with
``pg_ctl -m immediate``, always started again in a ``finally``), and one
host on SQLite with partner acme's own folder; 26 uploads by the partner's
uid: new orders, the same orders resent under new ISA13s, the same PO
numbers with other content, a two-interchange file the ERP half refuses
(422: partial), a truncated file, not X12, a rule breaker, every fifth or
sixth written in place in three pieces. Meanwhile: the ERP answering
500/429/422 and slowly, a host SIGKILLed mid-run (and at the very moment
its POST reaches the ERP), PostgreSQL crashed (restarted at once, or kept
down past the 15 s takeover age: both live hosts' heartbeats stale, each
may take the other's claims) with uploads and a SIGHUP meanwhile, a
stop past ``shutdown_timeout_seconds``, the SQLite file
locked by another writer during a reload, then ``retry --all-failed`` and
``retry JOB`` by two operators at once during yet another reload; by
hand also: a reload draining while PostgreSQL goes away, a changed order
uploaded while the first waits unrecorded on a locked database, a resend
of the same order (same content) while its first host is killed mid-POST,
``edi-inbox process`` on a file in a watched inbox.

Invariants (``check_settled``, ``erp_truth``; the ERP records every key and
body): each upload exactly once in done/ or failed/, byte for byte, nothing
in an inbox or processing/, no hidden temporaries; one body per
Idempotency-Key, one key per order content, one content per PO; every key
the ERP booked shown ``posted`` by exactly one job, no order shown posted
that it never booked, no ended job with an order ``pending``; each job's
``total_amount`` the sum of its posted orders; ``stats --json`` (total,
per status, successes, failures, partials) and ``status --json`` against
the ERP's bookings; ``jobs search --po-number`` finding every job by its
orders; the final job of each file answered by its 997 (A iff
succeeded/duplicate; A and R for the partial), one 997 a file and run
(retried files two), no ISA13 on two acknowledgements; acme's inbox empty
and nothing but 997s, TA1s and reports in its outbox.

Held: both soaks, repeatedly (the two plain tests below; the two-host one
also with ``observer = "polling"`` on both hosts, as README's "Scale out"
advises, by hand); the same soak with the server kept down 17-20 s, past
the takeover age, by hand (both live hosts' heartbeats stale: alpha took
five of beta's claims while beta lived; each file still answered once);
the reload drain across a PostgreSQL outage (the daemon lived, both files
done, each order once); a changed order behind a first one parked on a
locked SQLite (the first recorded before the second was judged: refused
as other content); the same order resent to beta while alpha was killed
mid-POST (beta sent alpha's body under the one key; alpha's rerun a
duplicate); two versions of five POs uploaded at once to four workers
(each pair: one posted, one refused); alpha SIGKILLed with four claims
and PostgreSQL crashed four times around the moment beta takes them over
(each file once, one 997 each); a resend regenerated with a new
ISA09/ISA10, GS04/GS05, GS06 and ST02 (a duplicate, not posted); two
retries of one job at once (one puts the file back, the other exits 1,
"no failed file for job …"); no upload overwritten or lost.

Found (each fixed since; every test here failed before its fix):

* ``test_a_host_killed_mid_post_while_another_posts_the_changed_order``:
  alpha SIGKILLed as its POST of PO 5100 reaches the ERP (which books it);
  beta gets the changed PO 5100 (other quantity, BEG01 00), waits out its
  rival and posts it; alpha resumes its claim and its rerun *rejects* its
  own order as "posted by job … with other content" without resending it
  under its key: the ERP holds both versions, the partner's 997 for the
  first says R, no job shows it posted, ``stats`` is short of the ERP's
  bookings. ``Pipeline.validate`` → ``_deduplicate``/``_against_posted``
  (pipeline.py:807, 863) judge a ``pending`` order (sent, unanswered:
  ``known.sent``) before ``post_to_erp`` (956) settles it under its key.
* ``test_a_file_handed_back_at_a_stop_while_the_changed_order_is_posted``:
  the same after a plain ``systemctl stop`` past
  ``shutdown_timeout_seconds`` with the POST at a slow ERP (the file handed
  back, its order sent unanswered and then booked), the changed order run
  meanwhile by ``edi-inbox process``: the rerun at the start rejects the
  first order as other content, 997 R.
* ``test_a_retry_after_timeouts_while_the_changed_order_was_posted``: the
  same, without a crash or a stop: every attempt at PO 5700 times out though the ERP
  books it; the changed order is posted; the operator's ``retry`` of the
  first job rejects it as other content, never asking the ERP (README: an
  order "sent and never answered (timeouts …)" is resent under its key).
* ``test_an_order_record_the_server_lost_is_written_again_by_the_final_record``
  [kept, lost]: PostgreSQL as ``.ci/postgres.sh`` runs it
  (``synchronous_commit=off``; as any server whose failover goes to an
  asynchronous standby) crashed (``-m immediate``) while a job whose order
  the ERP booked owes its 997: the commit of the booked order is lost. The
  final record, written once the 997 is, trusts the recorder's memory of
  what it committed (``DatabaseRecorder._orders_changed``,
  ``self._accepted``, recorder.py:336-341): the job ``succeeded`` with its
  order ``pending``, no ERP id; the partner's changed order is then
  posted too (the ERP holds both versions); ``stats`` counts both. With
  the running record lost as well, ``_job_pk`` trusts its cached row id,
  ``job_get_pk`` finds no row (recorder.py:363, 432: "TypeError: cannot
  unpack non-iterable NoneType object", ``record_cut_short``, and
  ``job_status_only`` fails alike): the file is in done/ with its 997 and
  no job is on record; the next files' 997s and TA1s reuse its ISA13s.
  In the two-host soak on the CI cluster's own settings (before
  ``synchronous_commit=on`` was set for the daemons' sessions) one to three
  such orders a run, every run. The daemon could ask for durable commits
  itself (``SET synchronous_commit = on``), or write every order in the
  final record.
* ``test_an_order_taken_during_a_long_postgres_outage_is_counted``: one
  host, PostgreSQL down past ``reconnect_seconds`` + the takeover age
  (~35 s with the defaults) while a POST is answered: the booked order
  cannot be recorded, the claim check before the 997 gives the claim up
  for a stale heartbeat (no other host exists), the job is parked and,
  once the server is back, recorded ``interrupted`` with its order
  ``posted`` (``job_recorded_late``); its file is handed back as "changed"
  with no retry marker (worker.py ``_settle``: ``_hand_back(flight,
  "changed")`` where the other hand-backs of a job that ran pass
  ``ran=True``), so the rerun has no ``retry_of``, finds the order posted
  by "another" job, and ends ``duplicate``: the order the ERP booked is in
  no succeeded or partial job, ``stats`` says 0 processed for 576 booked.
  Seen first with two hosts (the resend on the other host a duplicate as
  well).
* ``test_readmes_process_by_hand_on_a_watched_inbox_file_answers_it_once``:
  README's own example, ``edi-inbox process --partner acme
  /srv/sftp/acme/in/po_4711.edi``, on a file in acme's folder that the
  daemon watches: ``process`` runs it in place and leaves it there
  (cli.py:210-242, no claim); the daemon (started after it, or still
  waiting for the upload to settle) claims the same file and runs it again
  (a duplicate): two jobs, and the partner gets two 997s and two TA1s
  under four ISA13s for one interchange. ``process`` could refuse, or
  claim, a file in a folder the configuration watches.
* ``test_a_stalled_upload_resent_whole_under_another_name_is_not_answered_rejected_last``:
  a slow upload stalls after its set's SE (GE/IEA missing); the partner's
  system resends the interchange whole under a new timestamped name. The
  resend is posted, TA1 A and 997 AK5 A; the stalled copy fails after
  ``incomplete_grace_seconds`` (300 s by default) and is answered TA1 R
  (023) and 997 AK5 R / AK9 R for the same ISA13, GS06 and ST02, written
  last: the partner's last word on a posted order is "rejected". The 997
  of a file rejected whole (pipeline.py ``acknowledge``, ``_answers``)
  rejects every set read without asking whether its order was posted
  before (README: "AK5 A only for a set that was posted now or before").
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import pg_ctl, start_again
from daemons import Daemon, daemons
from pytest_httpserver import HTTPServer
from test_outsider_round3 import failed_files
from test_outsider_round4 import break_acks
from test_outsider_round7 import Ledger, ak5s, cli_json, jobs_by_file

import uids
from helpers import BAD, claimed, database_locked, http_server, make_po, poll_until

pytestmark = pytest.mark.e2e
__all__ = ["daemons"]  # fixtures

LINE = b"PO1**6*EA*12**CB*17920108"
QUICK_ERP = (
    "max_attempts = 2\nconnect_timeout_seconds = 0.5\nread_timeout_seconds = 0.5\n"
    "retry_after_max_seconds = 0.3\n"
)


def order(n: int, qty: int = 6, isa13: int | None = None) -> bytes:
    """A distinct good 850 (PO ``n``), ``qty`` on its first line, under ISA13 ``isa13``."""
    data = make_po(n)
    assert LINE in data
    data = data.replace(LINE, b"PO1**%d*EA*12**CB*17920108" % qty, 1)
    if isa13 is not None:
        old = data[90:99]
        new = f"{isa13:09d}".encode()
        data = data[:90] + new + data[99:].replace(b"IEA*1*" + old, b"IEA*1*" + new)
    return data


def po(n: int) -> str:
    return f"{n:08d}"


class KillingLedger(Ledger):
    """A ledger ERP that SIGKILLs a daemon the moment a request for a given
    PO number arrives (``kill_on``), then takes the order (answers 201 into
    the dead connection): the ERP holds an order its poster never heard of."""

    def __init__(self, server: HTTPServer) -> None:
        self.kill_on: dict[str, Daemon] = {}
        self.bodies: dict[str, set[str]] = {}
        super().__init__(server)

    def wait_for(self, po: str) -> None:
        victim = self.kill_on.pop(po, None)
        if victim is not None and victim.proc is not None:
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(10)
        super().wait_for(po)

    def answered(self, key: str, order: dict, status: int) -> None:
        with self._lock:
            self.bodies.setdefault(key, set()).add(json.dumps(order, sort_keys=True))
        super().answered(key, order, status)


@pytest.fixture
def killing_ledger():
    with http_server() as server:
        erp = KillingLedger(server)
        yield erp
        erp.gate.set()
        for event in erp.hold.values():
            event.set()


def quick(daemon: Daemon, extra: str = "") -> None:
    daemon.base_config = daemon.base_config.replace("max_attempts = 3\n", QUICK_ERP, 1)
    daemon.config.write_text(daemon.base_config + extra)


def recorded(daemon: Daemon) -> dict[str, dict]:
    """Every job as ``jobs show --json`` shows it (listed by ``jobs list --json``)."""
    rows = cli_json(daemon, "jobs", "list", "--limit", "1000")
    with ThreadPoolExecutor(2) as pool:  # two CLI processes at a time
        shows = pool.map(lambda r: cli_json(daemon, "jobs", "show", r["job_id"]), rows)
        return {r["job_id"]: show for r, show in zip(rows, shows, strict=True)}


def erp_truth(
    daemon: Daemon, erp: KillingLedger, shows: dict[str, dict] | None = None
) -> list[str]:
    """What the daemon's record says against what the ERP holds: each key
    the ERP accepted shown posted by exactly one job, one body per key, one
    key per order content, no order posted that the ERP never took; and
    ``stats --json``/``status --json`` against the ERP's bookings."""
    problems = []
    shows = recorded(daemon) if shows is None else shows
    with erp._lock:
        ledger = list(erp.ledger)
        bodies = {k: set(v) for k, v in erp.bodies.items()}
    for key, seen in bodies.items():
        if len(seen) > 1:
            problems.append(f"key {key[:12]} came with {len(seen)} bodies")
    accepted = {k: (p, a) for k, p, s, a in ledger if s == 201}
    contents: dict[tuple[str, str], set[str]] = {}
    for key, (number, _) in accepted.items():
        body = json.loads(next(iter(bodies[key])))
        for field in ENVELOPE_NUMBERS:
            body.pop(field, None)
        contents.setdefault((number, json.dumps(body, sort_keys=True)), set()).add(key)
    for (number, _), keys in contents.items():
        if len(keys) > 1:
            problems.append(f"PO {number}: one content accepted under {len(keys)} keys")
    ids = {f"ERP-{k[:12]}" for k in accepted}
    shown: Counter[str] = Counter()
    for job in shows.values():
        posted = [o for o in job["orders"] if o["status"] == "posted"]
        for o in posted:
            shown[o["erp_po_id"]] += 1
            if o["erp_po_id"] not in ids:
                problems.append(f"PO {o['po_number']} shown posted, never accepted")
        total = sum((Decimal(o["total_amount"]) for o in posted), Decimal(0))
        said = Decimal(job["total_amount"] or 0)
        if job["status"] in ("succeeded", "partial") and said != total:
            problems.append(f"{job['file_name']}: total_amount {said} != {total} posted")
        if job["status"] not in ("running", "received"):
            pending = [o["po_number"] for o in job["orders"] if o["status"] == "pending"]
            if pending:
                problems.append(f"{job['file_name']} {job['status']}: orders pending {pending}")
    for key, (number, _) in accepted.items():
        if shown[f"ERP-{key[:12]}"] != 1:
            problems.append(
                f"PO {number} (key {key[:12]}) accepted by the ERP, shown posted by "
                f"{shown[f'ERP-{key[:12]}']} job(s)"
            )
    stats = cli_json(daemon, "stats")
    booked = sum((a or Decimal(0) for _, a in accepted.values()), Decimal(0))
    if Decimal(stats["total_amount_processed"] or 0) != booked:
        problems.append(f"stats total {stats['total_amount_processed']} != {booked} booked")
    last = cli_json(daemon, "status")["last_24h"]
    if last["total_amount_processed"] != stats["total_amount_processed"]:
        problems.append(f"status total {last['total_amount_processed']} != stats'")
    statuses = Counter(j["status"] for j in shows.values())
    for status, n in stats["by_status"].items():
        if statuses.get(status, 0) != n:
            problems.append(f"stats by_status[{status}] {n} != jobs {statuses.get(status, 0)}")
    if stats["successful_jobs"] != statuses["succeeded"] + statuses["duplicate"]:
        problems.append(f"stats successful_jobs {stats['successful_jobs']} != {statuses}")
    if stats["failed_jobs"] != statuses["failed"] or stats["partial_jobs"] != statuses["partial"]:
        problems.append(f"stats failed/partial {stats} != {statuses}")
    return problems


ENVELOPE_NUMBERS = (
    "interchange_control_number",
    "interchange_date",
    "interchange_time",
    "group_control_number",
    "set_control_number",
)


def test_a_host_killed_mid_post_while_another_posts_the_changed_order(
    tmp_path, killing_ledger, daemons
):
    """Hosts alpha and beta share an inbox and a database (SQLite here; the
    same on PostgreSQL, by hand). alpha
    posts PO 5100 (6 EA) and is SIGKILLed the moment its POST reaches the
    ERP, which takes the order (its 201 lost). The partner meanwhile sends
    PO 5100 changed (7 EA, BEG01 00, new ISA13); beta takes it, waits out
    its rival (alpha's running job: one delivery long), and posts it. alpha
    comes back and resumes its claim: the ERP holds both versions, and the
    daemon's record and the partner's 997 say the first was never posted."""
    erp = killing_ledger
    alpha = daemons(erp.url, host="alpha")
    beta = daemons(erp.url, host="beta")
    quick(alpha)
    beta.base_config = alpha.base_config
    alpha.start()
    erp.kill_on[po(5100)] = alpha
    uids.upload(alpha.inbox / "first.edi", order(5100, 6))
    poll_until(lambda: alpha.proc.poll() is not None, timeout=20, what="alpha killed at the ERP")
    poll_until(lambda: erp.accepted(), what="the ERP took the first")
    beta.start()
    uids.upload(beta.inbox / "changed.edi", order(5100, 7, isa13=777))
    poll_until(
        lambda: [
            j
            for j in cli_json(beta, "jobs", "list")
            if j["file_name"] == "changed.edi" and j["status"] != "running"
        ],
        timeout=30,
        what="beta's job ended",
    )
    alpha.start()  # well within the takeover age: alpha resumes its own claim
    poll_until(
        lambda: (
            not claimed(alpha.processing)
            and not cli_json(alpha, "jobs", "list", "--status", "running")
            and len(alpha.listing(alpha.done)) + len(failed_files(alpha)) == 2
        ),
        timeout=30,
        what="both files filed",
    )
    first_key = next(k for k, p, s, _ in erp.ledger if s == 201 and p == po(5100))
    assert len(erp.accepted()) == 2  # the ERP holds both versions of PO 5100
    final = jobs_by_file(beta)["first.edi"][-1]
    job = cli_json(beta, "jobs", "show", final["job_id"])
    # The truth: the ERP holds the first file's order under its key.
    assert erp_truth(beta, erp) == [], (first_key[:12], job["error"])
    assert ak5s(beta, job) == ["A"], job["error"]


class SlowFor(KillingLedger):
    """Answers the POSTs of ``slow`` PO numbers after ``slow_seconds`` (past the
    daemon's read timeout), taking each order all the same."""

    slow: frozenset[str] = frozenset()
    slow_seconds = 1.5

    def wait_for(self, po: str) -> None:
        if po in self.slow:
            time.sleep(self.slow_seconds)
        super().wait_for(po)


def test_a_retry_after_timeouts_while_the_changed_order_was_posted(tmp_path, daemons):
    """The ERP is slow for PO 5700: each of the 2 attempts times out (read
    timeout 0.5 s; it answers after 1.5 s) but it takes the order (one key).
    The job fails, "no answer after 2 attempts". The partner sends PO 5700
    changed (7 EA, BEG01 00); it is posted. The ERP is fast again and the
    operator retries the first job: README has an order "sent and never
    answered (timeouts or 5xx until max_attempts …)" resent under its key;
    here the retry judges it against the changed order first, rejects it as
    other content and never asks the ERP, which holds it: the partner's
    997 says R for an order the ERP booked, and no job shows it posted
    (``stats`` 588 where the ERP booked 1164)."""
    with http_server() as server:
        erp = SlowFor(server)
        erp.slow = frozenset({po(5700)})
        daemon = daemons(erp.url)
        quick(daemon)
        daemon.start()
        uids.upload(daemon.inbox / "first.edi", order(5700, 6))
        poll_until(lambda: failed_files(daemon) == ["first.edi"], timeout=30, what="first failed")
        poll_until(lambda: erp.accepted(), what="the ERP took it late")
        erp.slow = frozenset()
        uids.upload(daemon.inbox / "changed.edi", order(5700, 7, isa13=780))
        poll_until(lambda: "changed.edi" in daemon.listing(daemon.done), timeout=30, what="posted")
        job_id = json.loads((daemon.failed / "first.edi.error.json").read_text())["job_id"]
        assert daemon.cli("retry", job_id).returncode == 0
        poll_until(
            lambda: (
                len(jobs_by_file(daemon).get("first.edi", [])) == 2
                and not daemon.listing(daemon.inbox)
                and not claimed(daemon.processing)
                and all(j["status"] != "running" for j in daemon.jobs())
            ),
            timeout=30,
            what="the retry ended",
        )
        assert len(erp.accepted()) == 2  # the ERP holds both versions
        final = jobs_by_file(daemon)["first.edi"][-1]
        job = cli_json(daemon, "jobs", "show", final["job_id"])
        assert erp_truth(daemon, erp) == [], job["error"]
        assert ak5s(daemon, job) == ["A"], job["error"]


def test_a_file_handed_back_at_a_stop_while_the_changed_order_is_posted(
    tmp_path, killing_ledger, daemons
):
    """``systemctl stop`` while PO 6300's POST waits at a slow ERP, past
    ``shutdown_timeout_seconds``: the file is handed back, its job
    ``interrupted``, its order sent without an answer (the ERP books it a
    moment later). The changed PO 6300 (7 EA) is run by hand meanwhile
    (``edi-inbox process``) and was posted; at the start the handed-back
    file ran again as a retry: its order was rejected as other content
    without being resent under its key (README: "an order it sent without
    an answer … reads pending until that run settles it, under the same
    Idempotency-Key"), so the partner's 997 said R for an order the ERP
    holds. The changed original is rejected now while the interrupted job,
    which will run again, has its version unanswered (round 45's fix), and
    the rerun's answer is the ERP's."""
    erp = killing_ledger
    daemon = daemons(erp.url, shutdown_timeout_seconds=0.5)
    quick(daemon)
    daemon.base_config = daemon.base_config.replace(
        "read_timeout_seconds = 0.5", "read_timeout_seconds = 5"
    )
    daemon.config.write_text(daemon.base_config)
    daemon.start()
    held = erp.hold[po(6300)] = threading.Event()
    uids.upload(daemon.inbox / "first.edi", order(6300, 6))
    poll_until(lambda: erp.arrived[po(6300)], timeout=30, what="the POST at the ERP")
    assert daemon.terminate(30) == 0
    assert daemon.listing(daemon.inbox) == ["first.edi"]  # handed back
    held.set()
    poll_until(lambda: erp.accepted(), what="the ERP booked it")
    uids.upload(tmp_path / "changed.edi", order(6300, 7, isa13=790))
    rejected = daemon.cli("process", str(tmp_path / "changed.edi"))
    assert "the ERP's answer is not known" in rejected.stdout + rejected.stderr, rejected
    daemon.start()
    poll_until(
        lambda: (
            failed_files(daemon) + daemon.listing(daemon.done)
            and not daemon.listing(daemon.inbox)
            and not claimed(daemon.processing)
            and all(j["status"] != "running" for j in daemon.jobs())
        ),
        timeout=30,
        what="the rerun ended",
    )
    assert len(erp.accepted()) == 1  # the first version alone
    job = cli_json(daemon, "jobs", "show", jobs_by_file(daemon)["first.edi"][-1]["job_id"])
    assert erp_truth(daemon, erp) == [], job["error"]
    assert ak5s(daemon, job) == ["A"], job["error"]


# -- the combined soak -------------------------------------------------------------


def on_database(daemon: Daemon, url: str) -> None:
    sqlite = f"url = {json.dumps('sqlite:///' + str(daemon.root / 'edi-inbox.db'))}"
    daemon.base_config = daemon.base_config.replace(sqlite, f"url = {json.dumps(url)}", 1)
    daemon.config.write_text(daemon.base_config)


def joined(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(30)
        assert not t.is_alive()


def slow_upload(path: Path, data: bytes, pieces: int = 3, pause: float = 0.4) -> threading.Thread:
    """An in-place upload of a file the partner's uid owns, in ``pieces``
    writes with pauses (as OpenSSH's sftp-server writes: open, grow, close)."""

    def write() -> None:
        size = -(-len(data) // pieces)
        with open(path, "wb") as fh:
            os.fchown(fh.fileno(), uids.PARTNER, uids.PARTNER)
            os.fchmod(fh.fileno(), 0o644)
            for i in range(0, len(data), size):
                fh.write(data[i : i + size])
                fh.flush()
                time.sleep(pause)

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def soak_files() -> dict[str, bytes]:
    """The partner's uploads: g* new orders (each posted once; PO 6010 after
    its retry), r* resends of g00-g02 under new ISA13s (duplicates), c*
    the POs of g03-g05 with other content (of each pair one is posted, the
    other refused), m* malformed (nothing posted), a partial file."""
    files: dict[str, bytes] = {}
    for n in range(16):
        files[f"g{n:02d}.edi"] = order(6000 + n)
    for n in range(3):  # the same orders again under new ISA13s
        files[f"r{n:02d}.edi"] = order(6000 + n, isa13=900 + n)
    for n in range(3):  # the same PO numbers, other content
        files[f"c{n:02d}.edi"] = order(6003 + n, qty=9, isa13=950 + n)
    files["m-not-x12.edi"] = b"hello, this is not X12\n"
    files["m-cut.edi"] = order(6090)[:-30]
    files["m-rules.edi"] = BAD
    # two interchanges, the second's order refused by the ERP (422) until the retry: partial
    files["p-two.edi"] = order(6030).rstrip(b"\n") + b"\n" + order(6031, isa13=6031)
    return files


def check_settled(
    daemon: Daemon,
    erp: KillingLedger,
    files: dict[str, bytes],
    retried: set[str],
    acks: Path | None = None,
) -> list[str]:
    """Every invariant of a settled run; returns the problems found."""
    problems = []
    done, failed = daemon.listing(daemon.done), failed_files(daemon)
    if sorted(done + failed) != sorted(files):
        problems.append(f"filed {sorted(done + failed)} != uploaded {sorted(files)}")
    leftovers = [
        f"{folder}/{n}"
        for folder in (daemon.inbox, daemon.failed, acks or daemon.root / "acks")
        for n in os.listdir(folder)
        if n.startswith(".") or folder == daemon.inbox
    ]
    for kept in (".retry", ".owed"):  # retry markers, owed records: all used up
        for dirpath, _, names in os.walk(daemon.processing):
            if f"/{kept}" in dirpath:
                leftovers += [f"{dirpath}/{n}" for n in names if not n.endswith(".lock")]
    if leftovers or claimed(daemon.processing):
        problems.append(f"left behind: {leftovers} {claimed(daemon.processing)}")
    for name in set(done + failed) & set(files):
        where = daemon.done if name in done else daemon.failed
        if (where / name).read_bytes() != files[name]:
            problems.append(f"{name} in {where.name}/ is not what was uploaded")
    folder = acks or daemon.root / "acks"
    numbers = Counter(
        (folder / n).read_bytes()[90:99] for n in os.listdir(folder) if n.endswith((".997", ".TA1"))
    )
    if numbers and max(numbers.values()) > 1:
        problems.append(f"an ISA13 on two acknowledgements: {numbers.most_common(2)}")
    shows = recorded(daemon)
    problems += erp_truth(daemon, erp, shows)
    # one content a PO at the ERP (no file here sends a replace)
    per_po: dict[str, set[str]] = {}
    for key, number in {k: p for k, p, s, _ in erp.ledger if s == 201}.items():
        per_po.setdefault(number, set()).add(key)
    problems += [f"PO {p} accepted under {len(k)} keys" for p, k in per_po.items() if len(k) > 1]
    # the goods are all posted (PO 6010 once retried), the m* never
    wanted = {po(6000 + n) for n in range(16)} | {po(6030), po(6031)}
    if set(per_po) != wanted:
        problems.append(f"POs at the ERP {sorted(set(per_po) ^ wanted)} unexpected/missing")
    # each pair of versions: one posted, the other refused
    for n in range(3):
        pair = {f"g{n + 3:02d}.edi", f"c{n:02d}.edi"}
        if len(pair & set(done)) != 1:
            problems.append(f"of {sorted(pair)} {sorted(pair & set(done))} in done/")
    for name in ("r00.edi", "r01.edi", "r02.edi"):
        if name not in done:
            problems.append(f"the resend {name} is not in done/")
    # the 997s: each upload's final job's says the truth; one a file but a retried one
    by_file: dict[str, list[dict]] = {}
    for job in sorted(shows.values(), key=lambda j: j["started_at"]):
        by_file.setdefault(job["file_name"], []).append(job)
    acks_sent = os.listdir(acks or daemon.root / "acks")
    for name in files:
        runs = by_file.get(name, [])
        if not runs:
            problems.append(f"{name}: no job on record")
            continue
        job = runs[-1]
        codes = ak5_codes(acks or daemon.root / "acks", job)
        want = ["A"] if job["status"] in ("succeeded", "duplicate") else ["R"]
        if name == "p-two.edi":
            want = {"partial": ["A", "R"], "succeeded": ["A", "A"]}.get(job["status"], [])
        if name != "m-not-x12.edi" and codes != want:
            problems.append(f"{name} {job['status']}: its 997 says {codes}")
        if job["status"] in ("succeeded", "duplicate") and name not in done:
            problems.append(f"{name} {job['status']} but not in done/")
        if job["status"] == "failed" and name not in failed:
            problems.append(f"{name} failed but not in failed/")
        sent = [a for a in acks_sent if a.startswith(name + ".") and a.endswith(".997")]
        per_run = 2 if name == "p-two.edi" else 1
        if name != "m-not-x12.edi" and len(sent) != per_run * (2 if name in retried else 1):
            problems.append(f"{name}: 997s {sent}")
    # jobs search finds every job by each of its orders' PO numbers (all 0000 60..)
    found = {
        r["job_id"]
        for r in cli_json(daemon, "jobs", "search", "--po-number", "0000", "--limit", "10000")
    }
    unfound = sorted(
        j["file_name"]
        for i, j in shows.items()
        if any("0000" in (o["po_number"] or "") for o in j["orders"]) and i not in found
    )
    if unfound:
        problems.append(f"jobs search misses {unfound}")
    running = [j["file_name"] for j in shows.values() if j["status"] == "running"]
    if running:
        problems.append(f"jobs left running: {running}")
    return problems


def ak5_codes(folder: Path, job: dict) -> list[str]:
    """The AK5 codes of the 997s a job says it wrote into ``folder``, in order."""
    codes = []
    for name in job.get("acks") or []:
        if name.endswith(".997"):
            text = (folder / name).read_text(errors="replace")
            sep, term = text[3], text[105]
            codes += [
                seg.split(sep)[1] for seg in text.split(term) if seg.strip().startswith("AK5")
            ]
    return codes


def settled_run(daemon: Daemon, files: dict[str, bytes], timeout: float = 60) -> None:
    poll_until(
        lambda: (
            not daemon.listing(daemon.inbox)
            and not claimed(daemon.processing)
            and len(daemon.listing(daemon.done)) + len(failed_files(daemon)) == len(files)
            and not cli_json(daemon, "jobs", "list", "--status", "running")
        ),
        timeout=timeout,
        what="every file filed, no job running",
    )


def upload_all(
    daemon: Daemon, files: dict[str, bytes], names: list[str], every: int, inbox: Path | None = None
) -> list:
    """``names`` uploaded by the partner's uid, every ``every``-th slowly."""
    threads = []
    inbox = inbox or daemon.inbox
    for i, name in enumerate(names):
        if i % every == every - 1:
            threads.append(slow_upload(inbox / name, files[name]))
        else:
            uids.upload(inbox / name, files[name])
    return threads


def retries_at_once(calls: list[tuple[Daemon, tuple[str, ...]]], meanwhile) -> set[str]:
    """``edi-inbox retry ARGS`` by several operators at once (``meanwhile``
    done as they run); the names of the files put back (each once)."""
    results: list = []
    threads = [
        threading.Thread(target=lambda d=d, a=a: results.append(d.cli("retry", *a, "--json")))
        for d, a in calls
    ]
    for t in threads:
        t.start()
    meanwhile()
    for t in threads:
        t.join(60)
    back = [
        r["file"]
        for done in results
        if done.stdout
        for r in json.loads(done.stdout)
        if r["retried"]
    ]
    assert len(back) == len(set(back)), back  # no file put back twice
    return set(back)


def faulty_erp(erp: KillingLedger) -> None:
    erp.delay = 0.02
    erp.refuse[po(6010)] = [500] * 1000  # the job fails; retried once the ERP takes it
    erp.refuse[po(6011)] = [429, 201]
    erp.refuse[po(6012)] = [500, 201]
    erp.refuse[po(6031)] = [422] * 1000  # p-two.edi partial until the retry


@pytest.mark.postgres
def test_two_hosts_on_postgres_through_combined_faults(
    tmp_path, killing_ledger, daemons, own_pg_cluster, own_pg_url
):
    """Hosts alpha (threads) and beta (2 worker processes) share one inbox
    and one PostgreSQL whose commits are durable (``synchronous_commit=on``
    for the daemons' sessions); 26 uploads by the partner's uid (new
    orders, resends under new ISA13s, changed orders, a partial file, a
    truncated one, not X12, a rule breaker), some written slowly.
    Meanwhile: the ERP answers 500 / 429 / 422 / slowly; alpha SIGKILLed
    mid-run; the server restarted in immediate mode (a crash), uploads
    arriving and beta reloaded (SIGHUP) meanwhile; alpha restarted; then
    every failed file retried by one operator (``--all-failed``) while
    another retries PO 6010's job and alpha reloads. Then every invariant
    (``check_settled``)."""
    erp = killing_ledger
    faulty_erp(erp)
    alpha = daemons(erp.url, host="alpha")
    beta = daemons(erp.url, host="beta")
    quick(alpha)
    on_database(
        alpha, own_pg_url.replace("-csearch_path", "-csynchronous_commit%3Don%20-csearch_path")
    )
    beta.config = tmp_path / "beta.toml"
    beta.base_config = alpha.base_config.replace("processes = 1\n", "processes = 2\n")
    beta.config.write_text(beta.base_config)
    alpha.start()
    beta.start()
    files = soak_files()
    names = list(files)
    threads = upload_all(alpha, files, names[:12], every=6)
    poll_until(lambda: len(erp.accepted()) >= 6, timeout=30, what="six orders accepted")
    joined(threads)  # (an upload open across a start is taken early: rounds 15, 16)
    alpha.proc.send_signal(signal.SIGKILL)
    alpha.proc.wait(10)
    try:
        pg_ctl("restart", "-m", "immediate", datadir=own_pg_cluster.datadir)
        threads += upload_all(alpha, files, names[12:], every=5)
        beta.sighup()
        joined(threads)
    finally:
        ensure_running(own_pg_cluster)
    alpha.start()
    settled_run(alpha, files)
    # the ERP mended, two operators retry at once: every failed file, and PO 6010's
    job_id = json.loads((alpha.failed / "g10.edi.error.json").read_text())["job_id"]
    erp.refuse[po(6010)].clear()
    erp.refuse[po(6031)].clear()
    retried = retries_at_once(
        [(alpha, ("--all-failed",)), (beta, (job_id,))], meanwhile=alpha.sighup
    )
    assert {"g10.edi", "p-two.edi"} <= retried
    settled_run(alpha, files)
    assert check_settled(beta, erp, files, retried=retried) == []


def test_one_host_on_sqlite_with_a_partner_folder_through_combined_faults(
    tmp_path, killing_ledger, daemons
):
    """The single-host variant: one daemon as root on SQLite (2 worker
    processes); the same uploads and ERP faults, into partner acme's own
    folder (its uid's, group-writable); meanwhile SIGKILL and restart, the
    SQLite file locked by another writer while uploads arrive and a SIGHUP
    comes, the failed job retried twice at once during another reload.
    Then every invariant, and acme's folders: its inbox empty, nothing of
    root's left in it, its outbox holding its 997s/TA1s and reports only."""
    erp = killing_ledger
    faulty_erp(erp)
    inbox, outbox, partner = acme_folders(tmp_path)
    daemon = daemons(erp.url, processes=2)
    quick(daemon, partner)
    daemon.base_config += partner
    daemon.start()
    files = soak_files()
    names = list(files)
    threads = upload_all(daemon, files, names[:12], every=6, inbox=inbox)
    poll_until(lambda: len(erp.accepted()) >= 6, timeout=30, what="six orders accepted")
    joined(threads)  # (an upload open across a start is taken early: rounds 15, 16)
    daemon.kill()
    daemon.start()
    with database_locked(tmp_path / "edi-inbox.db"):
        threads += upload_all(daemon, files, names[12:], every=5, inbox=inbox)
        daemon.sighup()
        poll_until(lambda: daemon.events("reloading"), timeout=30, what="the reload begun")
    for t in threads:
        t.join(30)
    settled_run(daemon, files)
    job_id = json.loads((daemon.failed / "g10.edi.error.json").read_text())["job_id"]
    erp.refuse[po(6010)].clear()
    erp.refuse[po(6031)].clear()
    retried = retries_at_once(
        [(daemon, ("--all-failed",)), (daemon, (job_id,))], meanwhile=daemon.sighup
    )
    assert {"g10.edi", "p-two.edi"} <= retried
    settled_run(daemon, files)
    poll_until(lambda: not os.listdir(inbox), what="acme's inbox empty")
    problems = check_settled(daemon, erp, files, retried=retried, acks=outbox)
    assert problems == []
    kinds = Counter(n.rsplit(".", 1)[-1] for n in os.listdir(outbox))
    assert set(kinds) <= {"997", "TA1", "json"}, kinds
    # every job is acme's: its stats are the ERP's bookings too
    mine = cli_json(daemon, "stats", "--partner", "acme")
    assert mine["total_amount_processed"] == cli_json(daemon, "stats")["total_amount_processed"]
    assert mine["total_jobs"] == len(cli_json(daemon, "jobs", "list", "--limit", "1000"))


def ensure_running(cluster) -> None:
    """The test's PostgreSQL up again whatever happened: started if it is down."""
    try:
        pg_ctl("status", datadir=cluster.datadir)
    except subprocess.CalledProcessError:
        start_again(cluster)


# -- a PostgreSQL that loses its last commits -------------------------------------


@contextlib.contextmanager
def lazy_wal(cluster) -> Iterator[None]:
    """The test cluster (``.ci/postgres.sh``: synchronous_commit=off) writing
    its WAL every 10 s instead of 0.2 s: an immediate restart then loses
    the commits of the last seconds, as one with the defaults loses the
    last 0.6 s (or a failover to an asynchronous standby loses its lag)."""
    admin(
        cluster.url,
        "ALTER SYSTEM SET wal_writer_delay = '10s'",
        "ALTER SYSTEM SET checkpoint_timeout = '1d'",  # no timed checkpoint flushes it
        "SELECT pg_reload_conf()",
    )
    try:
        yield
    finally:
        ensure_running(cluster)
        admin(
            cluster.url,
            "ALTER SYSTEM RESET wal_writer_delay",
            "ALTER SYSTEM RESET checkpoint_timeout",
            "SELECT pg_reload_conf()",
        )


def admin(url: str, *sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(url, connect_timeout=10)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for statement in sql:
                cur.execute(statement)
    finally:
        conn.close()


@pytest.mark.postgres
@pytest.mark.parametrize("running", ["kept", "lost"])
def test_an_order_record_the_server_lost_is_written_again_by_the_final_record(
    tmp_path, killing_ledger, daemons, own_pg_cluster, own_pg_url, running
):
    """PostgreSQL as CI runs it (asynchronous commit), restarted in
    immediate mode (a crash) while a job whose order the ERP accepted owes
    its 997 (acks/ a plain file): the commit of the accepted order is lost
    with the crash. Once acks/ is back the job writes its 997 and its final
    record, which must say what the ERP holds."""
    erp = killing_ledger
    daemon = daemons(erp.url)
    on_database(daemon, own_pg_url)
    with lazy_wal(own_pg_cluster):
        daemon.start()
        held = erp.hold[po(5200)] = threading.Event()
        mend = break_acks(tmp_path)
        uids.upload(daemon.inbox / "a.edi", order(5200))
        poll_until(lambda: erp.arrived[po(5200)], timeout=30, what="the POST at the ERP")
        if running == "kept":
            admin(own_pg_cluster.url, "CHECKPOINT")  # the running record is on disk
        held.set()
        poll_until(lambda: daemon.events("acks_owed"), timeout=30, what="its 997 owed")
        pg_ctl("restart", "-m", "immediate", datadir=own_pg_cluster.datadir)
        mend()
        poll_until(lambda: daemon.listing(daemon.done) == ["a.edi"], timeout=60, what="a done")
    # the partner's changed order (7 EA, BEG01 00) comes next: other content
    uids.upload(daemon.inbox / "b.edi", order(5200, 7, isa13=778))
    poll_until(
        lambda: len(daemon.listing(daemon.done)) + len(failed_files(daemon)) == 2,
        timeout=30,
        what="b filed",
    )
    runs = jobs_by_file(daemon).get("a.edi")
    assert runs, "a.edi is in done/ with its 997, and no job on record"
    job = cli_json(daemon, "jobs", "show", runs[-1]["job_id"])
    assert job["status"] == "succeeded"
    assert [(o["status"], o["erp_po_id"]) for o in job["orders"]] == [
        ("posted", f"ERP-{next(iter(erp.accepted()))[:12]}")
    ], "a succeeded job's order reads pending, without the ERP id it has"
    assert len(erp.accepted()) == 1, "both versions of PO 5200 posted"
    assert failed_files(daemon) == ["b.edi"]
    numbers = Counter(
        (tmp_path / "acks" / n).read_bytes()[90:99] for n in os.listdir(tmp_path / "acks")
    )
    assert max(numbers.values()) == 1, numbers


def acme_folders(tmp_path: Path) -> tuple[Path, Path, str]:
    """Partner acme's SFTP ``in`` and ``out`` (its uid's, group-writable) and its section."""
    inbox, outbox = tmp_path / "sftp" / "acme" / "in", tmp_path / "sftp" / "acme" / "out"
    for folder in (inbox, outbox):
        folder.mkdir(parents=True)
        os.chown(folder, uids.PARTNER, uids.GROUP)
        os.chmod(folder, 0o2770)
    section = f'[partners.acme]\nids = ["08:AAAAAAAAAA"]\ninbox = "{inbox}"\noutbox = "{outbox}"\n'
    return inbox, outbox, section


def test_readmes_process_by_hand_on_a_watched_inbox_file_answers_it_once(
    tmp_path, killing_ledger, daemons
):
    """README: "A partner's file can be run by hand as that partner's:
    ``edi-inbox process --partner acme /srv/sftp/acme/in/po_4711.edi``" --
    a file in acme's own folder, which the daemon watches. The operator runs
    it as written while the daemon is down (a restart, maintenance; while it
    runs, the same happens whenever ``process`` is done before the upload
    has settled, 2 s by default): ``process`` posts it and answers it in
    place, leaving it where it is; the daemon, started, claims the same
    file and answers it again (a duplicate, AK5 A): two jobs, and the
    partner receives two 997s and two TA1s, under four ISA13s, for one
    interchange. (Fixed: ``process`` refuses a file in a watched inbox, a
    usage error naming it; README's example runs a copy outside it.)"""
    erp = killing_ledger
    inbox, outbox, section = acme_folders(tmp_path)
    daemon = daemons(erp.url)
    quick(daemon, section)
    uids.upload(inbox / "po_4711.edi", order(5600))
    done = daemon.cli("process", "--partner", "acme", str(inbox / "po_4711.edi"))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "in partner acme's inbox" in done.stderr and "which the daemon watches" in done.stderr
    daemon.start()
    poll_until(lambda: daemon.listing(daemon.done), timeout=30, what="filed")
    poll_until(lambda: all(j["status"] != "running" for j in daemon.jobs()), what="ended")
    assert len(erp.accepted()) == 1  # posted once (the daemon's run is a duplicate)
    kinds = Counter(n.rsplit(".", 1)[-1] for n in os.listdir(outbox))
    assert kinds == {"997": 1, "TA1": 1}, sorted(os.listdir(outbox))


def test_a_stalled_upload_resent_whole_under_another_name_is_not_answered_rejected_last(
    tmp_path, killing_ledger, daemons
):
    """A partner's upload stalls with its order complete but GE/IEA missing
    (``PO_1830.edi``); its system sends the same interchange again, whole,
    under a new timestamped name (``PO_1835.edi``, same ISA13 6200, GS06,
    ST02). The resend is posted and answered (TA1 A, 997 AK5 A); the stalled
    copy, held ``incomplete_grace_seconds``, then fails as truncated and is
    answered too: TA1 R (023) and a 997 AK5 R / AK9 R for the same
    interchange, group and set, written after the accepting ones. The
    partner's translator, matching 997s by GS06/ST02, ends on "rejected" for
    an order the ERP holds. README: "AK5 A only for a set that was posted
    now or before" (this set was, by the resend); DESIGN: "a file rejected
    as a whole never gets an accepting 997" -- the stalled copy may get its
    TA1, but a 997 saying R for a set posted is the wrong answer to it."""
    erp = killing_ledger
    daemon = daemons(erp.url)
    quick(daemon)
    daemon.start()
    data = order(6200)
    assert data[:-30].endswith(b"SE*39*4567\nG")  # the set whole, GE and IEA cut
    uids.upload(daemon.inbox / "PO_1830.edi", data[:-30])
    uids.upload(daemon.inbox / "PO_1835.edi", data)
    poll_until(lambda: daemon.listing(daemon.done) == ["PO_1835.edi"], timeout=30, what="posted")
    poll_until(lambda: failed_files(daemon) == ["PO_1830.edi"], timeout=30, what="cut one failed")
    poll_until(lambda: all(j["status"] != "running" for j in daemon.jobs()), what="ended")
    assert len(erp.accepted()) == 1
    answers = {}
    for name in os.listdir(tmp_path / "acks"):
        if name.endswith(".997"):
            text = (tmp_path / "acks" / name).read_text()
            answers[name] = re.findall(r"AK2\*850\*(\d+)\nAK5\*(\w)", text)
    assert answers["PO_1835.edi.123456789.997"] == [("4567", "A")]
    assert answers == {n: [("4567", "A")] for n in answers}, answers


@pytest.mark.postgres
def test_an_order_taken_during_a_long_postgres_outage_is_counted(
    tmp_path, killing_ledger, daemons, own_pg_cluster, own_pg_url
):
    """One host, the defaults for the database (``reconnect_seconds`` 10 s,
    a 15 s takeover age). PostgreSQL crashes while PO 6500's POST waits at
    the ERP; the ERP then books it. The accepted order cannot be recorded
    (10 s of reconnects); the claim check before the 997 waits 15 s for a
    fresh heartbeat that cannot come, gives the claim up ("this host's
    heartbeat is 25 s old; another host may take the file over"), and the
    job, parked, ends ``interrupted`` with its order ``posted`` once the
    server is back (``job_recorded_late``). Its file is handed back as
    "changed" without a retry marker (worker.py ``_settle``:
    ``_hand_back(flight, "changed")``, not ``ran=True``), so the rerun has no
    ``retry_of``: its order is a *duplicate* of the interrupted job's, the
    file's final job ``duplicate``, and ``stats`` says 0 processed where the
    ERP booked 576 (README: "a job that never ended hands its posted orders
    to the job that carries it on"). No other host exists to take the file."""
    erp = killing_ledger
    daemon = daemons(erp.url)
    quick(daemon)
    on_database(
        daemon, own_pg_url.replace("-csearch_path", "-csynchronous_commit%3Don%20-csearch_path")
    )
    daemon.start()
    held = erp.hold[po(6500)] = threading.Event()
    uids.upload(daemon.inbox / "first.edi", order(6500))
    poll_until(lambda: erp.arrived[po(6500)], timeout=30, what="the POST at the ERP")
    try:
        pg_ctl("stop", "-m", "immediate", datadir=own_pg_cluster.datadir)
        held.set()
        poll_until(lambda: daemon.events("job_parked"), timeout=90, what="the job parked")
    finally:
        ensure_running(own_pg_cluster)
    poll_until(
        lambda: (
            daemon.listing(daemon.done) == ["first.edi"]
            and not daemon.listing(daemon.inbox)
            and not claimed(daemon.processing)
            and not cli_json(daemon, "jobs", "list", "--status", "running")
        ),
        timeout=60,
        what="filed",
    )
    assert len(erp.accepted()) == 1
    shows = recorded(daemon)
    final = max(shows.values(), key=lambda j: j["started_at"])
    assert final["status"] == "succeeded", [(j["status"], j["retry_of"]) for j in shows.values()]
    assert erp_truth(daemon, erp, shows) == []
