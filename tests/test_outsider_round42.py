"""Outsider round 42: a year of data, the operator's view at scale. About 35 s.

What I tried:

- A SQLite history built once per module (``_history``, ~6 s for both):
  one job recorded through ``DatabaseRecorder`` (the production schema,
  indexes and column formats), then N jobs over the year before 2026-12-01
  multiplied with ``INSERT … SELECT`` over a recursive CTE, each with its
  order, PO search keys (every suffix of 3+ characters), vendor key and
  the hourly and daily rollups rebuilt from the jobs, ``ANALYZE``d: every
  even job partner ``noisy`` (sender NOISY) and failed, every odd one
  partner ``clean`` and succeeded. 2,000 and 200,000 jobs. The same
  histories on PostgreSQL, a private schema each (~18 s to build).
- The work of each read the commands issue, deterministic and compared as
  a ratio between 2,000 and 200,000 jobs, never a time: SQLite virtual
  machine steps (``set_progress_handler`` on the store's own connection),
  PostgreSQL shared buffers touched (``EXPLAIN (ANALYZE, BUFFERS)`` of each
  statement as peewee issued it); ``EXPLAIN QUERY PLAN`` of the statements
  captured with ``set_trace_callback``.
- PO searches at 200,000 jobs against a brute-force ``instr`` over the rows.
- ``edi-inbox serve`` on both histories (partners clean and noisy
  configured): ``/api/jobs/stats`` (with and without ``partner``),
  ``/metrics`` (once SlowFigures has counted) and the dashboard's pages;
  its peak RSS (VmHWM).
- ``/failed`` with a year of old failed jobs and one file failed today
  (a real ``run --once``); ``retry JOB_ID`` and ``retry --all-failed`` with
  2,000 older failed files in failed/; paging ``jobs list --offset`` while
  jobs are recorded.

Found (strict xfails; all 5 fixed the same session, each test failing
before its fix — schema v10 keeps each partner's rollups
(``partner_rollups``; the fixtures fill them as they fill ``job_rollups``)
and indexes jobs by partner and status, with PostgreSQL statistics of the
two; the failed page lists the newest failures first; ``admin.retry(db=)``
goes to the report where the job's record says its file was filed, as the
CLI, the API and the dashboard call it; ``list_jobs(before=)`` pages from
the last job shown, as README now says to ask for the next page):

1. ``stats --partner P`` (``/api/jobs/stats?partner=P``) reads every job P
   ever sent (``queries._partner_stats``: the ``(partner, started_at)``
   index, then each row for status, duration and amount; no bound without
   ``--since``): 100x the jobs, 100x the work, on SQLite (230 -> 23,000
   progress ticks) and PostgreSQL (74 -> 7,424 buffers), while ``stats``
   without a partner stays flat (rollups). DESIGN.md: ``stats`` answers
   "in well under a second, also with a million jobs on record".
   ``test_stats_of_one_partner_does_not_read_its_whole_history``,
   ``test_postgres_stats_of_one_partner_does_not_read_its_whole_history``.
2. ``edi-inbox status`` (``/api/status``, the overview page) finds each
   configured partner's last error with ``list_jobs(limit=1,
   status="failed", partner=P)`` (also ``jobs list --status failed
   --partner P`` and ``/jobs?status=failed&partner=P``). No index has both
   columns, so for a partner without a failure (the usual one) the plan
   walks every failed job of every partner (SQLite: ``SEARCH jobs USING
   INDEX jobs_status_started_at_id (status=?)``), once per partner per
   ``status``: SQLite 50 -> 5,000 ticks, PostgreSQL 92 -> 8,945 buffers.
   ``test_status_finds_a_clean_partners_last_error_without_a_pass_over_all_failures``,
   ``test_postgres_status_finds_a_clean_partners_last_error_cheaply``.
3. The dashboard's ``/failed`` lists failed jobs not yet retried, oldest
   first, 500 at most: with more than 500 older failures whose files are
   long gone from failed/ (each row "not in failed/"), a file that failed
   today and waits in failed/ is not on the page, and its retry button
   cannot be reached. It should be listed (newest first, or the files in
   failed/ first). ``test_the_failed_page_shows_the_file_that_failed_today``.
4. ``retry JOB_ID`` (the CLI, ``POST /api/jobs/{id}/retry`` and the
   dashboard's retry button: ``admin.retry``) reads and parses every
   ``*.error.json`` in failed/ to find one job's, though the job records
   where its file was filed (the dashboard finds the report from
   ``file_path``): 20 reports 34 KB read, 2,000 reports 3.2 MB.
   ``test_retrying_one_job_does_not_read_every_report_in_failed``.
5. ``jobs list --offset`` (the dashboard's ``page=`` links, ``/api/jobs/
   recent?offset=``) pages by offset over newest-first: 5 jobs recorded
   between page 1 and page 2 show page 1's last 5 jobs again on page 2.
   With the daemon working while an operator pages through failures, jobs
   repeat (a keyset "before this job" cursor would not; it would also spare
   deep pages their O(offset) walk).
   ``test_paging_does_not_repeat_jobs_while_new_ones_arrive``.

Held (plain tests): ``stats`` (with and without ``since``), ``jobs list``
(``--status``, ``--partner``), ``status``'s summary, partners' activity,
the failed page's query, ``jobs show`` by prefix, vendor searches,
``db init`` and ``db migrate`` do the same work at 2,000 and 200,000 jobs;
PO searches grow like the root of the jobs (``_among``'s crossover, by
design), and find exactly the jobs whose PO holds the term (SQLite and
PostgreSQL); ``stats``,
``/api/jobs/stats``, ``/metrics``' ``edi_inbox_jobs`` and
``edi_inbox_partner_jobs`` and ``jobs list`` agree at 200,000 jobs; serve's
peak RSS grew 74 -> 150 MB from 2,000 to 200,000 jobs, which I take for
SQLite's page cache (``cache_size`` 32 MB a connection; SlowFigures passes
over every job and order), bounded rather than per row (not measured
beyond 200,000: the test allows five connections' caches);
``retry --all-failed`` puts 2,001 files back, each once. Not pinned:
``status`` counts done/ with ``os.listdir`` (every name of a year's files
in memory on each call; not measured: 200,000 files took too long to make
here); the
CLI's ``jobs search`` and ``/api/jobs/search`` take no offset (a search
matching more than 10,000 jobs is read further only by narrowing
``--until``); a search combining a filter that has no index with a rare
value (``--sender CLEAN --failure``) walks the sender's jobs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import make_job, record

from edi_inbox import admin, queries, store
from edi_inbox import config as edi_config
from edi_inbox.cli import main
from edi_inbox.config import PathSettings, Settings
from edi_inbox.jobs import JobStatus
from edi_inbox.store.models import MODELS

from helpers import BAD, poll_until
from web_site import request as http_request
from web_site import server, write_config

SMALL, LARGE = 2_000, 100_000  # the tester measured at 200,000; the suite runs 50x
GROWTH = LARGE // SMALL  # 50x the jobs
FLAT = 3  # a read that answers from indexes and rollups: at most 3x the work
SLACK = 20  # ticks (2,000 SQLite instructions) a read may add whatever it is

# N jobs over a year before 2026-12-01: even ones partner "noisy" and
# failed, odd ones partner "clean" and succeeded. ``?1`` the count, ``?2``
# the seconds between two jobs (in thousandths of a year's 31,536,000 s),
# ``?3`` the partner of every job or NULL for the noisy/clean split.
MULTIPLY = """
WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?1)
INSERT INTO jobs (job_id, file_name, file_path, file_sha256, file_size, status, success,
  started_at, completed_at, duration_seconds, po_number, total_amount, erp_po_id,
  vendor_name, error, error_details, host, sender_id, receiver_id,
  interchange_control_number, retry_of, duplicate_of, acks, partner, ack_numbers,
  edi_content, created_at, updated_at)
