"""Job records: the recorder, schema versions and the service's writes, on
SQLite and PostgreSQL alike (the ``db`` fixture runs each test on both)."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import peewee as pw
import pytest
from conftest import T0, initialised, make_job, record

from edi_inbox import orders, queries, store
from edi_inbox.config import DatabaseSettings, Settings
from edi_inbox.errors import DatabaseUnavailable, StoreError
from edi_inbox.jobs import Interchange, JobStatus, LogEntry, NullRecorder, StepResult, StepStatus

from helpers import poll_until


def reopen(db: store.Database, settings: Settings) -> store.Database:
    """A second handle on the same database, as after a daemon restart."""
    url = f"sqlite:///{db.database}" if db.is_sqlite else db.database
    store.close_database(db)
    again = store.open_database(url, settings, retry_seconds=20)
    store.init(again)
    return again


def sqlite_at(path: Path, **database: Any) -> store.Database:
    """An initialised SQLite database at ``path`` with these ``[database]`` settings."""
    db = store.open_database(f"sqlite:///{path}", Settings(database=DatabaseSettings(**database)))
    store.init(db)
    return db


def test_job_round_trips_as_its_json(db, recorder):
    """A recorded job reads back as exactly what JobResult.to_json() said."""
    job = make_job(1, vendor="MÜLLER Straße GmbH", amounts=(Decimal("12345678901234.5678"),))
    record(recorder, job)
    assert queries.show_job(db, job.job_id) == job.to_json()


def test_text_with_a_nul_is_recorded_and_found_on_both_databases(db, recorder):
    """A NUL in a partner's name or PO number (legacy fixed-width padding):
    SQLite keeps it, PostgreSQL's text cannot, so there it is U+FFFD, in the
    record; the payload (JSON, ``\\u0000``) keeps it on both; a search key
    takes it as a space on both; the posted order is found by its PO number."""
    po_number = "PO-N\0UL"
    job = make_job(1, po_numbers=(po_number,), vendor="ACME\0CORP")
    order = job.orders[0]
    order.payload = {"sender_qualifier": "ZZ", "sender_id": "S1", "po_number": po_number}
    record(recorder, job)
    expected = json.dumps(job.to_json())
    if not db.is_sqlite:
        expected = expected.replace("\\u0000", "\\ufffd")
    assert queries.show_job(db, job.job_id) == json.loads(expected)
    for term in (po_number, "po-n\0", "PO-N UL"):  # a NUL searches as a space
        assert [j["job_id"] for j in queries.search_jobs(db, po_number=term)] == [job.job_id]
    for term in ("ACME\0CORP", "acme corp", "e\0c"):
        assert [j["job_id"] for j in queries.search_jobs(db, vendor=term)] == [job.job_id]
    (posted,) = recorder.find_sent(("ZZ", "S1"), po_number)
    assert (posted.job_id, posted.erp_po_id) == (job.job_id, order.erp_po_id)
    assert recorder.find_sent(("ZZ", "S1"), "PO-N\ufffdUL") == []  # another PO number


def test_job_written_only_at_its_end_round_trips(db, recorder):
    """A job that never reached the ERP is written once, by job_finished: the
    row, its steps, logs, interchanges, search keys and rollups together."""
    job = make_job(5, status=JobStatus.FAILED)
    job.orders[0].erp_po_id = None
    recorder.job_finished(job, job.logs, job.steps)
    assert queries.show_job(db, job.job_id) == job.to_json()
    assert {k: v for k, v in queries.stats(db)["by_status"].items() if v} == {"failed": 1}
    assert [j["job_id"] for j in queries.search_jobs(db, po_number=job.po_number[1:])] == [
        job.job_id
    ]


def test_multi_order_file_summary(db, recorder):
    """A file with several 850s: first PO, summed total, first vendor, every order."""
    job = make_job(
        2,
        po_numbers=("PO-A1", "PO-B2", "PO-C3"),
        amounts=(Decimal("0.10"), Decimal("0.20"), Decimal("0.30")),
    )
    job.orders[0].vendor_name = None
    record(recorder, job)
    shown = queries.show_job(db, job.job_id)
    assert shown["po_number"] == "PO-A1"
    assert shown["total_amount"] == "0.60"
    assert shown["vendor_name"] == "ACME Corp"
    assert [o["po_number"] for o in shown["orders"]] == ["PO-A1", "PO-B2", "PO-C3"]
    assert shown["erp_po_id"] == "ERP-2-0,ERP-2-1,ERP-2-2"


def test_failed_step_write_leaves_nothing_half_written(db, recorder):
    """A log line that fails rolls back the job row and its steps too, and leaves no lock behind."""
    job = make_job(3)
    job.status = JobStatus.RUNNING
    bad = LogEntry(T0, None, "no level", {})  # type: ignore[arg-type]  # NOT NULL
    with pytest.raises(pw.IntegrityError):
        recorder.job_started(job, job.steps[:1], [bad])
    assert not db.in_transaction()
    assert queries.show_job(db, job.job_id) is None
    if db.is_sqlite:  # another writer gets the lock at once
        other = sqlite3.connect(db.database, timeout=0)
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        other.close()
    recorder.job_started(job, job.steps[:1], [job.logs[0]])
    assert [s["step_name"] for s in queries.show_job(db, job.job_id)["steps"]] == ["parse"]


def test_accepted_order_survives_a_crash_and_resume(db, recorder, settings):
    """An accepted ERP id outlives a crash; the job is interrupted, resumed, counted once."""
    job = make_job(4)
    job.status = JobStatus.RUNNING
    accepted = job.orders[0].erp_po_id
    job.orders[0].erp_po_id = None
    assert recorder.job_started(job, job.steps[:1], job.logs[:1]).accepted == {}
    job.orders[0].erp_po_id = accepted
    recorder.order_accepted(job, job.orders[0])

    db = reopen(db, settings)  # the daemon died here
    again = store.DatabaseRecorder(db)
    interrupted = store.mark_interrupted(db, "host-a")
    assert [j["job_id"] for j in interrupted] == [job.job_id]
    assert queries.stats(db)["by_status"]["interrupted"] == 1

    job.orders.append(replace(job.orders[0], idempotency_key="no such key", erp_po_id=None))
    known = again.job_started(job).accepted  # the run after the restart: not posted again
    assert known == {job.orders[0].idempotency_key: "ERP-4-0"}
    job.orders[1].erp_po_id, job.orders[1].status = "ERP-4-1", "posted"
    job.status = JobStatus.SUCCEEDED
    again.job_finished(job, [], job.steps)
    shown = queries.show_job(db, job.job_id)
    assert shown["status"] == "succeeded" and shown["error"] is None
    assert len(shown["steps"]) == 5
    assert [o["erp_po_id"] for o in shown["orders"]] == ["ERP-4-0", "ERP-4-1"]
    stats = queries.stats(db)
    assert stats["total_jobs"] == 1
    assert stats["by_status"]["interrupted"] == 0 and stats["by_status"]["succeeded"] == 1


def test_reused_interchange_is_seen_not_a_duplicate(db, recorder, record_job):
    """Different bytes, same sender + receiver + ISA13: seen before (a warning),
    no longer a duplicate: the content decides (issue 10)."""
    first = make_job(8)
    first.interchanges.append(Interchange("OTHER", "RECEIVER", "000000777"))
    record(recorder, first)
    later = make_job(9, sender="NEWSENDER")
    assert recorder.interchange_seen(later) is None
    later.interchanges.append(Interchange("OTHER", "RECEIVER", "000000777"))
    assert recorder.interchange_seen(later) == first.job_id
    later.interchanges[-1] = Interchange("OTHER", "ELSEWHERE", "000000777")
    assert recorder.interchange_seen(later) is None


def test_order_rows_by_idempotency_key(db, recorder):
    """An accepted order stays with its job; one a job did not post stays on
    its record too, under a key of its own, while the job retrying it posts
    it under its Idempotency-Key."""
    original = make_job(10)
    record(recorder, original)
    duplicate = make_job(11, job_id=None)
    duplicate.orders[0] = replace(
        original.orders[0], status="duplicate", erp_po_id=None, payload={"changed": True}
    )
    record(recorder, duplicate)
    assert queries.show_job(db, original.job_id)["orders"][0]["erp_po_id"] == "ERP-10-0"
    assert queries.show_job(db, duplicate.job_id)["orders"] == []
    # Its own, or the retried job's, is accepted; another job's makes that job a rival.
    key = original.orders[0].idempotency_key
    again = replace(duplicate, job_id="another-run", orders=[original.orders[0]])
    started = recorder.job_started(again)
    assert started.accepted == {} and started.rivals == {original.job_id}
    retry = replace(again, job_id="a-retry", retry_of=original.job_id)
    assert recorder.job_started(retry).accepted == {key: "ERP-10-0"}

    failed = make_job(12, status=JobStatus.FAILED)
    record(recorder, failed)
    retry = make_job(13)
    retry.retry_of = failed.job_id
    retry.orders[0] = replace(failed.orders[0], status="posted", erp_po_id="ERP-13")
    record(recorder, retry)
    (kept,) = queries.show_job(db, failed.job_id)["orders"]
    assert (kept["po_number"], kept["status"], kept["erp_po_id"]) == ("PO-000012", "failed", None)
    assert queries.show_job(db, retry.job_id)["orders"][0]["erp_po_id"] == "ERP-13"
    assert queries.show_job(db, failed.job_id)["po_number"] == "PO-000012"  # the job row keeps it


def test_a_key_sent_without_an_answer_keeps_its_body(db, recorder):
    """One key, one body: a job posting an order is a rival of a resend (the
    same order in another envelope), which is given its body to send should
    it post; once the job stops (a crash, no answer on record) a resend is
    given that body to send under the key, and its running record keeps it."""

    def running(n: int, icn: str) -> Any:
        job = make_job(n, status=JobStatus.RUNNING)
        order = replace(job.orders[0], po_number="PO-1", idempotency_key="the-key")
        payload = {"sender_qualifier": "ZZ", "sender_id": "ACME", "po_number": "PO-1", "icn": icn}
        job.orders[0] = replace(order, status="pending", attempts=0, payload=payload)
        return job

    first, rival, resend = (running(n, f"00000000{n}") for n in (1, 2, 3))
    assert recorder.job_started(first).sent == {}
    body = json.dumps(first.orders[0].payload, separators=(",", ":"))
    started = recorder.job_started(rival)
    assert (started.rivals, started.sent) == ({first.job_id}, {"the-key": body})
    store.mark_interrupted(db, "host-a")
    assert recorder.job_started(resend).sent == {"the-key": body}
    (kept,) = queries.load_job(db, resend.job_id).orders
    assert kept.payload == first.orders[0].payload


def test_a_partial_job_records_each_order_once(db, recorder):
    """A file of two orders, the second rejected by the rules before the ERP
    call (so on the running record already) and the first posted: the job's
    record holds each once, the rejected one under a key of its own."""
    job = make_job(20, status=JobStatus.PARTIAL, po_numbers=("PO-A", "PO-B"))
    job.orders[0] = replace(job.orders[0], status="posted", erp_po_id="ERP-A")
    job.orders[1] = replace(job.orders[1], status="rejected", erp_po_id=None, error="qty 0")
    record(recorder, job)
    shown = queries.show_job(db, job.job_id)["orders"]
    assert sorted((o["po_number"], o["status"]) for o in shown) == [
        ("PO-A", "posted"),
        ("PO-B", "rejected"),
    ]


@pytest.mark.parametrize("kind", ["database", "memory"])
def test_an_order_two_jobs_posted_is_the_first_recorder_s(kind, recorder):
    """Two running jobs both had one order accepted (one Idempotency-Key):
    the first to record it keeps it; the second learns whose it is."""
    keeper = recorder if kind == "database" else NullRecorder()
    first, second = make_job(40, status=JobStatus.RUNNING), make_job(41, status=JobStatus.RUNNING)
    order = replace(first.orders[0], status="posted", erp_po_id="ERP-A")
    keeper.job_started(first)
    keeper.job_started(second)
    assert keeper.order_accepted(first, order) is None
    assert keeper.order_accepted(second, replace(order, erp_po_id="ERP-B")) == (
        first.job_id,
        "ERP-A",
    )
    assert keeper.order_accepted(first, order) is None  # its own, again


def test_control_numbers_increase_across_restarts_and_wrap(db, recorder, settings):
    """997 control numbers keep increasing after a restart and wrap after 999999999."""
    first = recorder.next_control_number()
    second = recorder.next_control_number()
    assert 0 < first < second <= store.CONTROL_NUMBER_MAX
    db = reopen(db, settings)
    third = store.DatabaseRecorder(db).next_control_number()
    assert third > second
    store.run_unit(
        db,
        lambda: store.ControlNumber.update(value=store.CONTROL_NUMBER_MAX).execute(),
    )
    assert store.next_control_number(db) == 1


def test_control_numbers_are_reserved_together_and_never_run_past_the_maximum(db):
    """Several numbers in one write: the first is returned, the others are
    spent; a range that would pass 999999999 starts again at 1."""
    first = store.next_control_number(db, 3)
    assert store.next_control_number(db) == first + 3
    top = store.CONTROL_NUMBER_MAX
    set_to = lambda value: store.ControlNumber.update(value=value).execute()  # noqa: E731
    store.run_unit(db, lambda: set_to(top - 2))
    assert store.next_control_number(db, 2) == top - 1
    store.run_unit(db, lambda: set_to(top - 1))
    assert store.next_control_number(db, 2) == 1
    assert store.next_control_number(db) == 3


def test_the_running_record_reserves_the_jobs_control_numbers_in_its_write(db, recorder):
    """``job_started(control_numbers=N)`` spends N numbers of the same sequence
    in the running record's transaction; none asked, none spent."""
    before = recorder.next_control_number()
    started = recorder.job_started(make_job(30), control_numbers=2)
    assert started.control_number == before + 1
    assert recorder.job_started(make_job(31)).control_number is None
    assert recorder.next_control_number() == before + 3


