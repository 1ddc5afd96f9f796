"""The daemon loop, in process: claiming, moving, crash recovery, stopping, systemd notify."""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import os
import signal
import socket
import sqlite3
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from structlog.testing import capture_logs
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.inotify import InotifyObserver
from werkzeug import Request, Response

from edi_inbox import admin, notify, orders, outcomes, procs, queries, service, store, worker
from edi_inbox.claims import host_folder, processing_name, split_processing_name
from edi_inbox.config import DaemonSettings, DatabaseSettings, ErpSettings, PathSettings, Settings
from edi_inbox.errors import EdiInboxError
from edi_inbox.jobs import JobResult, JobStatus, OrderResult
from edi_inbox.outcomes import Mover
from edi_inbox.pipeline import Pipeline
from edi_inbox.service import Service
from edi_inbox.watch import Event
from edi_inbox.x12 import X12Reader

from helpers import BAD, GOOD, claimed, http_server, make_po, poll_until


class Erp:
    """A real HTTP ERP on 127.0.0.1 that counts POSTs per Idempotency-Key."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.url = server.url_for("/orders")
        self.keys: Counter[str] = Counter()
        self.delay = 0.0
        self.released = threading.Event()  # cleared: requests wait until it is set again
        self.released.set()
        self.reject_next = 0
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        server.expect_request("/orders", method="POST").respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        key = request.headers.get("Idempotency-Key", "")
        with self._lock:
            self.keys[key] += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            reject = self.reject_next > 0
            self.reject_next -= reject
        try:
            self.released.wait(60)
            if self.delay:
                time.sleep(self.delay)
            if reject:
                body = {"error": "unknown ship-to"}
                return Response(json.dumps(body), status=422, content_type="application/json")
            body = {"id": f"ERP-{key[:12]}"}
            return Response(json.dumps(body), status=201, content_type="application/json")
        finally:
            with self._lock:
                self.active -= 1

    @property
    def posts(self) -> int:
        return sum(self.keys.values())


@pytest.fixture
def erp():
    with http_server() as server:
        erp = Erp(server)
        try:
            yield erp
        finally:
            erp.released.set()


def make_settings(tmp_path: Path, erp_url: str = "", **daemon: object) -> Settings:
    values: dict[str, object] = {
        "workers": 4,
        "processes": 1,  # the jobs in this process's threads (capture_logs, monkeypatch)
        "settle_seconds": 0.1,
        "incomplete_grace_seconds": 2.0,
        "rescan_seconds": 1.0,
        "heartbeat_seconds": 0.2,
        "shutdown_timeout_seconds": 5.0,
        "observer": "inotify",
    }
    values.update(daemon)
    settings = Settings(
        paths=PathSettings(root=tmp_path),
        erp=ErpSettings(
            url=erp_url,
            max_attempts=2,
            backoff_initial_seconds=0.01,
            backoff_max_seconds=0.02,
            backoff_jitter_seconds=0.0,
            read_timeout_seconds=10.0,
        ),
        daemon=DaemonSettings(**values),  # type: ignore[arg-type]
    )
    settings.paths.create()
    return settings


def open_db(settings: Settings):
    db = store.open_database(settings.database_url, settings)
    store.init(db)
    return db


def query(settings: Settings, sql: str) -> list[dict]:
    """Rows read with plain sqlite3: opening a second peewee database would rebind
    the store's models under a running service."""
    path = settings.database_url[len("sqlite:///") :]
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql)]


def job_rows(settings: Settings) -> list[dict]:
    return query(settings, "SELECT * FROM jobs")


def names(path: Path) -> list[str]:
    return sorted(os.listdir(path))


class Running:
    """A Service with a real pipeline and database, run on a thread."""

    def __init__(
        self, settings: Settings, *, once: bool = False, db: object = None, **kwargs: object
    ) -> None:
        self.db = db or open_db(settings)
        self.pipeline = Pipeline(settings, store.DatabaseRecorder(self.db))
        self.service = Service(settings, self.pipeline, **kwargs)  # type: ignore[arg-type]
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, args=(once,), daemon=True)
        self.thread.start()

    def _run(self, once: bool) -> None:
        try:
            self.code = self.service.run(once=once)
        finally:
            self.pipeline.close()

    def ready(self) -> bool:
        watched = self.service.inboxes.get("")
        return watched is not None and (watched.observer is not None or not self.thread.is_alive())

    def stop(self, timeout: float = 10.0) -> int | None:
        self.service.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the service did not stop"
        return self.code


def sigterm_when(condition, timeout: float = 10.0) -> threading.Thread:
    """Send a real SIGTERM to this process once ``condition()`` holds."""

    def watch() -> None:
        poll_until(condition, timeout)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


# -- burst mode: the backlog present at start ---------------------------------------


def test_once_processes_backlog_and_refuses_unsafe_objects(tmp_path, erp):
    """Files present at start are processed once; links, FIFOs, big files are
    refused; an empty file waits (an upload not written yet: held for
    incomplete_grace_seconds, longer than a burst)."""
    settings = make_settings(tmp_path, erp.url, max_file_bytes=1 << 20)
    inbox = settings.paths.inbox
    for n in range(1, 6):
        (inbox / f"po{n}.edi").write_bytes(make_po(n))
    (inbox / "bad.edi").write_bytes(BAD)
    (inbox / "empty.edi").touch()
    os.symlink("/etc/passwd", inbox / "passwd.edi")
    os.mkfifo(inbox / "fifo.edi")
    outside = tmp_path / "outside.edi"
    outside.write_bytes(make_po(99))
    os.link(outside, inbox / "hardlink.edi")
    with open(inbox / "huge.edi", "wb") as fh:
        fh.truncate(2 * 1024**3)  # 2 GiB, sparse: refused by the cap, never read
    (inbox / "folder.edi").mkdir()

    assert service.run(settings, once=True) == 0

    assert names(settings.paths.done) == [f"po{n}.edi" for n in range(1, 6)]
    refused = ["bad.edi", "fifo.edi", "hardlink.edi", "huge.edi", "passwd.edi"]
    assert names(settings.paths.failed) == sorted([*refused, *(f"{n}.error.json" for n in refused)])
    assert names(inbox) == ["empty.edi", "folder.edi"]  # a directory is left where it is
    assert os.readlink(settings.paths.failed / "passwd.edi") == "/etc/passwd"  # the link moved
    assert len(erp.keys) == 5 and set(erp.keys.values()) == {1}
    codes = {
        name: json.loads((settings.paths.failed / f"{name}.error.json").read_text())[
            "error_details"
        ][0].get("code")
        for name in refused
    }
    assert codes == {
        "bad.edi": "quantity_not_positive",  # CTT01 wrong is only a warning
        "fifo.edi": "fifo",
        "hardlink.edi": "hard_link",
        "huge.edi": "too_large",
        "passwd.edi": "symlink",
    }
    rows = job_rows(settings)
    assert Counter(r["status"] for r in rows) == {"succeeded": 5, "failed": 5}
    assert all(r["file_path"] and "/processing/" not in r["file_path"] for r in rows)