SELECT
  lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4'
    || substr(hex(randomblob(2)), 2) || '-a' || substr(hex(randomblob(2)), 2)
    || '-' || hex(randomblob(6))),
  'po_' || i || '.edi', NULL, printf('%064x', i), 1234,
  CASE WHEN ?3 IS NOT NULL OR i % 2 = 0 THEN 'failed' ELSE 'succeeded' END,
  CASE WHEN ?3 IS NOT NULL OR i % 2 = 0 THEN 0 ELSE 1 END,
  strftime('%Y-%m-%d %H:%M:%f', '2025-12-01', '+' || (i * 31536 / ?2) || ' seconds')
    || '000+00:00',
  strftime('%Y-%m-%d %H:%M:%f', '2025-12-01', '+' || (i * 31536 / ?2 + 1) || ' seconds')
    || '000+00:00',
  1.5, 'PO-' || i,
  CASE WHEN ?3 IS NULL AND i % 2 = 1 THEN '100.00' END, NULL, 'ACME Corp',
  CASE WHEN ?3 IS NOT NULL OR i % 2 = 0 THEN 'validation failed' END, NULL, 'host-a',
  CASE WHEN ?3 IS NOT NULL THEN 'OLD' WHEN i % 2 = 0 THEN 'NOISY' ELSE 'CLEAN' END,
  'RECEIVER', printf('%09d', i), NULL, NULL, NULL,
  CASE WHEN ?3 IS NOT NULL THEN NULLIF(?3, '') WHEN i % 2 = 0 THEN 'noisy' ELSE 'clean' END,
  NULL, NULL, '2026-01-01 00:00:00.000000+00:00', '2026-01-01 00:00:00.000000+00:00'
