"""The database away mid-run: no order posted without a job record, no job
left ``running`` once its file has moved, intake paused and resumed by itself.

Real parts throughout: the daemon as a process, a real HTTP ERP counting its
posts, a SQLite file deleted (and put back), SQLite on a real tmpfs filled to
the last byte, a PostgreSQL cluster of the test's own stopped and started
again, and a PO number PostgreSQL cannot index."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras
import pytest
from conftest import pg_ctl, start_again
from daemons import Daemon, Erp

from helpers import claimed, http_server, make_po, poll_until

pytestmark = pytest.mark.e2e


class OutageDaemon(Daemon):
    """The e2e daemon on a database URL of the test's choosing, keeping the
    last STATUS= line systemd would show."""

    def __init__(self, root: Path, erp_url: str, database_url: str, **daemon: Any) -> None:
        super().__init__(root, erp_url, **daemon)
        text = self.config.read_text()
        default = json.dumps("sqlite:///" + str(root / "edi-inbox.db"))
        self.config.write_text(
            text.replace(f"url = {default}", f"url = {json.dumps(database_url)}")
        )
        self.database_url = database_url

    @property
    def status_line(self) -> str:
        """The last STATUS= line sent, as ``systemctl status`` would show it."""
        lines = [
            line
            for message in self.messages
            for line in message.decode(errors="replace").splitlines()
            if line.startswith("STATUS=")
        ]
        return lines[-1] if lines else ""

    def logged(self, event: str) -> bool:
        return f'"event": "{event}"' in self.log.read_text(errors="replace")


@pytest.fixture
def erp() -> Iterator[Erp]:
    with http_server() as server:
        yield Erp(server)


@pytest.fixture
def outage_daemons(tmp_path):
    made: list[OutageDaemon] = []

    def make(*args: Any, **options: Any) -> OutageDaemon:
        daemon = OutageDaemon(tmp_path, *args, **options)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.close()


def upload(inbox: Path, names: list[str], first: int) -> None:
    for n, name in enumerate(names):
        (inbox / f".{name}.part").write_bytes(make_po(first + n))
        os.rename(inbox / f".{name}.part", inbox / name)


# -- what the records say ----------------------------------------------------------


def sqlite_rows(path: Path, sql: str, wal: Path | None = None) -> list[dict[str, Any]]:
    """Rows of a SQLite database with its WAL (``wal``, else PATH-wal), read
    through a copy: the daemon's file is never opened, let alone created."""
    copy = Path(tempfile.mkdtemp(prefix="edi-inbox-read-"))
    wal = wal or Path(f"{path}-wal")
    try:
        shutil.copyfile(path, copy / "jobs.db")
        if wal.exists():
            shutil.copyfile(wal, copy / "jobs.db-wal")
        with contextlib.closing(sqlite3.connect(copy / "jobs.db")) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute(sql)]
    finally:
        shutil.rmtree(copy)


def pg_rows(url: str, sql: str) -> list[dict[str, Any]]:
    with (
        contextlib.closing(psycopg2.connect(url, connect_timeout=10)) as conn,
        conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur,
    ):
        cur.execute(sql)
        return [dict(r) for r in cur.fetchall()]


ORDERS = (
    'SELECT o."idempotency_key", o."erp_po_id", j."status", j."file_path"'
    ' FROM "orders" o JOIN "jobs" j ON j."id" = o."job_id"'
)
JOBS = 'SELECT "job_id", "status", "file_name", "file_path", "error" FROM "jobs"'


def check_records(erp: Erp, orders: list[dict], jobs: list[dict], done: Path, *, final: bool):
    """Every order the ERP took has its job's record; no job is running whose
    file has left processing/; at the end, every ERP id is recorded."""
    posted = set(erp.posts_per_key())
    recorded = {o["idempotency_key"]: o for o in orders}
    assert posted <= set(recorded), f"posted without a record: {sorted(posted - set(recorded))}"
    filed = set(os.listdir(done))
    for job in jobs:
        if job["status"] == "running":
            assert os.path.basename(job["file_path"] or "") not in filed, job
        if job["status"] == "running":  # its file runs: claimed
            assert "/processing/" in (job["file_path"] or ""), job
        if job["status"] == "interrupted":  # claimed, or where the run carrying it on filed it
            path = job["file_path"] or ""
            assert "/processing/" in path or os.path.basename(path) in filed, job
    if final:
        assert all(recorded[key]["erp_po_id"] for key in posted)
        assert all(recorded[key]["status"] == "succeeded" for key in posted)
        assert [j for j in jobs if j["status"] == "running"] == []


def filed_once(daemon: OutageDaemon, names: list[str]) -> bool:
    return daemon.listing(daemon.done) == sorted(names) and claimed(daemon.processing) == []