def record_in_threads(
    db: store.Database, threads: int, files: int, then: Callable[[Any], object] | None = None
) -> list[BaseException]:
    """``files`` made-up jobs recorded on each of ``threads`` threads through one
    recorder, ``then(recorder)`` after each; returns what the threads raised."""
    recorder = store.DatabaseRecorder(db)
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for n in range(offset, offset + files):
                record(recorder, make_job(n))
                if then is not None:
                    then(recorder)
        except BaseException as exc:  # pragma: no cover - reported by the caller
            errors.append(exc)
        finally:
            if db.is_sqlite and not db.is_closed():
                db.close()  # this thread's connection

    running = [threading.Thread(target=work, args=(100 * k,)) for k in range(threads)]
    for t in running:
        t.start()
    for t in running:
        t.join(timeout=120)
    return errors


def test_concurrent_writers(db):
    """Four threads recording at once lose nothing and never share a control number."""
    numbers: list[int] = []
    errors = record_in_threads(db, 4, 10, lambda r: numbers.append(r.next_control_number()))
    assert not errors
    assert queries.stats(db)["total_jobs"] == 40
    assert len(set(numbers)) == 40


def test_a_shared_sqlite_store_serves_its_threads_one_connection_a_unit_at_a_time(tmp_path):
    """``shared=True`` (a worker process's store): its threads use one
    connection, and eight of them recording at once lose nothing and never
    share a control number (without the turns, two BEGINs on one connection
    fail); a thread closing it waits for the unit in progress."""
    db = store.open_database(f"sqlite:///{tmp_path / 'jobs.db'}", Settings(), shared=True)
    store.init(db)
    seen: list[object] = []

    def look() -> None:
        seen.append(store.run_unit(db, lambda: db._state.conn, write=False))

    for _ in range(2):
        thread = threading.Thread(target=look)
        thread.start()
        thread.join()
    assert seen[0] is seen[1]

    numbers: list[int] = []
    errors = record_in_threads(db, 8, 10, lambda r: numbers.append(r.next_control_number()))
    assert not errors
    assert queries.stats(db)["total_jobs"] == 80
    assert len(set(numbers)) == 80
    store.close_database(db)


