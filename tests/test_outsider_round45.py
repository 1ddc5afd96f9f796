"""Outside tester, round 45: the last hour's changes (schema v10's
``partner_rollups``, ``retry JOB_ID`` through the database, times marked
``Z``, an interrupted job's pending order counted as sent).

What I tried
- The v9 -> v10 migration of a database 939403b (its ``git archive``) filled
  with a partner's jobs, SQLite and PostgreSQL: ``stats --partner`` against
  the partner's jobs counted one by one from ``jobs list`` (held).
- A rolling upgrade: 939403b running on while HEAD's ``db migrate`` takes the
  database to v10 (it does not crash, and records its files), then upgraded
  in place (finding 1); its job cut short and resumed by HEAD (same cause).
- A SIGKILL mid-POST, the partner renamed in the config before the restart
  (interrupted, resumed): ``stats --partner`` of both names, ``partners
  --json`` and ``stats --since`` at each job's start to the microsecond and
  1 us after, against the jobs (held).
- Two ``process --partner`` runs of 12 files at once on one database
  (concurrent upserts of the same hour's and day's partner rows), SQLite and
  PostgreSQL, then ``db reset`` and one more file (held: 24, 0, 1).
- ``retry JOB_ID``: SQLite held ``BEGIN EXCLUSIVE`` by another process, a
  PostgreSQL URL whose server accepts and never answers (~5 s), a file and
  report renamed in failed/, a 254-byte name (report ``JOB_ID.error.json``),
  a prefix (all held). ``jobs list`` prints ``...Z``, the UTC time also
  on PostgreSQL under ``PGTZ``/``TZ`` Asia/Kolkata (held).
- A job handed back at SIGTERM while the ERP held its first order (its
  second never sent), then another file of that second order run by
  ``edi-inbox process`` before the daemon resumes the first: the same order
  (held: one key) and a changed original (finding 2; 939403b does the same).

Found (strict xfails; 1 fixed the same session — ``edi-inbox db rebuild``
recomputes the totals beside running daemons, and README says to run it
once every host is upgraded; 2 left, in README: 939403b did the same; the
changed original fixed on 2026-12-07: rejected while the cut-short job's
version is unanswered)
1. A 939403b host left running after the migration records its jobs with no
   partner totals (README says so "until it is upgraded"), but they stay
   missing for good once it is upgraded: nothing re-adds them (no command
   rebuilds ``partner_rollups``), so ``stats --partner``/Partners page count
   2 of acme's 3 jobs, SQLite and PostgreSQL. Should agree with the jobs
   table once every host runs v10.
   ``test_an_old_host_s_jobs_are_in_partner_totals_once_it_is_upgraded``
2. An original (00) changed in quantity, run while another job holding that
   PO's earlier version pending (never sent) is ``interrupted``, is posted;
   the resumed job then posts its own version under another key: the ERP
   holds two different originals of PO-4502. The pending order "counts as
   sent" for key adoption only; per README ("same identity, other content:
   rejected"; a cut-short run's orders count as sent) the ERP should get one.
   ``test_a_changed_original_beside_a_cut_short_job_s_pending_order``
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from daemons import Daemon, erp
from test_truth import file_of, order

from helpers import BAD, archived_daemon, database_locked, make_po, poll_until, sent_by

__all__ = ["erp"]  # fixtures

PREVIOUS = "939403b"  # the release before the last hour's changes
HERE = Path(__file__).resolve().parent.parent / "daemon"
CLI = [sys.executable, "-m", "edi_inbox.cli"]
PARTNERS = '[partners.acme]\nids = ["ZZ:ACMEFOODS"]\n'


@pytest.fixture
def scratch():
    where = Path(tempfile.mkdtemp(prefix="edi-r45-"))
    os.chmod(where, 0o755)
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


def _listing(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith(".")) if folder.exists() else []


def _edi(code: Path | None, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``edi-inbox --config CONFIG ARGS`` of ``code`` (an archived daemon/) or HEAD."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDI_INBOX_")}
    env["PYTHONPATH"] = str(code if code is not None else HERE)
    command = [sys.executable, "-m", "edi_inbox.cli", "--config", str(config), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, cwd="/")


def _start(daemon: Daemon, code: Path | None, monkeypatch) -> None:
    with monkeypatch.context() as m:
        m.setenv("PYTHONPATH", str(code if code is not None else HERE))
        daemon.start()


def acme(n: int) -> bytes:
    return sent_by(make_po(n), "ZZ:ACMEFOODS")


def _drop(daemon: Daemon, name: str, data: bytes, filed: int) -> None:
    (daemon.inbox / name).write_bytes(data)
    poll_until(
        lambda: len(_listing(daemon.done)) + len(_listing(daemon.failed)) >= filed,
        timeout=20,
        what=f"{name} filed",
    )
    poll_until(lambda: not _listing(daemon.inbox), timeout=10, what="inbox empty")


def _brute(config: Path, partner: str) -> dict[str, int]:
    """The partner's jobs by status, counted one by one from ``jobs list``."""
    done = _edi(None, config, "jobs", "list", "--json", "--limit", "10000", "--partner", partner)
    assert done.returncode == 0, done.stderr
    return dict(Counter(j["status"] for j in json.loads(done.stdout)))


