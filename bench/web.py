"""How fast ``edi-inbox serve`` answers, with a million jobs on record.

    python bench/web.py [--jobs 1000000] [--runs 7] [--db PATH]

Seeds a SQLite database as ``bench/queries.py`` does (or reuses ``--db``
when the file exists), starts the real application under uvicorn on
127.0.0.1 in this process, and times each endpoint over HTTP (a fresh
connection per request, as a browser or Prometheus makes): the median of
``--runs`` requests, after one warm-up request each.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).parent))

import queries as seeding  # bench/queries.py

from edi_inbox import store
from edi_inbox.config import DatabaseSettings, PathSettings, Settings
from edi_inbox.web import create_app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timed(port: int, path: str) -> tuple[float, int]:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return (time.perf_counter() - started) * 1000, response.status
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--db", type=Path, help="the seeded SQLite database (kept; reused)")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="edi-inbox-bench-web-"))
    path = args.db or folder / "jobs.db"
    if not path.exists():
        started = time.perf_counter()
        seeding.fresh_database(path.parent, path.name)
        seeding.seed(path, args.jobs)
        print(f"seeded {args.jobs:,} jobs in {time.perf_counter() - started:.0f} s")
    settings = Settings(
        paths=PathSettings(root=folder), database=DatabaseSettings(url=f"sqlite:///{path}")
    )
    settings.paths.create()
    db = store.open_database(settings.database_url, settings)
    row = db.execute_sql(
        "SELECT job_id, po_number, vendor_name FROM jobs WHERE id = 4242"
    ).fetchone()
    job_id, po, vendor = row
    total = db.execute_sql("SELECT MAX(id) FROM jobs").fetchone()[0]
    print(f"{total:,} jobs in {path}")

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, db), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.05)

    cases = [
        "/healthz",
        "/api/status",
        "/api/jobs/stats",
        "/api/jobs/stats?since=2024-12-01",
        "/api/jobs/recent?limit=10",
        "/api/jobs/recent?status=failed&offset=1000",
        f"/api/jobs/{job_id}",
        f"/api/jobs/{job_id[:8]}",
        f"/api/jobs/search?po_number={po}",
        f"/api/jobs/search?po_number={po[4:9]}",
        f"/api/jobs/search?vendor_name={quote(vendor)}",
        "/api/jobs/search?success=false&since=2024-12-01",
        "/metrics",
        "/",
        "/jobs",
        f"/jobs?po_number={po[4:9]}&page=2",
        f"/jobs/{job_id}",
        "/failed",
    ]
    print(f"\nendpoints, median of {args.runs} requests (ms):")
    worst = 0.0
    try:
        for case in cases:
            timed(port, case)
            samples = []
            for _ in range(args.runs):
                ms, status = timed(port, case)
                assert status == 200, (case, status)
                samples.append(ms)
            median = statistics.median(samples)
            worst = max(worst, median)
            print(f"  {median:8.1f}  {case}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    print(f"\nslowest: {worst:.1f} ms ({'under' if worst < 100 else 'OVER'} 100 ms)")


if __name__ == "__main__":
    main()