def test_a_shared_sqlite_store_s_thread_gives_up_after_its_own_wait(tmp_path):
    """A unit that cannot get its turn (another thread's unit stuck, as on a
    database locked by another program) fails as a write turn does, after
    the same wait, not after every thread ahead of it; then units go on."""
    db = store.open_database(f"sqlite:///{tmp_path / 'jobs.db'}", Settings(), shared=True)
    store.init(db)
    db.unit_lock.seconds = 0.2
    inside, release = threading.Event(), threading.Event()

    def stuck() -> None:
        inside.set()
        release.wait(30)

    holder = threading.Thread(target=store.run_unit, args=(db, stuck))
    holder.start()
    assert inside.wait(30)
    with pytest.raises(pw.OperationalError, match=r"database is locked: no turn within 0\.2 s"):
        queries.stats(db)
    release.set()
    holder.join(30)
    assert queries.stats(db)["total_jobs"] == 0
    store.close_database(db)


def test_edi_content_kept_up_to_the_limit(db_url, tmp_path):
    """Content over edi_content_max_bytes is not stored; its hash and path are."""
    settings = Settings(database=DatabaseSettings(edi_content_max_bytes=16))
    with initialised(db_url, settings) as db:
        recorder = store.DatabaseRecorder(db)
        small = make_job(20, content=b"0123456789abcdef")
        big = make_job(21, content=b"0123456789abcdefg")
        record(recorder, small)
        record(recorder, big)
        assert (
            queries.load_job(db, small.job_id, with_content=True).edi_content == small.edi_content
        )
        kept = queries.load_job(db, big.job_id, with_content=True)
        assert kept.edi_content is None
        assert kept.file_sha256 == big.file_sha256 and kept.file_path == big.file_path
        assert queries.load_job(db, small.job_id).edi_content is None  # only when asked