def _partner_stats(config: Path, partner: str, *since: str) -> dict:
    done = _edi(None, config, "stats", "--json", "--partner", partner, *since)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


DBS = ["sqlite", pytest.param("pg", marks=pytest.mark.postgres)]


def _old_daemon(scratch: Path, erp, db: str, request) -> tuple[Path, Daemon]:
    code = archived_daemon(PREVIOUS, scratch / "previous")
    root = scratch / "site"
    root.mkdir()
    old = Daemon(root, erp.url, extra=PARTNERS)
    if db == "pg":
        sqlite = json.dumps("sqlite:///" + str(root / "edi-inbox.db"))
        url = json.dumps(request.getfixturevalue("pg_url"))
        old.config.write_text(old.config.read_text().replace(sqlite, url))
    return code, old


@pytest.mark.parametrize("db", DBS)
def test_v9_to_v10_migration_fills_partner_totals_from_the_jobs(
    scratch, erp, db, request, monkeypatch
):
    """Holds: 939403b records two of acme's files (schema v9); HEAD's
    ``db migrate`` fills ``partner_rollups``: ``stats --partner`` agrees
    with the jobs table."""
    code, old = _old_daemon(scratch, erp, db, request)
    try:
        _start(old, code, monkeypatch)
        _drop(old, "a1.edi", acme(451), 1)
        _drop(old, "a2.edi", acme(452), 2)
    finally:
        old.close()
    migrated = _edi(None, old.config, "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    brute = _brute(old.config, "acme")
    found = _partner_stats(old.config, "acme")
    assert sum(brute.values()) == 2
    assert found["total_jobs"] == sum(brute.values()), (found, brute)
    assert {k: v for k, v in found["by_status"].items() if v} == brute


@pytest.mark.parametrize("db", DBS)
def test_an_old_host_s_jobs_are_in_partner_totals_once_it_is_upgraded(
    scratch, erp, db, request, monkeypatch
):
    """Rolling upgrade on one SQLite file: 939403b runs on while HEAD's
    ``db migrate`` takes the database to v10 (README: such a host "keeps no
    partner's totals, so ``stats --partner`` misses its jobs until it is
    upgraded"). It records a file of acme's, then is upgraded (HEAD runs
    in its place) and records one more. ``stats --partner acme`` should
    count all three jobs the jobs table holds; it counted two, for good
    (fixed: ``db rebuild``, which README now says to run then; one more
    job after it counts once)."""
    code, old = _old_daemon(scratch, erp, db, request)
    new = None
    try:
        _start(old, code, monkeypatch)
        _drop(old, "a1.edi", acme(461), 1)
        migrated = _edi(None, old.config, "db", "migrate")
        assert migrated.returncode == 0, migrated.stderr
        _drop(old, "a2.edi", acme(462), 2)  # the old host, on the v10 database
        old.close()
        config = old.config.read_text()  # (Daemon() writes its own over the same file)
        new = Daemon(old.root, erp.url)
        new.config.write_text(config)
        _start(new, None, monkeypatch)
        _drop(new, "a3.edi", acme(463), 3)
        # README: once every host runs this version, ``db rebuild`` (beside
        # the running daemon) counts the old host's jobs in.
        rebuilt = _edi(None, old.config, "db", "rebuild")
        assert rebuilt.returncode == 0, rebuilt.stderr
        _drop(new, "a4.edi", acme(464), 4)  # a job ending after the rebuild counts once
    finally:
        if new is not None:
            new.close()
        old.close()
    brute = _brute(old.config, "acme")
    assert sum(brute.values()) == 4, brute
    found = _partner_stats(old.config, "acme")
    assert found["total_jobs"] == 4, (found, brute)


def _failed_site(
    scratch: Path, db_url: str | None = None, name: str = "bad.edi", *, first: str | None = None
) -> tuple[Path, Path, str]:
    """A site whose one job failed (a rule: a line of 0), filed in failed/
    by HEAD's ``run --once``: (config, failed/, the job id)."""
    root = scratch / "site"
    (root / "state").mkdir(parents=True)
    config = root / "edi-inbox.toml"

    def write(url: str) -> None:
        config.write_text(
            f"[paths]\nroot = {json.dumps(str(root / 'state'))}\n"
            f"[database]\nurl = {json.dumps(url)}\n"
            '[erp]\nurl = "http://127.0.0.1:9/"\n'
            "[daemon]\nsettle_seconds = 0.05\nprocesses = 1\n"
        )

    write(first or "sqlite:///" + str(root / "edi-inbox.db"))
    for d in ("inbox", "processing", "done", "failed", "acks", "outbox"):
        (root / "state" / d).mkdir()
    (root / "state" / "inbox" / name).write_bytes(BAD)
    ran = _edi(None, config, "run", "--once")
    assert ran.returncode == 0, ran.stderr
    failed = root / "state" / "failed"
    (report,) = [n for n in _listing(failed) if n.endswith(".error.json")]
    assert name in _listing(failed), _listing(failed)
    job_id = json.loads((failed / report).read_text())["job_id"]
    if db_url is not None:
        write(db_url)
    return config, failed, job_id


def test_retry_by_id_while_another_process_holds_sqlite_exclusively(scratch):
    """Holds: ``retry JOB_ID`` (a prefix) with the SQLite file locked
    (``BEGIN EXCLUSIVE`` in another process) still puts the file back."""
    config, failed, job_id = _failed_site(scratch)
    with database_locked(config.parent / "edi-inbox.db"):
        done = _edi(None, config, "retry", job_id[:8])
    assert done.returncode == 0, done.stderr
    assert _listing(failed) == []
    assert _listing(config.parent / "state" / "inbox") == ["bad.edi"]


def test_retry_by_id_with_a_postgresql_that_never_answers(scratch):
    """Holds: the database URL points at a server that accepts connections
    and never says a word: ``retry JOB_ID`` still retries from failed/'s
    reports (within the subprocess's 30 s deadline; ~5 s here)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        url = f"postgresql://u:p@127.0.0.1:{server.getsockname()[1]}/edi"
        config, failed, job_id = _failed_site(scratch, url)
        done = _edi(None, config, "retry", job_id)
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()
    assert done.returncode == 0, done.stderr
    assert _listing(failed) == []


def test_retry_by_id_of_a_file_renamed_in_failed(scratch):
    """Holds (README: "a file renamed in failed/ since, by reading the
    reports there"): the operator renamed the file and its report; the
    record still names the old path; ``retry JOB_ID`` finds it."""
    config, failed, job_id = _failed_site(scratch)
    (failed / "bad.edi").rename(failed / "renamed.edi")
    (failed / "bad.edi.error.json").rename(failed / "renamed.edi.error.json")
    done = _edi(None, config, "retry", job_id)
    assert done.returncode == 0, done.stderr
    assert _listing(failed) == []
    assert _listing(config.parent / "state" / "inbox") == ["renamed.edi"]


def test_jobs_list_marks_times_utc(scratch):
    """Holds: ``jobs list`` prints the start as ``...Z``."""
    config, _, job_id = _failed_site(scratch)
    done = _edi(None, config, "jobs", "list")
    assert done.returncode == 0, done.stderr
    line = next(n for n in done.stdout.splitlines() if job_id[:8] in n)
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", line), line


def test_partner_totals_after_a_kill_mid_post_and_a_rename(scratch, erp, monkeypatch):
    """Holds: acme's file is killed (SIGKILL) while the ERP holds its POST;
    the partner is renamed ``acme2`` in the config before the restart, which
    resumes the claim (interrupted, then run again). ``stats --partner`` of
    both names and ``partners --json`` agree with the jobs table."""
    root = scratch / "site"
    root.mkdir()
    daemon = Daemon(root, erp.url, extra=PARTNERS)
    erp.gate.clear()
    try:
        daemon.start()
        (daemon.inbox / "k1.edi").write_bytes(acme(471))
        poll_until(lambda: erp.requests, timeout=15, what="posting")
        daemon.kill()
        erp.gate.set()
        daemon.config.write_text(
            daemon.config.read_text().replace("partners.acme]", "partners.acme2]")
        )
        daemon.start()
        poll_until(lambda: _listing(daemon.done), timeout=20, what="filed")
        _drop(daemon, "k2.edi", acme(472), 2)
    finally:
        erp.gate.set()
        daemon.close()
    for name in ("acme", "acme2"):
        brute = _brute(daemon.config, name)
        found = _partner_stats(daemon.config, name)
        assert found["total_jobs"] == sum(brute.values()), (name, found, brute)
        assert {k: v for k, v in found["by_status"].items() if v} == brute, (name, found)
    assert _brute(daemon.config, "acme2") == {"succeeded": 2}
    listed = _edi(None, daemon.config, "partners", "--json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = [p for p in json.loads(listed.stdout)["partners"] if p["name"] == "acme2"]
    assert (entry["files"], entry["failures"]) == (2, 0), entry
    # --since at each job's start to the microsecond, and just after it
    listed = _edi(None, daemon.config, "jobs", "list", "--json", "--partner", "acme2")
    starts = sorted(j["started_at"] for j in json.loads(listed.stdout))
    for start in starts:
        moment = datetime.fromisoformat(start)
        for since in (moment, moment + timedelta(microseconds=1)):
            text = since.astimezone(UTC).replace(tzinfo=None).isoformat()
            expected = sum(datetime.fromisoformat(s) >= since for s in starts)
            found = _partner_stats(daemon.config, "acme2", "--since", text)
            assert found["total_jobs"] == expected, (text, starts, found)


def _cut_short_then_other_file(scratch: Path, erp, quantity: str) -> dict[str, set[str]]:
    """f1 (PO-4501, PO-4502 x2) is handed back at SIGTERM while the ERP
    holds PO-4501's POST: PO-4502 never left. While the daemon is down,
    ``edi-inbox process f2`` runs another file of PO-4502 (an original, 00,
    of ``quantity``); then the daemon restarts and resumes f1. The keys the
    ERP was sent, by PO number."""
    root = scratch / "site"
    root.mkdir()
    daemon = Daemon(root, erp.url, shutdown_timeout_seconds=0.5)
    erp.gate.clear()
    try:
        daemon.start()
        (daemon.inbox / "f1.edi").write_bytes(file_of(order(4501), order(4502), icn="000004501"))
        poll_until(lambda: erp.requests, timeout=15, what="PO-4501 posting")
        assert daemon.terminate(20) == 0
        erp.gate.set()
        assert [po for _, po in erp.requests] == ["PO-4501"]
        jobs = json.loads(daemon.cli("jobs", "list", "--json").stdout)
        assert [j["status"] for j in jobs] == ["interrupted"], jobs
        outside = scratch / "f2.edi"
        outside.write_bytes(file_of(order(4502, quantity=quantity), icn="000004502"))
        _edi(None, daemon.config, "process", str(outside))
        daemon.start()
        poll_until(lambda: "f1.edi" in _listing(daemon.done) + _listing(daemon.failed), timeout=20)
        return dict(erp.keys_by_po())
    finally:
        erp.gate.set()
        daemon.close()


def test_the_same_order_from_another_file_beside_a_cut_short_job_goes_once(scratch, erp):
    """Holds: f2 carries the same PO-4502: posted once, under one key."""
    keys = _cut_short_then_other_file(scratch, erp, "2")
    assert len(keys["PO-4502"]) == 1, keys


def test_a_changed_original_beside_a_cut_short_job_s_pending_order(scratch, erp):
    """f2 carries PO-4502 changed (quantity 7) as an original (00). f1's
    PO-4502 counts as sent (HEAD: an interrupted job's pending order may
    have gone); README: "Same identity, other content: rejected". f2 is
    posted (quantity 7) and then f1's resumed run posts its quantity 2 under
    another key: the ERP holds two different originals of one PO. It should
    get one (f2 rejected, or f1's judged against f2's)."""
    keys = _cut_short_then_other_file(scratch, erp, "7")
    assert len(keys["PO-4502"]) == 1, keys


@pytest.mark.parametrize("db", DBS)
def test_partner_totals_of_two_processes_recording_at_once(scratch, erp, db, request):
    """Holds: two ``edi-inbox process --partner acme`` runs of 12 files each,
    at once, on one database (the same hour's and day's partner rows
    upserted by both): ``stats --partner`` and ``stats`` count 24 jobs, as
    the jobs table does."""
    root = scratch / "site"
    (root / "state").mkdir(parents=True)
    url = (
        request.getfixturevalue("pg_url")
        if db == "pg"
        else "sqlite:///" + str(root / "edi-inbox.db")
    )
    config = root / "edi-inbox.toml"
    config.write_text(
        f"[paths]\nroot = {json.dumps(str(root / 'state'))}\n"
        f"[database]\nurl = {json.dumps(url)}\n"
        f"[erp]\nurl = {json.dumps(erp.url)}\n"
        "[daemon]\nsettle_seconds = 0.05\nprocesses = 1\n" + PARTNERS
    )
    migrated = _edi(None, config, "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    batches = []
    for b in range(2):
        folder = scratch / f"files{b}"
        folder.mkdir()
        for i in range(12):
            (folder / f"p{i}.edi").write_bytes(acme(4800 + 20 * b + i))
        batches.append(sorted(str(p) for p in folder.iterdir()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDI_INBOX_")}
    env["PYTHONPATH"] = str(HERE)
    runs = [
        subprocess.Popen(
            [*CLI, "--config", str(config), "process", "--partner", "acme", *files],
            env=env,
            cwd="/",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for files in batches
    ]
    for run in runs:
        _, err = run.communicate(timeout=60)
        assert run.returncode == 0, err[-2000:]
    brute = _brute(config, "acme")
    assert brute == {"succeeded": 24}, brute
    found = _partner_stats(config, "acme")
    assert found["total_jobs"] == 24 and found["by_status"]["succeeded"] == 24, found
    everything = json.loads(_edi(None, config, "stats", "--json").stdout)
    assert everything["total_jobs"] == 24, everything
    # db reset, then one more file: the partner's totals start again
    reset = _edi(None, config, "db", "reset", "--yes")
    assert reset.returncode == 0, reset.stderr
    assert _partner_stats(config, "acme")["total_jobs"] == 0
    _edi(None, config, "process", "--partner", "acme", batches[0][0])
    assert _brute(config, "acme") == {"succeeded": 1}
    assert _partner_stats(config, "acme")["by_status"]["succeeded"] == 1


def test_retry_by_id_of_a_long_name_whose_report_is_named_by_the_job(scratch):
    """Holds: a 254-byte name's report is ``JOB_ID.error.json``; ``retry
    JOB_ID`` through the record finds it and puts the file back as named."""
    name = "x" * 250 + ".edi"
    config, failed, job_id = _failed_site(scratch, name=name)
    assert f"{job_id}.error.json" in _listing(failed), _listing(failed)
    done = _edi(None, config, "retry", job_id[:13])
    assert done.returncode == 0, done.stderr
    assert _listing(failed) == []
    assert _listing(config.parent / "state" / "inbox") == [name]


@pytest.mark.postgres
def test_jobs_list_z_times_are_utc_under_another_session_zone(scratch, pg_url):
    """Holds: PostgreSQL with ``PGTZ``/``TZ`` Asia/Kolkata (+05:30) for the
    CLI: ``jobs list``'s ``...Z`` is the job's UTC start, as ``--json`` has it."""
    config, _, job_id = _failed_site(scratch, first=pg_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDI_INBOX_")}
    env.update(PYTHONPATH=str(HERE), PGTZ="Asia/Kolkata", TZ="Asia/Kolkata")

    def cli(*args: str) -> str:
        done = subprocess.run(
            [*CLI, "--config", str(config), *args],
            capture_output=True, text=True, timeout=60, env=env, cwd="/",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    (job,) = json.loads(cli("jobs", "list", "--json"))
    utc = datetime.fromisoformat(job["started_at"]).astimezone(UTC)
    line = next(n for n in cli("jobs", "list").splitlines() if job_id[:8] in n)
    assert utc.strftime("%Y-%m-%dT%H:%M:%SZ") in line, (line, job["started_at"])
