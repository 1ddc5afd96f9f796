"""Outside tester, round 62: what the operator sees, after this session's
changes -- status, jobs, stats, the dashboard in a real browser, Prometheus
metrics, the journal.

The real ``edi-inbox run`` (threads, or ``processes = 2``) with a real HTTP
ERP on 127.0.0.1 (``daemons.Erp``) or none (the order outbox a tmpfs
remounted read-only, round 51/55's rig), SQLite; ``edi-inbox serve`` in a
subprocess for ``/metrics``, ``/api/status`` and the dashboard; a headless
Chromium (``test_dashboard.browser``) for the hosts table; heartbeat rows
written with ``store.heartbeat`` where a state is hard to hold still (a
host dead with a backlog, one owing 997s and cut short at once). About
35 s at -n0.

What I tried
- Three uploads (an ``<img onerror>`` name, one with ESC[2J, a plain one)
  cut short by a read-only outbox, then the outbox writable: ``status``,
  ``status --json``, STATUS=, ``jobs list``, ``stats``, ``/metrics``, the
  dashboard, the journal, while they wait and once over.
- The inbox moved away (exit 1) and a worker process SIGKILLed mid-POST
  (exit 1): ``status`` text and JSON, ``jobs list/show/search``, the
  journal (``job_interrupted``, ``daemon_stopped``), the rerun at the next
  start and the interrupted job's ``file_path``.
- A SIGHUP with a POST held at the ERP: the heartbeat during the drain.
- ``[rules] segment_out_of_sequence`` at ``warn`` and ``off`` on an 850
  whose CSH comes after its DTMs.
- Heartbeat rows: a live host owing 2 997s with 3 cut short, an exited
  host, a host dead 10 minutes with counters left; hostile text (HTML,
  ESC) in a last error; ``status``, ``--json``, ``/api/status``,
  ``/metrics``, the dashboard in Chromium.
- The shipped alert rules (``config/edi-inbox.rules.yml``) against the
  new ``halted`` state.
- Not reached: two hosts on PostgreSQL with one killed (round 58 covers
  them; each takeover waits its 15 s, past this file's budget).

What held
- Cut-short files: ``status`` "3 job(s) cut short by the daemon's trouble"
  with the outbox's error, STATUS=, ``/metrics`` state halted 3 and the
  dashboard's "Cut short" agree; names escaped in ``jobs list`` (``\\x1b``)
  and HTML; once the outbox takes orders every file is in done/, halted 0
  everywhere, the daemon's last error cleared; the stop's last line is
  ``daemon_stopped`` with ``handed_back`` 0.
- A killed worker: ``exited (status 1)``, the job interrupted with its
  order ``pending``, ``job_interrupted`` then ``daemon_stopped`` last; the
  rerun posts under the same key and the interrupted job's ``file_path``
  follows the file into done/.
- The rule at ``warn``: posted, 997 AK3*CSH*7**7, AK5 E, AK9 E, the warning
  on the order and ``rule_warning`` in ``jobs show``; at ``off``: posted,
  AK5 A, nothing said.
- Chromium: running/exited/stale told apart, a dead host's backlog 0,
  hostile partner text shown as text, no element made of it.

Found (strict xfails; all 8 fixed the same session, each test failing
before: ``cli._status_text`` says both; ``admin.shown_counters`` drops a
daemon's backlog unless it runs (``status``, ``--json``, the dashboard,
``/metrics``); the ``EdiInboxJobsCutShort`` alert; the exited row's error
and the ``job_interrupted`` reason say why; the success rate leaves out
interrupted runs; ``Service.draining``; an interrupted job takes its first
order's PO number; round 58's exact "exited with status 1" became a prefix)
1. ``test_status_names_jobs_cut_short_beside_owed_acknowledgements``: a
   daemon owing 2 997s with 3 jobs cut short: the dashboard, ``/metrics``
   and STATUS= say both, ``status`` only "2 job(s) waiting to write their
   acknowledgements". Cause: ``cli._status_text`` prints the halted line in
   an ``elif`` after ``acks_owed``. Should: both lines.
2. ``test_status_json_shows_no_backlog_for_a_daemon_no_longer_running``:
   README: a daemon no longer running has its last counters "shown as no
   backlog (status, the dashboard, /metrics)"; text, dashboard and
   ``/metrics`` show 0, ``status --json`` and ``/api/status`` hand out its
   ``counters`` as they were (acks_owed 4, halted 5, queue 6): a script
   summing them reports a backlog nobody owes. Should: no backlog there
   either (cause: ``admin.status`` leaves ``counters`` as recorded; only
   the text and the template zero them).
3. ``test_the_shipped_alert_rules_alert_on_jobs_cut_short``: no rule in
   ``config/edi-inbox.rules.yml`` reads ``state="halted"``: an order outbox
   read-only all night cuts every file short, nothing waits in the inbox,
   nothing fails, no 997 is owed: no alert fires. Should: a rule as for
   ``acks_owed``.
4. ``test_an_exited_daemon_shows_why_it_exited_inbox_gone`` and
   ``..._worker_killed``: README: ``exited (status N)`` "with its last
   error"; the inbox gone ("the inbox … has been missing for 5 s") or a
   worker process dead ("a worker process died"): ``status``, ``--json``
   and the dashboard say only "the daemon exited with status 1". Cause:
   ``service.run`` writes the exited heartbeat with that text as
   ``last_error``, replacing the daemon's own. Should: the cause (round
   58's ``test_status_says_a_host_exited_and_why`` asserts the present text
   with ``==``: to be loosened with the fix).
5. ``test_jobs_cut_short_by_the_daemon_do_not_lower_the_success_rate``:
   three files cut short twice by the outbox, then all succeeded: ``stats``
   says success rate 33.33 with 0 failed jobs (``queries._stats_json``
   counts ``interrupted`` among the finished, and each halted run is a job
   of its own). Should: 100 -- the daemon's trouble is no partner failure.
6. ``test_a_killed_worker_s_job_interrupted_line_says_why``: a worker
   SIGKILLed mid-POST: ``job_interrupted`` says "handed back or parked at
   the stop" though there was no stop, nothing handed back (the file stays
   claimed) and nothing parked. Cause: ``service.run``'s one
   ``interrupt_own`` reason for every end. Should: the worker's death.
7. ``test_a_killed_worker_s_job_lists_the_po_it_may_have_posted``: the same
   job's order 00062400 is recorded ``pending`` (``jobs show``; ``jobs
   search`` finds it) but ``jobs list`` and the dashboard's tables show no
   PO for it (the job row's ``po_number`` is written at a run's end only);
   a job cut short by the outbox shows its PO. Should: its order's PO.
8. ``test_a_reload_drain_reports_no_queue_it_does_not_have``: during a
   reload's drain (one POST held), the heartbeat says queue 4 (one per
   worker thread) with nothing queued: ``status --json``, the dashboard's
   Queue, ``edi_inbox_daemon_backlog{state="queue"}``. Cause:
   ``Service._shutdown`` puts a ``None`` per thread on ``self.work``,
   ``snapshot`` reports ``self.work.qsize()`` and ``_drain_for_reload``
   beats. Should: 0.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from daemons import Daemon, daemons, erp
from test_outsider_round51 import Rig, settled
from test_outsider_round55 import quiet, remount

from edi_inbox import config, store
from edi_inbox.cli import main

import uids
from helpers import make_po, poll_until
from web_site import server, write_config

__all__ = ["daemons", "erp"]  # the fixtures

RULES = Path(__file__).resolve().parent.parent / "config" / "edi-inbox.rules.yml"


def beat(env: dict[str, str], host: str, counters: dict, last_error: str | None, age: float = 0.0):
    settings = config.load(env["EDI_INBOX_CONFIG"], {})
    db = store.open_database(settings.database_url, settings)
    store.init(db)
    try:
        now = datetime.now(UTC) - timedelta(seconds=age)
        store.heartbeat(
            db,
            f"{host}:4242:test",
            host=host,
            pid=4242,
            version="0.1.0",
            started_at=now - timedelta(hours=1),
            counters=counters,
            last_error=last_error,
            heartbeat_seconds=0.5,
            now=now,
        )
    finally:
        store.close_database(db)


def status_text(env: dict[str, str]) -> str:
    return CliRunner().invoke(main, ["status"], env=env).stdout


def status_json(env: dict[str, str]) -> dict:
    return json.loads(CliRunner().invoke(main, ["status", "--json"], env=env).stdout)


def fetch(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as answer:
        return answer.read().decode()


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture
def site(tmp_path):
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path / 'edi-inbox.db'}")
    env = {"EDI_INBOX_CONFIG": str(cfg)}
    (tmp_path / "state" / "inbox").mkdir(parents=True)
    beat(env, "seed", {}, None, age=3600)
    with server(cfg, tmp_path) as (port, _process):
        yield env, port


def test_status_names_jobs_cut_short_beside_owed_acknowledgements(site):
    """A running daemon owing 2 997s and with 3 jobs cut short by its
    trouble: the dashboard ("Cut short" 3), /metrics (state halted 3) and
    STATUS= say both; ``status`` says only the 997s owed."""
    env, port = site
    beat(env, "alpha", {"acks_owed": 2, "halted": 3}, "PO 1: not posted: outbox read-only")
    metrics = fetch(port, "/metrics")
    assert metric(metrics, "edi_inbox_daemon_backlog", host="alpha", state="halted") == 3.0
    assert metric(metrics, "edi_inbox_daemon_backlog", host="alpha", state="acks_owed") == 2.0
    text = status_text(env)
    assert "2 job(s) waiting to write their acknowledgements" in text
    assert "3 job(s) cut short by the daemon's trouble" in text, text


def test_status_json_shows_no_backlog_for_a_daemon_no_longer_running(site):
    """README: a daemon no longer running waits for nothing, its last
    counters shown as no backlog in ``status``, the dashboard and /metrics.
    Text, dashboard and /metrics show 0; ``status --json`` (and
    ``/api/status``) hand its last counters out as they were."""
    env, port = site
    beat(env, "dead", {"acks_owed": 4, "halted": 5, "queue": 6}, "boom", age=600)
    metrics = fetch(port, "/metrics")
    for state in ("acks_owed", "halted", "queue"):
        assert metric(metrics, "edi_inbox_daemon_backlog", host="dead", state=state) == 0.0
    assert "waiting to write" not in status_text(env)
    for doc in (status_json(env), json.loads(fetch(port, "/api/status"))):
        (dead,) = [d for d in doc["daemons"] if d["host"] == "dead"]
        assert dead["alive"] is False
        backlog = {k: dead["counters"].get(k, 0) for k in ("acks_owed", "halted", "queue")}
        assert backlog == {"acks_owed": 0, "halted": 0, "queue": 0}, dead["counters"]


def test_the_shipped_alert_rules_alert_on_jobs_cut_short():
    """An order outbox read-only all night: every file is cut short and waits
    claimed (``edi_inbox_daemon_backlog{state="halted"}``); nothing is in
    the inbox (BacklogOld), nothing failed, no 997 owed: no shipped rule
    fires. Should: a rule on the halted state, as on acks_owed."""
    rules = RULES.read_text()
    assert 'edi_inbox_daemon_backlog{state="acks_owed"}' in rules
    assert 'state="halted"' in rules


def last_error_of(daemon: Daemon) -> str | None:
    (me,) = json.loads(daemon.cli("status", "--json").stdout)["daemons"]
    return me["last_error"]


def out_of_sequence(n: int) -> bytes:
    data = make_po(n)
    swapped = data.replace(
        b"CSH*P4\nDTM*010*19980210\nDTM*001*19980301\n",
        b"DTM*010*19980210\nDTM*001*19980301\nCSH*P4\n",
    )
    assert swapped != data
    return swapped


@pytest.mark.parametrize("level", ["warn", "off"])
def test_segment_out_of_sequence_at_warn_or_off_posts_the_order(daemons, erp, level):
    """Holds: the new rule's key at ``warn``: the order posted, the 997 AK3
    CSH (position 7) AK304 7, AK5 E / AK9 E, the warning on the order in
    ``jobs show``; at ``off``: posted, AK5 A, nothing said."""
    daemon = daemons(erp.url, extra=f'[rules]\nsegment_out_of_sequence = "{level}"\n')
    daemon.start()
    uids.upload(daemon.inbox / "seq.edi", out_of_sequence(62001))
    poll_until(lambda: settled(daemon, 1), timeout=20, what="filed")
    assert daemon.listing(daemon.done) == ["seq.edi"]
    assert [po for _, po in erp.requests] == ["00062001"]
    (ack,) = (daemon.root / "acks").glob("*.997")
    segments = ack.read_text().split("\n")
    (job,) = daemon.jobs()
    shown = daemon.cli("jobs", "show", job["job_id"]).stdout
    if level == "warn":
        assert "AK3*CSH*7**7" in segments and "AK5*E" in segments
        assert any(s.startswith("AK9*E") for s in segments)
        assert "warning: segment CSH" in shown and "rule_warning" in shown
    else:
        assert not any(s.startswith("AK3") for s in segments) and "AK5*A" in segments
        assert "warning" not in shown
    assert daemon.terminate(20) == 0


def test_an_exited_daemon_shows_why_it_exited_inbox_gone(daemons, erp):
    """README: ``status`` shows ``exited (status N)`` with its last error.
    The inbox moved away: the daemon logs ``inbox_gone`` ("the inbox … has
    been missing for 5 s") and exits 1; ``status``, ``status --json`` and
    the dashboard then say only "the daemon exited with status 1" (service.run
    writes the exited heartbeat with that text as its last error, replacing
    the inbox's). Should: the reason it exited."""
    daemon = daemons(erp.url)
    daemon.start()
    uids.upload(daemon.inbox / "a.edi", make_po(62010))
    poll_until(lambda: daemon.listing(daemon.done), timeout=20, what="filed")
    away = daemon.root / "inbox.away"
    daemon.inbox.rename(away)
    assert daemon.proc is not None
    assert daemon.proc.wait(20) == 1
    away.rename(daemon.inbox)
    last = json.loads(daemon.log.read_text().splitlines()[-1])
    assert last["event"] == "daemon_stopped"  # holds
    text = daemon.cli("status").stdout
    assert "exited (status 1)" in text  # holds
    assert "missing" in (last_error_of(daemon) or ""), text
    assert "missing" in text


def test_an_exited_daemon_shows_why_it_exited_worker_killed(daemons, erp):
    """As above for a worker process SIGKILLed (the OOM killer's pick): the
    daemon's last error was "a worker process died" (``Service``), the
    heartbeat row then says only "the daemon exited with status 1"."""
    daemon = kill_a_worker_mid_post(daemons, erp)
    assert "worker" in (last_error_of(daemon) or "")


@pytest.fixture
def rig(tmp_path):
    uids.need_root()
    made = Rig(tmp_path)
    try:
        yield made
    finally:
        made.close()


HOSTILE = ["<img src=x onerror=alert(1)>.edi", "ctl\x1b[2Jy.edi", "plain.edi"]


def test_jobs_cut_short_shown_alike_everywhere_then_cleared(rig):
    """Read-only outbox under three uploads (two hostile names): status,
    status --json, STATUS=, /metrics, the dashboard agree on 3 cut short;
    names escaped in text and HTML; once the outbox takes orders again every
    file is done and the backlog 0 everywhere; the stop's last line is
    daemon_stopped with handed_back 0."""
    outbox = rig.tmpfs(rig.root / "outbox", "size=4m")
    daemon = rig.daemon("")
    daemon.start()
    remount(outbox, "ro")
    for i, name in enumerate(HOSTILE):
        uids.upload(daemon.inbox / name, make_po(62100 + i))
    poll_until(lambda: quiet(daemon, 3), timeout=30, what="each cut short")
    with server(daemon.config, rig.root) as (port, _process):
        poll_until(lambda: "3 job(s) cut short" in daemon.cli("status").stdout, timeout=10)
        text = daemon.cli("status").stdout
        assert "\x1b" not in text and "Read-only file system" in text
        metrics = fetch(port, "/metrics")
        host = json.loads(daemon.cli("status", "--json").stdout)["daemons"][0]["host"]
        assert metric(metrics, "edi_inbox_daemon_backlog", host=host, state="halted") == 3.0
        page = fetch(port, "/")
        assert '<td class="num">3</td>' in page
        assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;.edi" in page
        listing = daemon.cli("jobs", "list").stdout
        assert "\x1b[2J" not in listing and "ctl\\x1b[2Jy.edi" in listing
        remount(outbox, "rw")
        poll_until(lambda: settled(daemon, 3), timeout=40, what="all filed")
        poll_until(lambda: "cut short" not in daemon.cli("status").stdout, timeout=20)
        metrics = fetch(port, "/metrics")
        assert metric(metrics, "edi_inbox_daemon_backlog", host=host, state="halted") == 0.0
        assert sorted(daemon.listing(daemon.done)) == sorted(HOSTILE)
    assert daemon.terminate(20) == 0
    last = json.loads(daemon.log.read_text().splitlines()[-1])
    assert last["event"] == "daemon_stopped" and last["handed_back"] == 0


def outbox_trouble_over(rig, base: int) -> Daemon:
    """Three uploads cut short twice each by a read-only outbox, then the
    outbox writable and all three filed in done/."""
    outbox = rig.tmpfs(rig.root / "outbox", "size=4m")
    daemon = rig.daemon("")
    daemon.start()
    remount(outbox, "ro")
    for i, name in enumerate(HOSTILE):
        uids.upload(daemon.inbox / name, make_po(base + i))
    poll_until(lambda: quiet(daemon, 6), timeout=30, what="each cut short twice")
    remount(outbox, "rw")
    poll_until(lambda: settled(daemon, 3), timeout=40, what="all filed")
    assert sorted(daemon.listing(daemon.done)) == sorted(HOSTILE)
    return daemon


def test_the_outbox_trouble_is_no_last_error_once_every_file_ran(rig):
    """Holds: three files cut short twice each by a read-only outbox, then
    the outbox writable: once all three are done the daemon's last error is
    gone (a moment after the files reach done/)."""
    daemon = outbox_trouble_over(rig, 62200)
    poll_until(lambda: last_error_of(daemon) is None, timeout=15, what="the trouble no more said")


def test_jobs_cut_short_by_the_daemon_do_not_lower_the_success_rate(rig):
    """Every file succeeded (the outbox read-only a while: each cut short
    twice, then run to its end): ``stats`` says success rate 33.33 with 0
    failed jobs (``queries._stats_json``: ``finished`` counts every final
    status, ``interrupted`` included, and a halted job's rerun is a job of
    its own). The daemon's own trouble is not the partner's failure: the
    rate of the files should be 100."""
    daemon = outbox_trouble_over(rig, 62300)
    doc = json.loads(daemon.cli("stats", "--json").stdout)
    assert doc["failed_jobs"] == 0 and doc["successful_jobs"] == 3  # holds
    assert doc["success_rate"] == 100.0, doc


def kill_a_worker_mid_post(daemons, erp) -> Daemon:
    """``processes = 2``; a POST held at the ERP; the worker processes
    SIGKILLed: the daemon exits 1; the ERP answers afterwards."""
    daemon = daemons(erp.url, processes=2)
    daemon.start()
    erp.gate.clear()
    uids.upload(daemon.inbox / "w<1>.edi", make_po(62400))
    poll_until(lambda: erp.requests, what="the POST held at the ERP")
    for pid in daemon.worker_processes():
        os.kill(pid, signal.SIGKILL)
    assert daemon.proc is not None
    assert daemon.proc.wait(20) == 1
    erp.gate.set()
    return daemon


def test_a_killed_worker_s_job_is_interrupted_then_rerun_and_followed(daemons, erp):
    """Holds: a worker process killed mid-POST: ``status`` says exited
    (status 1), the job interrupted (its order pending in ``jobs show``),
    ``job_interrupted`` then ``daemon_stopped`` (handed_back 0) last in the
    journal; the next start reruns it under the same key, and the
    interrupted job's ``file_path`` follows the file to done/."""
    daemon = kill_a_worker_mid_post(daemons, erp)
    assert "exited (status 1)" in daemon.cli("status").stdout
    lines = [
        json.loads(line) for line in daemon.log.read_text().splitlines() if line.startswith("{")
    ]
    assert lines[-1]["event"] == "daemon_stopped" and lines[-1]["handed_back"] == 0
    (said,) = [e for e in lines if e["event"] == "job_interrupted"]
    assert said["file"] == "w<1>.edi"
    (job,) = daemon.jobs()
    assert job["status"] == "interrupted"
    shown = json.loads(daemon.cli("jobs", "show", "--json", job["job_id"]).stdout)
    assert [(o["po_number"], o["status"]) for o in shown["orders"]] == [("00062400", "pending")]
    daemon.start()
    poll_until(lambda: settled(daemon, 1), timeout=20, what="rerun and filed")
    assert len(erp.posts_per_key()) == 1
    shown = json.loads(daemon.cli("jobs", "show", "--json", job["job_id"]).stdout)
    assert shown["file_path"] == str(daemon.done / "w<1>.edi")
    assert daemon.terminate(20) == 0


def test_browser_hosts_table_tells_each_state_and_shows_partner_text_as_text(site, tmp_path):
    """Holds, in a real Chromium: the hosts table says running with 3 cut
    short and 2 owing a 997, ``exited (status 1)`` and ``stale`` for the
    others with no backlog; a last error carrying partner text (an
    ``<img onerror>`` and an escape sequence) is shown as text, no element
    made of it."""
    from selenium.webdriver.common.by import By
    from test_dashboard import browser

    env, port = site
    hostile = 'PO <img src=x onerror="document.title=1">\x1b[31m: not posted'
    beat(env, "alpha", {"acks_owed": 2, "halted": 3, "in_flight": 1}, hostile)
    beat(env, "gone", {"exited": 1, "halted": 4}, "the daemon exited with status 1", age=1)
    beat(env, "dead", {"acks_owed": 4, "halted": 5, "queue": 6}, "boom", age=600)
    driver = browser(tmp_path / "profile")
    try:
        driver.set_page_load_timeout(60)
        driver.get(f"http://127.0.0.1:{port}/")
        heads = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "table.hosts thead th")]
        rows = {}
        for tr in driver.find_elements(By.CSS_SELECTOR, "table.hosts tbody tr"):
            cells = [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            rows[cells[0]] = dict(zip(heads, cells, strict=True))
        assert rows["alpha"]["State"] == "running"
        assert (rows["alpha"]["Cut short"], rows["alpha"]["Owing 997"]) == ("3", "2")
        assert rows["gone"]["State"] == "exited (status 1)" and rows["gone"]["Cut short"] == "0"
        assert rows["dead"]["State"] == "stale"
        assert [rows["dead"][h] for h in ("Queue", "Owing 997", "Cut short")] == ["0", "0", "0"]
        assert "<img" in rows["alpha"]["Last error"] and "\\x1b" in rows["alpha"]["Last error"]
        assert driver.find_elements(By.CSS_SELECTOR, "main img") == []
        assert driver.title != "1"
    finally:
        driver.quit()


def test_a_reload_drain_reports_no_queue_it_does_not_have(daemons, erp):
    """One POST held at the ERP (4 worker threads), then SIGHUP: while the
    reload waits for it (STATUS= "reloading: waiting for 1 job(s) in
    flight"), the heartbeat says queue 4 (one per thread) in flight 1 — ``status --json``,
    the dashboard's Queue and ``edi_inbox_daemon_backlog{state="queue"}``
    — with nothing queued (the inbox empty, one file claimed). Cause:
    ``Service._shutdown`` puts a ``None`` per thread on ``self.work`` and
    ``snapshot`` reports ``self.work.qsize()``; ``_drain_for_reload``
    beats meanwhile. Should: queue 0. Holds: the file is posted once and
    done, ``handed_back`` 0 (nothing handed back at a reload)."""
    daemon = daemons(erp.url)
    daemon.start()
    erp.gate.clear()
    uids.upload(daemon.inbox / "r.edi", make_po(62500))
    poll_until(lambda: erp.requests, what="the POST held")
    daemon.sighup()
    poll_until(
        lambda: any(m.startswith(b"STATUS=reloading") for m in daemon.messages),
        timeout=10,
        what="reloading",
    )
    poll_until(
        lambda: (
            json.loads(daemon.cli("status", "--json").stdout)["daemons"][0]["counters"].get(
                "in_flight"
            )
            == 1
        ),
        timeout=10,
        what="a beat of the drain",
    )
    counters = json.loads(daemon.cli("status", "--json").stdout)["daemons"][0]["counters"]
    erp.gate.set()
    poll_until(lambda: settled(daemon, 1), timeout=20, what="filed")
    poll_until(daemon.ready.is_set, timeout=20, what="READY after the reload")
    assert len(erp.posts_per_key()) == 1 and daemon.listing(daemon.done) == ["r.edi"]
    assert daemon.terminate(20) == 0
    assert daemon.events("daemon_stopped")[-1]["handed_back"] == 0
    assert counters["queue"] == 0, counters


def test_a_killed_worker_s_job_interrupted_line_says_why(daemons, erp):
    """A worker process SIGKILLed mid-POST: the journal's ``job_interrupted``
    says ``reason: "handed back or parked at the stop"``, though there was
    no stop (the daemon exited 1 on the death), nothing was handed back
    (``daemon_stopped handed_back=0``; the file stays claimed in
    processing/) and nothing parked. Cause: ``service.run`` calls
    ``interrupt_own("handed back or parked at the stop")`` for every end.
    Should: say the worker process died (as the daemon's ``worker_process_died``)."""
    daemon = kill_a_worker_mid_post(daemons, erp)
    assert daemon.listing(daemon.inbox) == []  # not handed back: still claimed
    (said,) = daemon.events("job_interrupted")
    assert "handed back" not in said["reason"] and "worker" in said["reason"], said


def test_a_killed_worker_s_job_lists_the_po_it_may_have_posted(daemons, erp):
    """The same death: ``jobs show`` lists the order 00062400 ``pending``
    (sent, unanswered: the ERP may hold it) and ``jobs search --po-number``
    finds the job, but ``jobs list`` (and the dashboard's jobs tables, from
    the same summary) shows its PO column empty: the job row's
    ``po_number`` is only written when a run ends. A job cut short by the
    outbox shows its PO there. Should: the PO of the order it recorded."""
    daemon = kill_a_worker_mid_post(daemons, erp)
    (job,) = json.loads(daemon.cli("jobs", "list", "--json").stdout)
    shown = json.loads(daemon.cli("jobs", "show", "--json", job["job_id"]).stdout)
    assert [o["po_number"] for o in shown["orders"]] == ["00062400"]  # holds
    assert job["po_number"] == "00062400", job