FROM k
"""


# Each new job's order (one, as most files hold), its PO search keys (every
# suffix of at least 3 characters of the folded PO number) and its vendor key.
ORDERS = (
    """INSERT INTO orders (job_id, po_number, po_number_folded, line_count, total_amount,
      vendor_name, erp_po_id, idempotency_key, status, error, attempts, payload,
      json_version, refused, created_at, updated_at)
    SELECT id, po_number, lower(po_number), 2, '100.00', vendor_name,
      CASE WHEN success THEN 'ERP-' || id END, job_id || ':0',
      CASE WHEN success THEN 'posted' ELSE 'rejected' END, error, success,
      '{"po_number":"' || po_number || '","currency":"USD"}', 1, 1 - success,
      created_at, updated_at
    FROM jobs WHERE id > ?""",
    """INSERT INTO po_search (suffix, job_id)
    WITH RECURSIVE s(job, suffix) AS (
      SELECT job_id, po_number_folded FROM orders WHERE job_id > ?1
      UNION ALL SELECT job, substr(suffix, 2) FROM s WHERE length(suffix) > 3)
    SELECT DISTINCT suffix, job FROM s""",
    """INSERT INTO vendor_search (vendor, job_id)
    SELECT DISTINCT lower(vendor_name), job_id FROM orders WHERE job_id > ?""",
)


def multiply(path: Path, n: int, partner: str | None = None) -> None:
    """Add ``n`` job rows over the year before 2026-12-01 (see ``MULTIPLY``)
    and the hourly and daily rollups of every final job, as the recorder
    keeps them, then ``ANALYZE``."""
    conn = sqlite3.connect(path)
    try:
        first = conn.execute("SELECT COALESCE(MAX(id), 0) FROM jobs").fetchone()[0]
        conn.execute(MULTIPLY, (n, max(n // 1000, 1), partner))
        for sql in ORDERS:
            conn.execute(sql, (first,))
        conn.execute("DELETE FROM job_rollups")
        conn.execute("DELETE FROM partner_rollups")
        for period, cut in (("hour", 13), ("day", 10)):
            pad = ":00:00.000000+00:00" if period == "hour" else " 00:00:00.000000+00:00"
            conn.execute(
                "INSERT INTO job_rollups (period, start, status, jobs, reached, durations,"
                " duration_total, amount)"
                f" SELECT ?, substr(started_at, 1, {cut}) || ?, status, COUNT(*), COUNT(*),"
                " COUNT(duration_seconds), TOTAL(duration_seconds), '0'"
                " FROM jobs GROUP BY 2, 3",
                (period, pad),
            )
            conn.execute(  # each partner's, as the recorder keeps them (schema v10)
                "INSERT INTO partner_rollups (partner, period, start, status, jobs, reached,"
                " durations, duration_total, amount)"
                f" SELECT partner, ?, substr(started_at, 1, {cut}) || ?, status, COUNT(*),"
                " COUNT(*), COUNT(duration_seconds), TOTAL(duration_seconds), '0'"
                " FROM jobs WHERE partner IS NOT NULL GROUP BY 1, 3, 4",
                (period, pad),
            )
        conn.commit()
        conn.execute("ANALYZE")
        conn.commit()
    finally:
        conn.close()


def _history(root: Path, n: int) -> tuple[str, Settings]:
    settings = Settings(paths=PathSettings(root=root))
    url = f"sqlite:///{root / 'edi-inbox.db'}"
    db = store.open_database(url, settings)
    try:
        store.init(db)
        job = make_job(0, started_at=datetime(2025, 11, 30, tzinfo=UTC))
        job.partner = "clean"
        record(store.DatabaseRecorder(db), job)
    finally:
        store.close_database(db)
    multiply(root / "edi-inbox.db", n)
    return url, settings


@pytest.fixture(scope="module")
def histories(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, store.Database]]:
    """A database of 2,000 jobs and one of 200,000, opened."""
    opened = {}
    try:
        for n in (SMALL, LARGE):
            url, settings = _history(tmp_path_factory.mktemp(f"history{n}"), n)
            opened[n] = store.open_database(url, settings)
        yield opened
    finally:
        for db in opened.values():
            store.close_database(db)


def work(db: store.Database, read: Callable[[store.Database], Any]) -> int:
    """How much SQLite work ``read(db)`` does: progress ticks, one per 100
    virtual machine instructions, on the store's own connection (the models
    bound to it: one database per process at a time)."""
    db.bind(MODELS, bind_refs=False, bind_backrefs=False)
    db.connect(reuse_if_open=True)
    conn = db.connection()
    ticks = [0]

    def tick() -> int:
        ticks[0] += 1
        return 0

    conn.set_progress_handler(tick, 100)
    try:
        read(db)
    finally:
        conn.set_progress_handler(None, 0)
    return ticks[0]


def works(histories: dict[int, store.Database], read: Callable[[Any], Any]) -> tuple[int, int]:
    """The work of ``read`` at 2,000 jobs and at 200,000."""
    small, large = (work(histories[n], read) for n in (SMALL, LARGE))
    return small, large


def flat(small: int, large: int) -> bool:
    """``GROWTH`` times the jobs, at most ``FLAT`` times the work (and ``SLACK`` ticks)."""
    return large <= FLAT * small + SLACK


def plans(db: store.Database, read: Callable[[Any], Any]) -> list[str]:
    """The ``EXPLAIN QUERY PLAN`` lines of every SELECT ``read`` issues."""
    db.bind(MODELS, bind_refs=False, bind_backrefs=False)
    db.connect(reuse_if_open=True)
    conn = db.connection()
    issued: list[str] = []
    conn.set_trace_callback(issued.append)
    try:
        read(db)
    finally:
        conn.set_trace_callback(None)
    lines = []
    for sql in issued:
        if sql.lstrip().upper().startswith(("SELECT", "WITH")):
            rows = conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
            lines += [row[-1] for row in rows]
    return lines


# -- what holds ------------------------------------------------------------------------


FLAT_READS: dict[str, Callable[[Any], Any]] = {
    "stats": lambda db: queries.stats(db),
    "stats since": lambda db: queries.stats(db, since=datetime(2026, 6, 1, 7, 30, tzinfo=UTC)),
    "jobs list": lambda db: queries.list_jobs(db, limit=20),
    "jobs list --status failed": lambda db: queries.list_jobs(db, limit=20, status="failed"),
    "jobs list --partner clean": lambda db: queries.list_jobs(db, limit=20, partner="clean"),
    "status summary": lambda db: queries.status_summary(db),
    "partners' activity": lambda db: queries.partner_activity(
        db, ["clean", "noisy"], datetime.now(UTC) - timedelta(hours=24)
    ),
    "failed page": lambda db: queries.failed_jobs(db, limit=500),
    "db init": lambda db: store.init(db),
    "db migrate": lambda db: store.migrate(db),
    "jobs show by prefix": lambda db: queries.show_job(db, "0000000"),
    "search vendor substring": lambda db: queries.search_jobs(db, vendor="cme co"),
    "search vendor prefix": lambda db: queries.search_jobs(db, vendor="ACME", match="prefix"),
}

# A PO search's work grows with the candidates it may look up: about the
# square root of the jobs (``queries._among``'s crossover), never with the jobs.
SQRT_READS: dict[str, Callable[[Any], Any]] = {
    "a rare substring": lambda db: queries.search_jobs(db, po_number="-1999"),
    "a common substring": lambda db: queries.search_jobs(db, po_number="999"),
    # (The tester's "po-1" matched the newest of 200,000 jobs, none of the
    # newest 80,000 of the suite's 100,000: "po-" is every PO's prefix.)
    "a prefix of every PO": lambda db: queries.search_jobs(db, po_number="po-"),
    "a PO and a partner none has": lambda db: queries.search_jobs(
        db, po_number="po-1", partner="nobody"
    ),
    "nothing matches": lambda db: queries.search_jobs(db, po_number="zz9"),
}


@pytest.mark.parametrize("name", list(FLAT_READS))
def test_everyday_reads_do_the_same_work_at_50x_the_jobs(histories, name):
    assert flat(*works(histories, FLAT_READS[name])), name


@pytest.mark.parametrize("name", list(SQRT_READS))
def test_po_searches_grow_no_faster_than_the_root_of_the_jobs(histories, name):
    small, large = works(histories, SQRT_READS[name])
    assert large <= 15 * small + 600, (name, small, large)  # sqrt(50) ~ 7


@pytest.mark.parametrize("term", ["99999", "PO-1234", "o-19999", "-12"])
def test_a_po_search_finds_every_job_whose_po_holds_the_term(histories, term):
    db = histories[LARGE]
    db.bind(MODELS, bind_refs=False, bind_backrefs=False)
    found = queries.search_jobs(db, po_number=term, limit=10_000)
    rows = db.execute_sql(
        "SELECT job_id FROM jobs WHERE instr(lower(po_number), lower(?)) > 0"
        " ORDER BY started_at DESC, id DESC LIMIT 10000",
        (term,),
    ).fetchall()
    assert [j["job_id"] for j in found] == [r[0] for r in rows]


def test_counts_agree_with_the_rows_at_scale(histories):
    db = histories[LARGE]
    doc = queries.stats(db)
    assert doc["total_jobs"] == LARGE + 1
    assert doc["failed_jobs"] == LARGE // 2
    assert doc["by_status"]["succeeded"] == LARGE // 2 + 1
    listed = queries.list_jobs(db, limit=10_000, offset=LARGE // 2 - 5_000, status="failed")
    assert len(listed) == 5_000  # the last 5,000 failed jobs: the oldest ones
    assert all(j["status"] == "failed" for j in listed)


# -- found -----------------------------------------------------------------------------


def test_stats_of_one_partner_does_not_read_its_whole_history(histories):
    def read(db: Any) -> Any:
        return queries.stats(db, partner="clean")

    plan = plans(histories[LARGE], read)
    small, large = works(histories, read)
    assert flat(small, large), (small, large, plan)


def test_status_finds_a_clean_partners_last_error_without_a_pass_over_all_failures(histories):
    def read(db: Any) -> Any:
        return queries.list_jobs(db, limit=1, status="failed", partner="clean")

    assert read(histories[LARGE]) == []
    plan = plans(histories[LARGE], read)
    small, large = works(histories, read)
    assert flat(small, large), (small, large, plan)


def test_the_failed_page_shows_the_file_that_failed_today(tmp_path):
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'edi-inbox.db'}", partners=False)
    env = {"EDI_INBOX_CONFIG": str(config)}
    state = tmp_path / "state"
    (state / "inbox").mkdir(parents=True)
    (state / "inbox" / "bad-po.edi").write_bytes(BAD)
    result = CliRunner().invoke(main, ["run", "--once"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads((state / "failed" / "bad-po.edi.error.json").read_text())
    today = report["job_id"]
    # A year of older failures whose files the operator cleared out long ago.
    multiply(tmp_path / "edi-inbox.db", 600, partner="")
    with server(config, tmp_path) as (port, _process):
        page = http_request(port, "GET", "/failed")
    assert page.status == 200
    assert "not in failed/" in page.text  # the old ones are listed
    assert today in page.text, "the file waiting in failed/ is not on the failed page"


def test_paging_does_not_repeat_jobs_while_new_ones_arrive(tmp_path):
    settings = Settings(paths=PathSettings(root=tmp_path))
    db = store.open_database(f"sqlite:///{tmp_path / 'edi-inbox.db'}", settings)
    try:
        store.init(db)
        recorder = store.DatabaseRecorder(db)
        start = datetime(2026, 12, 6, tzinfo=UTC)
        for n in range(40):
            record(recorder, make_job(n, started_at=start + timedelta(minutes=n)))
        first = queries.list_jobs(db, limit=20, offset=0)
        for n in range(40, 45):  # the daemon goes on while the operator reads page 1
            record(recorder, make_job(n, started_at=start + timedelta(minutes=n)))
        # The next page as README says to ask for it: after page 1's last job.
        second = queries.list_jobs(db, limit=20, before=first[-1]["job_id"])
    finally:
        store.close_database(db)
    repeated = {j["job_id"] for j in first} & {j["job_id"] for j in second}
    assert not repeated, f"{len(repeated)} jobs of page 1 again on page 2"
    assert all(j["status"] == JobStatus.SUCCEEDED.value for j in first + second)


def _failed_folder(root: Path, others: int) -> tuple[Any, str]:
    """A real failed file (``run --once``) and ``others`` older failed files
    beside it, each with its error.json: failed/ after a year. The settings
    and the real file's job id."""
    root.mkdir()
    config = write_config(root, f"sqlite:///{root / 'edi-inbox.db'}", partners=False)
    state = root / "state"
    (state / "inbox").mkdir(parents=True)
    (state / "inbox" / "bad-po.edi").write_bytes(BAD)
    result = CliRunner().invoke(main, ["run", "--once"], env={"EDI_INBOX_CONFIG": str(config)})
    assert result.exit_code == 0, result.output
    failed = state / "failed"
    report = json.loads((failed / "bad-po.edi.error.json").read_text())
    for n in range(others):
        old = {**report, "job_id": str(uuid.UUID(int=n + 1)), "file": f"old-{n}.edi"}
        (failed / f"old-{n}.edi").write_bytes(BAD)
        (failed / f"old-{n}.edi.error.json").write_text(json.dumps(old, indent=2))
    return edi_config.load(str(config), {}), report["job_id"]