# -- (a) the SQLite file deleted mid-run ----------------------------------------------


@pytest.mark.parametrize("processes", [1, 2])
def test_sqlite_file_deleted_mid_run_posts_nothing_unrecorded(
    tmp_path, erp, outage_daemons, processes
):
    """The SQLite file removed under the running daemon: nothing more is posted
    without a record, no empty database appears, status exits 1 saying the
    database is unavailable; with the file put back, the daemon resumes by
    itself and every file ends in done/ once, every post recorded."""
    path = tmp_path / "edi-inbox.db"
    daemon = outage_daemons(erp.url, f"sqlite:///{path}", processes=processes)
    erp.delay = 0.02
    daemon.start()
    names = [f"po{n:03d}.edi" for n in range(60)]
    upload(daemon.inbox, names[:40], 1)
    poll_until(lambda: len(daemon.listing(daemon.done)) >= 5, what="some jobs done")
    kept = tmp_path / "kept.db"
    os.link(path, kept)  # the records stay readable; the daemon's path is gone
    path.unlink()
    upload(daemon.inbox, names[40:], 41)
    poll_until(
        lambda: "database unavailable" in daemon.status_line, timeout=30, what="STATUS= says so"
    )
    status = daemon.cli("status")
    assert status.returncode == 1, status
    assert "database unavailable" in status.stderr
    assert not path.exists(), "a new empty database was created"
    wal = tmp_path / "edi-inbox.db-wal"
    orders, jobs = sqlite_rows(kept, ORDERS, wal), sqlite_rows(kept, JOBS, wal)
    check_records(erp, orders, jobs, daemon.done, final=False)
    assert daemon.listing(daemon.inbox), "intake went on while the database was away"
    os.rename(kept, path)  # the very same file is back
    poll_until(lambda: filed_once(daemon, names), timeout=60, what="all files in done/")
    assert daemon.alive()
    check_records(erp, sqlite_rows(path, ORDERS), sqlite_rows(path, JOBS), daemon.done, final=True)
    assert max(erp.posts_per_key().values()) == 1
    assert daemon.logged("intake_paused") and daemon.logged("intake_resumed")
    assert daemon.terminate(20) == 0


# -- (b) SQLite on a full disk ------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 64 MB tmpfs of the test's own (tests run as root; the WAL may grow to
    tens of MB before it starts over); skipped where mounting is not permitted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(folder: Path) -> Path:
    """Fill the file system to the last byte with one ballast file (hidden:
    the daemon passes it by)."""
    ballast = folder / ".ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return ballast


def test_database_on_a_full_disk_posts_nothing_unrecorded(
    tmp_path, erp, outage_daemons, small_disk
):
    """SQLite's file system full mid-run: nothing posted unrecorded, no job
    left running once its file moved; with space freed it resumes by itself
    and every file ends in done/ once."""
    path = small_disk / "edi-inbox.db"
    daemon = outage_daemons(erp.url, f"sqlite:///{path}")
    erp.delay = 0.02
    daemon.start()
    names = [f"po{n:03d}.edi" for n in range(50)]
    upload(daemon.inbox, names, 1)
    poll_until(lambda: len(daemon.listing(daemon.done)) >= 10, what="first jobs done")
    ballast = fill(small_disk)  # with jobs in flight
    poll_until(
        lambda: "database unavailable" in daemon.status_line, timeout=30, what="STATUS= says so"
    )
    status = daemon.cli("status")
    assert status.returncode == 1 and "database unavailable" in status.stderr, status
    check_records(erp, sqlite_rows(path, ORDERS), sqlite_rows(path, JOBS), daemon.done, final=False)
    assert len(daemon.listing(daemon.done)) < len(names)
    ballast.unlink()
    poll_until(lambda: filed_once(daemon, names), timeout=90, what="all files in done/")
    check_records(erp, sqlite_rows(path, ORDERS), sqlite_rows(path, JOBS), daemon.done, final=True)
    assert max(erp.posts_per_key().values()) == 1
    assert daemon.terminate(20) == 0