def test_bad_file_error_json_has_reasons_with_positions(tmp_path, erp):
    """failed/NAME.error.json says why, with job id, status and segment positions."""
    settings = make_settings(tmp_path, erp.url)
    (settings.paths.inbox / "bad.edi").write_bytes(GOOD[: len(GOOD) // 2])  # truncated
    Running(settings, once=True, host="test").thread.join(10)
    # once mode leaves a held upload alone: it is still within the grace
    assert names(settings.paths.inbox) == ["bad.edi"]
    settings = make_settings(tmp_path, erp.url, incomplete_grace_seconds=0.0)
    Running(settings, once=True, host="test").thread.join(10)
    report = json.loads((settings.paths.failed / "bad.edi.error.json").read_text())
    assert report["status"] == "failed" and uuid.UUID(report["job_id"])
    assert "truncated" in report["error"]
    assert report["error_details"][0]["segment_number"] > 0


def test_duplicate_upload_not_posted_again(tmp_path, erp):
    """The same bytes uploaded again are recorded as a duplicate; done/ keeps both, no overwrite."""
    settings = make_settings(tmp_path, erp.url)
    (settings.paths.inbox / "po.edi").write_bytes(make_po(7))
    assert service.run(settings, once=True) == 0
    (settings.paths.inbox / "po.edi").write_bytes(make_po(7))
    assert service.run(settings, once=True) == 0
    assert names(settings.paths.done) == ["po.1.edi", "po.edi"]
    assert erp.posts == 1
    assert sorted(r["status"] for r in job_rows(settings)) == ["duplicate", "succeeded"]


def test_name_collisions_never_overwrite(tmp_path, erp):
    """A name already in done/ or failed/ gets a suffix; the old files stay as they were."""
    settings = make_settings(tmp_path, erp.url)
    (settings.paths.done / "po.edi").write_bytes(b"old")
    (settings.paths.failed / "bad.edi").write_bytes(b"old")
    (settings.paths.failed / "bad.edi.error.json").write_bytes(b"{}")
    (settings.paths.inbox / "po.edi").write_bytes(make_po(1))
    (settings.paths.inbox / "bad.edi").write_bytes(BAD)
    assert service.run(settings, once=True) == 0
    assert (settings.paths.done / "po.edi").read_bytes() == b"old"
    assert (settings.paths.done / "po.1.edi").read_bytes() == make_po(1)
    assert (settings.paths.failed / "bad.edi").read_bytes() == b"old"
    assert (settings.paths.failed / "bad.edi.error.json").read_bytes() == b"{}"
    assert (settings.paths.failed / "bad.1.edi").read_bytes() == BAD
    assert json.loads((settings.paths.failed / "bad.1.edi.error.json").read_text())["error"]
    paths = sorted(r["file_path"] for r in job_rows(settings))  # the suffixed names
    assert paths == [
        str(settings.paths.done / "po.1.edi"),
        str(settings.paths.failed / "bad.1.edi"),
    ]


def test_a_failed_files_report_is_in_failed_before_the_file(tmp_path):
    """Whoever watches failed/ finds a file's NAME.error.json there when the
    file arrives (inotify's order of arrivals, through a real observer); a
    name taken by another file, or by another file's report, is skipped,
    nothing overwritten."""
    settings = make_settings(tmp_path)
    failed = settings.paths.failed
    (failed / "bad.edi").write_bytes(b"someone else's")
    (failed / "bad.1.edi.error.json").write_bytes(b"{}")  # a report whose file was retried
    claimed_dir = settings.paths.processing / "host"
    claimed_dir.mkdir()
    (claimed_dir / "bad.edi.job-1").write_bytes(b"mine")
    arrived: list[str] = []

    class Arrivals(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.event_type in ("created", "moved"):
                name = os.path.basename(
                    os.fsdecode(getattr(event, "dest_path", "") or event.src_path)
                )
                if not name.startswith("."):
                    arrived.append(name)

    observer = InotifyObserver()
    observer.schedule(Arrivals(), str(failed))
    observer.start()
    try:
        mover = Mover(settings.paths, clock=time.monotonic)
        result = JobResult(
            job_id="job-1", file_name="bad.edi", status=JobStatus.FAILED, error="rejected"
        )
        assert mover.finish(claimed_dir / "bad.edi.job-1", "bad.edi", result) is None
        poll_until(lambda: "bad.2.edi" in arrived, what="the file's arrival seen")
    finally:
        observer.stop()
        observer.join(10)
    assert arrived == ["bad.2.edi.error.json", "bad.2.edi"]
    assert (failed / "bad.2.edi").read_bytes() == b"mine"
    assert json.loads((failed / "bad.2.edi.error.json").read_text())["file"] == "bad.2.edi"
    assert (failed / "bad.edi").read_bytes() == b"someone else's"
    assert (failed / "bad.1.edi.error.json").read_bytes() == b"{}"
    assert not (failed / "bad.1.edi").exists()


def test_a_report_left_by_the_run_a_job_repeats_is_taken_back(tmp_path):
    """A crash came between a failed file's report and its move: the rerun
    (``retry_of`` that job) files the file under that name, its own report
    in place of the stale one; a report of any other job is left alone."""
    settings = make_settings(tmp_path)
    failed = settings.paths.failed
    claimed_dir = settings.paths.processing / "host"
    claimed_dir.mkdir()
    mover = Mover(settings.paths, clock=time.monotonic)
    first = JobResult(job_id=str(uuid.uuid4()), file_name="bad.edi", status=JobStatus.FAILED)
    other = JobResult(job_id=str(uuid.uuid4()), file_name="odd.edi", status=JobStatus.FAILED)
    for result in (first, other):  # their reports, their files never moved (a SIGKILL)
        report = json.dumps(outcomes.error_report(result, result.file_name), indent=2)
        (failed / f"{result.file_name}.error.json").write_text(report)
    for job in (first, other):
        (claimed_dir / f"{job.file_name}.again").write_bytes(b"mine")
        again = JobResult(
            job_id=str(uuid.uuid4()),
            file_name=job.file_name,
            status=JobStatus.FAILED,
            retry_of=first.job_id,
        )
        assert mover.finish(claimed_dir / f"{job.file_name}.again", job.file_name, again) is None
    said = json.loads((failed / "bad.edi.error.json").read_text())
    assert said["retry_of"] == first.job_id and said["file"] == "bad.edi"
    assert json.loads((failed / "odd.edi.error.json").read_text())["job_id"] == other.job_id
    assert sorted(os.listdir(failed)) == [
        "bad.edi", "bad.edi.error.json", "odd.1.edi", "odd.1.edi.error.json", "odd.edi.error.json",
    ]  # fmt: skip


def test_name_taken_after_the_record_is_corrected(tmp_path):
    """The job's final record foresees done/NAME; if another file takes that name before
    the move, the file still goes elsewhere untouched and the record is corrected."""
    settings = make_settings(tmp_path)
    claimed_dir = settings.paths.processing / "host"
    claimed_dir.mkdir()
    (claimed_dir / "po.edi.job-1").write_bytes(b"mine")
    recorded: list[tuple[str, str]] = []
    mover = Mover(settings.paths, clock=time.monotonic, final_path=lambda *a: recorded.append(a))
    result = JobResult(job_id="job-1", file_name="po.edi", status=JobStatus.SUCCEEDED)
    result.file_path = mover.destination("po.edi", result)
    assert result.file_path == str(settings.paths.done / "po.edi")
    assert mover.finish(claimed_dir / "po.edi.job-1", "po.edi", result) is None
    assert recorded == []  # foreseen right: nothing more to record

    (claimed_dir / "po.edi.job-2").write_bytes(b"second")
    second = JobResult(job_id="job-2", file_name="po.edi", status=JobStatus.SUCCEEDED)
    second.file_path = mover.destination("po.edi", second)
    (settings.paths.done / "po.1.edi").write_bytes(b"someone else")  # the name goes meanwhile
    assert mover.finish(claimed_dir / "po.edi.job-2", "po.edi", second) is None
    assert (settings.paths.done / "po.1.edi").read_bytes() == b"someone else"
    assert (settings.paths.done / "po.2.edi").read_bytes() == b"second"
    assert recorded == [("job-2", str(settings.paths.done / "po.2.edi"), None)]
    assert second.file_path == str(settings.paths.done / "po.2.edi")


def test_odd_names_handled_and_logged_escaped(tmp_path, erp):
    """Spaces, newline, non-UTF-8 bytes, leading dash: processed, names kept, logs escaped."""
    settings = make_settings(tmp_path, erp.url)
    odd = [b"po 1.edi", b"po\nforged.edi", b"po\xff.edi", b"-rf.edi"]
    for n, name in enumerate(odd, 1):
        with open(os.path.join(os.fsencode(settings.paths.inbox), name), "wb") as fh:
            fh.write(make_po(n))
    with capture_logs() as logs:
        assert service.run(settings, once=True) == 0
    assert sorted(os.listdir(os.fsencode(settings.paths.done))) == sorted(odd)
    shown = {e["moved_to"].rsplit("/", 1)[1] for e in logs if e["event"] == "job_finished"}
    assert shown == {"po 1.edi", "po\\nforged.edi", "po\\xff.edi", "-rf.edi"}
    assert erp.posts == 4


def beating(db: object, host: str):
    """A heartbeat callable that writes ``host``'s row, as ``service.run``'s does."""
    started = datetime.now(UTC)

    def beat(counters: dict[str, int], last_error: str | None) -> None:
        store.heartbeat(
            db,  # type: ignore[arg-type]
            f"{host}:1",
            host=host,
            pid=1,
            version="test",
            started_at=started,
            counters=counters,
            last_error=last_error,
        )

    return beat


def as_host(settings: Settings, db: object, host: str) -> dict[str, object]:
    """Service options for one of several hosts: its heartbeat and the others' liveness,
    both in the real database."""
    return {
        "host": host,
        "db": db,
        "heartbeat": beating(db, host),
        "live_hosts": lambda: admin.live_hosts(settings, db),
    }


def claim_left(settings: Settings, host: str, n: int) -> tuple[str, Path]:
    """A file claimed by ``host`` (in its folder of processing/) whose job row is not written."""
    job_id = str(uuid.uuid4())
    folder = settings.paths.processing / host_folder(host)
    folder.mkdir(exist_ok=True)
    path = folder / processing_name(f"po{n}.edi", job_id)
    path.write_bytes(make_po(n))
    return job_id, path


@pytest.mark.parametrize("processes", [1, 2])
def test_two_daemons_share_one_inbox(tmp_path, erp, db_url, processes):
    """Two hosts on one inbox and one database (SQLite, PostgreSQL), with their jobs in
    threads or in worker processes: each file claimed, processed and posted once (the rename
    is the lock), and neither takes the other's fresh claims at start or at a rescan."""
    settings = make_settings(tmp_path, erp.url, workers=3, processes=processes)
    settings = settings.replace(database=DatabaseSettings(url=db_url))
    for n in range(150):
        (settings.paths.inbox / f"po{n:03d}.edi").write_bytes(make_po(n + 1))
    db = open_db(settings)  # one database object per process (peewee binds models to it)
    try:
        first = Running(settings, once=True, **as_host(settings, db, "host-a"))
        second = Running(settings, once=True, **as_host(settings, db, "host-b"))
        first.thread.join(30)
        second.thread.join(30)
        assert first.code == second.code == 0
        assert names(settings.paths.done) == [f"po{n:03d}.edi" for n in range(150)]
        assert len(erp.keys) == 150 and set(erp.keys.values()) == {1}
        done = first.service.counters["succeeded"] + second.service.counters["succeeded"]
        assert done == 150
        jobs = queries.list_jobs(db, limit=1000)
        assert len(jobs) == 150 and {j["status"] for j in jobs} == {"succeeded"}
        assert first.service.counters["taken_over"] == second.service.counters["taken_over"] == 0
        assert claimed(settings.paths.processing) == []
    finally:
        db.close()


def test_claims_of_live_hosts_kept_of_dead_hosts_taken_over_once(tmp_path, erp):
    """A file just claimed by a host with a fresh heartbeat (no job row yet) is left alone; one
    claimed by a host with a stale heartbeat is taken over by exactly one of two racing daemons."""
    settings = make_settings(tmp_path, erp.url, workers=2)
    db = open_db(settings)
    now = datetime.now(UTC)
    stale = now - timedelta(seconds=admin.fresh_seconds(settings.daemon.heartbeat_seconds) + 1)
    store.heartbeat(db, "live:1", host="host-live", pid=1, version="x", started_at=now)
    store.heartbeat(db, "dead:1", host="host-dead", pid=1, version="x", started_at=stale, now=stale)
    _, live_file = claim_left(settings, "host-live", 1)
    dead_job, _ = claim_left(settings, "host-dead", 2)

    racers = [Running(settings, once=True, **as_host(settings, db, h)) for h in ("a", "b")]
    for racer in racers:
        racer.thread.join(30)

    assert [r.code for r in racers] == [0, 0]
    assert claimed(settings.paths.processing) == [live_file.name]  # untouched, still its host's
    assert live_file.read_bytes() == make_po(1)
    assert names(settings.paths.done) == ["po2.edi"]
    assert sum(r.service.counters["taken_over"] for r in racers) == 1
    assert erp.posts == 1
    (row,) = job_rows(settings)
    assert row["retry_of"] == dead_job and row["status"] == "succeeded"


def test_each_host_is_judged_alive_by_the_interval_it_beats_at(tmp_path, erp):
    """Hosts configured apart: one beating every 40 s, last seen 20 s ago, is
    alive to a host beating every 0.5 s (its interval is recorded with its
    heartbeat); one of an older version, which recorded none, is judged by
    the reader's."""
    settings = make_settings(tmp_path, erp.url, heartbeat_seconds=0.5)
    db = open_db(settings)
    try:
        now = datetime.now(UTC)
        before = now - timedelta(seconds=20)
        for host, interval in (("slow", 40.0), ("older", None)):
            store.heartbeat(
                db, f"{host}:1", host=host, pid=1, version="x", started_at=before,
                heartbeat_seconds=interval, now=before,
            )  # fmt: skip
        assert admin.live_hosts(settings, db, now=now) == {"slow"}
    finally:
        db.close()


def test_running_daemon_takes_over_when_a_host_dies(tmp_path, erp):
    """A daemon already running takes over the claims of a host without a heartbeat at a rescan."""
    settings = make_settings(tmp_path, erp.url, rescan_seconds=0.2)
    db = open_db(settings)
    running = Running(settings, **as_host(settings, db, "host-a"))
    poll_until(running.ready)
    claim_left(settings, "host-gone", 3)
    poll_until(lambda: names(settings.paths.done) == ["po3.edi"])
    assert running.stop() == 0
    assert running.service.counters["taken_over"] == 1
    assert claimed(settings.paths.processing) == []


def test_heartbeat_written_before_the_first_claim(tmp_path, erp):
    """The first heartbeat comes before any claim or resume: others see a claiming host alive."""
    settings = make_settings(tmp_path, erp.url)
    (settings.paths.inbox / "po1.edi").write_bytes(make_po(1))
    _, left = claim_left(settings, "host-a", 2)
    first_beat: list[tuple[list[str], list[str]]] = []

    def heartbeat(counters: dict[str, int], last_error: str | None) -> None:
        if not first_beat:
            first_beat.append((names(settings.paths.inbox), claimed(settings.paths.processing)))

    with Pipeline(settings, store.DatabaseRecorder(open_db(settings))) as pipeline:
        assert Service(settings, pipeline, host="host-a", heartbeat=heartbeat).run(once=True) == 0
    assert first_beat == [(["po1.edi"], [left.name])]
    assert names(settings.paths.done) == ["po1.edi", "po2.edi"]


def test_a_worker_thread_that_dies_stops_the_daemon_and_its_file_runs_at_the_next_start(
    tmp_path, erp, monkeypatch
):
    """What ``run_one`` cannot catch (memory exhausted while it handles a
    job's error) ends its worker thread: the daemon stops at once, exit 1,
    "a worker thread died" (systemd starts it again), rather than running on
    a worker short with the file claimed for ever; the next start runs it."""
    settings = make_settings(tmp_path, erp.url, workers=2)
    (settings.paths.inbox / "boom.edi").write_bytes(make_po(1))

    class Exhausted(BaseException):
        """What escapes ``run_one``: a MemoryError raised in its except clause."""

    def exhausted(self, flight, item):  # the file claimed, then
        raise Exhausted

    with monkeypatch.context() as patch, capture_logs() as logs:
        patch.setattr(worker.Worker, "_run", exhausted)
        running = Running(settings)
        poll_until(lambda: not running.thread.is_alive(), timeout=15, what="the daemon to stop")
    assert running.code == 1
    assert running.service.last_error == "a worker thread died"
    store.close_database(running.db)
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "worker_thread_failed",
        "worker_thread_died",
    ]
    (claim,) = claimed(settings.paths.processing)  # kept for the next start
    assert split_processing_name(Path(claim).name)[0] == "boom.edi"
    assert service.run(settings, once=True) == 0
    assert names(settings.paths.done) == ["boom.edi"]


@pytest.mark.parametrize(("processes", "once"), [(1, True), (1, False), (2, True), (2, False)])
def test_max_jobs_stops_and_leaves_the_rest(tmp_path, erp, processes, once):
    """run(max_jobs=N), with more workers than N (threads or worker processes,
    burst or watching): N jobs run and are recorded; the other files stay in
    the inbox, none claimed."""
    settings = make_settings(tmp_path, erp.url, workers=4, processes=processes)
    for n in range(5):
        (settings.paths.inbox / f"po{n}.edi").write_bytes(make_po(n + 1))
    assert service.run(settings, once=once, max_jobs=2) == 0
    assert (len(names(settings.paths.done)), len(names(settings.paths.inbox))) == (2, 3)
    assert claimed(settings.paths.processing) == []
    db = open_db(settings)
    try:
        assert len(queries.list_jobs(db, limit=10)) == 2
    finally:
        store.close_database(db)


def test_max_jobs_counts_the_claims_it_resumes(tmp_path, erp):
    """run(once=True, max_jobs=N) with more claims left behind than N resumes N
    of them; the rest stay claimed for the next start, the inbox untouched."""
    settings = make_settings(tmp_path, erp.url)
    for n in range(1, 4):
        claim_left(settings, socket.gethostname(), n)
    (settings.paths.inbox / "po9.edi").write_bytes(make_po(9))
    assert service.run(settings, once=True, max_jobs=2) == 0
    assert len(names(settings.paths.done)) == 2
    assert len(claimed(settings.paths.processing)) == 1
    assert names(settings.paths.inbox) == ["po9.edi"]


# -- failures while moving, and crashes --------------------------------------------


@pytest.mark.parametrize("processes", [1, 2])
def test_move_failure_keeps_file_claimed_and_retries(tmp_path, erp, processes):
    """A move that fails (any OSError, like a full disk) keeps the file claimed and is retried;
    the daemon's last error says so, also when a worker process met it."""
    settings = make_settings(tmp_path, erp.url, processes=processes)
    done = settings.paths.done
    with capture_logs() as logs:
        running = Running(settings)
        poll_until(running.ready, timeout=30)
        done.rmdir()
        done.write_bytes(b"not a directory")  # link() into it fails with ENOTDIR
        (settings.paths.inbox / "po.edi").write_bytes(make_po(1))
        poll_until(lambda: running.service.pending)
        (held,) = claimed(settings.paths.processing)
        assert held.startswith("po.edi.")
        assert "cannot move a finished file: " in (running.service.last_error or "")
        done.unlink()
        done.mkdir()
        poll_until(lambda: names(done) == ["po.edi"])
        assert running.stop() == 0
    assert names(done) == ["po.edi"] and claimed(settings.paths.processing) == []
    assert erp.posts == 1
    failures = [e for e in logs if e["event"] == "move_failed"]
    if processes == 1:  # a worker process logs its own first failure, out of this capture
        assert 1 <= len(failures) <= 3  # backoff, not a hot loop
        assert "Not a directory" in failures[0]["error"]


def test_a_move_that_fails_or_finds_the_file_gone_leaves_a_true_record(tmp_path, erp):
    """The final record foresees done/NAME; while the move fails, the record says where the
    file is and why; a claimed file removed by hand is recorded as gone, not as in done/."""
    settings = make_settings(tmp_path, erp.url)
    db = open_db(settings)
    running = Running(settings, db=db, final_path=functools.partial(store.record_final_path, db))
    poll_until(running.ready)
    done = settings.paths.done
    done.rmdir()
    done.write_bytes(b"not a directory")
    (settings.paths.inbox / "po.edi").write_bytes(make_po(1))
    poll_until(lambda: running.service.pending)
    (held,) = claimed(settings.paths.processing)
    folder = settings.paths.processing / host_folder(socket.gethostname())
    (job,) = job_rows(settings)
    assert job["status"] == "succeeded" and job["file_path"] == str(folder / held)
    logs = query(settings, "SELECT level, message FROM job_logs WHERE level = 'warning'")
    assert logs[-1]["message"].startswith("cannot move the file to done/: Not a directory")

    (folder / held).unlink()  # by hand, while the move waits for its retry
    done.unlink()
    done.mkdir()
    poll_until(lambda: not running.service.pending)
    assert running.stop() == 0
    (job,) = job_rows(settings)
    assert job["file_path"] is None and names(done) == []
    logs = query(settings, "SELECT message FROM job_logs WHERE level = 'warning'")
    assert "po.edi left processing/ before it was filed" in logs[-1]["message"]


@pytest.mark.parametrize("observer", ["inotify", "polling"])
def test_a_file_appended_to_while_it_runs_runs_again(tmp_path, erp, observer):
    """A writer keeps the upload open past the grace (or, polled, pauses past settle_seconds)
    and appends a second interchange while the first order is being posted: the file is not
    filed as read; it runs again, and each order is posted once."""
    erp.delay = 0.5
    settings = make_settings(
        tmp_path,
        erp.url,
        incomplete_grace_seconds=0.3,
        observer=observer,
        polling_interval_seconds=0.05,
    )
    running = Running(settings)
    poll_until(running.ready)
    with open(settings.paths.inbox / "po.edi", "wb") as upload:
        upload.write(make_po(1))
        upload.flush()
        poll_until(lambda: erp.posts == 1, what="the first order posted")
        upload.write(make_po(2))
    poll_until(lambda: names(settings.paths.done) == ["po.edi"] and erp.posts == 2)
    assert running.stop() == 0
    assert (settings.paths.done / "po.edi").read_bytes() == make_po(1) + make_po(2)
    assert sorted(erp.keys.values()) == [1, 1]
    statuses = sorted(job["status"] for job in job_rows(settings))
    assert statuses == ["interrupted", "succeeded"]
    (changed,) = [job for job in job_rows(settings) if job["status"] == "interrupted"]
    assert "changed while it was processed" in changed["error"]


@pytest.mark.parametrize("layout", ["host folder", "flat (earlier versions)"])
def test_crash_leftover_resumed_without_second_post(tmp_path, erp, layout):
    """A file left in processing/ by a crash (in this host's folder, or directly in processing/ as
    earlier versions left it) is run again (retry_of the old job); an order the ERP already
    accepted is not posted again."""
    settings = make_settings(tmp_path, erp.url)
    data = make_po(42)
    ts = next(X12Reader(io.BytesIO(data)).transaction_sets())
    key = orders.idempotency_key(orders.from_transaction(ts))
    old = JobResult(
        job_id=str(uuid.uuid4()),
        file_name="po.edi",
        status=JobStatus.RUNNING,
        host=socket.gethostname(),
        started_at=datetime.now(UTC),
    )
    db = open_db(settings)
    recorder = store.DatabaseRecorder(db)
    recorder.job_started(old)
    order = OrderResult("42", key, 1, Decimal("1"), None, erp_po_id="E-1")
    recorder.order_accepted(old, order)
    db.close()
    folder = settings.paths.processing
    if layout == "host folder":
        folder = folder / host_folder(socket.gethostname())
        folder.mkdir()
    (folder / f"po.edi.{old.job_id}").write_bytes(data)

    assert service.run(settings, once=True) == 0

    assert names(settings.paths.done) == ["po.edi"]
    assert erp.posts == 0
    rows = {r["job_id"]: r for r in job_rows(settings)}
    assert rows[old.job_id]["status"] == "interrupted"
    (new,) = [r for r in rows.values() if r["job_id"] != old.job_id]
    assert new["retry_of"] == old.job_id and new["status"] == "succeeded"
    assert new["erp_po_id"] == "E-1"


def test_pipeline_exception_fails_only_that_job(tmp_path, erp):
    """An exception escaping the pipeline fails that one job; the other files go on."""
    settings = make_settings(tmp_path, erp.url)

    class Crashing(Pipeline):
        def run(self, path, **kwargs):
            if kwargs.get("file_name") == "boom.edi":
                raise RuntimeError("bug in a step")
            return super().run(path, **kwargs)

    for name, n in (("a.edi", 1), ("boom.edi", 2), ("b.edi", 3)):
        (settings.paths.inbox / name).write_bytes(make_po(n))
    db = open_db(settings)
    recorder = store.DatabaseRecorder(db)
    with Crashing(settings, recorder) as pipeline:
        assert Service(settings, pipeline).run(once=True) == 0
    assert names(settings.paths.done) == ["a.edi", "b.edi"]
    report = json.loads((settings.paths.failed / "boom.edi.error.json").read_text())
    assert "internal error" in report["error"] and "bug in a step" in report["error"]


# -- the watching daemon ------------------------------------------------------------


def test_new_uploads_processed_while_running(tmp_path, erp):
    """A running daemon picks up a file written in place and one renamed from *.filepart."""
    settings = make_settings(tmp_path, erp.url, rescan_seconds=60.0)
    running = Running(settings)
    poll_until(running.ready)
    inbox = settings.paths.inbox
    (inbox / "inplace.edi").write_bytes(make_po(1))
    (inbox / "upload.edi.filepart").write_bytes(make_po(2))
    os.rename(inbox / "upload.edi.filepart", inbox / "upload.edi")
    poll_until(lambda: len(names(settings.paths.done)) == 2)
    assert running.stop() == 0
    assert names(settings.paths.done) == ["inplace.edi", "upload.edi"]
    assert names(inbox) == []


def test_polling_observer_finds_uploads(tmp_path, erp):
    """observer = "polling" (network shares) finds new files between rescans."""
    settings = make_settings(
        tmp_path, erp.url, observer="polling", polling_interval_seconds=0.05, rescan_seconds=60.0
    )
    running = Running(settings)
    poll_until(running.ready)
    assert running.service.inboxes[""].observer_kind == "polling"
    (settings.paths.inbox / "po.edi").write_bytes(make_po(1))
    poll_until(lambda: names(settings.paths.done) == ["po.edi"])
    assert running.stop() == 0


def test_stalled_upload_failed_as_truncated_after_grace(tmp_path, erp):
    """An upload that stops without its trailer is held for the grace, then failed as truncated."""
    settings = make_settings(tmp_path, erp.url, incomplete_grace_seconds=0.6)
    running = Running(settings)
    poll_until(running.ready)
    written = time.monotonic()
    (settings.paths.inbox / "stalled.edi").write_bytes(GOOD[:300])
    poll_until(lambda: (settings.paths.failed / "stalled.edi.error.json").exists())
    assert time.monotonic() - written >= 0.6
    assert running.stop() == 0
    report = json.loads((settings.paths.failed / "stalled.edi.error.json").read_text())
    assert "truncated" in report["error"]
    assert erp.posts == 0


def test_stalled_copy_of_a_large_file_processed_whole_is_left_unanswered(tmp_path, erp):
    """A file over ``edi_content_max_bytes`` (its bytes not in the database)
    posted whole, then a cut-off copy of it (the stalled first try of that
    upload): its file in done/ shows the copy is its beginning, so the
    whole file's answers stand and the copy gets none. Once done/'s file is
    gone nothing shows it: the copy is answered, as any cut-off file."""
    settings = make_settings(tmp_path, erp.url, incomplete_grace_seconds=0.3)
    settings = settings.replace(database=DatabaseSettings(edi_content_max_bytes=100))
    inbox, acks = settings.paths.inbox, settings.paths.acks
    running = Running(settings)
    try:
        poll_until(running.ready)
        (inbox / "whole.edi").write_bytes(GOOD)
        poll_until(lambda: names(settings.paths.done) == ["whole.edi"], what="posted")
        (inbox / "stalled.edi").write_bytes(GOOD[:-20])
        poll_until(lambda: "stalled.edi.error.json" in names(settings.paths.failed))
        assert not [n for n in names(acks) if n.startswith("stalled.edi")]
        (settings.paths.done / "whole.edi").unlink()
        (inbox / "stalled2.edi").write_bytes(GOOD[:-20])
        poll_until(lambda: "stalled2.edi.error.json" in names(settings.paths.failed))
        poll_until(lambda: [n for n in names(acks) if n.startswith("stalled2.edi")])
    finally:
        assert running.stop() == 0
    assert erp.posts == 1
    assert len(GOOD) > 100


def test_control_character_delimiters_are_a_complete_file(tmp_path, erp):
    """A file delimited by \\x1d (elements) and \\x1c (segments) ends with its IEA: it is
    processed once settled, not held for the grace as if still arriving."""
    settings = make_settings(tmp_path, erp.url, incomplete_grace_seconds=300.0)
    running = Running(settings)
    poll_until(running.ready)
    data = make_po(1).replace(b"\n", b"\x1c").replace(b"*", b"\x1d")
    (settings.paths.inbox / "po.edi").write_bytes(data)
    poll_until(lambda: names(settings.paths.done) == ["po.edi"])
    assert running.stop() == 0
    assert erp.posts == 1


def test_slow_erp_posts_overlap(tmp_path, erp):
    """Workers post to the ERP concurrently: a slow ERP does not serialise the daemon."""
    erp.delay = 0.3
    settings = make_settings(tmp_path, erp.url, workers=4)
    for n in range(8):
        (settings.paths.inbox / f"po{n}.edi").write_bytes(make_po(n + 1))
    assert service.run(settings, once=True) == 0
    assert len(names(settings.paths.done)) == 8
    assert erp.max_active >= 3


@pytest.mark.parametrize("budget, at_once", [(0.5, 1), (2.5, 2)])
def test_bytes_in_flight_bound_the_jobs_at_once(tmp_path, erp, budget, at_once):
    """``max_bytes_in_flight``: the files in flight together stay within it
    (a job holds ~25-35x its file in memory), the next waits, oldest first,
    and one file is taken whenever none is in flight, however large."""
    size = len(make_po(1))
    settings = make_settings(tmp_path, erp.url, workers=4, max_bytes_in_flight=int(budget * size))
    for n in range(6):
        (settings.paths.inbox / f"po{n}.edi").write_bytes(make_po(n + 1))
    erp.released.clear()
    running = Running(settings)
    try:
        service = running.service
        poll_until(lambda: erp.active == at_once and service.memory_wait, what="files waiting")
        assert service.bytes_out == at_once * size
        assert "waiting for max_bytes_in_flight" in service._status_line()
        erp.released.set()
        poll_until(lambda: len(names(settings.paths.done)) == 6, what="all filed")
    finally:
        erp.released.set()
        running.stop()
    assert erp.max_active == at_once and erp.posts == 6
    assert running.service.most_bytes == at_once * size


def test_dead_observer_is_restarted(tmp_path, erp):
    """The observer thread dying is noticed: it is restarted, a rescan runs, files still flow."""
    settings = make_settings(tmp_path, erp.url, rescan_seconds=60.0)
    running = Running(settings)
    poll_until(running.ready)
    first = running.service.inboxes[""].observer
    first.stop()
    poll_until(lambda: running.service.counters["observer_restarts"] == 1)
    assert running.service.inboxes[""].observer is not first
    (settings.paths.inbox / "po.edi").write_bytes(make_po(1))
    poll_until(lambda: names(settings.paths.done) == ["po.edi"])
    assert running.stop() == 0


class _DyingObserver(InotifyObserver):
    """A real inotify observer whose thread ends right after it starts."""

    def start(self) -> None:
        super().start()
        self.stop()
        self.join()


def test_observer_that_keeps_dying_exits_nonzero(tmp_path):
    """An observer that dies again and again makes the daemon exit non-zero (systemd restarts)."""
    settings = make_settings(tmp_path)
    running = Running(settings, inotify_factory=_DyingObserver)
    running.thread.join(15)
    assert running.code == 1
    assert running.service.counters["observer_restarts"] >= 1


# -- stopping -----------------------------------------------------------------------------


@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_hands_back_a_job_that_does_not_finish(tmp_path, erp, processes):
    """SIGTERM: a job still running at shutdown_timeout_seconds goes back to the inbox; exit 0.
    Its ``handed_back`` and ``job_interrupted`` lines carry its job_id and file, with its
    job in a thread or in a worker process."""
    erp.released.clear()  # the POST is held until the daemon has stopped
    settings = make_settings(tmp_path, erp.url, shutdown_timeout_seconds=0.3, processes=processes)
    (settings.paths.inbox / "po.edi").write_bytes(make_po(1))
    sigterm_when(lambda: erp.posts >= 1)
    with capture_logs() as logs:
        assert service.run(settings) == 0
    try:
        assert erp.active == 1  # it did not wait for the ERP's answer
        assert names(settings.paths.inbox) == ["po.edi"]
        assert claimed(settings.paths.processing) == []
        assert names(settings.paths.done) == []
        db = open_db(settings)
        try:  # read before the ERP answers: in a thread, the job goes on after run()
            [job] = queries.list_jobs(db, limit=10)  # returns (a process would have exited)
        finally:
            store.close_database(db)
    finally:
        erp.released.set()
    assert job["status"] == "interrupted"
    for event in ("handed_back", "job_interrupted"):
        said = [(e["job_id"], e["file"]) for e in logs if e["event"] == event]
        assert said == [(job["job_id"], "po.edi")], event


def test_sigterm_lets_a_job_in_flight_finish(tmp_path, erp):
    """SIGTERM: a job that finishes within shutdown_timeout_seconds completes; exit 0."""
    erp.delay = 0.4
    settings = make_settings(tmp_path, erp.url, shutdown_timeout_seconds=5.0)
    (settings.paths.inbox / "po.edi").write_bytes(make_po(1))
    sigterm_when(lambda: erp.posts >= 1)
    assert service.run(settings) == 0
    assert names(settings.paths.done) == ["po.edi"]
    assert names(settings.paths.inbox) == []


def test_heartbeat_recorded_and_removed_on_clean_stop(tmp_path):
    """While running, the heartbeat row is in the database; a clean stop removes it."""
    settings = make_settings(tmp_path)

    def beating() -> bool:
        try:
            rows = job_daemons(settings)
        except Exception:
            return False
        return bool(rows) and "succeeded" in json.loads(rows[0]["counters"])

    sigterm_when(beating)
    assert service.run(settings) == 0
    assert job_daemons(settings) == []


def job_daemons(settings: Settings) -> list[dict]:
    return query(settings, "SELECT * FROM daemons")


# -- systemd notify ---------------------------------------------------------------------


@pytest.fixture
def notify_socket():
    """A datagram socket in the abstract namespace, as systemd's NOTIFY_SOCKET may name."""
    name = f"edi-inbox-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.setblocking(False)
    yield "@" + name, sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


def test_notify_path_and_abstract_sockets(tmp_path, notify_socket):
    """sd_notify reaches a path socket and an abstract one; without NOTIFY_SOCKET, nothing."""
    address, sock = notify_socket
    assert notify.notify("READY=1", {"NOTIFY_SOCKET": address})
    assert received(sock) == ["READY=1"]
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other:
        other.bind(str(path))
        assert notify.notify("STATUS=hi", {"NOTIFY_SOCKET": str(path)})
        assert other.recv(100) == b"STATUS=hi"
    assert not notify.notify("READY=1", {})
    assert not notify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "missing")})