def test_mark_interrupted_touches_only_this_hosts_running_jobs(db, recorder, record_job):
    """Crash recovery takes this host's running jobs, not another host's or finished ones."""
    done = record_job(30)
    mine = make_job(31)
    theirs = make_job(32)
    theirs.host = "host-b"
    for job in (mine, theirs):
        job.status = JobStatus.RUNNING
        recorder.job_started(job)
    found = store.mark_interrupted(db, "host-a", now=T0 + timedelta(hours=1))
    assert [(j["job_id"], j["file_path"]) for j in found] == [(mine.job_id, mine.file_path)]
    assert queries.show_job(db, mine.job_id)["status"] == "interrupted"
    assert queries.show_job(db, mine.job_id)["duration_seconds"] > 0
    assert queries.show_job(db, theirs.job_id)["status"] == "running"
    assert queries.show_job(db, done.job_id)["status"] == "succeeded"
    assert store.mark_interrupted(db, "host-a") == []


def test_heartbeats_and_final_path(db, recorder, record_job):
    """One heartbeat row per daemon, upserted; the final path replaces the claimed one."""
    for beat in range(3):
        store.heartbeat(
            db,
            "d1",
            host="host-a",
            pid=42,
            version="1.0",
            started_at=T0,
            counters={"processed": beat},
            now=T0 + timedelta(seconds=beat),
        )
    store.heartbeat(db, "d2", host="host-b", pid=7, version="1.0", started_at=T0, now=T0)
    daemons = queries.list_daemons(db, now=T0 + timedelta(seconds=12))
    assert [(d["daemon_id"], d["counters"]) for d in daemons] == [
        ("d1", {"processed": 2}),
        ("d2", {}),
    ]
    assert daemons[0]["heartbeat_age_seconds"] == 10.0
    store.remove_daemon(db, "d2")
    assert [d["daemon_id"] for d in queries.list_daemons(db)] == ["d1"]

    job = record_job(40)
    store.record_final_path(db, job.job_id, "/srv/edi/done/po_40.edi")
    assert queries.load_job(db, job.job_id).file_path == "/srv/edi/done/po_40.edi"
    store.record_final_path(db, job.job_id, None, "it vanished")
    gone = queries.load_job(db, job.job_id)
    assert gone.file_path is None and gone.logs[-1].message == "it vanished"


def test_job_brief_is_what_the_service_checks(db, recorder, record_job):
    """job_brief: a job's host, status and file name, running or finished; None if unknown."""
    done = record_job(45)
    running = make_job(46)
    running.status = JobStatus.RUNNING
    recorder.job_started(running)
    assert store.job_brief(db, done.job_id) == {
        "host": "host-a",
        "status": "succeeded",
        "file_name": "po_45.edi",
    }
    assert store.job_brief(db, running.job_id) == {
        "host": "host-a",
        "status": "running",
        "file_name": "po_46.edi",
    }
    assert store.job_brief(db, "no-such-job") is None
    assert store.job_brief(db, done.job_id[:8]) is None  # exact ids only, no prefixes


def test_deleting_a_job_cascades(db, record_job):
    """ON DELETE CASCADE: a deleted job takes its steps, logs, orders and search keys."""
    job = record_job(50)
    keep = record_job(51)
    store.run_unit(db, lambda: store.Job.delete().where(store.Job.job_id == job.job_id).execute())
    for model in (store.JobStep, store.JobLog, store.Order, store.JobInterchange, store.PoSearch):
        left = store.run_unit(db, lambda m=model: m.select().count(), write=False)
        assert left > 0
        orphans = store.run_unit(
            db,
            lambda m=model: m.select().where(m.job.not_in(store.Job.select(store.Job.id))).count(),
            write=False,
        )
        assert orphans == 0, model
    assert queries.show_job(db, keep.job_id) is not None


def test_init_is_idempotent_and_refuses_a_newer_schema(db):
    """init again changes nothing; a schema newer than the code is refused by name."""
    assert store.init(db) == []
    assert store.schema_version(db) == store.SCHEMA_VERSION
    store.run_unit(db, lambda: store._write_version(store.SCHEMA_VERSION + 1))
    with pytest.raises(StoreError, match="newer than this edi-inbox"):
        store.migrate(db)


def test_migrate_a_v1_database(db, record_job):
    """A v1 database (no jobs.acks, po_search, job_rollups) migrates in place, data kept."""
    old = record_job(60, po_numbers=("4500004711",), amounts=(Decimal("99.99"),))

    def make_v1() -> None:
        store.PoSearch.drop_table()
        store.JobRollup.drop_table()
        db.execute_sql('ALTER TABLE "jobs" DROP COLUMN "acks"')
        store._write_version(1)

    store.run_unit(db, make_v1)
    assert store.schema_version(db) == 1
    assert "acks" not in {c.name for c in db.get_columns("jobs")}

    assert store.migrate(db) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert store.schema_version(db) == store.SCHEMA_VERSION
    assert "acks" in {c.name for c in db.get_columns("jobs")}
    assert [j["job_id"] for j in queries.search_jobs(db, po_number="0047")] == [old.job_id]
    stats = queries.stats(db)
    assert stats["successful_jobs"] == 1 and stats["total_amount_processed"] == "99.99"
    new = record_job(61)  # and it records as usual
    assert queries.show_job(db, new.job_id)["acks"] == ["po_61.997"]


def test_migrate_a_v2_database_drops_the_unused_po_number_index(db, record_job):
    """v2 → v3: the index on jobs.po_number goes; jobs are still found by PO."""
    old = record_job(62, po_numbers=("4500004712",))

    def make_v2() -> None:
        db.execute_sql('CREATE INDEX "jobs_po_number" ON "jobs" ("po_number")')
        store._write_version(2)

    store.run_unit(db, make_v2)
    assert "jobs_po_number" in {i.name for i in db.get_indexes("jobs")}
    assert store.migrate(db) == [3, 4, 5, 6, 7, 8, 9, 10]
    assert "jobs_po_number" not in {i.name for i in db.get_indexes("jobs")}
    assert [j["job_id"] for j in queries.search_jobs(db, po_number="4712")] == [old.job_id]


def test_migrate_a_v4_database_names_refused_orders_rejected(db, record_job):
    """v4 → v5: an order a v2 daemon recorded ``failed`` reads ``rejected``."""
    old = record_job(63, po_numbers=("4500004713",))

    def make_v4() -> None:
        db.execute_sql('UPDATE "orders" SET "status" = \'failed\'')
        store._write_version(4)

    store.run_unit(db, make_v4)
    assert store.migrate(db) == [5, 6, 7, 8, 9, 10]
    assert [o["status"] for o in queries.show_job(db, old.job_id)["orders"]] == ["rejected"]