def _read_bytes() -> int:
    """This process's bytes read so far (``rchar``: every read(2), cache or not)."""
    text = Path("/proc/self/io").read_text()
    return int(re.search(r"rchar:\s+(\d+)", text)[1])


def test_retrying_one_job_does_not_read_every_report_in_failed(tmp_path):
    read = []
    for others in (20, 2_000):
        settings, job_id = _failed_folder(tmp_path / str(others), others)
        db = store.open_database(settings.database_url, settings)
        try:  # as the CLI, the API and the dashboard call it: with the records
            before = _read_bytes()
            results = admin.retry(settings, job_id, db=db)
            read.append(_read_bytes() - before)
        finally:
            store.close_database(db)
        assert [r["retried"] for r in results] == [True]
        assert (settings.paths.inbox / "bad-po.edi").exists()
    small, large = read
    assert large <= 3 * small + 64 * 1024, f"{small} bytes read with 20 reports, {large} with 2,000"


def _serve_config(root: Path, db: store.Database) -> Path:
    """A config for ``serve`` on a history's database, partners clean and noisy."""
    root.mkdir()
    config = root / "edi-inbox.toml"
    url = f"sqlite:///{db.database}"
    config.write_text(
        f"[paths]\nroot = {json.dumps(str(root / 'state'))}\n"
        f"[database]\nurl = {json.dumps(url)}\n"
        '[partners]\nunknown = "accept"\n'
        '[partners.clean]\nids = ["ZZ:CLEAN"]\n[partners.noisy]\nids = ["ZZ:NOISY"]\n'
    )
    return config


