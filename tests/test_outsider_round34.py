"""Outside tester round 34: this session's changes (after 8eb3714) attacked
from outside: per-interchange decoding, read leases on uploads open for
writing, hosts judged by their own heartbeat, schema v9, resumed and retried
files under a newer configuration, the job page's 997.

What I tried:

* Decoding: 3,000 random mailbags of one to four interchanges in UTF-8,
  cp1252 and ASCII (names with ß, Ø, 日本, "Å…" whose UTF-8 holds a 0x85 byte,
  ’, €), UTF-8 and cp1252 NBSP-padded ISAs, BOMs, CRLF, NULs and spaces
  between interchanges, read at chunk sizes 8 to 65,536 (characters cut at
  every boundary); every name compared with my own decoding of its bytes.
  By hand: UTF-8 ISAs holding letters whose encoding has an A0 byte (Š, à,
  Cyrillic Р), a cp1252 interchange whose element separator is outside
  ASCII (¦), both against 8eb3714's reader run from ``git archive``.
* Leases: a whole 850 its writer never closes (daemon running, started
  with it open, reloaded with it open); a mailbag open across a restart of a
  daemon with two worker processes, and under ``run --once``, its second
  interchange written after the daemon held it.
* Resumed and retried files: a file SIGKILLed twice mid-POST then resumed
  under stricter rules; a partial job retried after its rules were relaxed,
  the retry SIGKILLed mid-POST and resumed under stricter rules or with
  unknown senders refused; a partial file retried twice, the second time
  under stricter rules or with unknown senders refused.
* The upgrade: 8eb3714 sends an order the ERP stores but answers too late,
  then (still 8eb3714) retries it with the ERP down (connection refused),
  then HEAD migrates to v9, posts the partner's changed version and retries
  the first; a live 8eb3714 host beating every 40 s beside a HEAD host
  beating every 0.5 s on one SQLite database.
* The job page's 997 after the partner was given an outbox.

Found (strict xfails; 1-5 fixed the same session, each test failing before
its fix — 1-2 by ``x12.scan._first_encoding`` and the ISA's NBSPs read after
it is decoded, 3-4 by ``Recorder.held_by`` following the retries back, 5 by
the job page looking in the outbox and in acks/; 6 left, named in README):

1. ``test_a_utf8_isa_with_an_a0_byte_is_not_taken_for_nbsp_padding``: a
   UTF-8 interchange whose ISA holds Š (C5 A0), à (C3 A0) or Р (D0 A0) gets
   a false "padded with non-breaking spaces" warning, its A0 bytes replaced
   by spaces, and the whole interchange is then decoded as cp1252: ISA06
   "ŠKODA" reads "Å KODA" (the 997 is addressed to it) and every name in its
   orders reaches the ERP as mojibake ("CafÃ©"); 8eb3714 read them right.
   Likely ``x12/scan.py`` ``sniff_isa`` (``.replace("\xa0", " ")`` on text
   scanned a character per byte) and ``_sniff`` decoding the raw ISA.
2. ``test_a_cp1252_interchange_with_a_non_ascii_separator_keeps_its_punctuation``:
   an interchange whose delimiters are not ASCII is read as latin-1, so a
   cp1252 partner's ’, € and … become C1 controls (O\x92Brien) in the
   orders posted; 8eb3714 read cp1252. Likely ``_sniff``'s
   ``_Text("latin-1")`` (cp1252 keeps single-byte delimiters too).
3. ``test_an_order_a_partial_job_posted_stays_posted_when_its_retry_resumes_stricter``
   [stricter-rules]: a partial job's posted PO-1, its file retried, the retry SIGKILLed
   mid-POST and resumed under ``line_count_mismatch = "error"``: the
   resumed run answers PO-1 AK5 R and records it rejected while the ERP
   holds it. Likely ``Pipeline._held_before``: it asks only whether
   ``job.retry_of`` posted the order, not the job that one carried on.
4. ``test_a_partial_file_retried_twice_under_a_newer_config_keeps_its_posted_order``
   [stricter-rules, sender-refused]: no crash needed: a partial file
   retried as is, then retried again after the rules got stricter or
   unknown senders were refused: PO-1, posted by the first job and held by
   the ERP, is answered AK5 R (the whole file refused as from an unknown
   sender). Same cause as 3, and ``Recorder.may_hold`` asked of
   ``job.retry_of`` only (the middle retry holds no row of PO-1).
5. ``test_the_job_page_finds_a_997_written_before_the_partner_had_an_outbox``:
   once a partner is given an ``outbox``, the job page of every job
   acknowledged before shows no 997 though it is still in acks/. Likely
   ``web/dashboard.py`` ``_ack`` (the folder by today's configuration only).
6. ``test_a_live_older_host_with_a_longer_heartbeat_keeps_its_files``: in a
   rolling upgrade, a live 8eb3714 host that beats every 40 s (it records no
   interval) is judged by the HEAD host's 0.5 s and its claimed file taken
   over mid-POST after 15 s; README says each host is judged by its own
   ``heartbeat_seconds``. Likely ``admin.alive``'s fallback to the
   reader's interval for a row without one (its ``version`` says it is
   older); ``status``, ``db reset`` and ``/metrics`` share it.

What held:

* Every name of every random mailbag, at every chunk size (not kept as a
  test: 3,000 reads; the generator is ``interchange`` here); a UTF-8
  interchange without its IEA followed by a cp1252 one and the reverse: each
  named and decoded by its own bytes.
* A file its writer never closes is processed after
  ``incomplete_grace_seconds`` (running, restart, reload); a mailbag open
  across a restart waits for its close and is posted whole by one job, both
  worker processes alive; ``run --once`` leaves such a file in the inbox
  (held as open for writing) and the next ``run --once`` posts it whole.
* An order posted two runs back (the file SIGKILLed twice mid-POST) stays
  posted under stricter rules; a partial job's retry resumed with unknown
  senders refused answers no R (PO-1 is recorded ``duplicate`` there, not
  ``posted`` as after a plain retry).
* v9 after 8eb3714's late-answered POST and refused retry: the first run's
  order row stays maybe-held (the retry's row, under a key of its own, is
  the one marked refused), so HEAD's retry sends it again under its key and
  records it posted.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from daemons import Daemon, daemons, erp
from test_outsider_round7 import ak5s, cli_json, jobs_by_file, ledger
from test_outsider_round32 import STRICT, settled
from test_truth import file_of, order

import uids
from helpers import archived_daemon, make_po, poll_until, write_config

pytestmark = pytest.mark.e2e
__all__ = ["daemons", "erp", "ledger"]  # fixtures


# --- per-interchange decoding -------------------------------------------------------


def interchange(
    sender: str, name: str, *, elem: str = "*", term: str = "~", icn: str = "000000001"
) -> str:
    """One 850 from ``sender`` (ISA06, padded to 15 characters) shipping to ``name``."""
    e = elem
    isa = e.join(
        [
            "ISA", "00", " " * 10, "00", " " * 10, "ZZ", f"{sender:<15}", "ZZ", f"{'OURAPP':<15}",
            "261206", "1200", "U", "00401", icn, "0", "P", ">",
        ]
    )  # fmt: skip
    segments = [
        isa,
        e.join(["GS", "PO", sender.strip(), "OURAPP", "20261206", "1200", "1", "X", "004010"]),
        e.join(["ST", "850", "0001"]),
        e.join(["BEG", "00", "SA", "PO-1", "", "20261206"]),
        e.join(["N1", "ST", name]),
        e.join(["PO1", "1", "2", "EA", "3.5", "", "VP", "X1"]),
        e.join(["CTT", "1"]),
        e.join(["SE", "6", "0001"]),
        e.join(["GE", "1", "1"]),
        e.join(["IEA", "1", icn]),
    ]
    return term.join(segments) + term


def read(data: bytes) -> tuple[list, list, list]:
    """(N1 elements, (encoding, ISA06) per interchange, warnings) as the daemon reads ``data``."""
    from edi_inbox.x12.reader import X12Reader

    reader = X12Reader(io.BytesIO(data))
    sets = list(reader.transaction_sets())
    names = [seg.elements for ts in sets for seg in ts.segments if seg.elements[0] == "N1"]
    summaries = [(ic.encoding, ic.sender_id.strip()) for ic in reader.interchanges]
    return names, summaries, [str(w) for w in reader.warnings]


@pytest.mark.parametrize("sender", ["ŠKODA", "VOILÀà", "РОСТОВ"])
def test_a_utf8_isa_with_an_a0_byte_is_not_taken_for_nbsp_padding(sender):
    names, summaries, warnings = read(interchange(sender, "Škoda Café").encode("utf-8"))
    assert names == [["N1", "ST", "Škoda Café"]]
    assert summaries == [("utf-8", sender)]
    assert not [w for w in warnings if "non-breaking" in w]


def test_a_cp1252_interchange_with_a_non_ascii_separator_keeps_its_punctuation():
    data = interchange("ACME", "O’Brien €5 …", elem="¦").encode("cp1252")
    names, summaries, _ = read(data)
    assert names == [["N1", "ST", "O’Brien €5 …"]]
    assert summaries[0][0] == "cp1252"


# --- a resumed file's orders, across a chain of runs ---------------------------------


def recorded_posted(daemon, name: str, po: str) -> bool:
    jobs = jobs_by_file(daemon).get(name)
    if not jobs:
        return False
    show = cli_json(daemon, "jobs", "show", jobs[-1]["job_id"])
    return any(o["po_number"] == po and o["erp_po_id"] for o in show["orders"])


def test_an_order_posted_two_runs_back_stays_posted_under_stricter_rules(daemons, ledger):
    """Run 1 posts PO-1 (a miscounted CTT01: a warning), its ERP id recorded,
    and is SIGKILLed while the ERP sits on PO-2; run 2 (same config) is
    SIGKILLed while the ERP sits on PO-2 again; run 3 has
    ``line_count_mismatch = "error"``."""
    from test_truth import file_of
    from test_truth import order as one_line_order

    daemon = daemons(ledger.url)
    data = file_of(one_line_order(1).replace("CTT*1~", "CTT*2~"), one_line_order(2))
    hold = ledger.hold["PO-2"] = threading.Event()
    daemon.start()
    uids.upload(daemon.inbox / "two.edi", data)
    poll_until(lambda: ledger.arrived["PO-2"] >= 1, what="PO-2 at the ERP")
    poll_until(lambda: recorded_posted(daemon, "two.edi", "PO-1"), what="PO-1's ERP id")
    daemon.kill()
    daemon.start()  # run 2: PO-2 sent again under its key
    poll_until(lambda: ledger.arrived["PO-2"] >= 2, timeout=30, what="PO-2 at the ERP again")
    daemon.kill()
    hold.set()
    daemon.config.write_text(daemon.base_config + STRICT)
    daemon.start()
    settled([daemon], 1)
    assert "PO-1" in {po for po, _ in ledger.accepted().values()}  # the ERP holds PO-1
    last = cli_json(daemon, "jobs", "show", jobs_by_file(daemon)["two.edi"][-1]["job_id"])
    assert "R" not in ak5s(daemon, last), "the 997 rejects PO-1, which the ERP holds"
    statuses = dict((o["po_number"], o["status"]) for o in last["orders"])
    assert statuses["PO-1"] in ("posted", "duplicate") and statuses["PO-2"] == "posted", statuses


@pytest.mark.parametrize(
    "newer",
    [
        pytest.param('line_count_mismatch = "error"\n', id="stricter-rules"),
        pytest.param('[partners]\nunknown = "reject"\n', id="sender-refused"),
    ],
)
def test_an_order_a_partial_job_posted_stays_posted_when_its_retry_resumes_stricter(
    daemons, ledger, newer
):
    """Job A (defaults) posts PO-1 (a miscounted CTT01: a warning) and rejects
    PO-2 (a line of 0): partial, in failed/. The operator sets
    ``quantity_not_positive = "warn"`` and retries it: job B keeps PO-1 and
    is SIGKILLed while the ERP sits on PO-2. Restarted with
    ``line_count_mismatch = "error"`` too, job C carries B on: PO-1, which
    the ERP holds, must stay posted."""
    from test_outsider_round26 import failed_uploads
    from test_truth import file_of
    from test_truth import order as one_line_order

    daemon = daemons(ledger.url)
    miscounted = one_line_order(1).replace("CTT*1~", "CTT*2~")
    data = file_of(miscounted, one_line_order(2, quantity="0"))
    daemon.start()
    uids.upload(daemon.inbox / "two.edi", data)
    poll_until(lambda: failed_uploads(daemon), timeout=20, what="two.edi in failed/")
    (first,) = jobs_by_file(daemon)["two.edi"]
    assert first["status"] == "partial"
    assert {po for po, _ in ledger.accepted().values()} == {"PO-1"}
    hold = ledger.hold["PO-2"] = threading.Event()
    lenient = '[rules]\nquantity_not_positive = "warn"\n'
    daemon.reload(lenient)
    retried = daemon.cli("retry", "--all-failed")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    poll_until(lambda: ledger.arrived["PO-2"] >= 1, timeout=20, what="PO-2 at the ERP")
    daemon.kill()
    hold.set()
    daemon.config.write_text(daemon.base_config + lenient + newer)
    daemon.start()
    settled([daemon], 1)
    assert {po for po, _ in ledger.accepted().values()} == {"PO-1", "PO-2"}
    newest = max(jobs_by_file(daemon)["two.edi"], key=lambda j: j["started_at"])
    last = cli_json(daemon, "jobs", "show", newest["job_id"])
    assert last["retry_of"] != first["job_id"]  # C carries on B, the retry
    assert "R" not in ak5s(daemon, last), "the 997 rejects PO-1, which the ERP holds"
    statuses = dict((o["po_number"], o["status"]) for o in last["orders"])
    assert statuses["PO-1"] in ("posted", "duplicate") and statuses["PO-2"] == "posted", statuses


@pytest.mark.parametrize(
    "newer",
    ['[rules]\nline_count_mismatch = "error"\n', '[partners]\nunknown = "reject"\n'],
    ids=["stricter-rules", "sender-refused"],
)
def test_a_partial_file_retried_twice_under_a_newer_config_keeps_its_posted_order(
    daemons, ledger, newer
):
    """Job A posts PO-1 (a miscounted CTT01: a warning) and rejects PO-2 (a
    line of 0): partial. Retried as is (job B: partial again), then retried
    once more under a newer config: README says a retried file keeps the
    orders its earlier run posted, and its sender refused since is not
    refused in it; the ERP holds PO-1."""
    from test_outsider_round26 import failed_uploads
    from test_truth import file_of
    from test_truth import order as one_line_order

    daemon = daemons(ledger.url)
    daemon.start()
    miscounted = one_line_order(1).replace("CTT*1~", "CTT*2~")
    uids.upload(daemon.inbox / "two.edi", file_of(miscounted, one_line_order(2, "0")))

    def ended(n: int) -> bool:
        jobs = jobs_by_file(daemon).get("two.edi", [])
        running = [j for j in jobs if j["status"] == "running"]
        return bool(failed_uploads(daemon)) and len(jobs) == n and not running

    for n in (1, 2, 3):
        poll_until(lambda n=n: ended(n), timeout=20, what=f"job {n} ended, file in failed/")
        if n == 2:
            daemon.reload(newer)
        if n < 3:
            retried = daemon.cli("retry", "--all-failed")
            assert retried.returncode == 0, retried.stdout + retried.stderr
    assert {po for po, _ in ledger.accepted().values()} == {"PO-1"}  # the ERP holds PO-1
    jobs = jobs_by_file(daemon)["two.edi"]
    assert [j["status"] for j in jobs][:2] == ["partial", "partial"]
    last = cli_json(daemon, "jobs", "show", max(jobs, key=lambda j: j["started_at"])["job_id"])
    assert last["retry_of"] == jobs[1]["job_id"]
    assert ak5s(daemon, last)[:1] != ["R"], "the 997 rejects PO-1, which the ERP holds"


# --- uploads open for writing -------------------------------------------------------


@pytest.mark.parametrize("when", ["running", "restart", "reload"])
def test_a_file_a_partner_keeps_open_is_held_past_the_grace_until_closed(daemons, erp, when):
    """A whole 850 (its IEA there) whose writer keeps it open: the kernel
    says so (a read lease), so it is held past ``incomplete_grace_seconds``
    (``upload_open_past_grace``): its writer may have more to write (round
    46: a stalled SFTP client's rest written into a file already filed).
    Once closed it is posted, once. (Until round 46: taken at the grace.)"""
    from helpers import make_po

    daemon = daemons(erp.url)
    if when != "restart":
        daemon.start()
    path = daemon.inbox / "open.edi"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, make_po(3))
        if when == "restart":
            daemon.start()
        elif when == "reload":
            daemon.sighup()
        poll_until(
            lambda: _events(daemon.log, "upload_open_past_grace"), timeout=20, what="held open"
        )
        assert daemon.listing(daemon.done) == [] and erp.requests == []
    finally:
        os.close(fd)
    poll_until(lambda: daemon.listing(daemon.done), timeout=20, what="the file in done/")
    assert len({po for _, po in erp.requests}) == 1


def test_a_mailbag_open_across_a_restart_waits_for_its_last_interchange(daemons, erp):
    """A partner's mailbag open for writing, its first interchange whole (an
    IEA at its end), as the daemon (two worker processes) starts:
    held as open for writing; the second interchange written and the file
    closed, both orders are posted by one job."""
    from test_truth import file_of
    from test_truth import order as one_line_order

    daemon = daemons(erp.url, processes=2, incomplete_grace_seconds=60.0)
    path = daemon.inbox / "bag.edi"
    first = file_of(one_line_order(1), icn="000000341")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, first)
        daemon.start()

        def held() -> bool:
            events = _events(daemon.log, "upload_held")
            return any(e.get("reason") == "open for writing" for e in events)

        poll_until(held, timeout=20, what="bag.edi held as open for writing")
        os.write(fd, file_of(one_line_order(2), icn="000000342"))
    finally:
        os.close(fd)
    poll_until(lambda: daemon.listing(daemon.done), timeout=20, what="bag.edi in done/")
    assert sorted(po for _, po in erp.requests) == ["PO-1", "PO-2"]
    assert len(jobs_by_file(daemon)["bag.edi"]) == 1
    assert daemon.alive() and len(daemon.worker_processes()) == 2


def test_run_once_waits_for_a_mailbag_open_for_writing(daemons, erp):
    """``run --once`` started while a partner's mailbag is open for writing,
    its first interchange whole: held as open for writing and left in the
    inbox; the rest written and the file closed, the next ``run --once``
    posts both orders by one job."""
    from daemons import daemon_command
    from test_truth import file_of
    from test_truth import order as one_line_order

    daemon = daemons(erp.url, incomplete_grace_seconds=60.0)
    path = daemon.inbox / "bag.edi"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    env = {k: v for k, v in os.environ.items() if k not in ("EDI_INBOX_CONFIG", "NOTIFY_SOCKET")}
    proc = None
    try:
        os.write(fd, file_of(one_line_order(1), icn="000000343"))
        proc = subprocess.Popen(
            daemon_command(daemon.config, "run", "--once"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if '"upload_held"' in line and "open for writing" in line:
                break
        else:
            raise AssertionError(f"run --once ended without holding bag.edi: {proc.wait()}")
        proc.stdout.read()
        assert proc.wait(60) == 0
        assert daemon.listing(daemon.inbox) == ["bag.edi"] and erp.requests == []
        os.write(fd, file_of(one_line_order(2), icn="000000344"))
        os.close(fd)
        fd = -1
        again = daemon.cli("run", "--once")
        assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    finally:
        if fd >= 0:
            os.close(fd)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sorted(po for _, po in erp.requests) == ["PO-1", "PO-2"]
    assert daemon.listing(daemon.done) == ["bag.edi"]
    assert len(jobs_by_file(daemon)["bag.edi"]) == 1


# --- schema v9 after an older version's retry chain -----------------------------------

PREVIOUS = "8eb3714"  # the previous release


def _edi(code, config, *args: str) -> subprocess.CompletedProcess[str]:
    """``edi-inbox --config CONFIG ARGS`` of ``code`` (an archived daemon/), or of this checkout."""
    env = {k: v for k, v in os.environ.items() if k != "EDI_INBOX_CONFIG"}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    command = [sys.executable, "-m", "edi_inbox.cli", "--config", str(config), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def _listing(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def test_an_order_the_erp_took_before_an_old_retry_met_a_refused_erp_stays_maybe_held(
    tmp_path, erp
):
    """8eb3714 posts PO-3401 v1: the ERP stores it but answers after the read
    timeout (both attempts), v1 in failed/. The operator retries it, still on
    8eb3714, while the ERP is down (connection refused): failed again; the
    order's row, moved to the retry's job, now says only "refused". After the
    upgrade (schema v9) the partner's corrected v2 is posted, and v1 retried
    once more: the ERP may hold v1, so it is sent again under its key and
    recorded posted (not judged "other content" and answered R)."""
    code = archived_daemon(PREVIOUS, tmp_path / "previous")
    down = "http://127.0.0.1:9/orders"
    timeouts = "read_timeout_seconds = 0.3\n"
    cfg = write_config(
        tmp_path,
        f"[database]\nurl = {json.dumps('sqlite:///' + str(tmp_path / 'edi-inbox.db'))}\n",
        erp.url,
        "max_attempts = 2\nbackoff_initial_seconds = 0.01\nbackoff_max_seconds = 0.02\n"
        "backoff_jitter_seconds = 0\n" + timeouts,
    )
    for d in ("inbox", "processing", "done", "failed", "acks", "outbox"):
        (tmp_path / "state" / d).mkdir(parents=True, exist_ok=True)
    inbox, failed = tmp_path / "state" / "inbox", tmp_path / "state" / "failed"
    erp.delay = 1.0  # past the read timeout: the ERP keeps v1, the daemon hears nothing
    (inbox / "v1.edi").write_bytes(file_of(order(3401), icn="000003401"))
    assert _edi(code, cfg, "run", "--once").returncode in (0, 1)
    assert "v1.edi" in _listing(failed)
    assert {po for _, po in erp.requests} == {"PO-3401"}  # the ERP holds v1
    erp.delay = 0.0
    cfg.write_text(cfg.read_text().replace(json.dumps(erp.url), json.dumps(down)))
    assert _edi(code, cfg, "retry", "--all-failed").returncode == 0
    assert _edi(code, cfg, "run", "--once").returncode in (0, 1)
    assert "v1.edi" in _listing(failed)
    cfg.write_text(cfg.read_text().replace(json.dumps(down), json.dumps(erp.url)))
    (inbox / "v2.edi").write_bytes(file_of(order(3401, quantity="7"), icn="000003402"))
    assert _edi(None, cfg, "run", "--once").returncode in (0, 1)
    assert _edi(None, cfg, "retry", "--all-failed").returncode == 0
    assert _edi(None, cfg, "run", "--once").returncode in (0, 1)
    jobs = json.loads(_edi(None, cfg, "jobs", "list", "--json").stdout)
    last = max((j for j in jobs if j["file_name"] == "v1.edi"), key=lambda j: j["started_at"])
    shown = json.loads(_edi(None, cfg, "jobs", "show", last["job_id"], "--json").stdout)
    assert [o["status"] for o in shown["orders"]] == ["posted"], "v1, which the ERP holds"


# --- the job page's 997 ---------------------------------------------------------------


def test_the_job_page_finds_a_997_written_before_the_partner_had_an_outbox(tmp_path):
    from click.testing import CliRunner

    from edi_inbox.cli import main

    import web_site
    from helpers import make_po, sent_by

    config = web_site.write_config(tmp_path, f"sqlite:///{tmp_path / 'edi-inbox.db'}")
    outbox = f"outbox = {json.dumps(str(tmp_path / 'acme-out'))}\n"
    with_outbox = config.read_text()
    assert outbox in with_outbox
    config.write_text(with_outbox.replace(outbox, ""))  # acme without an outbox, at first
    path = tmp_path / "acme.edi"
    path.write_bytes(sent_by(make_po(3403), "ZZ:ACME"))
    env = {"EDI_INBOX_CONFIG": str(config)}
    result = CliRunner().invoke(main, ["process", "--json", str(path)], env=env)
    job = json.loads(result.stdout)
    assert job["partner"] == "acme"
    (ack,) = [name for name in job["acks"] if name.endswith(".997")]
    assert (tmp_path / "state" / "acks" / ack).exists()
    config.write_text(with_outbox)  # then acme fetches from an outbox of its own
    with web_site.server(config, tmp_path) as (port, _):
        page = web_site.request(port, "GET", f"/jobs/{job['job_id']}").text
    assert "AK9*" in page, "the job's 997, still in acks/, is not shown"


# --- an older host on the same database -----------------------------------------------


def _events(log: Path, name: str) -> list[dict]:
    if not log.exists():
        return []
    lines = (json.loads(line) for line in log.read_text().splitlines() if line.startswith("{"))
    return [e for e in lines if e.get("event") == name]


def _age(daemon, host: str) -> float:
    done = daemon.cli("status", "--json")
    assert done.returncode in (0, 3), done.stderr[-2000:]
    found = [d for d in json.loads(done.stdout)["daemons"] if d["host"] == host]
    return found[0]["heartbeat_age_seconds"] if found else 0.0


@pytest.mark.xfail(
    strict=True,
    reason="in a rolling upgrade, a live 8eb3714 host that beats every 40 s (it records no"
    " interval) is judged by the upgraded host's 0.5 s and its claimed file taken over"
    " mid-POST: the order is run twice",
)
def test_a_live_older_host_with_a_longer_heartbeat_keeps_its_files(tmp_path, erp, monkeypatch):
    """oldhost (8eb3714, ``heartbeat_seconds = 40``) is posting po1.edi, the
    ERP slow to answer; newhost (HEAD, 0.5 s) runs on the same SQLite
    database and folders. oldhost's last heartbeat is well within its own
    three intervals: newhost must leave its file alone (README: each host
    judged by its own ``heartbeat_seconds``)."""
    code = archived_daemon(PREVIOUS, tmp_path / "previous")
    root = tmp_path / "site"
    root.mkdir()
    old = Daemon(root, erp.url, host="oldhost", heartbeat_seconds=40.0)
    shared = old.config.read_text()
    erp.gate.clear()
    new = None
    try:
        with monkeypatch.context() as m:
            m.setenv("PYTHONPATH", str(code))
            old.start()
        (old.inbox / "po1.edi").write_bytes(make_po(3404))
        poll_until(lambda: erp.requests, timeout=15, what="oldhost posting po1.edi")
        new = Daemon(root, erp.url, host="newhost")  # (it rewrites the shared config)
        assert "heartbeat_seconds = 40.0" in shared
        new.config.write_text(shared.replace("heartbeat_seconds = 40.0", "heartbeat_seconds = 0.5"))
        new.start()
        # A takeover, or 35 s since oldhost's beat: well past max(3 x 0.5 s, 15 s), within
        # its own 40 s.
        poll_until(
            lambda: _events(new.log, "taken_over") or _age(new, "oldhost") > 35,
            timeout=60,
            interval=0.5,
            what="a takeover, or 35 s",
        )
        taken = _events(new.log, "taken_over")
        assert old.alive()
        assert taken == [], f"newhost took the live oldhost's file: {taken[:1]}"
    finally:
        erp.gate.set()
        if new is not None:
            new.close()
        old.close()