def test_migrate_a_v5_database_finds_every_order_by_vendor(db, record_job):
    """v5 → v6: ``vendor_search`` is filled from the orders, so a job is found
    by its second order's vendor; the index on the first one's goes, with the
    job's folded PO number and vendor columns (no search reads them)."""
    old = record_job(64, po_numbers=("4500004714", "4500004715"), vendor=None)

    def make_v5() -> None:
        for po, vendor in (("4500004714", "Acme"), ("4500004715", "Zeta AG")):
            store.Order.update(vendor_name=vendor).where(store.Order.po_number == po).execute()
        store.VendorSearch.drop_table()
        for column in ("po_number_folded", "vendor_name_folded"):
            db.execute_sql(f'ALTER TABLE "jobs" ADD COLUMN "{column}" TEXT')
        db.execute_sql(
            'CREATE INDEX "jobs_vendor_name_folded_started_at"'
            ' ON "jobs" ("vendor_name_folded", "started_at")'
        )
        store._write_version(5)

    store.run_unit(db, make_v5)
    assert store.migrate(db) == [6, 7, 8, 9, 10]
    assert "jobs_vendor_name_folded_started_at" not in {i.name for i in db.get_indexes("jobs")}
    assert not {"po_number_folded", "vendor_name_folded"} & {c.name for c in db.get_columns("jobs")}
    for term, match in (("zeta", "substring"), ("ZETA a", "prefix"), ("acme", "substring")):
        found = queries.search_jobs(db, vendor=term, match=match)
        assert [j["job_id"] for j in found] == [old.job_id], term


def test_reset_drops_every_record(db, record_job):
    """reset: all records gone, schema current; the control numbers carry on
    from the last one given out (however many a second it gave: round 32)."""
    record_job(70)
    last = store.next_control_number(db, 5000) + 4999
    assert store.reset(db) == [store.SCHEMA_VERSION]
    assert queries.stats(db)["total_jobs"] == 0
    assert store.next_control_number(db) == last + 1


def test_a_database_without_schema_version_is_not_guessed_at(db_url, settings):
    """A jobs table without a schema_version table (not ours) is refused, not altered."""
    db = store.open_database(db_url, settings)
    try:
        store.run_unit(db, lambda: db.execute_sql('CREATE TABLE "jobs" ("id" INTEGER)'))
        with pytest.raises(StoreError, match="no schema_version"):
            store.init(db)
    finally:
        store.close_database(db)


def test_sqlite_connection_settings(tmp_path):
    """SQLite runs in WAL mode with foreign keys, synchronous=NORMAL and the busy timeout."""
    db = sqlite_at(tmp_path / "a" / "b.db", busy_timeout_seconds=2.5)
    pragmas = {
        name: db.execute_sql(f"PRAGMA {name}").fetchone()[0]
        for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
    }
    assert pragmas == {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "synchronous": 1,
        "busy_timeout": 2500,
    }
    db.close()


def test_sqlite_recorder_raises_when_the_database_is_gone(tmp_path):
    """With its directory removed, the recorder raises instead of writing into a deleted file."""
    folder = tmp_path / "state"
    db = sqlite_at(folder / "edi-inbox.db")
    recorder = store.DatabaseRecorder(db)
    record(recorder, make_job(80))
    shutil.rmtree(folder)
    job = make_job(81)
    with pytest.raises(DatabaseUnavailable, match="removed or replaced"):
        recorder.job_started(job, job.steps[:1], job.logs)
    with pytest.raises(DatabaseUnavailable, match="missing"):  # and it does not reopen it
        recorder.order_accepted(job, job.orders[0])
    with pytest.raises(DatabaseUnavailable, match="missing"):
        recorder.job_finished(job, [])
    assert not folder.exists()
    assert not db.in_transaction()


def test_a_deleted_sqlite_file_is_never_created_again_empty(tmp_path):
    """The file removed mid-run (its folder kept): every thread's next unit of
    work finds the database unavailable, and no new empty file appears."""
    path = tmp_path / "edi-inbox.db"
    db = sqlite_at(path)
    recorder = store.DatabaseRecorder(db)
    record(recorder, make_job(82))
    path.unlink()
    errors: list[BaseException] = []

    def other_thread() -> None:  # a thread that never connected before
        try:
            store.schema_version(db)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    with pytest.raises(DatabaseUnavailable, match="removed or replaced"):
        record(recorder, make_job(83))
    with pytest.raises(DatabaseUnavailable, match="missing"):
        record(recorder, make_job(84))
    assert [type(e) for e in errors] == [DatabaseUnavailable]
    assert not path.exists()
    assert not store.is_permanent(errors[0])


def test_a_replaced_sqlite_file_is_unavailable(tmp_path):
    """Another file put in the database's place is refused, not written to."""
    path = tmp_path / "edi-inbox.db"
    db = sqlite_at(path)
    record(store.DatabaseRecorder(db), make_job(85))
    store.close_database(db)
    path.rename(tmp_path / "old.db")
    shutil.copy(tmp_path / "old.db", path)  # same bytes, another file
    with pytest.raises(DatabaseUnavailable, match="replaced"):
        record(store.DatabaseRecorder(db), make_job(86))
    assert queries.stats(sqlite_at(tmp_path / "old.db"))["total_jobs"] == 1


def test_create_false_never_creates_the_file(tmp_path, settings):
    """``create=False`` (status, worker processes): a missing file is unavailable."""
    path = tmp_path / "nothing-here.db"
    db = store.open_database(f"sqlite:///{path}", settings, create=False)
    with pytest.raises(DatabaseUnavailable, match="is missing"):
        store.schema_version(db)
    assert not path.exists()


