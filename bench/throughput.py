"""Daemon throughput and pickup latency, against a minimal sequential loop.

    python bench/throughput.py                   # 2000 files, ERP instant and 20 ms
    python bench/throughput.py --files 500       # fewer files
    python bench/throughput.py --workers 16      # daemon workers for the 20 ms ERP run
    python bench/throughput.py --processes 1     # the daemon's jobs on one core

Everything runs on this machine: a threaded ``http.server`` on 127.0.0.1 is the
ERP (answering at once, or after ``--erp-delay-ms``), SQLite is the database,
and the daemon is the real ``edi-inbox run`` subprocess with its real inotify
observer. For each ERP speed it reports, as files per second:

* loop   — the least that does the same work, one file after another: read,
  parse (``X12Reader`` + ``orders.from_transaction``), POST with an
  Idempotency-Key (urllib3, keep-alive, as the daemon), rename into done/, one SQLite
  transaction (one row);
* Pipeline.run alone — the pipeline with the SQLite recorder, sequentially,
  without watching or moving: the share of the daemon's work that is not its own;
* daemon — N files renamed into the inbox at once (the uploads already
  finished), timed from the last rename until the last one is in done/
  ("overall", which includes the first ``settle_seconds`` when nothing is
  ready yet) and between 10 % and 90 % done ("steady"). The daemon does more
  per file than the loop: a job row, five step rows, log lines, the order,
  the duplicate check, the claim rename, the safe open. 997s are off in both.

With the instant ERP the daemon runs ``--rounds`` times, each run between two
runs of the loop and compared with their mean, and the median ratio is
reported: on a shared machine the speed drifts by 20 % within minutes. With
the slow ERP the loop posts at most 300 files (its rate is the ERP's).

Then pickup latency: single files written in place, one at a time; the time
from the upload's last write to the file leaving the inbox (the claim), whose
goal is ``settle_seconds`` + 50 ms.

Goals (bench/README.md, "Throughput"): daemon >= 75 % of the loop with the
instant ERP; >= 300 files/s with the 20 ms ERP.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.server
import io
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

try:
    from edi_inbox import orders, render
    from edi_inbox.x12 import X12Reader
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "daemon"))
    from edi_inbox import orders, render
    from edi_inbox.x12 import X12Reader

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


def run_loop(template: bytes, count: int, erp_url: str, work: Path) -> float:
    """Files per second for: read, parse, POST, rename, one transaction — sequentially."""
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
    started = time.perf_counter()
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
    client.close()
    db.close()
    return count / elapsed


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
        Variant("processes = auto", processes="auto", workers=args.workers_instant),
    ]
    if args.processes == "auto":  # the headline is auto already
        chosen.pop()
    return [v for v in chosen if args.only is None or v.label.split(":")[0] in args.only]


class Daemon:
    """``edi-inbox run`` as a subprocess, READY=1 on a notify socket; its log
    lines go to a file (``daemon.log``), as to journald under systemd."""

    def __init__(self, root: Path, erp_url: str, settle: float, variant: Variant) -> None:
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
        env = {**os.environ, "NOTIFY_SOCKET": "@" + name}
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


def run_daemon(
    template: bytes,
    count: int,
    erp_url: str,
    work: Path,
    settle: float,
    variant: Variant,
) -> tuple[float, float]:
    """(files/s overall, files/s between 10 % and 90 % done) through the running daemon."""
    daemon = Daemon(work, erp_url, settle, variant)
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
        times = arrivals.wait(count, lambda: daemon.proc.poll() is None)
        if count_entries(daemon.done) != count:
            raise SystemExit(f"{count} arrivals told, but done/ holds another number: see {work}")
        low, high = count // 10, count - count // 10
        steady = (high - low) / max(times[high - 1] - times[low - 1], 1e-9)
        return count / (times[-1] - started), steady
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


def processes_arg(text: str) -> int | str:
    return text if text == "auto" else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument(
        "--workers", type=int, default=16, help="daemon workers for the 20 ms ERP (default 16)"
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
        "default, '997 off', 'warning logs', '997 off, warning logs', 'processes = auto'",
    )
    parser.add_argument("--no-slow", action="store_true", help="skip the 20 ms ERP run")
    args = parser.parse_args()
    template = SAMPLE.read_bytes()
    print(
        f"{args.files} files of {len(template)} bytes; {os.cpu_count()} CPUs, "
        f"{len(os.sched_getaffinity(0))} usable; settle_seconds = {args.settle:g}"
    )
    base = Path(tempfile.mkdtemp(prefix="edi-bench-"))
    try:
        chosen = variants(args)
        with erp_server(0.0) as url:
            # In-process, each configuration beside the others: the cost of
            # the 997 and of the info lines without the daemon's own work.
            # Twice each, interleaved, the best kept: the first run in the
            # process also pays its imports and the ERP's first connection.
            alone: dict[str, float] = {}
            for n in range(2):
                in_process = [v for v in chosen if v.processes != "auto"]
                for k, variant in enumerate(in_process):
                    rate = run_pipeline_alone(
                        template, args.files, url, base / f"alone-{n}-{k}", variant
                    )
                    alone[variant.label] = max(rate, alone.get(variant.label, 0.0))
            first = next(iter(alone.values()))
            print(
                "instant ERP, Pipeline.run alone: "
                + "; ".join(f"{k} {v:.1f} files/s ({v / first:.2f}x)" for k, v in alone.items())
            )
            # Each daemon run sits between two loop runs and is compared with
            # their mean: on a shared machine the speed drifts within minutes.
            ratios: dict[str, list[tuple[float, float]]] = {v.label: [] for v in chosen}
            before = run_loop(template, args.files, url, base / "loop-0")
            for n in range(args.rounds):
                for variant in chosen:
                    work = base / f"{n}-{variant.label.replace(' ', '_')}"
                    overall, steady = run_daemon(
                        template, args.files, url, work / "daemon", args.settle, variant
                    )
                    after = run_loop(template, args.files, url, work / "loop")
                    loop = (before + after) / 2
                    ratios[variant.label].append((overall / loop, steady / loop))
                    print(
                        f"  round {n + 1}, {variant.label}: loop {before:.1f} / {after:.1f} "
                        f"files/s before / after; daemon {overall:.1f} overall, "
                        f"{steady:.1f} steady = {overall / loop:.0%} / {steady / loop:.0%} "
                        "of the loop's mean"
                    )
                    before = after
            print(f"instant ERP, median of {args.rounds} rounds, daemon / loop (overall, steady):")
            for label, pairs in ratios.items():
                head = "HEADLINE " if label == chosen[0].label else "         "
                print(
                    f"  {head}{label}: {statistics.median(r[0] for r in pairs):.0%} overall, "
                    f"{statistics.median(r[1] for r in pairs):.0%} steady"
                )
        if not args.no_slow:
            slow = dataclasses.replace(chosen[0], workers=args.workers)
            with erp_server(args.erp_delay_ms / 1000) as url:
                loop = run_loop(template, min(args.files, 300), url, base / "slow-loop")
                overall, steady = run_daemon(
                    template, args.files, url, base / "slow" / "daemon", args.settle, slow
                )
            print(
                f"{args.erp_delay_ms:g} ms ERP, {slow.label}, {args.workers} workers: "
                f"daemon {overall:.1f} overall, {steady:.1f} steady (loop {loop:.1f})"
            )
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
    finally:
        if os.environ.get("EDI_BENCH_KEEP"):
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
