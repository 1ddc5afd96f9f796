"""Round two of an outsider's tries: reload while the database is away, reload
under load with worker processes, a reload draining a stuck ERP, the shared
inbox's refusal and the defaults. The real daemon as a subprocess, real
uploads, a real HTTP ERP on 127.0.0.1, real signals. A check that holds is a
plain test; a bug found is a strict xfail naming it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import Daemon, daemons, erp

from edi_inbox import config, queries, service

import uids
from helpers import database_locked, make_po, opened, poll_until, sent_by, write_config
from uids import shared_root

pytestmark = pytest.mark.e2e
__all__ = ["daemons", "erp", "shared_root"]  # fixtures


def busy_timeout(daemon: Daemon, seconds: float) -> None:
    """``[database] busy_timeout_seconds`` in the config written (before start)."""
    daemon.base_config = daemon.base_config.replace(
        "[erp]\n", f"busy_timeout_seconds = {seconds}\n[erp]\n", 1
    )
    daemon.config.write_text(daemon.base_config)


def all_done(daemon: Daemon, count: int) -> bool:
    return len(daemon.listing(daemon.done)) == count


# -- 1. reload while the database is unavailable ------------------------------------------------


def test_a_reload_while_the_database_is_locked_is_refused_then_works(daemons, erp):
    """The database locked by another process: intake pauses; a reload is
    refused saying why, the daemon goes on; once the lock is gone intake
    resumes, the reload is applied by itself (once), and the file uploaded
    meanwhile is posted once."""
    daemon = daemons(erp.url)
    busy_timeout(daemon, 0.3)
    daemon.start()
    uids.upload(daemon.inbox / "before.edi", make_po(1))
    poll_until(lambda: all_done(daemon, 1), what="the first file done")
    with database_locked(daemon.root / "edi-inbox.db"):
        poll_until(lambda: daemon.events("intake_paused"), timeout=20, what="intake paused")
        uids.upload(daemon.inbox / "during.edi", make_po(2))
        daemon.ready.clear()
        daemon.sighup()
        (refused,) = poll_until(
            lambda: daemon.events("reload_refused"), timeout=20, what="reload refused"
        )
        assert "database is unavailable" in refused["error"]
        poll_until(daemon.ready.is_set, what="READY=1 after the refusal")
        said = [m for m in daemon.messages if b"reload refused" in m]
        assert said and b"database is unavailable" in said[-1]
        assert daemon.alive()
        assert (daemon.inbox / "during.edi").exists()  # intake paused: not taken
        # Tried again by itself, each time twice as long after the last.
        poll_until(lambda: len(daemon.events("reload_refused")) >= 3, timeout=20, what="retried")
        delays = [r["retry_in_seconds"] for r in daemon.events("reload_refused")]
        assert delays[:3] == [1, 2, 4]
    poll_until(lambda: daemon.events("intake_resumed"), timeout=40, what="intake resumed")
    poll_until(lambda: daemon.events("reloading"), timeout=10, what="the reload applied")
    poll_until(daemon.ready.is_set, what="READY=1 after the reload")
    assert len(daemon.events("reloading")) == 1
    poll_until(lambda: all_done(daemon, 2), what="the second file done")
    assert sorted(erp.keys_by_po()) == sorted({po for _, po in erp.requests})
    assert all(n == 1 for n in erp.posts_per_key().values())
    assert len(erp.requests) == 2
    assert daemon.terminate(15) == 0


# -- 2. reload with processes = "auto" under a slow ERP -----------------------------------------


def test_reloads_with_worker_processes_under_a_slow_erp(daemons, erp):
    """The default processes = "auto" (a process per CPU), a slow ERP, 30 files:
    a reload in the middle lets the jobs finish, nothing is posted twice,
    READY=1 comes again; a SIGTERM during a second reload's drain exits 0 in
    time and loses nothing (handed back or done)."""
    erp.delay = 0.2
    daemon = daemons(erp.url, processes="auto", workers=4, shutdown_timeout_seconds=3.0)
    daemon.start()
    poll_until(lambda: len(daemon.worker_processes()) >= 2, what="worker processes")
    for n in range(30):
        uids.upload(daemon.inbox / f"po{n:02d}.edi", make_po(100 + n))
    poll_until(lambda: len(erp.requests) >= 5, what="some posts")
    daemon.reload("")
    poll_until(lambda: all_done(daemon, 30), timeout=60, what="30 files done")
    assert all(n == 1 for n in erp.posts_per_key().values()), erp.posts_per_key()
    assert len(erp.keys_by_po()) == 30
    assert all(len(keys) == 1 for keys in erp.keys_by_po().values())

    # A second load, SIGTERM while a reload drains it.
    for n in range(30, 50):
        uids.upload(daemon.inbox / f"po{n:02d}.edi", make_po(100 + n))
    poll_until(lambda: len(erp.requests) >= 34, what="posts of the second load")
    daemon.sighup()
    poll_until(
        lambda: any(e.get("reason") == "reload" for e in daemon.events("daemon_stopping")),
        what="the reload draining",
    )
    started = time.monotonic()
    assert daemon.terminate(3.0 + 10) == 0
    assert time.monotonic() - started < 3.0 + 5
    names = {f"po{n:02d}.edi" for n in range(50)}
    left = set(daemon.listing(daemon.inbox))
    done = {n.split("__")[-1] for n in daemon.listing(daemon.done)}
    found = left | {n for n in names if any(d.endswith(n) for d in daemon.listing(daemon.done))}
    assert names <= found, (sorted(names - found), done)
    assert not daemon.listing(daemon.failed)
    assert all(n == 1 for n in erp.posts_per_key().values())


# -- 3. a reload draining a stuck ERP ----------------------------------------------------------


def reload_draining_a_held_job(daemon: Daemon, erp) -> int:
    """A job held at the ERP (its gate closed), then SIGHUP; returns how many
    notifications had come once the reload drains."""
    erp.gate.clear()
    uids.upload(daemon.inbox / "held.edi", make_po(7))
    poll_until(lambda: erp.requests, what="the held job at the ERP")
    daemon.ready.clear()
    daemon.sighup()
    poll_until(
        lambda: any(e.get("reason") == "reload" for e in daemon.events("daemon_stopping")),
        what="the reload draining the job in flight",
    )
    return len(daemon.messages)


def test_the_watchdog_is_pinged_while_a_reload_drains(daemons, erp, monkeypatch):
    """systemd's watchdog on (WATCHDOG_USEC 1 s: a ping every 0.5 s), a reload
    waiting on a job stuck at the ERP: the pings go on, as the README says the
    reload waits "however long"."""
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    daemon = daemons(erp.url)
    daemon.start()
    poll_until(lambda: b"WATCHDOG=1" in daemon.messages, what="a first ping")
    seen = reload_draining_a_held_job(daemon, erp)
    try:
        poll_until(
            lambda: b"WATCHDOG=1" in daemon.messages[seen:],
            timeout=3.0,  # six intervals
            what="a WATCHDOG=1 while the reload drains",
        )
    finally:
        erp.gate.set()
        poll_until(daemon.ready.is_set, timeout=20, what="READY=1 after the drain")
    assert all(n == 1 for n in erp.posts_per_key().values())


def test_status_says_what_a_reload_waits_for(daemons, erp):
    """`systemctl status` during a long reload: STATUS= says the reload waits
    for the jobs in flight (how many), not only RELOADING=1."""
    daemon = daemons(erp.url)
    daemon.start()
    seen = reload_draining_a_held_job(daemon, erp)
    try:
        after = [m for m in daemon.messages if m.startswith(b"RELOADING=1")]
        assert after, "no RELOADING=1"
        poll_until(
            lambda: any(
                b"STATUS=" in m and b"reload" in m.lower() for m in daemon.messages[seen - 1 :]
            ),
            timeout=3.0,
            what="a STATUS= about the reload waiting",
        )
    finally:
        erp.gate.set()
        poll_until(daemon.ready.is_set, timeout=20, what="READY=1 after the drain")


# -- 4. the shared inbox and a partner with a folder of its own ----------------------------------


def po_number(data: bytes) -> str:
    """BEG03 of a one-interchange 850."""
    text = data.decode("latin-1")
    sep, term = text[3], text[105]
    (beg,) = [s for s in text.split(term) if s.strip().startswith(f"BEG{sep}")]
    return beg.strip().split(sep)[3]


def acme_and_other(tmp_path: Path, erp_url: str) -> tuple[config.Settings, Path]:
    acme_in = tmp_path / "acme-in"
    acme_in.mkdir()
    text = (
        f'[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{acme_in}"\n'
        '[partners.other]\nids = ["ZZ:OTHER"]\n'
    )
    settings = config.load(write_config(tmp_path, text, erp_url, erp="max_attempts = 1\n"))
    settings.paths.create()
    return settings, acme_in


def test_the_shared_inbox_takes_a_partner_without_a_folder_and_refuses_one_with(tmp_path, erp):
    """With acme on a folder of its own: other's file in the shared inbox is
    posted, acme's there is refused (nothing posted), acme's in its folder is
    posted."""
    settings, acme_in = acme_and_other(tmp_path, erp.url)
    inbox = settings.paths.inbox
    other, spoof, real = make_po(1), make_po(2), make_po(3)
    (inbox / "other.edi").write_bytes(sent_by(other, "ZZ:OTHER"))
    (inbox / "spoof.edi").write_bytes(sent_by(spoof, "ZZ:ACME"))
    (acme_in / "real.edi").write_bytes(sent_by(real, "ZZ:ACME"))
    assert service.run(settings, once=True) == 0
    posted = {po for _, po in erp.requests}
    assert posted == {po_number(other), po_number(real)}
    with opened(settings) as db:
        jobs = {Path(j["file_name"]).name: j for j in queries.list_jobs(db, limit=10)}
    assert jobs["spoof.edi"]["status"] == "failed"
    assert "acme" in (jobs["spoof.edi"]["error"] or "")


def test_a_file_mixing_a_folder_partners_interchange_posts_none_of_its(tmp_path, erp):
    """One file, two interchanges: other's, then one sent as acme (who has a
    folder). In the shared inbox acme's order is never posted."""
    settings, _ = acme_and_other(tmp_path, erp.url)
    first, second = sent_by(make_po(4), "ZZ:OTHER"), sent_by(make_po(5), "ZZ:ACME")
    (settings.paths.inbox / "mixed.edi").write_bytes(first + b"\n" + second)
    assert service.run(settings, once=True) == 0
    assert po_number(second) not in {po for _, po in erp.requests}