def test_is_permanent_tells_data_errors_from_outages(tmp_path):
    """Data the database cannot hold is permanent; a lock, a full disk, a
    missing file or a lost connection is not."""
    path = tmp_path / "edi-inbox.db"
    db = sqlite_at(path)
    with pytest.raises(pw.IntegrityError) as integrity:
        store.run_unit(db, lambda: db.execute_sql("INSERT INTO jobs (job_id) VALUES (NULL)"))
    assert store.is_permanent(integrity.value)
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = 13  # type: ignore[attr-defined]
    assert not store.is_permanent(pw.OperationalError(full))
    assert not store.is_permanent(pw.OperationalError("database is locked"))
    assert not store.is_permanent(DatabaseUnavailable("gone"))
    assert not store.is_permanent(ConnectionRefusedError())
    assert store.is_permanent(TypeError("a bug"))


def test_open_database_rejects_unknown_urls(settings):
    """Only sqlite:///PATH and postgresql:// URLs are accepted, with a clear error."""
    for url in ("mysql://x/y", "sqlite://", "sqlite:///"):
        with pytest.raises(StoreError, match="database url"):
            store.open_database(url, settings)


def test_fold_makes_search_keys():
    """fold: Unicode case folding, NFKC and collapsed spaces, not ASCII-only lowering."""
    assert store.fold("MÜLLER  GmbH ") == "müller gmbh"
    assert store.fold("Mu\u0308ller") == "müller"  # decomposed ü
    assert store.fold("STRASSE") == store.fold("Straße") == "strasse"
    assert store.fold(None) is None
    assert store.po_suffixes("po-4711") == ["po-4711", "o-4711", "-4711", "4711", "711"]
    assert store.po_suffixes("ab") == ["ab"]


def test_steps_and_logs_keep_their_data(db, recorder):
    """Step data, attempts, errors and log details come back as written (JSON as text)."""
    job = make_job(90, status=JobStatus.FAILED)
    job.steps[3] = StepResult(
        "post_to_erp",
        StepStatus.FAILED,
        attempts=5,
        error="ERP unavailable after 5 attempts",
        data={"status_codes": [503, 503], "amount": Decimal("1.10"), "name": "Müller"},
    )
    record(recorder, job)
    step = queries.show_job(db, job.job_id)["steps"][3]
    assert step["attempts"] == 5 and step["error"].startswith("ERP unavailable")
    assert step["data"] == {"status_codes": [503, 503], "amount": "1.10", "name": "Müller"}
    assert json.loads(json.dumps(queries.show_job(db, job.job_id))) is not None


def test_times_are_utc(db):
    """Times come back timezone-aware in UTC, whatever zone they were given in."""
    from zoneinfo import ZoneInfo

    job = make_job(91, started_at=T0.astimezone(ZoneInfo("America/New_York")))
    store.DatabaseRecorder(db).job_started(job)
    loaded = queries.load_job(db, job.job_id)
    assert loaded.started_at == T0
    assert loaded.started_at.utcoffset() == timedelta(0)


def test_database_file_is_where_settings_say(tmp_path):
    """Without a URL, the SQLite file is <root>/edi-inbox.db (settings.database_url)."""
    from edi_inbox.config import PathSettings

    settings = Settings(paths=PathSettings(root=tmp_path / "root"))
    db = store.open_database(None, settings)
    store.init(db)
    assert Path(db.database) == tmp_path / "root" / "edi-inbox.db"
    assert (tmp_path / "root" / "edi-inbox.db").exists()
    db.close()


