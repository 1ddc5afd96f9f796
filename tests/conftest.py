"""Database fixtures: a real SQLite file and, when available, a real PostgreSQL.

``EDI_INBOX_TEST_PG_URL`` names the PostgreSQL that ``.ci/postgres.sh``
started (and ``EDI_INBOX_TEST_PG_DATADIR`` its data directory, for the restart
test). Without it the PostgreSQL cases skip, except under ``CI=true``, where a
missing PostgreSQL fails them: CI must never go green by skipping.
Each PostgreSQL test gets a schema of its own (``search_path`` in the URL),
dropped afterwards.
"""

from __future__ import annotations

import compileall
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from edi_inbox import log as logsetup
from edi_inbox import store
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

PG_URL_ENV = "EDI_INBOX_TEST_PG_URL"
PG_DATADIR_ENV = "EDI_INBOX_TEST_PG_DATADIR"


def pytest_configure(config: pytest.Config) -> None:
    """Where ``PYTHONDONTWRITEBYTECODE`` is set (many CI images set it), every
    daemon and CLI process the suite starts would compile the package from
    source again, a third of its start-up: it is compiled once here, into its
    ``__pycache__`` (as pip does for a regular install)."""
    if sys.dont_write_bytecode:
        compileall.compile_dir(Path(store.__file__).resolve().parent.parent, quiet=1)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two test processes a CPU this process may use. Most of the
    suite waits on real daemons (their timers, the ERP, a restart), about
    two thirds of its time with the CPU idle, so two a CPU keep it busy."""
    return 2 * len(os.sched_getaffinity(0))


@pytest.fixture(autouse=True)
def _default_logging() -> None:
    """Each test starts with the daemon's default logging (info, JSON lines to
    this test's stderr): one that changes the level does not silence the next."""
    logsetup.configure("info", "json")


@pytest.fixture(autouse=True)
def _terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's tables fit the terminal (``shutil.get_terminal_size``): every
    test sees a 120-column one, whatever runs it (a narrow terminal, a pipe,
    a pytest-xdist worker), so a cell's text is never cut short by chance."""
    monkeypatch.setenv("COLUMNS", "120")


def pg_base_url() -> str:
    """The test PostgreSQL's URL; skips (or fails under CI=true) without one."""
    url = os.environ.get(PG_URL_ENV)
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {PG_URL_ENV} is unset: .ci/run must start .ci/postgres.sh")
        pytest.skip(f"{PG_URL_ENV} is unset (start one with .ci/postgres.sh)")
    return url