def test_notify_never_blocks_on_a_full_queue(notify_socket):
    """A listener that stopped reading (queue full) costs at most the timeout, never a hang."""
    address, sock = notify_socket
    environ = {"NOTIFY_SOCKET": address}
    while notify.notify("STATUS=filling", environ):
        pass  # until the receiver's queue (net.unix.max_dgram_qlen) is full
    started = time.monotonic()
    assert not notify.notify("STOPPING=1", environ, timeout=0.2)
    assert 0.15 < time.monotonic() - started < 2.0
    received(sock)
    assert notify.notify("STOPPING=1", environ, timeout=0.2)


def test_watchdog_interval():
    """WATCHDOG=1 is due at half WATCHDOG_USEC, and only for the process WATCHDOG_PID names."""
    assert notify.watchdog_interval({"WATCHDOG_USEC": "20000000"}) == 10.0
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert notify.watchdog_interval(mine) == 1.0
    assert notify.watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
    assert notify.watchdog_interval({}) is None


def test_ready_watchdog_status_stopping(tmp_path, notify_socket):
    """READY=1 after the first scan, WATCHDOG=1 while healthy, STATUS= lines, STOPPING=1 on stop."""
    address, sock = notify_socket
    settings = make_settings(tmp_path)
    environ = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}
    running = Running(settings, environ=environ)
    seen: list[str] = []

    def got(prefix: str) -> bool:
        seen.extend(received(sock))
        return any(m.startswith(prefix) for m in seen)

    poll_until(lambda: got("READY=1"))
    poll_until(lambda: got("WATCHDOG=1"))
    poll_until(lambda: got("STATUS=queue"))
    assert running.stop() == 0
    poll_until(lambda: got("STOPPING=1"))
    assert seen.index(next(m for m in seen if m.startswith("READY=1"))) == 0