def test_sqlite_locked_by_another_writer(tmp_path):
    """Another writer past busy_timeout: a 'locked' error, nothing written, then success."""
    db = sqlite_at(tmp_path / "edi-inbox.db", busy_timeout_seconds=0.2)
    recorder = store.DatabaseRecorder(db)
    job = make_job(95)
    other = sqlite3.connect(db.database, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(pw.OperationalError, match="locked"):
            recorder.job_started(job)
        assert not db.in_transaction()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert queries.show_job(db, job.job_id) is None
    record(recorder, job)
    assert queries.show_job(db, job.job_id) == job.to_json()
    db.close()


WRITER = """
import sys
sys.path.insert(0, sys.argv[1])
from conftest import make_job, record
from edi_inbox import store
from edi_inbox.config import DatabaseSettings, Settings
settings = Settings(database=DatabaseSettings(busy_timeout_seconds=float(sys.argv[3])))
db = store.open_database("sqlite:///" + sys.argv[2], settings)
recorder = store.DatabaseRecorder(db)
print("ready", flush=True)
sys.stdin.readline()
for n in range(int(sys.argv[4])):
    record(recorder, make_job(n))
print("done", flush=True)
"""


def writer_process(db: store.Database, busy_timeout: float, jobs: int) -> subprocess.Popen[str]:
    """Another process that records ``jobs`` jobs in ``db`` once told to go (a line on stdin)."""
    tests = str(Path(__file__).resolve().parent)
    args = [sys.executable, "-c", WRITER, tests, db.database, str(busy_timeout), str(jobs)]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def test_sqlite_processes_take_turns_without_the_busy_handler(tmp_path):
    """Processes writing one SQLite file at once wait for each other's turn (the lock file),
    not in SQLite's busy handler: with busy_timeout 0, not one 'database is locked'."""
    db = sqlite_at(tmp_path / "edi-inbox.db", busy_timeout_seconds=0)
    writers = [writer_process(db, 0, 60) for _ in range(3)]
    for proc in writers:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outputs = [proc.communicate(timeout=120) for proc in writers]
    assert [proc.returncode for proc in writers] == [0, 0, 0], outputs
    assert queries.stats(db)["total_jobs"] == 180
    store.close_database(db)


def test_sqlite_write_turn_held_too_long_is_an_error(tmp_path):
    """A process that keeps the write turn past busy_timeout: a clear error, nothing written."""
    db = sqlite_at(tmp_path / "edi-inbox.db", busy_timeout_seconds=0.2)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_TURN, db.database + "-writers.lock"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    job = make_job(96)
    try:
        with pytest.raises(pw.OperationalError, match="another process kept the write turn"):
            store.DatabaseRecorder(db).job_started(job)
    finally:
        holder.communicate("", timeout=10)  # stdin closed: it lets go and exits
    assert queries.show_job(db, job.job_id) is None
    record(store.DatabaseRecorder(db), job)
    assert queries.show_job(db, job.job_id) == job.to_json()
    store.close_database(db)


def write_one_job(path: str, lock: Any, n: int) -> None:
    """In a spawned process: record a job under the daemon's shared write turn; the exit
    code says how it went (0 written, 3 no turn)."""
    settings = Settings(database=DatabaseSettings(busy_timeout_seconds=0.2))
    db = store.open_database(f"sqlite:///{path}", settings)
    db.process_lock = lock
    try:
        record(store.DatabaseRecorder(db), make_job(n))
    except pw.OperationalError as exc:
        sys.exit(3 if "no write turn" in str(exc) else 4)


def test_worker_processes_share_one_write_turn(tmp_path):
    """The daemon's worker processes take SQLite's write turn from one shared lock: while
    it is held elsewhere, a write waits, then fails clearly; once free, it goes through."""
    db = sqlite_at(tmp_path / "edi-inbox.db")
    context = multiprocessing.get_context("spawn")
    lock = context.Lock()
    with lock:
        blocked = context.Process(target=write_one_job, args=(db.database, lock, 97))
        blocked.start()
        blocked.join(60)
    assert blocked.exitcode == 3
    free = context.Process(target=write_one_job, args=(db.database, lock, 98))
    free.start()
    free.join(60)
    assert free.exitcode == 0
    assert queries.stats(db)["total_jobs"] == 1
    store.close_database(db)


HOLD_TURN = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def test_sqlite_threads_take_turns_without_the_busy_handler(tmp_path):
    """Threads queue on the store's write lock, not SQLite's busy handler (timeout 0 works)."""
    db = sqlite_at(tmp_path / "edi-inbox.db", busy_timeout_seconds=0)
    assert record_in_threads(db, 8, 15) == []
    assert queries.stats(db)["total_jobs"] == 120
    db.close()


# -- checkpoints beside the writers ----------------------------------------------


def _wal_frames(path: Path) -> int:
    """Frames the WAL of ``path`` holds, read by a checkpoint from a plain connection."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    finally:
        conn.close()


def test_daemon_connections_leave_checkpoints_to_the_checkpointer(tmp_path):
    """checkpoints=False: writers never checkpoint, however long the WAL; the
    Checkpointer copies it beside them and, past its mark, starts it over."""
    path = tmp_path / "edi-inbox.db"
    sqlite_at(path).close()
    settings = Settings(database=DatabaseSettings())
    db = store.open_database(f"sqlite:///{path}", settings, checkpoints=False)
    recorder = store.DatabaseRecorder(db)
    for n in range(1, 41):  # a few hundred pages; a writer would checkpoint at 10,000
        record(recorder, make_job(n))
    assert db.execute_sql("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    checkpointer = store.Checkpointer(db, pages=100)
    frames = checkpointer.checkpoint()  # beside the writers, then within the turn
    assert frames >= 100 and checkpointer.restarts == 1
    record(recorder, make_job(41))  # the next write starts the WAL over
    assert _wal_frames(path) < frames
    assert queries.stats(db)["total_jobs"] == 41


def test_checkpointer_copies_beside_a_writer_and_waits_only_to_start_over(tmp_path):
    """The first pass does not wait for the write turn; the pass that lets the
    WAL start over does, so no writer's frames are left behind."""
    path = tmp_path / "edi-inbox.db"
    sqlite_at(path).close()
    settings = Settings(database=DatabaseSettings())
    db = store.open_database(f"sqlite:///{path}", settings, checkpoints=False)
    for n in range(1, 11):
        record(store.DatabaseRecorder(db), make_job(n))
    writer = store.open_database(f"sqlite:///{path}", settings, checkpoints=False)
    writer.begin_write()  # another writer holds the turn (the flock on the lock file)
    db.write_lock_seconds = 0.05  # asking for the turn now fails at once
    below = store.Checkpointer(db, pages=10**9)
    assert below.checkpoint() > 0 and below.restarts == 0  # it never asked for the turn

    above = store.Checkpointer(db, pages=1)
    with pytest.raises(pw.OperationalError, match="kept the write turn"):
        above.checkpoint()  # the pass that lets the WAL start over needs the turn
    assert above.restarts == 0
    writer.end_write()
    above.checkpoint()
    assert above.restarts == 1
    store.close_database(writer)


def test_checkpointer_thread_runs_until_stopped(tmp_path):
    """start(): a turn every interval, errors logged and tried again; stop() ends it."""
    path = tmp_path / "edi-inbox.db"
    sqlite_at(path).close()
    settings = Settings(database=DatabaseSettings())
    db = store.open_database(f"sqlite:///{path}", settings, checkpoints=False)
    recorder = store.DatabaseRecorder(db)
    checkpointer = store.Checkpointer(db, pages=50, interval=0.01)
    checkpointer.start()
    try:
        for n in range(1, 31):
            record(recorder, make_job(n))
        poll_until(lambda: checkpointer.restarts >= 1, what="a checkpoint that starts the WAL over")
    finally:
        checkpointer.stop()
    assert not checkpointer._thread.is_alive()


def test_a_path_with_a_byte_that_is_not_utf8_is_recorded_escaped(recorder, db):
    """A partner's file name with a non-UTF-8 byte: the job is recorded (its
    path escaped as the logs show it), never refused by the database."""
    job = make_job(90)
    job.file_path = "/srv/edi/done/po\udcff.edi"
    record(recorder, job)
    assert queries.show_job(db, job.job_id)["status"] == "succeeded"
    row = store.Job.get(store.Job.job_id == job.job_id)
    assert row.file_path == "/srv/edi/done/po\\xff.edi"


def test_totals_past_28_digits_are_exact(db, record_job):
    """Money is exact at any size: a job's total, the rollups and ``stats``
    (Python's default decimal context keeps 28 digits and would round these)."""
    big = Decimal("1524157875323875554031470766.65")
    job = record_job(70, po_numbers=("BIG-1", "BIG-2"), amounts=(big, Decimal("0.01")))
    assert job.total_amount == Decimal("1524157875323875554031470766.66")
    assert queries.show_job(db, job.job_id)["total_amount"] == "1524157875323875554031470766.66"
    assert queries.stats(db)["total_amount_processed"] == "1524157875323875554031470766.66"
    since = job.started_at.replace(minute=0, second=0, microsecond=0)
    assert queries.stats(db, since=since)["total_amount_processed"] == (
        "1524157875323875554031470766.66"
    )


def test_migrate_a_v7_database_compares_its_orders_on_the_fields_both_have(db, record_job):
    """v7 → v8: ``orders.json_version``. An order recorded before it is
    compared with a resend on the fields both have (its version may not have
    read a charge the resend has); one recorded after, field for field."""
    old = record_job(77)

    def make_v7() -> None:
        db.execute_sql('ALTER TABLE "orders" DROP COLUMN "json_version"')
        store._write_version(7)

    store.run_unit(db, make_v7)
    assert store.migrate(db) == [8, 9, 10]
    new = record_job(78)
    recorder = store.DatabaseRecorder(db)
    (before,) = recorder.find_sent((None, None), old.orders[0].po_number)
    (after,) = recorder.find_sent((None, None), new.orders[0].po_number)
    assert (before.json_version, after.json_version) == (None, orders.JSON_VERSION)
    for posted in (before, after):
        charged = {**posted.fields(), "charges": [{"code": "D240", "amount": "5.00"}]}
        assert posted.same_content(posted.fields())
        assert posted.same_content(charged) is (posted is before)


REFUSED = "ConnectionRefusedError: [Errno 111] Connection refused"


@pytest.mark.parametrize(
    ("retries", "rerun", "never_sent"),
    [
        ([REFUSED, REFUSED], False, True),
        ([REFUSED, "ReadTimeoutError: no answer within 5 s"], False, False),  # one reached it
        ([REFUSED], False, False),  # an attempt without its line: not known
        ([REFUSED, REFUSED], True, False),  # the run before may have sent it
    ],
)
def test_migrate_a_v8_database_marks_orders_only_refused_connections_met(
    db, recorder, retries, rerun, never_sent
):
    """v8 → v9: an order a version before 9 recorded unanswered after three
    attempts whose connections were all refused is ``refused`` (the ERP never
    got it); not when one attempt met something else, when its job logged
    fewer retries than that, or when the job ran again after its first record."""
    job = make_job(81, status=JobStatus.FAILED)
    job.orders[0] = replace(
        job.orders[0],
        error=f"ERP at http://erp.example/orders unavailable after 3 attempts: {REFUSED}",
        attempts=3,
        status="rejected",
    )
    job.logs += [LogEntry(T0, "warning", "erp_retry", {"error": e}) for e in retries]
    record(recorder, job)

    def make_v8() -> None:
        db.execute_sql('UPDATE "orders" SET "refused" = %s' % ("0" if db.is_sqlite else "false"))
        if rerun:
            created = store.Job.get().created_at
            store.Job.update(started_at=created + timedelta(minutes=1)).execute()
        store._write_version(8)

    store.run_unit(db, make_v8)
    assert store.migrate(db) == [9, 10]
    assert store.Order.get().refused is never_sent


@pytest.mark.parametrize("migrated", [False, True])
def test_a_host_of_the_version_before_still_records_on_a_v9_database(db, migrated):
    """A rolling upgrade: a host on the version before v9, running on after
    another migrated the database, writes ``job_rollups`` rows without
    ``reached``: its SQL default takes them (NOT NULL alone refused them)."""

    def make_v8() -> None:
        db.execute_sql('ALTER TABLE "job_rollups" DROP COLUMN "reached"')
        store._write_version(8)

    if migrated:
        store.run_unit(db, make_v8)
        assert store.migrate(db) == [9, 10]
    store.run_unit(
        db,
        lambda: db.execute_sql(
            'INSERT INTO "job_rollups" ("period", "start", "status", "jobs", "durations",'
            ' "duration_total", "amount") VALUES (?, ?, ?, 1, 1, 0.5, ?)'.replace(
                "?", "%s" if not db.is_sqlite else "?"
            ),
            ("day", T0, "succeeded", "1.00"),
        ),
    )
    assert store.JobRollup.get().reached == 0


def test_migrate_a_v9_database_finds_a_partners_last_failure_by_an_index(db, record_job):
    """v9 → v10: the index of jobs by partner and status (and, on PostgreSQL,
    the statistics of the two together) is built, and each partner's
    rollups filled from its jobs; the queries find with them."""
    failed = record_job(66, status=JobStatus.FAILED)
    store.Job.update(partner="acme").execute()

    def make_v9() -> None:
        db.execute_sql('DROP INDEX "jobs_partner_status_started_at_id"')
        if not db.is_sqlite:
            db.execute_sql('DROP STATISTICS "jobs_partner_status"')
        db.execute_sql('DROP TABLE "partner_rollups"')
        store._write_version(9)

    store.run_unit(db, make_v9)
    assert store.migrate(db) == [10]
    got = queries.stats(db, partner="acme")  # from the partner's rollups, filled from its jobs
    assert (got["total_jobs"], got["failed_jobs"]) == (1, 1)
    assert "jobs_partner_status_started_at_id" in {i.name for i in db.get_indexes("jobs")}
    if not db.is_sqlite:
        found = db.execute_sql(
            "SELECT 1 FROM pg_statistic_ext WHERE stxname = %s", ("jobs_partner_status",)
        )
        assert found.fetchone() is not None
    listed = queries.list_jobs(db, limit=1, status="failed", partner="acme")
    assert [j["job_id"] for j in listed] == [failed.job_id]


def test_migrate_a_v6_database_keeps_ack_numbers_from_then_on(db, record_job):
    """v6 → v7: ``jobs.ack_numbers`` added; the jobs before it have none."""
    old = record_job(65)

    def make_v6() -> None:
        db.execute_sql('ALTER TABLE "jobs" DROP COLUMN "ack_numbers"')
        store._write_version(6)

    store.run_unit(db, make_v6)
    assert store.migrate(db) == [7, 8, 9, 10]
    assert "ack_numbers" in {c.name for c in db.get_columns("jobs")}
    assert queries.show_job(db, old.job_id)["job_id"] == old.job_id
    assert queries.show_job(db, record_job(66).job_id)["status"] == "succeeded"
