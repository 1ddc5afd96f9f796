"""Daemon throughput and pickup latency, against a minimal sequential loop.

    python bench/throughput.py                   # 2000 files, ERP instant and 20 ms
    python bench/throughput.py --files 500       # fewer files
    python bench/throughput.py --big             # also a million jobs on record, a
                                                 # backlog of 100,000 files (minutes)
    python bench/throughput.py --processes 1     # the daemon's jobs on one core

Everything runs on this machine: a threaded ``http.server`` on 127.0.0.1 is the
ERP (answering at once, or after ``--erp-delay-ms``), SQLite is the database,
and the daemon is the real ``edi-inbox run`` subprocess with its real inotify
observer. The headline is the daemon's default configuration (the 997 on,
info logs to a file; only paths, the ERP's URL, ``settle_seconds`` and
``rescan_seconds`` are written in its config file); other configurations are
printed beside it, labelled with what they change. As files per second:

* loop   — the least that does the same work, one file after another: read,
  parse (``X12Reader`` + ``orders.from_transaction``), POST with an
  Idempotency-Key (urllib3, keep-alive, as the daemon), rename into done/, one SQLite
  transaction (one row); no 997, no log line;
* Pipeline.run alone — the pipeline with the SQLite recorder, sequentially,
  without watching or moving: the share of the daemon's work that is not its own;
* daemon — N files renamed into the inbox at once (the uploads already
  finished), timed from the last rename until the last one is in done/
  ("overall", which includes the first ``settle_seconds`` when nothing is
  ready yet) and between 10 % and 90 % done ("steady").

With the instant ERP the daemon runs ``--rounds`` times, each run between two
runs of the loop and compared with their mean, and the median ratio is
reported: on a shared machine the speed drifts by 20 % within minutes. With
the 20 ms ERP the loop posts at most 300 files (its rate is the ERP's).

Then pickup latency: single files written in place, one at a time; the time
from the upload's last write to the file leaving the inbox (the claim), whose
goal is ``settle_seconds`` + 50 ms.

With ``--big``: the default configuration with ``--jobs`` jobs already on
record (seeded by bulk SQL, ``seed_jobs``) against an empty database, back to
back, ``--rounds`` times; and ``--backlog`` files in the inbox before the
daemon starts: files/s, the peak RSS of each of its processes, and whether
the jobs started oldest (mtime) first.

Goals (bench/README.md, "Throughput"): daemon >= 75 % of the loop with the
instant ERP; >= 300 files/s with the 20 ms ERP; a million jobs >= 0.9x an
empty database; a backlog with flat memory, oldest first.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.server
import io
import itertools
import json
import logging
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

# This checkout's code, whatever edi_inbox the interpreter has installed (the
# daemon it starts too: its PYTHONPATH leads with the same folder).
DAEMON_CODE = Path(__file__).resolve().parent.parent / "daemon"
sys.path.insert(0, str(DAEMON_CODE))
from edi_inbox import orders, render  # noqa: E402
from edi_inbox.x12 import X12Reader  # noqa: E402

SAMPLE = Path(__file__).resolve().parent.parent / "tests/data/corpus/botsplugins__850-004010-01.x12"


def make_po(template: bytes, n: int) -> bytes:
    """A distinct 850: ISA13/IEA02 and BEG03 replaced, widths kept."""
    return render.renumbered(template, n)


# -- the ERP ---------------------------------------------------------------------


class ErpHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real ERP's API would
    delay = 0.0
    count = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        key = self.headers.get("Idempotency-Key", "")
        if self.delay:
            time.sleep(self.delay)
        with ErpHandler.lock:
            ErpHandler.count += 1
        answer = json.dumps({"id": f"ERP-{key[:12]}", "bytes": len(body)}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    disable_nagle_algorithm = True  # headers and body leave at once, no delayed-ACK stall

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def erp_server(delay: float):
    handler = type("Handler", (ErpHandler,), {"delay": delay})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/orders"
    finally:
        server.shutdown()
        server.server_close()


# -- the minimal loop ----------------------------------------------------------------


def run_loop(template: bytes, count: int, erp_url: str, work: Path) -> tuple[float, float]:
    """Files per second for: read, parse, POST, rename, one transaction — sequentially;
    and the CPU a file it took, in ms (this process: the ERP's share included)."""
    import urllib3

    inbox, done = work / "inbox", work / "done"
    for folder in (inbox, done):
        folder.mkdir(parents=True)
    for n in range(count):
        (inbox / f"po{n:05d}.edi").write_bytes(make_po(template, 1 + n))
    db = sqlite3.connect(work / "loop.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=wal")
    db.execute("PRAGMA synchronous=normal")
    db.execute("CREATE TABLE jobs (file TEXT, po TEXT, erp_id TEXT, at REAL)")
    client = urllib3.connection_from_url(erp_url, retries=False, timeout=30.0)
    target = urllib3.util.parse_url(erp_url).request_uri
    started, cpu = time.perf_counter(), os.times()
    for name in sorted(os.listdir(inbox)):
        data = (inbox / name).read_bytes()
        for ts in X12Reader(io.BytesIO(data)).transaction_sets():
            po = orders.from_transaction(ts)
            body = json.dumps(po.to_json(), default=str)
            response = client.urlopen(
                "POST",
                target,
                body=body.encode(),
                headers={
                    "Content-Type": "application/json",
                    "Idempotency-Key": orders.idempotency_key(po),
                },
            )
            assert response.status == 201, response.status
            erp_id = json.loads(response.data)["id"]
        os.rename(inbox / name, done / name)
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO jobs VALUES (?, ?, ?, ?)", (name, po.po_number, erp_id, time.time())
        )
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    used = sum(os.times()[:2]) - sum(cpu[:2])
    client.close()
    db.close()
    return count / elapsed, used * 1000 / count