def test_missing_inbox_exits_nonzero_without_ready(tmp_path, notify_socket):
    """A missing inbox: a clear error, exit 1, and no READY=1."""
    address, sock = notify_socket
    settings = make_settings(tmp_path)
    settings.paths.inbox.rmdir()
    with capture_logs() as logs:
        code = Running(settings, environ={"NOTIFY_SOCKET": address}).stop()
    assert code == 1
    assert received(sock) == []
    assert logs[-1]["event"] == "cannot_start" and "No such file" in logs[-1]["error"]


class _LimitReached:
    """Stands in for InotifyObserver when the kernel's limit is reached (cannot be had safely)."""

    def __init__(self) -> None:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")


def test_watch_limit_exits_nonzero_without_ready(tmp_path, notify_socket):
    """observer = "inotify" and the watch limit reached: a clear error, exit 1, no READY=1."""
    address, sock = notify_socket
    settings = make_settings(tmp_path, observer="inotify")
    running = Running(settings, environ={"NOTIFY_SOCKET": address}, inotify_factory=_LimitReached)
    running.thread.join(10)
    assert running.code == 1
    assert received(sock) == []


# -- retry ------------------------------------------------------------------------------


def test_retry_puts_failed_file_back_as_retry_of(tmp_path, erp):
    """retry JOB_ID: the failed file returns to the inbox; its next job records retry_of."""
    settings = make_settings(tmp_path, erp.url)
    erp.reject_next = 1
    (settings.paths.inbox / "po.edi").write_bytes(make_po(5))
    assert service.run(settings, once=True) == 0
    report = json.loads((settings.paths.failed / "po.edi.error.json").read_text())
    assert "the ERP rejected order" in report["error"]  # the ERP's own words stay ours

    (result,) = admin.retry(settings, report["job_id"])
    assert result["retried"] and result["inbox_name"] == "po.edi"
    assert names(settings.paths.inbox) == ["po.edi"]
    assert names(settings.paths.failed) == []

    assert service.run(settings, once=True) == 0
    assert names(settings.paths.done) == ["po.edi"]
    rows = {r["job_id"]: r for r in job_rows(settings)}
    (new,) = [r for r in rows.values() if r["job_id"] != report["job_id"]]
    assert new["retry_of"] == report["job_id"] and new["status"] == "succeeded"
    assert names(settings.paths.processing / ".retry") == []  # the marker was used up