def _metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', head))
        if head.split("{")[0] == name and found == labels:
            return float(value)
    return None


def _peak_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status)[1])


def test_serve_counts_agree_and_its_memory_stays_flat_at_scale(histories, tmp_path):
    peaks, pages = {}, ("/", "/failed", "/jobs?status=failed", "/api/status", "/partners")
    for n in (SMALL, LARGE):
        config = _serve_config(tmp_path / str(n), histories[n])
        with server(config, tmp_path / str(n)) as (port, process):

            def scraped(port: int = port) -> str | None:
                text = http_request(port, "GET", "/metrics").text
                return text if "edi_inbox_partner_jobs_total{" in text else None

            metrics = poll_until(scraped, timeout=60, interval=0.2, what="partner counts")
            stats = http_request(port, "GET", "/api/jobs/stats").json()
            clean = http_request(port, "GET", "/api/jobs/stats?partner=clean").json()
            for page in pages:
                assert http_request(port, "GET", page).status == 200, page
            peaks[n] = _peak_kib(process.pid)
        half = n // 2
        assert stats["total_jobs"] == n + 1
        assert stats["by_status"] == {**stats["by_status"], "failed": half, "succeeded": half + 1}
        assert clean["total_jobs"] == half + 1
        jobs = {
            s: _metric(metrics, "edi_inbox_jobs_total", status=s) for s in ("failed", "succeeded")
        }
        assert jobs == {"failed": half, "succeeded": half + 1}
        by_partner = {
            (p, s): _metric(metrics, "edi_inbox_partner_jobs_total", partner=p, status=s)
            for p in ("clean", "noisy")
            for s in ("failed", "succeeded")
        }
        assert by_partner == {
            ("clean", "failed"): 0,
            ("clean", "succeeded"): half + 1,
            ("noisy", "failed"): half,
            ("noisy", "succeeded"): 0,
        }
    # The growth is SQLite's page cache (32 MB a connection, ``cache_size``),
    # filled by SlowFigures' passes over jobs and orders: bounded, not per row.
    assert peaks[LARGE] <= peaks[SMALL] + 5 * 32 * 1024, peaks