def _pg_admin(url: str, sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(url, connect_timeout=10)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@contextmanager
def private_schema(base: str) -> Iterator[str]:
    """``base`` with every connection in a fresh schema, dropped afterwards."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    _pg_admin(base, f"CREATE SCHEMA {schema}")
    joiner = "&" if "?" in base else "?"
    try:
        yield f"{base}{joiner}options={quote(f'-csearch_path={schema}')}"
    finally:
        _pg_admin(base, f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose connections all use a fresh, private schema."""
    with private_schema(pg_base_url()) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test against a SQLite file under tmp_path and a real PostgreSQL."""
    if request.param == "sqlite":
        (tmp_path / "db").mkdir()
        return f"sqlite:///{tmp_path / 'db' / 'edi-inbox.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(paths=PathSettings(root=tmp_path))


@contextmanager
def initialised(
    url: str, settings: Settings, *, retry_seconds: float = 20
) -> Iterator[store.Database]:
    """The database at ``url`` with its schema created, closed on the way out."""
    database = store.open_database(url, settings, retry_seconds=retry_seconds)
    try:
        store.init(database)
        yield database
    finally:
        store.close_database(database)


@pytest.fixture
def db(db_url: str, settings: Settings) -> Iterator[store.Database]:
    """An initialised database (schema created) on SQLite or PostgreSQL."""
    with initialised(db_url, settings) as database:
        yield database


@pytest.fixture
def recorder(db: store.Database) -> store.DatabaseRecorder:
    return store.DatabaseRecorder(db)


T0 = datetime(2024, 3, 5, 10, 15, 30, 123456, tzinfo=UTC)


def make_job(
    n: int = 1,
    *,
    started_at: datetime | None = None,
    status: JobStatus = JobStatus.SUCCEEDED,
    po_numbers: tuple[str, ...] | None = None,
    vendor: str | None = "ACME Corp",
    amounts: tuple[Decimal, ...] | None = None,
    sender: str = "SENDER01",
    control: str | None = None,
    sha: str | None = None,
    content: bytes | None = b"ISA*00*...~IEA*1*000000001~",
    job_id: str | None = None,
) -> JobResult:
    """A finished-looking job with five steps, logs, orders and one interchange."""
    started = started_at or (T0 + timedelta(minutes=n))
    pos = po_numbers if po_numbers is not None else (f"PO-{n:06d}",)
    amts = amounts or tuple(Decimal("100.50") + n for _ in pos)
    job = JobResult(
        job_id=job_id or str(uuid.uuid4()),
        file_name=f"po_{n}.edi",
        status=status,
        started_at=started,
        completed_at=started + timedelta(seconds=1.5),
        duration_seconds=1.5,
        file_sha256=sha or f"{n:064x}",
        file_size=1234,
        file_path=f"/srv/edi/processing/po_{n}.edi",
        host="host-a",
        error="validation failed" if status is JobStatus.FAILED else None,
        error_details=[{"code": "qty", "message": "line 1: quantity 0"}]
        if status is JobStatus.FAILED
        else [],
        interchanges=[Interchange(sender, "RECEIVER", control or f"{n:09d}")],
        acks=[f"po_{n}.997"],
        edi_content=content,
    )
    for i, (po, amount) in enumerate(zip(pos, amts, strict=True)):
        job.orders.append(
            OrderResult(
                po_number=po,
                idempotency_key=f"{job.job_id}:{i}",
                line_count=2,
                total_amount=amount,
                vendor_name=vendor,
                status="posted" if status is JobStatus.SUCCEEDED else "failed",
                erp_po_id=f"ERP-{n}-{i}" if status is JobStatus.SUCCEEDED else None,
                attempts=1,
                payload={"po_number": po, "total": str(amount), "vendor": vendor},
            )
        )
    for k, name in enumerate(("parse", "transform", "validate", "post_to_erp", "acknowledge")):
        job.steps.append(
            StepResult(
                step_name=name,
                status=StepStatus.SUCCESS,
                data={"k": k, "note": "ok"},
                started_at=started + timedelta(milliseconds=k),
                duration_seconds=0.001,
            )
        )
        job.logs.append(
            LogEntry(started + timedelta(milliseconds=k), "info", f"{name} done", {"step": name})
        )
    return job


def record(recorder: store.DatabaseRecorder, job: JobResult) -> None:
    """Report a job to the recorder the way the pipeline does: the row with the
    steps before the ERP call, each accepted order, then the rest with the
    final status."""
    final = job.status
    job.status = JobStatus.RUNNING
    names = [s.step_name for s in job.steps]
    cut = names.index("post_to_erp") if "post_to_erp" in names else len(names)
    recorder.job_started(job, job.steps[:cut], job.logs[:cut])
    for order in job.orders:
        if order.erp_po_id:
            recorder.order_accepted(job, order)
    job.status = final
    last = LogEntry(job.completed_at or T0, "info", "finished", {"status": str(final)})
    rest = job.logs[cut:]
    job.logs.append(last)
    recorder.job_finished(job, [*rest, last], job.steps[cut:])


@pytest.fixture
def record_job(recorder: store.DatabaseRecorder) -> Callable[..., JobResult]:
    """Record a made-up job: ``record_job(n, **make_job_options)``."""

    def run(n: int = 1, **options: Any) -> JobResult:
        job = make_job(n, **options)
        record(recorder, job)
        return job

    return run


@dataclass(frozen=True)
class Cluster:
    """A PostgreSQL cluster of the test session's own (``.ci/postgres.sh``)."""

    url: str
    datadir: str


@pytest.fixture(scope="session")
def own_pg_cluster() -> Iterator[Cluster]:
    """A throwaway cluster for the tests that stop or restart their server:
    the shared one (EDI_INBOX_TEST_PG_URL) serves other test runs meanwhile.
    Skips (fails under CI=true) where none can be started."""
    script = Path(__file__).parent.parent / ".ci" / "postgres.sh"
    env = {k: v for k, v in os.environ.items() if k != "EDI_INBOX_PG_ENV_FILE"}
    for _ in range(3):  # the script's random port may be taken meanwhile: try another
        done = subprocess.run(
            ["bash", str(script), "start"], capture_output=True, text=True, env=env, timeout=900
        )
        if done.returncode == 0:
            break
    if done.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot start a PostgreSQL cluster: {done.stderr[-2000:]}")
        pytest.skip(f"cannot start a PostgreSQL cluster: {done.stderr[-500:]}")
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in done.stdout.splitlines()
        if line.startswith("export ")
    )
    cluster = Cluster(exports[PG_URL_ENV], exports[PG_DATADIR_ENV])
    try:
        yield cluster
    finally:
        subprocess.run(
            ["bash", str(script), "stop", cluster.datadir], capture_output=True, timeout=300
        )


@pytest.fixture
def own_pg_url(own_pg_cluster: Cluster) -> Iterator[str]:
    """A fresh schema on the test's own cluster (``own_pg_cluster``)."""
    with private_schema(own_pg_cluster.url) as url:
        yield url


def start_again(cluster: Cluster) -> None:
    """``pg_ctl start`` with the options the cluster was first started with
    (its port, its socket folder): ``postmaster.opts`` keeps them."""
    opts = shlex.split((Path(cluster.datadir) / "postmaster.opts").read_text())
    options = [o for o in opts[1:] if o not in ("-D", cluster.datadir)]
    pg_ctl("start", "-o", shlex.join(options), datadir=cluster.datadir)


def pg_ctl(action: str, *extra: str, datadir: str | None = None) -> None:
    """Run ``pg_ctl ACTION`` on the test cluster (``datadir``, else
    EDI_INBOX_TEST_PG_DATADIR's), as its owner (initdb refuses root)."""
    datadir = datadir or os.environ.get(PG_DATADIR_ENV)
    if not datadir:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {PG_DATADIR_ENV} is unset")
        pytest.skip(f"{PG_DATADIR_ENV} is unset")
    bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    pg_ctl_bin = str(bindirs[-1]) if bindirs else "pg_ctl"
    # -l: the server must not inherit our pipes (communicate() would wait for it).
    log = str(Path(datadir).parent / "server.log")
    command = [pg_ctl_bin, "-D", datadir, "-l", log, "-w", "-t", "60", *extra, action]
    if os.geteuid() == 0:
        owner = Path(datadir).owner()
        command = ["runuser", "-u", owner, "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