def test_retry_by_prefix_all_failed_and_unknown_job(tmp_path, erp):
    """retry takes a job id's prefix, as README's example (``retry 3f2a9c1e``)
    and ``jobs show`` do; --all-failed returns every failed file; an unknown
    job id is a clear error."""
    settings = make_settings(tmp_path, erp.url)
    (settings.paths.inbox / "a.edi").write_bytes(BAD)
    (settings.paths.inbox / "b.edi").write_bytes(b"not edi at all\n")
    (settings.paths.inbox / "c.edi").write_bytes(b"nor this\n")
    assert service.run(settings, once=True) == 0
    report = json.loads((settings.paths.failed / "c.edi.error.json").read_text())
    (result,) = admin.retry(settings, report["job_id"][:8].upper())
    assert result["job_id"] == report["job_id"] and result["inbox_name"] == "c.edi"
    results = admin.retry(settings, all_failed=True)
    assert sorted(r["inbox_name"] for r in results) == ["a.edi", "b.edi"]
    with pytest.raises(EdiInboxError, match="no failed file"):
        admin.retry(settings, "no-such-job")


def test_retry_with_the_records_finds_the_report_or_searches_failed(tmp_path, erp):
    """With the database, retry goes to the report where the job's record
    says its file was filed; a file the operator renamed in failed/ since (the
    record no longer leads to it) is found by reading the reports, and so is
    a prefix; an unknown job is the same clear error."""
    settings = make_settings(tmp_path, erp.url)
    for name in ("a.edi", "b.edi"):
        (settings.paths.inbox / name).write_bytes(BAD)
    assert service.run(settings, once=True) == 0
    failed = settings.paths.failed
    a, b = (json.loads((failed / f"{n}.error.json").read_text()) for n in ("a.edi", "b.edi"))
    (failed / "b.edi").rename(failed / "b2.edi")
    (failed / "b.edi.error.json").rename(failed / "b2.edi.error.json")
    db = open_db(settings)
    try:
        (first,) = admin.retry(settings, a["job_id"], db=db)
        (second,) = admin.retry(settings, b["job_id"][:8], db=db)
        with pytest.raises(EdiInboxError, match="no failed file"):
            admin.retry(settings, "no-such-job", db=db)
    finally:
        store.close_database(db)
    assert (first["inbox_name"], second["inbox_name"]) == ("a.edi", "b2.edi")
    assert names(settings.paths.inbox) == ["a.edi", "b2.edi"] and names(failed) == []