# -- PostgreSQL ------------------------------------------------------------------------

PG_MULTIPLY = """
INSERT INTO jobs (job_id, file_name, file_sha256, file_size, status, success, started_at,
  completed_at, duration_seconds, po_number, total_amount, vendor_name, error, host,
  sender_id, receiver_id, interchange_control_number, partner, created_at, updated_at)
SELECT md5(i::text || random()::text)::uuid::text, 'po_' || i || '.edi',
  lpad(to_hex(i), 64, '0'), 1234,
  CASE WHEN i %% 2 = 0 THEN 'failed' ELSE 'succeeded' END, i %% 2 = 1,
  timestamptz '2025-12-01 00:00:00+00' + (i::bigint * 31536 / %s) * interval '1 second',
  timestamptz '2025-12-01 00:00:01+00' + (i::bigint * 31536 / %s) * interval '1 second',
  1.5, 'PO-' || i, CASE WHEN i %% 2 = 1 THEN 100.00 END, 'ACME Corp',
  CASE WHEN i %% 2 = 0 THEN 'validation failed' END, 'host-a',
  CASE WHEN i %% 2 = 0 THEN 'NOISY' ELSE 'CLEAN' END, 'RECEIVER', lpad(i::text, 9, '0'),
  CASE WHEN i %% 2 = 0 THEN 'noisy' ELSE 'clean' END, now(), now()
FROM generate_series(1, %s) AS i
"""
PG_ROLLUPS = """
INSERT INTO job_rollups (period, start, status, jobs, reached, durations, duration_total, amount)
SELECT %s, date_trunc(%s, started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
  status, COUNT(*), COUNT(*), COUNT(duration_seconds), COALESCE(SUM(duration_seconds), 0),
  COALESCE(SUM(total_amount), 0)
FROM jobs GROUP BY 2, 3
"""
PG_PARTNER_ROLLUPS = """
INSERT INTO partner_rollups (partner, period, start, status, jobs, reached, durations,
  duration_total, amount)
SELECT partner, %s, date_trunc(%s, started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
  status, COUNT(*), COUNT(*), COUNT(duration_seconds), COALESCE(SUM(duration_seconds), 0),
  COALESCE(SUM(total_amount), 0)
FROM jobs WHERE partner IS NOT NULL GROUP BY 1, 3, 4
"""

