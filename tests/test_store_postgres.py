"""PostgreSQL only: surviving a restarted server or a killed connection, and
failing clearly when the server is gone. Needs EDI_INBOX_TEST_PG_URL; the
restart runs on a throwaway cluster of the session's own (``own_pg_cluster``),
never on the shared one; under CI=true their absence fails."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator

import peewee as pw
import psycopg2
import pytest
from conftest import (
    Cluster,
    initialised,
    make_job,
    pg_base_url,
    pg_ctl,
    private_schema,
    record,
)

from edi_inbox import queries, store
from edi_inbox.config import Settings

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_db(pg_url: str, settings: Settings) -> Iterator[store.Database]:
    with initialised(pg_url, settings, retry_seconds=30) as db:
        yield db


def backend_pid(db: store.Database) -> int:
    return int(db.execute_sql("SELECT pg_backend_pid()").fetchone()[0])


@pytest.fixture
def own_pg_db(own_pg_cluster: Cluster, settings: Settings) -> Iterator[store.Database]:
    """On the session's own cluster, which a test may restart (not the shared one)."""
    with private_schema(own_pg_cluster.url) as url, initialised(url, settings) as db:
        yield db


def test_second_job_records_after_a_server_restart(own_pg_db, own_pg_cluster):
    """PostgreSQL restarted between two jobs: the second job still records."""
    pg_db = own_pg_db
    recorder = store.DatabaseRecorder(pg_db)
    first = make_job(1)
    record(recorder, first)
    pg_ctl("restart", "-m", "fast", datadir=own_pg_cluster.datadir)
    second = make_job(2)
    record(recorder, second)
    assert queries.show_job(pg_db, first.job_id) == first.to_json()
    assert queries.show_job(pg_db, second.job_id) == second.to_json()
    assert queries.stats(pg_db)["successful_jobs"] == 2


def test_a_killed_connection_is_replaced_and_the_unit_retried(pg_db):
    """A connection killed by the server is replaced and the unit of work retried."""
    recorder = store.DatabaseRecorder(pg_db)
    pg_db.connect(reuse_if_open=True)  # hold one connection, as a busy worker would
    old_pid = backend_pid(pg_db)
    admin = psycopg2.connect(pg_base_url())
    try:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (old_pid,))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # wait until the backend is really gone
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (old_pid,))
                if cur.fetchone()[0] == 0:
                    break
                time.sleep(0.01)
    finally:
        admin.close()
    job = make_job(3)
    record(recorder, job)
    assert queries.show_job(pg_db, job.job_id)["status"] == "succeeded"
    pg_db.connect(reuse_if_open=True)
    assert backend_pid(pg_db) != old_pid
    pg_db.close()


def test_recorder_raises_when_postgres_is_gone(settings):
    """No server at all: the recorder retries for [database]
    reconnect_seconds, then raises."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    settings = dataclasses.replace(
        settings, database=dataclasses.replace(settings.database, reconnect_seconds=0.5)
    )
    db = store.open_database(f"postgresql://postgres@127.0.0.1:{port}/nowhere", settings)
    assert db.retry_seconds == 0.5
    started = time.monotonic()
    with pytest.raises(pw.OperationalError):
        store.DatabaseRecorder(db).job_started(make_job(4))
    assert time.monotonic() - started < 10
    store.close_database(db)


def test_postgres_column_types(pg_db):
    """Times are TIMESTAMPTZ, money NUMERIC, search keys COLLATE "C", the cluster UTF8."""
    rows = pg_db.execute_sql(
        "SELECT column_name, data_type, collation_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = 'jobs'"
    ).fetchall()
    columns = {name: (kind, collation) for name, kind, collation in rows}
    assert columns["started_at"][0] == "timestamp with time zone"
    assert columns["total_amount"][0] == "numeric"
    assert columns["error_details"][0] == "text"
    keys = pg_db.execute_sql(
        "SELECT collation_name FROM information_schema.columns WHERE table_schema ="
        " current_schema() AND table_name = 'po_search' AND column_name = 'suffix'"
    ).fetchall()
    assert keys == [("C",)]
    encoding = pg_db.execute_sql("SHOW server_encoding").fetchone()[0]
    assert encoding == "UTF8"