# -- small pieces -----------------------------------------------------------------------


def test_processing_names():
    """NAME.<job_id> round-trips, and a long name is cut to fit 255 bytes."""
    job = str(uuid.uuid4())
    assert split_processing_name(processing_name("po.x12", job)) == ("po.x12", job)
    long = processing_name("é" * 200, job)
    assert len(os.fsencode(long)) <= 255 and long.endswith("." + job)
    assert split_processing_name("stray") == ("stray", None)


def test_status_reports_daemons_backlog_and_folders(tmp_path):
    """status(): a fresh heartbeat means running; the backlog and folder counts are there."""
    settings = make_settings(tmp_path)
    (settings.paths.inbox / "waiting.edi").touch()
    (settings.paths.inbox / "upload.edi.filepart").touch()
    (settings.paths.processing / "host-x").mkdir()
    (settings.paths.processing / "host-x" / "po.edi.1").touch()
    db = open_db(settings)
    try:
        assert admin.status(settings, db)["running"] is False
        started = datetime.now(UTC)
        store.heartbeat(db, "d1", host="h", pid=1, version="x", started_at=started)
        doc = admin.status(settings, db)
    finally:
        db.close()
    assert doc["running"] is True and doc["daemons"][0]["alive"] is True
    assert doc["inbox"]["waiting"] == 1 and doc["inbox"]["oldest_age_seconds"] >= 0
    assert doc["folders"]["inbox"] == 2 and "last_24h" in doc and "jobs_running" in doc
    assert doc["folders"]["processing"] == 1 and doc["claimed"] == {"host-x": 1}