def test_acks_on_a_full_disk_are_written_once_it_has_room(
    tmp_path, erp, outage_daemons, small_disk
):
    """acks/ on a file system that fills mid-run (worker processes): the
    orders go on being posted, each once; no file is filed without its 997
    (their jobs stay running in processing/, status says why); with space
    freed every 997 is written, once, every ISA13 its own, every file in
    done/ and every job succeeded, by itself."""
    acks = small_disk / "acks"
    daemon = outage_daemons(erp.url, f"sqlite:///{tmp_path / 'edi-inbox.db'}", processes=2)
    root_line = f"root = {json.dumps(str(tmp_path))}\n"
    daemon.config.write_text(
        daemon.config.read_text().replace(root_line, f"{root_line}acks = {json.dumps(str(acks))}\n")
    )
    erp.delay = 0.02
    daemon.start()
    names = [f"po{n:03d}.edi" for n in range(40)]
    upload(daemon.inbox, names[:10], 1)
    poll_until(lambda: len(daemon.listing(daemon.done)) == 10, what="first jobs done")
    ballast = fill(small_disk)
    upload(daemon.inbox, names[10:], 11)
    poll_until(lambda: len(erp.posts_per_key()) == 40, timeout=60, what="every order posted")
    poll_until(lambda: len(claimed(daemon.processing)) == 30, timeout=30, what="30 jobs owing")
    # 20: the TA1s too; an owed 997 tried again meanwhile may have a hidden
    # temporary name there for a moment (its write fails and it is removed).
    written = [n for n in os.listdir(acks) if not n.startswith(".")]
    assert len(daemon.listing(daemon.done)) == 10 and len(written) == 20

    def status() -> str | None:  # says so once a heartbeat has carried the count
        text = daemon.cli("status").stdout
        return text if "30 job(s) waiting to write their acknowledgements" in text else None

    assert "No space left on device" in poll_until(status, what="status says why")
    jobs = sqlite_rows(tmp_path / "edi-inbox.db", JOBS)
    assert sorted(j["status"] for j in jobs) == ["running"] * 30 + ["succeeded"] * 10
    ballast.unlink()
    poll_until(lambda: filed_once(daemon, names), timeout=120, what="all files in done/")
    written = sorted(os.listdir(acks))
    for kind in (".997", ".TA1"):
        assert [n.split(".edi.")[0] + ".edi" for n in written if n.endswith(kind)] == names
    isa13 = {(acks / n).read_bytes()[90:99] for n in written}
    assert len(written) == len(isa13) == 80
    orders, jobs = (
        sqlite_rows(tmp_path / "edi-inbox.db", ORDERS),
        sqlite_rows(tmp_path / "edi-inbox.db", JOBS),
    )
    check_records(erp, orders, jobs, daemon.done, final=True)
    assert {j["status"] for j in jobs} == {"succeeded"} and max(erp.posts_per_key().values()) == 1
    assert daemon.terminate(20) == 0


# -- (c) PostgreSQL stopped mid-run -------------------------------------------------------


def test_postgres_stopped_mid_run_loses_nothing(erp, outage_daemons, own_pg_cluster, own_pg_url):
    """The test's own PostgreSQL stopped for a while mid-run, then started:
    nothing lost, nothing posted unrecorded or twice, no job left running,
    every file in done/ exactly once."""
    daemon = outage_daemons(erp.url, own_pg_url)
    erp.delay = 0.02
    daemon.start()
    names = [f"po{n:03d}.edi" for n in range(40)]
    upload(daemon.inbox, names[:30], 1)
    poll_until(lambda: len(daemon.listing(daemon.done)) >= 5, what="some jobs done")
    pg_ctl("stop", "-m", "fast", datadir=own_pg_cluster.datadir)
    try:
        upload(daemon.inbox, names[30:], 31)
        poll_until(
            lambda: "database unavailable" in daemon.status_line,
            timeout=60,
            what="STATUS= says so",
        )
        status = daemon.cli("status")
        assert status.returncode == 1 and "database unavailable" in status.stderr, status
        assert daemon.listing(daemon.inbox), "intake went on while the database was away"
    finally:
        start_again(own_pg_cluster)
    poll_until(lambda: filed_once(daemon, names), timeout=120, what="all files in done/")
    orders, jobs = pg_rows(own_pg_url, ORDERS), pg_rows(own_pg_url, JOBS)
    check_records(erp, orders, jobs, daemon.done, final=True)
    assert max(erp.posts_per_key().values()) == 1
    succeeded = {j["file_name"] for j in jobs if j["status"] == "succeeded"}
    assert succeeded == set(names)
    assert daemon.cli("status").returncode == 0
    assert daemon.terminate(20) == 0


# -- (d) a PO number PostgreSQL cannot index ---------------------------------------------


def long_po(n: int, length: int = 3000) -> bytes:
    """A good 850 whose BEG03 (the PO number) is ``length`` characters long."""
    text = make_po(n).decode("latin-1")
    start = text.index("BEG*")
    end = text.index("\n", start) if "\n" in text[start:] else text.index("~", start)
    beg = text[start:end].split("*")
    beg[3] = secrets.token_hex(length)[:length].upper()  # random: PostgreSQL cannot compress it
    return (text[:start] + "*".join(beg) + text[end:]).encode("latin-1")