def run_pipeline_alone(
    template: bytes, count: int, erp_url: str, work: Path, variant: Variant
) -> float:
    """Files per second for ``Pipeline.run`` with the SQLite recorder, one file after
    another, no watching or moving: the part of the daemon's work that is not its own.
    The 997 and the log level as ``variant`` says; log lines go to a file."""
    from edi_inbox import log, store
    from edi_inbox.config import AckSettings, ErpSettings, PathSettings, Settings
    from edi_inbox.pipeline import Pipeline

    work.mkdir(parents=True)
    with open(work / "pipeline.log", "w") as stream:  # as under systemd: not a terminal
        log.configure(variant.level, "json", stream)
        settings = Settings(
            paths=PathSettings(root=work),
            erp=ErpSettings(url=erp_url),
            ack=AckSettings(enabled=variant.ack),
        )
        settings.paths.create()
        db = store.open_database(settings.database_url, settings)
        store.init(db)
        datas = [make_po(template, 1 + n) for n in range(count)]
        with Pipeline(settings, store.DatabaseRecorder(db)) as pipeline:
            started = time.perf_counter()
            for n, data in enumerate(datas):
                pipeline.run(work / f"po{n:05d}.edi", data=data)
            elapsed = time.perf_counter() - started
        db.close()
        log.configure("warning", "json")
    return count / elapsed


# -- the daemon ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Variant:
    """One daemon configuration: what the bench changes from the defaults
    (``None``: the default, written nowhere in the config file)."""

    label: str
    ack: bool = True
    level: str = "info"
    workers: int | None = None
    processes: int | str | None = None


def variants(args: argparse.Namespace) -> list[Variant]:
    """The headline configuration first, then the others, labelled with what differs."""
    over = {"workers": args.workers_instant, "processes": args.processes}
    chosen = [
        Variant("default: 997 on, info logs", **over),
        Variant("997 off", ack=False, **over),
        Variant("warning logs", level="warning", **over),
        Variant("997 off, warning logs", ack=False, level="warning", **over),
        Variant("workers = 4", workers=4, processes=args.processes),
        # The defaults before 2026-12-04: the jobs in one process, 4 workers.
        Variant("old defaults: processes = 1, workers = 4", processes=1, workers=4),
    ]
    return [v for v in chosen if args.only is None or v.label.split(":")[0] in args.only]