def test_folder_counts(tmp_path):
    """folder_counts (for status) counts files per folder, error.json and markers aside."""
    settings = make_settings(tmp_path)
    (settings.paths.inbox / "a.edi").touch()
    (settings.paths.failed / "b.edi").touch()
    (settings.paths.failed / "b.edi.error.json").touch()
    assert admin.folder_counts(settings) == {"inbox": 1, "processing": 0, "done": 0, "failed": 1}


@pytest.mark.parametrize(
    ("workers", "processes", "expected"),
    [(4, 2, [2, 2]), (5, 2, [3, 2]), (8, 3, [3, 3, 2]), (1, 2, [1]), (3, 1, [3])],
)
def test_workers_spread_over_worker_processes(workers, processes, expected):
    """Each worker process runs its share of the workers; never a process with none."""
    assert procs.shares(workers, processes) == expected


def test_the_daemon_checkpoints_sqlite_beside_its_workers(tmp_path, erp, monkeypatch):
    """run: the WAL is checkpointed by the daemon's Checkpointer thread (started
    with the service, stopped with it), its connections and worker processes'
    never checkpoint in a commit."""
    started: list[store.Checkpointer] = []

    class Quick(store.Checkpointer):  # the real one, with a low mark and a short turn
        def __init__(self, db, **kwargs):
            super().__init__(db, pages=20, interval=0.02)
            started.append(self)

    monkeypatch.setattr(store, "Checkpointer", Quick)
    settings = make_settings(tmp_path, erp.url, processes=2, workers=2)
    for n in range(1, 13):
        (settings.paths.inbox / f"po{n}.edi").write_bytes(make_po(n))
    assert service.run(settings, once=True) == 0
    assert len(names(settings.paths.done)) == 12
    (checkpointer,) = started
    assert checkpointer.restarts >= 1 and not checkpointer._thread.is_alive()
    db = store.open_database(settings.database_url, settings)
    assert queries.stats(db)["total_jobs"] == 12
    store.close_database(db)