def test_a_po_number_too_long_for_the_index_fails_with_a_true_record(
    tmp_path, erp, outage_daemons, own_pg_url
):
    """A 3,000-character PO number on PostgreSQL: the job ends with a true
    record (never ``running``), nothing is posted unrecorded, and ``process``
    exits non-zero when the job failed."""
    daemon = outage_daemons(erp.url, own_pg_url)
    edi = tmp_path / "long.edi"
    edi.write_bytes(long_po(7))
    done = daemon.cli("process", "--json", str(edi), timeout=120)
    jobs = pg_rows(own_pg_url, JOBS)
    assert len(jobs) == 1, (done, jobs)
    (job,) = jobs
    assert job["status"] in ("failed", "succeeded"), job
    orders = pg_rows(own_pg_url, ORDERS)
    check_records(erp, orders, jobs, daemon.done, final=job["status"] == "succeeded")
    if job["status"] == "failed":
        assert done.returncode != 0, done
        # Refused by BEG03's maximum (22) before any record could be too large for
        # an index, or, were it let through, by the record itself.
        assert job["error"] and ("record" in job["error"] or "BEG03" in job["error"])
        assert erp.requests == []
    else:
        assert done.returncode == 0 and len(erp.requests) == 1


def test_the_daemon_files_a_po_number_too_long_for_the_index(erp, outage_daemons, own_pg_url):
    """The same file through the daemon: filed once, its job not left running."""
    daemon = outage_daemons(erp.url, own_pg_url)
    daemon.start()
    (daemon.inbox / "long.edi").write_bytes(long_po(8))
    upload(daemon.inbox, ["fine.edi"], 9)

    def filed() -> list[str]:
        names = daemon.listing(daemon.done) + daemon.listing(daemon.failed)
        return sorted(n for n in names if n.endswith(".edi"))

    poll_until(lambda: filed() == ["fine.edi", "long.edi"], what="both files filed")
    jobs = {j["file_name"]: j for j in pg_rows(own_pg_url, JOBS)}
    assert jobs["fine.edi"]["status"] == "succeeded"
    assert jobs["long.edi"]["status"] in ("failed", "succeeded")
    check_records(erp, pg_rows(own_pg_url, ORDERS), list(jobs.values()), daemon.done, final=False)
    assert claimed(daemon.processing) == []
    assert daemon.terminate(20) == 0


# -- `process` never exits 0 with an order it could not record -------------------------


def test_process_exits_non_zero_for_a_posted_order_it_cannot_record(
    tmp_path, httpserver, monkeypatch
):
    """The database goes away while the ERP takes the order and stays away
    past the wait: ``process`` exits 1 naming the ERP id, never 0."""
    from click.testing import CliRunner
    from werkzeug import Response

    from edi_inbox import cli

    path, away = tmp_path / "jobs.db", tmp_path / "jobs.db.away"

    def take(request):
        os.rename(path, away)  # the running record is in: the database goes now
        return Response(json.dumps({"id": "E11"}), 201, content_type="application/json")

    httpserver.expect_request("/orders", method="POST").respond_with_handler(take)
    config = tmp_path / "edi-inbox.toml"
    config.write_text(
        f'[paths]\nroot = "{tmp_path}"\n[database]\nurl = "sqlite:///{path}"\n'
        f'[erp]\nurl = "{httpserver.url_for("/orders")}"\n[log]\nformat = "json"\n'
    )
    monkeypatch.setattr(cli, "RECORD_PATIENCE", 1.0)
    edi = tmp_path / "po.edi"
    edi.write_bytes(make_po(5))
    result = CliRunner().invoke(cli.main, ["--config", str(config), "process", str(edi)])
    assert result.exit_code == 1, result.output
    assert "the ERP accepted PO 00000005 as E11" in result.stderr
    assert "not recorded" in result.stderr
    assert len(httpserver.log) == 1 and not path.exists()


_NO_DESCRIPTOR_FREE = """
import os, resource, sys
import edi_inbox
from edi_inbox.x12.scan import encode_as_read
lowest_free = os.open(os.devnull, os.O_RDONLY)  # a new descriptor would be this one
os.close(lowest_free)
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
try:
    open(sys.executable, "rb")
except OSError as exc:
    print("short:", exc.strerror)
print("erp.example.com".encode("idna"), encode_as_read("caf\\u00e9 \\u2026", "cp1252"),
      b"\\xc1\\x85".decode("cp500"))
"""


def test_codecs_are_known_while_no_descriptor_is_free(tmp_path: Path) -> None:
    """Once the package is imported, the codecs a job uses (the ERP host's
    IDNA, cp1252, EBCDIC) work while the process can open nothing: a codec
    first looked up then, its module not importable, would be an unknown
    encoding for the process's life (every later ERP call failed "unknown
    encoding: idna")."""
    out = subprocess.run(
        [sys.executable, "-c", _NO_DESCRIPTOR_FREE],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "daemon")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "short: Too many open files", out.stdout
    assert lines[1] == "b'erp.example.com' b'caf\\xe9 \\x85' Ae", out.stdout