PG_ORDERS = (
    """INSERT INTO orders (job_id, po_number, po_number_folded, line_count, total_amount,
      vendor_name, erp_po_id, idempotency_key, status, error, attempts, payload,
      json_version, refused, created_at, updated_at)
    SELECT id, po_number, lower(po_number), 2, 100.00, vendor_name,
      CASE WHEN success THEN 'ERP-' || id END, job_id || ':0',
      CASE WHEN success THEN 'posted' ELSE 'rejected' END, error,
      CASE WHEN success THEN 1 ELSE 0 END,
      '{"po_number":"' || po_number || '","currency":"USD"}', 1, NOT success,
      created_at, updated_at
    FROM jobs WHERE id > %s""",
    """INSERT INTO po_search (suffix, job_id)
    SELECT DISTINCT substr(po_number_folded, k), job_id
    FROM orders, generate_series(1, 16) AS k  -- 'po-200000': 9
    WHERE job_id > %s AND length(po_number_folded) - k + 1 >= 3""",
    """INSERT INTO vendor_search (vendor, job_id)
    SELECT DISTINCT lower(vendor_name), job_id FROM orders WHERE job_id > %s""",
)


@pytest.fixture(scope="module")
def pg_histories() -> Iterator[dict[int, store.Database]]:
    """The same histories on PostgreSQL, each in a private schema."""
    from conftest import pg_base_url, private_schema

    base = pg_base_url()
    opened: dict[int, store.Database] = {}
    with contextlib.ExitStack() as stack:
        for n in (SMALL, LARGE):
            url = stack.enter_context(private_schema(base))
            settings = Settings(paths=PathSettings(root=Path(tempfile.mkdtemp())))
            stack.callback(shutil.rmtree, settings.paths.root, True)
            db = store.open_database(url, settings)
            stack.callback(store.close_database, db)
            store.init(db)
            job = make_job(0, started_at=datetime(2025, 11, 30, tzinfo=UTC))
            job.partner = "clean"
            record(store.DatabaseRecorder(db), job)

            def load(db: Any = db, n: int = n) -> None:
                first = db.execute_sql("SELECT COALESCE(MAX(id), 0) FROM jobs").fetchone()[0]
                db.execute_sql(PG_MULTIPLY, (max(n // 1000, 1),) * 2 + (n,))
                for sql in PG_ORDERS:
                    db.execute_sql(sql, (first,))
                db.execute_sql("DELETE FROM job_rollups")
                db.execute_sql("DELETE FROM partner_rollups")
                for period in ("hour", "day"):
                    db.execute_sql(PG_ROLLUPS, (period, period))
                    db.execute_sql(PG_PARTNER_ROLLUPS, (period, period))

            store.run_unit(db, load)
            store.run_unit(db, lambda db=db: db.execute_sql("ANALYZE"), atomic=False)
            opened[n] = db
        yield opened


class _Statements(logging.Handler):
    """The (sql, params) peewee issues (its DEBUG log)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.issued: list[tuple[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, tuple) and len(record.msg) == 2:
            self.issued.append(record.msg)


def pg_work(db: store.Database, read: Callable[[Any], Any]) -> tuple[int, list[str]]:
    """The shared buffers (hit or read) the SELECTs of ``read`` touch, by
    ``EXPLAIN (ANALYZE, BUFFERS)`` of each as issued; and their plans."""
    db.bind(MODELS, bind_refs=False, bind_backrefs=False)
    handler, logger = _Statements(), logging.getLogger("peewee")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        read(db)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    selects = [(q, p) for q, p in handler.issued if q.lstrip().upper().startswith("SELECT")]

    def explain() -> tuple[int, list[str]]:
        blocks, shown = 0, []
        for sql, params in selects:
            cursor = db.execute_sql("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
            plan = cursor.fetchone()[0]
            plan = json.loads(plan) if isinstance(plan, str) else plan
            top = plan[0]["Plan"]
            blocks += top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)
            shown.append(f"{top['Node Type']}: {top.get('Actual Rows')} rows")
        return blocks, shown

    return store.run_unit(db, explain, write=False)


def pg_works(histories: dict[int, store.Database], read: Callable[[Any], Any]) -> tuple[int, int]:
    small, large = (pg_work(histories[n], read)[0] for n in (SMALL, LARGE))
    return small, large


@pytest.mark.postgres
# The failed page's query is left out: at 2,000 jobs PostgreSQL rightly
# scans the small table (75 buffers), at 200,000 it walks 500 jobs of the
# started_at index and probes each (1,044): bounded, but not within 3x.
@pytest.mark.parametrize(
    "name", [n for n in FLAT_READS if not n.startswith(("db ", "search", "failed"))]
)
def test_postgres_everyday_reads_do_the_same_work_at_50x_the_jobs(pg_histories, name):
    small, large = pg_works(pg_histories, FLAT_READS[name])
    assert large <= FLAT * small + 20, (name, small, large)


@pytest.mark.postgres
def test_postgres_stats_of_one_partner_does_not_read_its_whole_history(pg_histories):
    small, large = pg_works(pg_histories, lambda db: queries.stats(db, partner="clean"))
    assert large <= FLAT * small + 20, (small, large)


@pytest.mark.postgres
def test_postgres_status_finds_a_clean_partners_last_error_cheaply(pg_histories):
    def read(db: Any) -> Any:
        return queries.list_jobs(db, limit=1, status="failed", partner="clean")

    small, large = pg_works(pg_histories, read)
    assert large <= FLAT * small + 20, (small, large)


def test_retry_all_failed_puts_every_file_back_once(tmp_path):
    settings, _ = _failed_folder(tmp_path / "all", 2_000)
    results = admin.retry(settings, all_failed=True)
    assert len(results) == 2_001
    assert all(r["retried"] for r in results), [r for r in results if not r["retried"]][:3]
    assert len({r["job_id"] for r in results}) == 2_001
    inbox = sorted(p.name for p in settings.paths.inbox.iterdir() if not p.name.startswith("."))
    assert inbox == sorted(["bad-po.edi", *(f"old-{n}.edi" for n in range(2_000))])
    assert not [p for p in settings.paths.failed.iterdir() if not p.name.startswith(".")]


@pytest.mark.postgres
@pytest.mark.parametrize("term", ["99999", "PO-1234", "o-19999", "-12"])
def test_postgres_po_search_finds_every_job_whose_po_holds_the_term(pg_histories, term):
    db = pg_histories[LARGE]
    db.bind(MODELS, bind_refs=False, bind_backrefs=False)
    found = queries.search_jobs(db, po_number=term, limit=10_000)

    def brute() -> list[str]:
        rows = db.execute_sql(
            "SELECT job_id FROM jobs WHERE strpos(lower(po_number), lower(%s)) > 0"
            " ORDER BY started_at DESC, id DESC LIMIT 10000",
            (term,),
        ).fetchall()
        return [r[0] for r in rows]

    assert [j["job_id"] for j in found] == store.run_unit(db, brute, write=False)