def test_with_a_backlog_each_worker_process_gets_its_next_file_ahead(tmp_path, erp):
    """Worker processes: while a child runs a unit and more work waits than there
    are relays, its next unit is already at it (it goes on without waiting to be
    woken); every file still ends in done/ and every order is posted once."""
    erp.delay = 0.3
    settings = make_settings(tmp_path, erp.url, processes=2, workers=2)
    for n in range(1, 9):
        (settings.paths.inbox / f"po{n}.edi").write_bytes(make_po(n))
    running = Running(settings, once=True)
    poll_until(lambda: running.service._in_flight() == 4, what="two units at each child")
    running.thread.join(30)
    assert running.code == 0
    assert names(settings.paths.done) == sorted(f"po{n}.edi" for n in range(1, 9))
    assert len(erp.keys) == 8 and set(erp.keys.values()) == {1}


def test_a_backlog_waits_in_the_tracker_not_in_the_queue(tmp_path, erp):
    """A backlog larger than the work queue's limit: the queue never holds more
    than the limit (memory does not grow with the backlog), every file is
    processed once, oldest (mtime) first, not in name order."""
    settings = make_settings(tmp_path, erp.url, workers=1)
    inbox = settings.paths.inbox
    count = 50
    for n in range(count):
        path = inbox / f"po{n:02d}.edi"
        path.write_bytes(make_po(n + 1))
        age = 1_700_000_000_000_000_000 - n * 1_000_000  # the last name is the oldest
        os.utime(path, ns=(age, age))
    with Pipeline(settings, store.DatabaseRecorder(open_db(settings))) as pipeline:
        daemon = Service(settings, pipeline)
        assert daemon.queue_limit < count
        assert daemon.run(once=True) == 0
    assert 0 < daemon.most_queued <= daemon.queue_limit
    assert names(settings.paths.done) == sorted(f"po{n:02d}.edi" for n in range(count))
    started = [r["file_name"] for r in query(settings, "SELECT file_name FROM jobs ORDER BY rowid")]
    assert started == [f"po{n:02d}.edi" for n in reversed(range(count))]


def test_a_close_still_queued_as_the_watch_stops_carries_no_open(tmp_path, erp):
    """An upload's open is counted, its close still in the event queue when
    the daemon stops (a reload): what it carries to the next configuration
    is the count after the queued events, so a closed upload is not carried
    open (it would wait out the grace). Round 21 saw it in ~1 reload of 5."""
    settings = make_settings(tmp_path, erp.url)
    db = open_db(settings)
    pipeline = Pipeline(settings, store.DatabaseRecorder(db))
    service = Service(settings, pipeline)
    try:
        service._open_inboxes()  # the loop is not run: the queue is as the stop finds it
        (settings.paths.inbox / "po.edi").write_bytes(make_po(3101))
        (settings.paths.inbox / "other.edi").write_bytes(make_po(3102)[:100])
        service.inboxes[""].tracker.event(Event.OPENED, "po.edi")  # handled
        service.events.put(("fs", Event.CLOSED_WRITE, "po.edi", ""))  # not yet
        service.events.put(("fs", Event.OPENED, "other.edi", ""))  # open at the stop
        service._shutdown()
        assert set(service.open_at_stop[str(settings.paths.inbox)]) == {"other.edi"}
    finally:
        pipeline.close()
