"""How fast the job records answer, with a million jobs on record.

    python bench/queries.py [--jobs 1000000] [--runs 7] [--files 2000] [--db PATH]

1. Seeds a SQLite database (schema from ``store.init``, so the indexes are the
   production ones) with N jobs over a year, each with five steps, two log
   lines, an order, an interchange, its PO and vendor search keys and the hourly rollups,
   using raw ``executemany`` in big transactions (indexes dropped during the
   load and rebuilt after it, as a bulk load should), then ``ANALYZE``.
2. Times what the CLI runs (``stats``, ``jobs list``, ``jobs show``, ``jobs
   search`` by PO and by vendor, ``status``): the median of ``--runs`` runs.
3. Times recording ``--files`` files through ``DatabaseRecorder`` (the
   pipeline's calls, one transaction each) next to raw ``sqlite3`` writing the
   same rows: in one transaction per file, and in the recorder's transactions.

The machine is shared: compare the ratios printed in the same run.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from edi_inbox import queries, store
from edi_inbox.config import PathSettings, Settings
from edi_inbox.jobs import (
    Interchange,
    JobResult,
    JobStatus,
    LogEntry,
    OrderResult,
    StepResult,
    StepStatus,
)

START = datetime(2024, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=365)
STEPS = ("parse", "transform", "validate", "post_to_erp", "acknowledge")
CHUNK = 20_000
NAMES = ("Müller", "Acme", "Ørsted", "Straße Bau", "Global Foods", "Señor Café", "Nordwind")


def vendors(count: int = 2000) -> list[str]:
    rng = random.Random(7)
    return [
        f"{rng.choice(NAMES)} {kind} {i}"
        for i, kind in enumerate(["GmbH", "Inc", "AG"] * (count // 3 + 1))
    ][:count]


def t(moment: datetime) -> str:
    return moment.isoformat(sep=" ", timespec="microseconds")


JOB_COLUMNS = (
    "id", "job_id", "file_name", "file_path", "file_sha256", "file_size", "status", "success",
    "started_at", "completed_at", "duration_seconds", "po_number",
    "total_amount", "erp_po_id", "vendor_name", "error", "host",
    "sender_id", "receiver_id", "interchange_control_number", "edi_content", "created_at",
    "updated_at",
)  # fmt: skip
TABLES = {
    "jobs": JOB_COLUMNS,
    "job_steps": ("job_id", "step_name", "status", "data", "attempts", "started_at",
                  "duration_seconds", "created_at"),
    "job_logs": ("job_id", "timestamp", "level", "message", "details"),
    "orders": ("job_id", "po_number", "po_number_folded", "line_count", "total_amount",
               "vendor_name", "erp_po_id", "idempotency_key", "status", "attempts", "payload",
               "refused", "created_at", "updated_at"),
    "job_interchanges": ("sender_id", "receiver_id", "control_number", "job_id"),
    "po_keys": ("suffix", "job_id"),
    "vendor_search": ("vendor", "job_id"),
    "job_rollups": ("period", "start", "status", "jobs", "reached", "durations",
                    "duration_total", "amount"),
}  # fmt: skip


class Generator:
    """A year of made-up jobs: 90% succeeded, 6% failed, 3% duplicate, 1% interrupted;
    2,000 vendors (some non-ASCII), 500 senders, random 10-digit PO numbers."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.rng = random.Random(42)
        self.names = vendors()
        self.folded = [store.fold(v) for v in self.names]
        self.senders = [f"SENDER{i:04d}" for i in range(500)]
        self.statuses = ["succeeded"] * 90 + ["failed"] * 6 + ["duplicate"] * 3 + ["interrupted"]
        self.content = b"ISA*00*          *00*          *ZZ*SENDER*ZZ*RECEIVER*..." * 4
        self.rollups: dict[tuple[str, str, str], list[Any]] = {}
        self.picks: list[tuple[str, str, str]] = []

    def chunk(self, first: int, last: int) -> dict[str, list[tuple[Any, ...]]]:
        """The rows of jobs first..last-1, per table."""
        rng, every = self.rng, SPAN / self.jobs
        out: dict[str, list[tuple[Any, ...]]] = {table: [] for table in TABLES}
        for i in range(first, last):
            started = START + every * i
            status = rng.choice(self.statuses)
            vendor = rng.randrange(len(self.names))
            po = f"45{rng.randrange(10**8):08d}"
            amount = Decimal(rng.randrange(100, 10_000_000)) / 100
            duration = round(rng.uniform(0.05, 3.0), 3)
            job_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            pk, when, done = i + 1, t(started), t(started + timedelta(seconds=duration))
            for period, start in store.ROLLUP_PERIODS:
                key = (period, t(start(started)), status)
                entry = self.rollups.setdefault(key, [0, 0, 0.0, Decimal(0)])
                entry[0] += 1
                entry[1] += 1
                entry[2] += duration
                entry[3] += amount
            if i in (self.jobs // 2, self.jobs - 10):
                self.picks.append((job_id, po, self.names[vendor]))
            out["jobs"].append((
                pk, job_id, f"po_{i}.edi", f"/srv/edi/done/po_{i}.edi", f"{i:064x}", 1234,
                status, status in ("succeeded", "duplicate"), when, done, duration, po,
                str(amount), f"ERP-{i}", self.names[vendor],
                "validation failed" if status == "failed" else None, "host-a",
                rng.choice(self.senders), "RECEIVER", f"{i % 10**9:09d}", self.content, when,
                when,
            ))  # fmt: skip
            out["job_steps"].extend(
                (pk, s, "success", '{"segments":42}', 1, when, 0.01, when) for s in STEPS
            )
            out["job_logs"].append((pk, when, "info", "job_started", None))
            out["job_logs"].append((pk, done, "info", "job_finished", None))
            out["orders"].append((
                pk, po, po, 3, str(amount), self.names[vendor], f"ERP-{i}", job_id, "posted", 1,
                "{}", False, when, when,
            ))  # fmt: skip
            out["job_interchanges"].append((out["jobs"][-1][17], "RECEIVER", f"{i:09d}", pk))
            out["po_keys"].extend((s, pk) for s in store.po_suffixes(po))
            out["vendor_search"].append((self.folded[vendor], pk))
        return out

    def rollup_rows(self) -> list[tuple[Any, ...]]:
        return [(*key, n, n, nd, total, str(amount)) for key, (n, nd, total, amount) in
                self.rollups.items()]  # fmt: skip


def seed(path: Path, jobs: int) -> list[tuple[str, str, str]]:
    """Fill a SQLite database; returns a few (job_id, po, vendor) to look up."""
    gen = Generator(jobs)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -1000000")
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    conn.execute("CREATE TEMP TABLE po_keys (suffix TEXT, job_id INTEGER)")

    def insert(table: str, rows: list[tuple[Any, ...]]) -> None:
        columns = ", ".join(f'"{c}"' for c in TABLES[table])
        marks = ", ".join("?" * len(TABLES[table]))
        conn.executemany(f'INSERT INTO "{table}" ({columns}) VALUES ({marks})', rows)

    for first in range(0, jobs, CHUNK):
        last = min(first + CHUNK, jobs)
        conn.execute("BEGIN")
        for table, rows in gen.chunk(first, last).items():
            insert(table, rows)
        conn.execute("COMMIT")
        print(f"\r  seeded {last:,} jobs", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    conn.execute("BEGIN")
    conn.execute(
        'INSERT OR IGNORE INTO "po_search" ("suffix", "job_id")'
        " SELECT suffix, job_id FROM po_keys ORDER BY suffix, job_id"
    )
    insert("job_rollups", gen.rollup_rows())
    conn.execute("COMMIT")
    conn.execute("DROP TABLE po_keys")
    for _, sql in indexes:
        conn.execute(sql)
    conn.execute("ANALYZE")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    return gen.picks


def seed_postgres(url: str, jobs: int) -> list[tuple[str, str, str]]:
    """Fill a PostgreSQL database (schema from store.init) with COPY."""
    import csv
    import io

    import psycopg2

    gen = Generator(jobs)
    conn = psycopg2.connect(url)
    cur = conn.cursor()
    cur.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
        " AND indexname NOT IN (SELECT conname FROM pg_constraint)"
    )
    indexes = cur.fetchall()
    for name, _ in indexes:
        cur.execute(f'DROP INDEX "{name}"')
    cur.execute('CREATE TEMP TABLE po_keys (suffix TEXT COLLATE "C", job_id BIGINT)')

    def copy(table: str, rows: list[tuple[Any, ...]]) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in rows:
            writer.writerow([f"\\x{v.hex()}" if isinstance(v, bytes) else v for v in row])
        buffer.seek(0)
        columns = ", ".join(f'"{c}"' for c in TABLES[table])
        cur.copy_expert(f'COPY "{table}" ({columns}) FROM STDIN WITH (FORMAT csv)', buffer)

    for first in range(0, jobs, CHUNK):
        last = min(first + CHUNK, jobs)
        for table, rows in gen.chunk(first, last).items():
            copy(table, rows)
        conn.commit()
        print(f"\r  seeded {last:,} jobs", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    cur.execute(
        'INSERT INTO "po_search" ("suffix", "job_id") SELECT DISTINCT suffix, job_id'
        " FROM po_keys ORDER BY suffix, job_id"
    )
    copy("job_rollups", gen.rollup_rows())
    cur.execute("SELECT setval(pg_get_serial_sequence('jobs', 'id'), (SELECT max(id) FROM jobs))")
    for _, sql in indexes:
        cur.execute(sql)
    conn.commit()
    conn.autocommit = True
    cur.execute("VACUUM ANALYZE")
    conn.close()
    return gen.picks


def median_ms(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def sample_job(n: int) -> JobResult:
    """A typical file: one 850, five steps, a log line each, one interchange."""
    started = datetime.now(UTC)
    job = JobResult(
        job_id=str(uuid.uuid4()),
        file_name=f"po_{n}.edi",
        status=JobStatus.RUNNING,
        started_at=started,
        file_sha256=f"{n:064x}",
        file_size=2048,
        file_path=f"/srv/edi/processing/po_{n}.edi",
        host="bench",
        interchanges=[Interchange("SENDER", "RECEIVER", f"{n:09d}")],
        edi_content=b"ISA*00*...~" * 100,
    )
    job.orders.append(
        OrderResult(
            po_number=f"45{n:08d}",
            idempotency_key=f"SENDER:RECEIVER:{n}:1:0001:45{n:08d}",
            line_count=3,
            total_amount=Decimal("1234.50"),
            vendor_name="Müller GmbH",
            status="posted",
            erp_po_id=f"ERP-{n}",
            attempts=1,
            payload={"po_number": f"45{n:08d}", "lines": [{"qty": "3", "price": "411.50"}]},
        )
    )
    for k, name in enumerate(STEPS):
        job.steps.append(
            StepResult(
                name, StepStatus.SUCCESS, data={"k": k}, started_at=started, duration_seconds=0.001
            )
        )
        job.logs.append(LogEntry(started, "info", f"{name} done", {"step": name}))
    return job


def record_through_recorder(recorder: store.DatabaseRecorder, job: JobResult) -> None:
    # As the pipeline does: the row with the steps before the ERP call in one
    # write, the accepted order at once, the rest with the final status.
    recorder.job_started(job, job.steps[:3], job.logs[:3])
    recorder.order_accepted(job, job.orders[0])
    recorder.next_control_number()
    job.status = JobStatus.SUCCEEDED
    job.completed_at = datetime.now(UTC)
    job.duration_seconds = 0.01
    recorder.job_finished(job, job.logs[3:], job.steps[3:])


def raw_writes(job: JobResult) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The rows the recorder writes for a job, as plain SQL and parameters."""
    now = t(datetime.now(UTC))
    o = job.orders[0]
    i = job.interchanges[0]
    po = store.fold(o.po_number)
    started = t(job.started_at)
    return [
        (
            'INSERT INTO "jobs" ("job_id", "file_name", "file_path", "file_sha256", "file_size",'
            ' "status", "success", "started_at", "completed_at", "duration_seconds",'
            ' "po_number", "total_amount", "erp_po_id", "vendor_name",'
            ' "host", "sender_id", "receiver_id",'
            ' "interchange_control_number", "acks", "edi_content", "created_at", "updated_at")'
            " VALUES (" + ", ".join(["?"] * 22) + ")",
            [(job.job_id, job.file_name, job.file_path, job.file_sha256, job.file_size,
              "succeeded", True, started, now, 0.01, o.po_number, str(o.total_amount),
              o.erp_po_id, o.vendor_name, job.host, i.sender_id,
              i.receiver_id, i.control_number, None, job.edi_content, now, now)],
        ),
        (
            'INSERT INTO "job_steps" ("job_id", "step_name", "status", "data", "attempts",'
            ' "started_at", "duration_seconds", "created_at")'
            ' VALUES ((SELECT "id" FROM "jobs" WHERE "job_id" = ?), ?, ?, ?, 1, ?, ?, ?)',
            [(job.job_id, s.step_name, "success", store.dumps(s.data), started, 0.001, now)
             for s in job.steps],
        ),
        (
            'INSERT INTO "job_logs" ("job_id", "timestamp", "level", "message", "details")'
            ' VALUES ((SELECT "id" FROM "jobs" WHERE "job_id" = ?), ?, ?, ?, ?)',
            [(job.job_id, t(e.timestamp), e.level, e.message, store.dumps(e.details))
             for e in job.logs],
        ),
        (
            'INSERT INTO "orders" ("job_id", "po_number", "po_number_folded", "line_count",'
            ' "total_amount", "vendor_name", "erp_po_id", "idempotency_key", "status",'
            ' "attempts", "payload", "refused", "created_at", "updated_at")'
            ' VALUES ((SELECT "id" FROM "jobs" WHERE "job_id" = ?),'
            " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(job.job_id, o.po_number, po, o.line_count, str(o.total_amount), o.vendor_name,
              o.erp_po_id, o.idempotency_key, o.status, o.attempts, store.dumps(o.payload),
              o.refused, now, now)],
        ),
        (
            'INSERT INTO "job_interchanges" ("sender_id", "receiver_id", "control_number",'
            ' "job_id") VALUES (?, ?, ?, (SELECT "id" FROM "jobs" WHERE "job_id" = ?))',
            [(i.sender_id, i.receiver_id, i.control_number, job.job_id)],
        ),
        (
            'INSERT INTO "po_search" ("suffix", "job_id")'
            ' VALUES (?, (SELECT "id" FROM "jobs" WHERE "job_id" = ?))',
            [(s, job.job_id) for s in store.po_suffixes(po)],
        ),
        (
            'INSERT INTO "vendor_search" ("vendor", "job_id")'
            ' VALUES (?, (SELECT "id" FROM "jobs" WHERE "job_id" = ?))',
            [(store.fold(o.vendor_name), job.job_id)],
        ),
        (
            'INSERT INTO "job_rollups" ("period", "start", "status", "jobs", "reached",'
            ' "durations", "duration_total", "amount") VALUES (?, ?, ?, 1, 1, 1, 0.01, ?)'
            ' ON CONFLICT ("period", "start", "status")'
            ' DO UPDATE SET "jobs" = "jobs" + 1, "reached" = "reached" + 1',
            [(period, t(start(job.started_at)), "succeeded", str(o.total_amount))
             for period, start in store.ROLLUP_PERIODS],
        ),
        ('UPDATE "control_numbers" SET "value" = "value" + 1 WHERE "name" = ?', [("isa13",)]),
    ]  # fmt: skip


def fresh_database(folder: Path, name: str) -> Path:
    path = folder / name
    db = store.open_database(f"sqlite:///{path}", Settings(paths=PathSettings(root=folder)))
    store.init(db)
    db.close()
    return path


def bench_recording(folder: Path, files: int) -> dict[str, float]:
    """Per-file cost (µs): the recorder, raw sqlite3 in one transaction, raw sqlite3
    in the recorder's four transactions."""
    out: dict[str, float] = {}
    path = fresh_database(folder, "record.db")
    db = store.open_database(f"sqlite:///{path}", Settings(paths=PathSettings(root=folder)))
    recorder = store.DatabaseRecorder(db)
    jobs = [sample_job(n) for n in range(files)]
    warm = [sample_job(10**7 + n) for n in range(200)]
    for job in warm:
        record_through_recorder(recorder, job)
    started = time.perf_counter()
    for job in jobs:
        record_through_recorder(recorder, job)
    out["recorder"] = (time.perf_counter() - started) / files * 1e6
    db.close()

    for label, split in (("raw_one_txn", False), ("raw_recorder_txns", True)):
        path = fresh_database(folder, f"{label}.db")
        conn = sqlite3.connect(path, isolation_level=None)
        for pragma in (  # as store.SqliteStore sets them
            "journal_mode = WAL",
            "synchronous = NORMAL",
            "foreign_keys = 1",
            "wal_autocheckpoint = 10000",
            "journal_size_limit = 67108864",
        ):
            conn.execute(f"PRAGMA {pragma}")
        batches = [raw_writes(sample_job(n)) for n in range(files)]
        started = time.perf_counter()
        for writes in batches:
            if not split:
                conn.execute("BEGIN IMMEDIATE")
                for sql, rows in writes:
                    conn.executemany(sql, rows)
                conn.execute("COMMIT")
                continue
            # The recorder's units: the job row with the three steps before the
            # ERP call and their logs, search keys; order; control number; the
            # job's final update with the last two steps and logs, interchange, rollup.
            jobs_sql, steps, logs, orders, inter, keys, vendors, roll, control = writes
            head = [jobs_sql, (steps[0], steps[1][:3]), (logs[0], logs[1][:3]), keys, vendors]
            tail = [(steps[0], steps[1][3:]), (logs[0], logs[1][3:])]
            units = [head, [orders], [control], [*tail, inter, roll]]
            for unit in units:
                conn.execute("BEGIN IMMEDIATE")
                for sql, rows in unit:
                    conn.executemany(sql, rows)
                conn.execute("COMMIT")
        out[label] = (time.perf_counter() - started) / files * 1e6
        conn.close()
    return out


def admin(url: str, sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    conn.cursor().execute(sql)
    conn.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--files", type=int, default=2000, help="files for the recording bench")
    parser.add_argument("--db", type=Path, help="keep the seeded SQLite database here")
    parser.add_argument(
        "--url",
        help="seed and query this PostgreSQL instead (in a schema of its own, dropped after)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL schema")
    parser.add_argument("--schema", help="query this kept PostgreSQL schema, no seeding")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="edi-inbox-bench-"))
    settings = Settings(paths=PathSettings(root=folder))
    schema = None
    started = time.perf_counter()
    if args.url:
        schema = args.schema or f"bench_{uuid.uuid4().hex[:8]}"
        url = f"{args.url}{'&' if '?' in args.url else '?'}options=-csearch_path%3D{schema}"
        if args.schema:  # reuse a kept one
            db = store.open_database(url, settings)
            rows = db.execute_sql(
                "SELECT job_id, po_number, vendor_name FROM jobs WHERE id = %s", (args.jobs // 2,)
            ).fetchall()
            picks = [tuple(rows[0])]
            db.close_all()
        else:
            admin(args.url, f"CREATE SCHEMA {schema}")
            db = store.open_database(url, settings)
            store.init(db)
            db.close_all()
            picks = seed_postgres(url, args.jobs)
        where = f"PostgreSQL schema {schema}"
    else:
        path = args.db or folder / "jobs.db"
        if path.exists():
            raise SystemExit(f"{path} exists: give a new file")
        fresh_database(path.parent, path.name)
        picks = seed(path, args.jobs)
        url = f"sqlite:///{path}"
        where = f"SQLite, {os.path.getsize(path) / 1e6:,.0f} MB"
    print(f"seeded {args.jobs:,} jobs in {time.perf_counter() - started:.1f} s ({where})")

    db = store.open_database(url, settings)
    job_id, po, vendor = picks[0]
    now = START + SPAN
    day, month = now - timedelta(hours=24), now - timedelta(days=30, minutes=17)

    def search(**kw: Any) -> Callable[[], Any]:
        return lambda: queries.search_jobs(db, **kw)

    cases: list[tuple[str, Callable[[], Any]]] = [
        ("stats (all jobs)", lambda: queries.stats(db)),
        ("stats --since 24h", lambda: queries.stats(db, since=day)),
        ("stats --since 30 days, mid-hour", lambda: queries.stats(db, since=month)),
        ("status", lambda: queries.status_summary(db, now=now)),
        ("jobs list", lambda: queries.list_jobs(db)),
        ("jobs list --status failed --offset 1000",
         lambda: queries.list_jobs(db, status="failed", offset=1000)),
        ("jobs show ID", lambda: queries.show_job(db, job_id)),
        ("jobs show PREFIX (8 chars)", lambda: queries.show_job(db, job_id[:8])),
        ("jobs search --po-number FULL", search(po_number=po)),
        ("jobs search --po-number 5-digit substring", search(po_number=po[4:9])),
        ("jobs search --po-number 3-digit substring", search(po_number=po[5:8])),
        ("jobs search --po-number prefix (4)", search(po_number=po[:4], match="prefix")),
        ("jobs search --po-number 45 (every PO)", search(po_number=po[:2])),
        ("jobs search --vendor substring 'müller'", search(vendor="müller")),
        ("jobs search --vendor exact name", search(vendor=vendor)),
        ("jobs search --vendor prefix 'ØRSTED'", search(vendor="ØRSTED", match="prefix")),
        ("jobs search --vendor 'zzz' (no match)", search(vendor="zzz")),
        ("jobs search --sender --since 30d", search(sender="SENDER0042", since=month)),
        ("jobs search --po-number 0000 --success false", search(po_number="0000", success=False)),
        ("jobs search --vendor müller --since 24h", search(vendor="müller", since=day)),
    ]  # fmt: skip
    print(f"\nqueries, median of {args.runs} runs (ms):")
    worst = 0.0
    for label, fn in cases:
        ms, result = median_ms(fn, args.runs)
        worst = max(worst, ms)
        size = len(result) if isinstance(result, list) else 1
        print(f"  {label:<48} {ms:8.2f}   ({size} rows)")
    print(f"  slowest: {worst:.2f} ms")
    if schema:
        db.close_all()
        if args.keep or args.schema:
            print(f"kept: --url {args.url} --schema {schema}")
        else:
            admin(args.url, f"DROP SCHEMA {schema} CASCADE")
    else:
        db.close()

    print(f"\nrecording one file ({args.files} files), µs per file:")
    costs = bench_recording(folder, args.files)
    base = costs["raw_one_txn"]
    for label, us in costs.items():
        print(f"  {label:<20} {us:8.0f}   x{us / base:.1f} of raw one-transaction")
    shutil.rmtree(folder)  # --db keeps its file elsewhere


if __name__ == "__main__":
    main()