class Daemon:
    """``edi-inbox run`` as a subprocess, READY=1 on a notify socket; its log
    lines go to a file (``daemon.log``), as to journald under systemd."""

    def __init__(
        self, root: Path, erp_url: str, settle: float, variant: Variant, database: str = ""
    ) -> None:
        self.root = root
        self.inbox, self.done = root / "inbox", root / "done"
        for folder in ("inbox", "processing", "done", "failed", "staging"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        daemon = [f"settle_seconds = {settle}", "rescan_seconds = 60.0"]
        if variant.workers is not None:
            daemon.append(f"workers = {variant.workers}")
        if variant.processes is not None:
            daemon.append(f"processes = {json.dumps(variant.processes)}")
        config = root / "edi-inbox.toml"
        config.write_text(
            "\n".join(
                [
                    "[paths]",
                    f"root = {json.dumps(str(root))}",
                    *(["[database]", f"url = {json.dumps(database)}"] if database else []),
                    "[erp]",
                    f"url = {json.dumps(erp_url)}",
                    "[ack]",
                    f"enabled = {str(variant.ack).lower()}",
                    "[daemon]",
                    *daemon,
                    "[log]",
                    f"level = {json.dumps(variant.level)}",
                    'format = "json"',
                ]
            )
            + "\n"
        )
        name = f"edi-inbox-bench-{uuid.uuid4().hex}"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind("\0" + name)
        self.notify.settimeout(30)
        path = os.pathsep.join(filter(None, [str(DAEMON_CODE), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "NOTIFY_SOCKET": "@" + name, "PYTHONPATH": path}
        env.pop("EDI_INBOX_CONFIG", None)
        self.log = open(root / "daemon.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            daemon_command(config), env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        while not self.notify.recv(4096).startswith(b"READY=1"):
            pass
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        """Keep reading notifications, as systemd does."""
        with contextlib.suppress(OSError):
            while self.notify.recv(4096):
                pass

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()
        self.notify.shutdown(socket.SHUT_RDWR)
        self.notify.close()


def daemon_command(config: Path) -> list[str]:
    """``edi-inbox --config FILE run`` with this interpreter (the venv's console script)."""
    return [sys.executable, "-m", "edi_inbox.cli", "--config", str(config), "run"]


def count_entries(folder: Path) -> int:
    with os.scandir(folder) as entries:
        return sum(1 for _ in entries)


class Arrivals:
    """When each file reached a folder, told by inotify (watchdog), so that
    timing the daemon costs the bench ~20 µs a file instead of a directory
    scan (~1 ms for 2,000 names) every 10 ms on the cores the daemon uses."""

    def __init__(self, folder: Path) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        self.times: list[float] = []
        self.arrived = threading.Condition()
        arrivals = self

        class Handler(FileSystemEventHandler):
            def on_created(self, event: object) -> None:
                with arrivals.arrived:
                    arrivals.times.append(time.perf_counter())
                    arrivals.arrived.notify_all()

        # watchdog 7 logs an error when an emitter stops mid-read; nothing is lost.
        logging.getLogger("watchdog").setLevel(logging.CRITICAL)
        self.observer = Observer()
        self.observer.schedule(Handler(), str(folder))
        self.observer.start()

    def wait(self, count: int, alive: Any) -> list[float]:
        """The first ``count`` arrival times, once they are in (``alive()`` checked meanwhile)."""
        with self.arrived:
            while len(self.times) < count:
                if not alive():
                    raise SystemExit("the daemon died while the bench waited")
                self.arrived.wait(0.5)
            return self.times[:count]

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join()


@dataclasses.dataclass(frozen=True)
class DaemonRun:
    """One timed daemon run: files/s overall and between 10 % and 90 % done,
    and the CPU time a file (user + system, ms) of the daemon's main process,
    of its worker processes together, and of this process (the ERP and the
    arrivals' observer)."""

    overall: float
    steady: float
    cpu_main: float
    cpu_workers: float
    cpu_bench: float

    def cpu(self) -> str:
        return (
            f"CPU a file: workers {self.cpu_workers:.2f} ms, main {self.cpu_main:.2f} ms, "
            f"ERP and bench {self.cpu_bench:.2f} ms"
        )


def process_cpu(pid: int) -> tuple[float, float]:
    """(CPU seconds of process ``pid``, of its child processes together), user + system."""
    ticks = os.sysconf("SC_CLK_TCK")

    def of(one: int) -> float:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks
        return 0.0

    children: list[int] = []
    with contextlib.suppress(OSError):
        children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return of(pid), sum(of(child) for child in children)


def run_daemon(
    template: bytes,
    count: int,
    erp_url: str,
    work: Path,
    settle: float,
    variant: Variant,
    database: str = "",
) -> DaemonRun:
    """Files/s through the running daemon, and the CPU a file it took."""
    daemon = Daemon(work, erp_url, settle, variant, database)
    arrivals = Arrivals(daemon.done)
    try:
        staging = work / "staging"
        names = [f"po{n:05d}.edi" for n in range(count)]
        for n, name in enumerate(names):
            (staging / name).write_bytes(make_po(template, 1 + n))
        for name in names:  # finished uploads arrive at once
            os.rename(staging / name, daemon.inbox / name)
        # The clock starts with every file in the inbox, as the loop's does
        # (renaming 2,000 files takes the bench ~50 ms; nothing is ready
        # before settle_seconds anyway).
        started = time.perf_counter()
        main_before, workers_before = process_cpu(daemon.proc.pid)
        bench_before = os.times()
        times = arrivals.wait(count, lambda: daemon.proc.poll() is None)
        main_after, workers_after = process_cpu(daemon.proc.pid)
        bench_after = os.times()
        if count_entries(daemon.done) != count:
            raise SystemExit(f"{count} arrivals told, but done/ holds another number: see {work}")
        low, high = count // 10, count - count // 10
        steady = (high - low) / max(times[high - 1] - times[low - 1], 1e-9)
        bench = sum(bench_after[:2]) - sum(bench_before[:2])
        return DaemonRun(
            count / (times[-1] - started),
            steady,
            (main_after - main_before) * 1000 / count,
            (workers_after - workers_before) * 1000 / count,
            bench * 1000 / count,
        )
    finally:
        arrivals.stop()
        daemon.stop()


def run_latency(
    template: bytes, erp_url: str, work: Path, settle: float, samples: int, variant: Variant
) -> list[float]:
    """Seconds from an in-place upload's last write until the daemon claims it."""
    daemon = Daemon(work, erp_url, settle, variant)
    latencies = []
    try:
        for n in range(samples):
            path = daemon.inbox / f"single{n:03d}.edi"
            data = make_po(template, 900_000 + n)
            with open(path, "wb") as fh:
                fh.write(data[: len(data) // 2])
                fh.flush()
                time.sleep(0.05)
                fh.write(data[len(data) // 2 :])
            written = time.perf_counter()
            while path.exists():
                time.sleep(0.001)
            latencies.append(time.perf_counter() - written)
            while count_entries(daemon.done) < n + 1:
                time.sleep(0.005)
    finally:
        daemon.stop()
    return latencies


# -- flat as work grows (--big) -------------------------------------------------------


# The rows of job i (1..N), made by SQLite itself from a table of numbers: a
# million jobs in seconds, where building them in Python takes ten minutes.
_SEED = (
    """INSERT INTO jobs (id, job_id, file_name, file_path, file_sha256, file_size, status,
        success, started_at, completed_at, duration_seconds, po_number,
        total_amount, erp_po_id, vendor_name, error, host, sender_id,
        receiver_id, interchange_control_number, acks, edi_content, created_at, updated_at)
    SELECT i, printf('%08x-0000-4000-8000-%012x', i, i), 'old' || i || '.edi',
        '/srv/edi/done/old' || i || '.edi', printf('%064x', i), 1099,
        CASE WHEN i % 100 < 90 THEN 'succeeded' WHEN i % 100 < 96 THEN 'failed'
             WHEN i % 100 < 99 THEN 'duplicate' ELSE 'interrupted' END,
        i % 100 < 90 OR i % 100 >= 96 AND i % 100 < 99, t, t, 0.05, po,
        printf('%d.%02d', i % 100000, i % 100), 'ERP-' || i, 'Vendor ' || (i % 2000),
        CASE WHEN i % 100 BETWEEN 90 AND 95 THEN 'failed' END,
        'host-a', printf('SENDER%04d', i % 500), 'RECEIVER', printf('%09d', i),
        '["old' || i || '.edi.1.997"]', zeroblob(1099), t, t
    FROM seed""",
    """INSERT INTO job_steps (job_id, step_name, status, data, attempts, started_at,
        duration_seconds, created_at)
    SELECT i, step, 'success', '{"segments":42}', 1, t, 0.01, t FROM seed,
        (SELECT 'parse' AS step UNION ALL SELECT 'transform' UNION ALL SELECT 'validate'
         UNION ALL SELECT 'post_to_erp' UNION ALL SELECT 'acknowledge')""",
    """INSERT INTO job_logs (job_id, timestamp, level, message)
    SELECT i, t, 'info', 'job_finished' FROM seed""",
    """INSERT INTO orders (job_id, po_number, po_number_folded, line_count, total_amount,
        vendor_name, erp_po_id, idempotency_key, status, attempts, payload, created_at,
        updated_at)
    SELECT i, po, po, 3, '12.00', 'Vendor ' || (i % 2000), 'ERP-' || i,
        printf('old-%012x', i), 'posted', 1, '{}', t, t FROM seed""",
    """INSERT INTO job_interchanges (sender_id, receiver_id, control_number, job_id)
    SELECT printf('SENDER%04d', i % 500), 'RECEIVER', printf('%09d', i), i FROM seed""",
    # po_suffixes of a 10-character PO number: its 8 suffixes of 3 or more
    """INSERT OR IGNORE INTO po_search (suffix, job_id)
    SELECT substr(po, k), i FROM seed, (SELECT 1 AS k UNION ALL SELECT 2 UNION ALL
        SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL
        SELECT 7 UNION ALL SELECT 8) ORDER BY 1, 2""",
)


def seed_jobs(path: Path, jobs: int) -> None:
    """A SQLite database with ``jobs`` jobs of a year ago on record (the schema of
    ``store.init``; each job with five steps, a log line, an order, an
    interchange and its PO search keys), written with bulk inserts and its
    indexes built after them, as a bulk load does. No ``ANALYZE``: the daemon
    never runs one, so its queries must do without statistics."""
    from edi_inbox import store
    from edi_inbox.config import PathSettings, Settings

    path.parent.mkdir(parents=True, exist_ok=True)
    db = store.open_database(f"sqlite:///{path}", Settings(paths=PathSettings(root=path.parent)))
    store.init(db)
    db.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -500000")
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    ).fetchall()
    conn.execute("BEGIN")
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    conn.execute(
        "CREATE TEMP TABLE seed AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL "
        "SELECT i + 1 FROM n WHERE i < ?) SELECT i, printf('45%08d', i * 48271 % 100000000) "
        "AS po, strftime('%Y-%m-%d %H:%M:%S', 1704067200 + i * 31, 'unixepoch') "
        "|| '.000000+00:00' AS t FROM n",
        (jobs,),
    )
    for sql in _SEED:
        conn.execute(sql)
    for _, sql in indexes:
        conn.execute(sql)
    conn.execute("COMMIT")
    conn.execute("DROP TABLE seed")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()


def run_million(
    template: bytes,
    count: int,
    erp_url: str,
    base: Path,
    settle: float,
    variant: Variant,
    jobs: int,
    rounds: int,
) -> list[tuple[float, float]]:
    """(files/s with an empty database, files/s with ``jobs`` jobs on record) per
    round, the two runs back to back, the order alternating between rounds."""
    big = base / "million" / "edi-inbox.db"
    started = time.perf_counter()
    seed_jobs(big, jobs)
    seeded = time.perf_counter()
    # Written unsynced: without this the kernel writes the load back during the
    # first runs, and their fsyncs (the 997s) wait behind it.
    os.sync()
    print(
        f"  seeded {jobs:,} jobs in {seeded - started:.0f} s "
        f"({big.stat().st_size / 2**20:.0f} MB), synced in {time.perf_counter() - seeded:.0f} s"
    )
    pairs = []
    for n in range(rounds):
        rates = {}
        for which in ("empty", "big") if n % 2 == 0 else ("big", "empty"):
            work = base / f"million-{n}-{which}"
            url = f"sqlite:///{big}" if which == "big" else ""
            rates[which] = run_daemon(
                template, count, erp_url, work / "daemon", settle, variant, url
            ).overall
        pairs.append((rates["empty"], rates["big"]))
        print(
            f"  round {n + 1}: empty database {rates['empty']:.1f} files/s, "
            f"{jobs:,} jobs {rates['big']:.1f} files/s = {rates['big'] / rates['empty']:.2f}x"
        )
    return pairs


def process_memory(pid: int) -> dict[int, tuple[int, int]]:
    """{pid: (VmRSS, VmHWM) in bytes} for the daemon and its child processes."""
    found: dict[int, tuple[int, int]] = {}
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for one in pids:
        with contextlib.suppress(OSError):
            fields = dict(
                line.split(":", 1) for line in Path(f"/proc/{one}/status").read_text().splitlines()
            )
            found[one] = tuple(  # type: ignore[assignment]
                int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")
            )
    return found


def run_backlog(
    template: bytes, count: int, erp_url: str, work: Path, settle: float, variant: Variant
) -> dict[str, Any]:
    """``count`` files in the inbox before the daemon starts, each a millisecond
    older than the next (mtime); files/s from the start, the peak RSS of the main
    process and of each worker process, the main process's RSS as the backlog
    drains, and how far the order the jobs started in strays from oldest first."""
    root = work / "daemon"
    inbox, done = root / "inbox", root / "done"
    for folder in (inbox, done):
        folder.mkdir(parents=True)
    oldest = time.time() - 3600
    for n in range(count):
        path = inbox / f"po{n:06d}.edi"
        path.write_bytes(make_po(template, 1 + n))
        stamp = oldest + n / 1000
        os.utime(path, (stamp, stamp))
    arrivals = Arrivals(done)
    started = time.perf_counter()
    daemon = Daemon(root, erp_url, settle, variant)
    ready = time.perf_counter() - started
    main_rss: list[tuple[int, int]] = []  # (files done, RSS of the main process)
    peaks: dict[int, int] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(1.0):
            memory = process_memory(daemon.proc.pid)
            for pid, (_, hwm) in memory.items():
                peaks[pid] = max(peaks.get(pid, 0), hwm)
            if daemon.proc.pid in memory:
                main_rss.append((len(arrivals.times), memory[daemon.proc.pid][0]))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        times = arrivals.wait(count, lambda: daemon.proc.poll() is None)
        for pid, (_, hwm) in process_memory(daemon.proc.pid).items():
            peaks[pid] = max(peaks.get(pid, 0), hwm)
    finally:
        stop.set()
        sampler.join()
        arrivals.stop()
        daemon.stop()
    db = sqlite3.connect(root / "edi-inbox.db")
    names = [r[0] for r in db.execute("SELECT file_name FROM jobs ORDER BY started_at, id")]
    db.close()
    # Position in the order the jobs started against position by age (mtime).
    strays = sorted(abs(i - int(name[2:8])) for i, name in enumerate(names))
    main_pid = daemon.proc.pid
    return {
        "files/s": count / (times[-1] - started),
        "ready": ready,
        "jobs": len(names),
        "main peak": peaks.get(main_pid, 0),
        "worker peaks": sorted(v for k, v in peaks.items() if k != main_pid),
        "main rss": main_rss,
        "stray max": strays[-1] if strays else 0,
        "stray p99": strays[int(len(strays) * 0.99)] if strays else 0,
        "in order": sum(1 for a, b in itertools.pairwise(names) if a < b),
    }


def print_backlog(count: int, got: dict[str, Any]) -> None:
    mb = 2**20
    rss = got["main rss"]
    picks = [rss[int(len(rss) * f)] for f in (0.0, 0.25, 0.5, 0.75)] + rss[-1:] if rss else []
    print(
        f"  {count:,} files at start: {got['files/s']:.1f} files/s from the daemon's start "
        f"(READY=1 after {got['ready']:.1f} s); peak RSS main process "
        f"{got['main peak'] / mb:.0f} MB, worker processes "
        + (", ".join(f"{p / mb:.0f}" for p in got["worker peaks"]) or "none")
        + " MB; main RSS as it drained: "
        + ", ".join(f"{rss / mb:.0f} MB at {n:,} done" for n, rss in picks)
    )
    print(
        f"  order: {got['jobs']:,} jobs; started oldest first but for a stray of at most "
        f"{got['stray max']} places (p99 {got['stray p99']}); "
        f"{got['in order'] / max(got['jobs'] - 1, 1):.1%} of neighbours in age order"
    )


def processes_arg(text: str) -> int | str:
    return text if text == "auto" else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="daemon workers for the 20 ms ERP (default: the daemon's default)",
    )
    parser.add_argument(
        "--workers-instant",
        type=int,
        default=None,
        help="daemon workers for the instant ERP (default: the daemon's default)",
    )
    parser.add_argument(
        "--processes",
        type=processes_arg,
        default=None,
        help="daemon processes, a number or auto (default: the daemon's default)",
    )
    parser.add_argument("--erp-delay-ms", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=0.2, help="daemon settle_seconds")
    parser.add_argument("--latency-samples", type=int, default=20)
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of daemon runs between loop runs"
    )
    parser.add_argument(
        "--only",
        action="append",
        help="run only the configurations whose label starts so (repeatable): "
        "default, '997 off', 'warning logs', '997 off, warning logs', 'workers = 4', "
        "'old defaults'",
    )
    parser.add_argument("--no-slow", action="store_true", help="skip the 20 ms ERP run")
    parser.add_argument(
        "--no-instant", action="store_true", help="skip the instant ERP runs beside the loop"
    )
    parser.add_argument(
        "--big",
        action="store_true",
        help="also the million-job and the backlog figures (minutes: seeds --jobs, "
        "writes --backlog files)",
    )
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs on record (--big)")
    parser.add_argument(
        "--backlog", type=int, default=100_000, help="files in the inbox at start (--big)"
    )
    args = parser.parse_args()
    template = SAMPLE.read_bytes()
    print(
        f"{args.files} files of {len(template)} bytes; {os.cpu_count()} CPUs, "
        f"{len(os.sched_getaffinity(0))} usable; settle_seconds = {args.settle:g}"
    )
    base = Path(tempfile.mkdtemp(prefix="edi-bench-"))
    try:
        chosen = variants(args)
        with erp_server(0.0) if not args.no_instant else contextlib.nullcontext("") as url:
            # In-process, each configuration beside the others: the cost of
            # the 997 and of the info lines without the daemon's own work.
            # Twice each, interleaved, the best kept: the first run in the
            # process also pays its imports and the ERP's first connection.
            alone: dict[str, float] = {}
            for n in range(0 if args.no_instant else 2):
                # (one process: variants that differ only in processes or workers are not run)
                in_process = [v for v in chosen if not v.label.startswith(("workers", "old"))]
                for k, variant in enumerate(in_process):
                    rate = run_pipeline_alone(
                        template, args.files, url, base / f"alone-{n}-{k}", variant
                    )
                    alone[variant.label] = max(rate, alone.get(variant.label, 0.0))
            first = next(iter(alone.values()), 0.0)
            if alone:
                print(
                    "instant ERP, Pipeline.run alone: "
                    + "; ".join(f"{k} {v:.1f} files/s ({v / first:.2f}x)" for k, v in alone.items())
                )
            # Each daemon run sits between two loop runs and is compared with
            # their mean: on a shared machine the speed drifts within minutes.
            ratios: dict[str, list[tuple[float, float]]] = {v.label: [] for v in chosen}
            before, loop_cpu = (
                (0.0, 0.0)
                if args.no_instant
                else run_loop(template, args.files, url, base / "loop-0")
            )
            for n in range(0 if args.no_instant else args.rounds):
                for variant in chosen:
                    work = base / f"{n}-{variant.label.replace(' ', '_')}"
                    run = run_daemon(
                        template, args.files, url, work / "daemon", args.settle, variant
                    )
                    after, loop_cpu = run_loop(template, args.files, url, work / "loop")
                    loop = (before + after) / 2
                    ratios[variant.label].append((run.overall / loop, run.steady / loop))
                    print(
                        f"  round {n + 1}, {variant.label}: loop {before:.1f} / {after:.1f} "
                        f"files/s before / after; daemon {run.overall:.1f} overall, "
                        f"{run.steady:.1f} steady = {run.overall / loop:.0%} / "
                        f"{run.steady / loop:.0%} of the loop's mean; {run.cpu()}; "
                        f"the loop's CPU a file {loop_cpu:.2f} ms (its ERP included)"
                    )
                    before = after
            if not args.no_instant:
                print(f"instant ERP, median of {args.rounds} rounds, daemon / loop:")
            for label, pairs in ratios.items() if not args.no_instant else ():
                head = "HEADLINE " if label == chosen[0].label else "         "
                print(
                    f"  {head}{label}: {statistics.median(r[0] for r in pairs):.0%} overall, "
                    f"{statistics.median(r[1] for r in pairs):.0%} steady"
                )
        if not args.no_slow:
            slow = chosen[0]
            if args.workers is not None:
                slow = dataclasses.replace(slow, workers=args.workers)
            with erp_server(args.erp_delay_ms / 1000) as url:
                loop, _ = run_loop(template, min(args.files, 300), url, base / "slow-loop")
                run = run_daemon(
                    template, args.files, url, base / "slow" / "daemon", args.settle, slow
                )
            workers = "default workers" if args.workers is None else f"{args.workers} workers"
            print(
                f"{args.erp_delay_ms:g} ms ERP, {slow.label}, {workers}: "
                f"daemon {run.overall:.1f} overall, {run.steady:.1f} steady (loop {loop:.1f}); "
                f"goal >= 300 files/s; {run.cpu()}"
            )
        if args.latency_samples:
            with erp_server(0.0) as url:
                latencies = run_latency(
                    template, url, base / "latency", args.settle, args.latency_samples, chosen[0]
                )
            extra = [(s - args.settle) * 1000 for s in latencies]
            print(
                f"pickup after the last write: settle {args.settle * 1000:.0f} ms + "
                f"median {statistics.median(extra):.1f} ms, max {max(extra):.1f} ms "
                f"({len(latencies)} uploads)"
            )
        if args.big:
            with erp_server(0.0) as url:
                if args.jobs:  # --jobs 0: the backlog figure alone
                    print(f"instant ERP, {chosen[0].label}, {args.jobs:,} jobs on record:")
                    pairs = run_million(
                        template,
                        args.files,
                        url,
                        base,
                        args.settle,
                        chosen[0],
                        args.jobs,
                        args.rounds,
                    )
                    ratio = statistics.median(big / empty for empty, big in pairs)
                    print(f"  HEADLINE {args.jobs:,} jobs / empty: {ratio:.2f}x; goal >= 0.9x")
                if args.backlog:  # --backlog 0: the million-job figure alone
                    print(f"instant ERP, {chosen[0].label}, a backlog at start:")
                    got = run_backlog(
                        template, args.backlog, url, base / "backlog", args.settle, chosen[0]
                    )
                    print_backlog(args.backlog, got)
    finally:
        if os.environ.get("EDI_BENCH_KEEP"):
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