def test_process_without_partner_on_a_folder_partners_file_is_refused_clearly(tmp_path, erp):
    """`edi-inbox process FILE` (no --partner) on a file acme sent: as the
    shared inbox would, refused (exit 1, nothing posted), and the message says
    to use --partner."""
    settings, _ = acme_and_other(tmp_path, erp.url)
    path = tmp_path / "by-hand" / "po.edi"  # a copy: process refuses one in acme's inbox
    path.parent.mkdir()
    path.write_bytes(sent_by(make_po(6), "ZZ:ACME"))
    command = [sys.executable, "-m", "edi_inbox.cli", "--config", str(settings.source)]
    done = subprocess.run(
        [*command, "process", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert erp.requests == []
    assert "--partner" in done.stdout + done.stderr, done.stdout + done.stderr
    done = subprocess.run(
        [*command, "process", "--partner", "acme", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(erp.requests) == 1


# -- 5. a partner's inbox gone while its files are in flight ------------------------------------


def sftp_account(base: Path, name: str, uid: int) -> Path:
    inbox = base / "sftp" / name / "in"
    inbox.mkdir(parents=True)
    os.chown(inbox, uid, uids.GROUP)
    os.chmod(inbox, 0o2770)
    return inbox


def section(name: str, sender: str, inbox: Path) -> str:
    return f"[partners.{name}]\nids = [{json.dumps(sender)}]\ninbox = {json.dumps(str(inbox))}\n"


def test_a_partners_inbox_moved_away_with_files_in_flight_and_back(shared_root, erp):
    """acme's folder moved away (mv in in.old) while one of its files waits at
    the ERP and another waits its turn, for longer than the daemon waits
    (inbox_gone), then moved back: both filed once, each posted once."""
    acme_in = sftp_account(shared_root.parent, "acme", uids.PARTNER)
    away = acme_in.with_name("in.old")
    daemon = Daemon(
        shared_root, erp.url, user=True, workers=1, extra=section("acme", "ZZ:ACME", acme_in)
    )
    try:
        daemon.start()
        erp.gate.clear()
        uids.upload(acme_in / "po1.edi", sent_by(make_po(11), "ZZ:ACME"), uids.PARTNER)
        poll_until(lambda: erp.requests, what="po1 at the ERP")
        uids.upload(acme_in / "po2.edi", sent_by(make_po(12), "ZZ:ACME"), uids.PARTNER)
        os.rename(acme_in, away)
        (gone,) = poll_until(lambda: daemon.events("inbox_gone"), timeout=20, what="inbox_gone")
        assert gone.get("partner") == "acme"
        erp.gate.set()
        poll_until(lambda: "po1.edi" in daemon.listing(daemon.done), what="po1 filed")
        os.rename(away, acme_in)
        poll_until(lambda: daemon.events("inbox_back"), what="inbox_back")
        poll_until(lambda: all_done(daemon, 2), timeout=20, what="po1 and po2 filed")
        assert daemon.listing(daemon.done) == ["po1.edi", "po2.edi"]
        assert all(n == 1 for n in erp.posts_per_key().values())
        assert all(len(keys) == 1 for keys in erp.keys_by_po().values())
        assert len(erp.keys_by_po()) == 2
        assert not daemon.listing(acme_in) and not (away.exists() and os.listdir(away))
        assert daemon.terminate(timeout=10) == 0
    finally:
        erp.gate.set()
        daemon.close()


# -- 6. status and partners while a partner's inbox is missing ----------------------------------


def test_status_and_partners_while_a_partners_inbox_is_missing(shared_root, erp):
    """The daemon runs, acme's folder is gone (inbox_gone), globex's is there:
    status exits 0 (a daemon runs) and says acme's folder is missing, text and
    JSON; partners lists both; after the daemon stops, status exits 3."""
    acme_in = sftp_account(shared_root.parent, "acme", uids.PARTNER)
    globex_in = sftp_account(shared_root.parent, "globex", uids.PARTNER2)
    extra = section("acme", "ZZ:ACME", acme_in) + section("globex", "ZZ:GLOBEX", globex_in)
    daemon = Daemon(shared_root, erp.url, user=True, extra=extra)
    try:
        daemon.start()
        acme_in.rmdir()
        poll_until(lambda: daemon.events("inbox_gone"), timeout=20, what="inbox_gone")
        uids.upload(globex_in / "g.edi", sent_by(make_po(21), "ZZ:GLOBEX"), uids.PARTNER2)
        poll_until(lambda: "g.edi" in daemon.listing(daemon.done), what="globex's file filed")

        def said_missing() -> subprocess.CompletedProcess[str] | None:
            done = daemon.cli("status", "--json")
            doc = json.loads(done.stdout)
            return done if "acme" in json.dumps(doc.get("daemons")) else None

        status = poll_until(said_missing, timeout=10, what="the heartbeat's last error")
        assert status.returncode == 0, status.stderr
        doc = json.loads(status.stdout)
        by_name = {p["name"]: p for p in doc["partners"]}
        assert by_name["acme"]["inbox"]["waiting"] is None
        assert by_name["globex"]["inbox"]["waiting"] == 0
        text = daemon.cli("status")
        assert text.returncode == 0, text.stderr
        line = next(ln for ln in text.stdout.splitlines() if ln.startswith("partner acme"))
        assert "missing" in line or str(acme_in) in line, text.stdout
        partners = daemon.cli("partners", "--json")
        assert partners.returncode == 0, partners.stderr
        names = {p["name"] for p in json.loads(partners.stdout)["partners"]}
        assert names == {"acme", "globex"}
        assert daemon.cli("partners").returncode == 0
        assert daemon.terminate(timeout=10) == 0
        assert daemon.cli("status").returncode == 3
    finally:
        daemon.close()


# -- 7. the defaults: run --once in a fresh folder ----------------------------------------------


def test_run_once_with_the_default_config_in_a_fresh_folder(tmp_path):
    """A config naming only the root (processes = "auto", workers = 16, the ERP
    an outbox): `run --once` on 20 settled files starts worker processes, files
    all 20, exits 0 quickly and leaves no worker process behind."""
    state = tmp_path / "state"
    (state / "inbox").mkdir(parents=True)
    config_file = tmp_path / "edi-inbox.toml"
    config_file.write_text(f"[paths]\nroot = {json.dumps(str(state))}\n")
    past = time.time() - 60
    for n in range(20):
        path = state / "inbox" / f"po{n:02d}.edi"
        path.write_bytes(make_po(300 + n))
        os.utime(path, (past, past))
    env = {k: v for k, v in os.environ.items() if k not in ("EDI_INBOX_CONFIG", "NOTIFY_SOCKET")}
    command = [sys.executable, "-m", "edi_inbox.cli", "--config", str(config_file), "run", "--once"]
    started = time.monotonic()
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert took < 15, f"run --once took {took:.1f} s"
    assert len(os.listdir(state / "done")) == 20
    assert len(os.listdir(state / "outbox")) == 20
    assert not os.listdir(state / "inbox") and not os.listdir(state / "failed")
    docs = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    (started_event,) = [d for d in docs if d.get("event") == "worker_processes_started"]
    assert len(started_event["pids"]) == len(os.sched_getaffinity(0))
    poll_until(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in started_event["pids"]),
        timeout=5,
        what="no worker process left",
    )


def test_a_reload_draining_a_job_the_erp_keeps_refusing_ends_with_the_retries(daemons, erp):
    """The ERP answers 503 to every attempt of the job in flight when the reload
    comes: the reload waits for the attempts (backoff 0.5 s then 1 s), no
    longer; the file fails once, posted with one key, and READY=1 comes."""
    daemon = daemons(erp.url)
    daemon.base_config = daemon.base_config.replace(
        "backoff_initial_seconds = 0.05", "backoff_initial_seconds = 0.5"
    ).replace("backoff_max_seconds = 0.2", "backoff_max_seconds = 1.0")
    daemon.config.write_text(daemon.base_config)
    daemon.start()
    erp.answers = [503] * 3  # max_attempts = 3
    uids.upload(daemon.inbox / "po.edi", make_po(31))
    poll_until(lambda: erp.requests, what="the first attempt")
    started = time.monotonic()
    daemon.reload("")
    took = time.monotonic() - started
    assert took < 0.5 + 1.0 + 3.0, f"the reload took {took:.1f} s"
    poll_until(lambda: "po.edi" in daemon.listing(daemon.failed), what="po.edi failed")
    assert len(erp.requests) == 3 and len(erp.keys_by_po()[erp.requests[0][1]]) == 1
    (job,) = daemon.jobs()
    assert job["status"] == "failed"
    assert daemon.terminate(10) == 0


# -- 1b. PostgreSQL: a lock held by another session ---------------------------------------------


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A database of its own on the test cluster (created, dropped after)."""
    url = os.environ.get("EDI_INBOX_TEST_PG_URL")
    if not url:
        pytest.skip("EDI_INBOX_TEST_PG_URL not set")
    import psycopg2

    name = f"edi_inbox_t2_{os.getpid()}_{int(time.monotonic() * 1000)}"
    admin_conn = psycopg2.connect(url)
    admin_conn.autocommit = True
    try:
        admin_conn.cursor().execute(f"CREATE DATABASE {name}")
        try:
            yield url.rsplit("/", 1)[0] + "/" + name
        finally:
            admin_conn.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        admin_conn.close()


def test_sigterm_while_another_session_locks_the_heartbeat_table(daemons, erp):
    """A DBA's transaction holds a lock on ``daemons`` (LOCK TABLE, ALTER TABLE,
    VACUUM FULL): the daemon still stops on SIGTERM within
    shutdown_timeout_seconds and a few s (its heartbeat cannot be written)."""
    import psycopg2

    with pg_database() as url:
        daemon = daemons(erp.url, shutdown_timeout_seconds=3.0)
        sqlite_url = "sqlite:///" + str(daemon.root / "edi-inbox.db")
        daemon.base_config = daemon.base_config.replace(json.dumps(sqlite_url), json.dumps(url))
        daemon.config.write_text(daemon.base_config)
        daemon.start()
        locker = psycopg2.connect(url)
        try:
            locker.cursor().execute("LOCK TABLE daemons IN ACCESS EXCLUSIVE MODE")
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGTERM)
            try:
                code = daemon.proc.wait(3.0 + 5)
            except subprocess.TimeoutExpired:
                code = None
            assert code == 0, "the daemon did not stop within 8 s of SIGTERM"
        finally:
            locker.rollback()
            locker.close()
            if daemon.alive():
                daemon.kill()


def test_a_reload_while_another_session_locks_the_heartbeat_table_is_answered(daemons, erp):
    """With ``daemons`` locked by another session, SIGHUP gets an answer within
    a few seconds: refused (the database unavailable) or done, READY=1 either way."""
    import psycopg2

    with pg_database() as url:
        daemon = daemons(erp.url)
        sqlite_url = "sqlite:///" + str(daemon.root / "edi-inbox.db")
        daemon.base_config = daemon.base_config.replace(json.dumps(sqlite_url), json.dumps(url))
        daemon.config.write_text(daemon.base_config)
        daemon.start()
        locker = psycopg2.connect(url)
        try:
            locker.cursor().execute("LOCK TABLE daemons IN ACCESS EXCLUSIVE MODE")
            daemon.ready.clear()
            daemon.sighup()
            poll_until(daemon.ready.is_set, timeout=8, what="READY=1 after SIGHUP")
        finally:
            locker.rollback()
            locker.close()
            if daemon.alive():
                daemon.kill()


# -- 2b. SIGHUP to every process of the unit (systemctl kill -s HUP) ----------------------------


def test_sighup_to_every_process_of_the_unit_reloads(daemons, erp):
    """`systemctl kill --signal=HUP edi-inbox` signals the main process and its
    worker processes: the daemon reloads (READY=1), its worker processes are
    not killed, the jobs in flight finish once each."""
    daemon = daemons(erp.url, processes=2)
    daemon.start()
    children = poll_until(
        lambda: (pids := daemon.worker_processes()) and len(pids) == 2 and pids,
        what="two worker processes",
    )
    erp.gate.clear()
    for n in range(2):
        uids.upload(daemon.inbox / f"po{n}.edi", make_po(40 + n))
    poll_until(lambda: len(erp.requests) == 2, what="both at the ERP")
    assert daemon.proc is not None
    daemon.ready.clear()
    for pid in [daemon.proc.pid, *children]:
        os.kill(pid, signal.SIGHUP)
    erp.gate.set()
    poll_until(daemon.ready.is_set, timeout=20, what="READY=1 after the reload")
    poll_until(lambda: all_done(daemon, 2), timeout=20, what="both filed")
    assert not daemon.events("worker_process_died") and not daemon.events("handed_back")
    assert all(n == 1 for n in erp.posts_per_key().values())
    assert daemon.terminate(10) == 0


def test_sigterm_to_every_process_of_the_unit_stops_cleanly(daemons, erp):
    """`systemctl kill edi-inbox` (SIGTERM to the main process and its worker
    processes): the jobs in flight finish within shutdown_timeout_seconds, none
    handed back, exit 0; started again, nothing is posted a second time."""
    daemon = daemons(erp.url, processes=2, shutdown_timeout_seconds=10.0)
    daemon.start()
    children = poll_until(
        lambda: (pids := daemon.worker_processes()) and len(pids) == 2 and pids,
        what="two worker processes",
    )
    erp.gate.clear()
    for n in range(2):
        uids.upload(daemon.inbox / f"po{n}.edi", make_po(50 + n))
    poll_until(lambda: len(erp.requests) == 2, what="both at the ERP")
    assert daemon.proc is not None
    for pid in [daemon.proc.pid, *children]:
        os.kill(pid, signal.SIGTERM)
    erp.gate.set()
    code = daemon.proc.wait(20)
    daemon.start()  # what was handed back runs again
    poll_until(lambda: all_done(daemon, 2), timeout=20, what="both filed")
    assert daemon.terminate(10) == 0
    assert len(erp.requests) == 2, f"posted {len(erp.requests)} times: {erp.requests}"
    assert code == 0 and not daemon.events("handed_back")
