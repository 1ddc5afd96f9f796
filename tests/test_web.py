"""``edi-inbox serve``: the real server on 127.0.0.1 over real records (SQLite and
PostgreSQL); every endpoint's JSON is the CLI's ``--json``, auth, error codes
and ``/metrics`` read by prometheus_client's own parser."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from conftest import pg_base_url, pg_ctl, private_schema, start_again
from prometheus_client.parser import text_string_to_metric_families

from edi_inbox import config, store
from edi_inbox.errors import ConfigError
from edi_inbox.web.serving import HEAD_SECONDS

from helpers import database_locked, make_po, poll_until
from web_site import (
    HOSTILE_NAME,
    HOSTILE_PO,
    MAX_BYTES_IN_FLIGHT,
    MAX_FILE_BYTES,
    NAMED,
    PARTNERS,
    SITE_KINDS,
    TOKEN,
    Site,
    free_port,
    make_records,
    request,
    server,
    site,
    stop,
    write_config,
)

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module", params=SITE_KINDS)
def web(request, tmp_path_factory):
    with site(request.param, tmp_path_factory.mktemp(f"web-{request.param}")) as running:
        yield running


def api(web: Site, path: str):
    answer = web.get(path)
    assert answer.status == 200, (path, answer.status, answer.body)
    assert answer.headers["content-type"].startswith("application/json")
    return answer.json()


def test_stats_is_stats_json(web):
    """/api/jobs/stats (and ?since=) answers what stats --json prints."""
    assert api(web, "/api/jobs/stats") == web.cli_json("stats")
    since = "2020-01-01T00:00"
    assert api(web, f"/api/jobs/stats?since={since}") == web.cli_json("stats", "--since", since)
    assert api(web, "/api/jobs/stats")["total_jobs"] >= 5


def test_recent_is_jobs_list_json(web):
    """/api/jobs/recent with limit, offset and status answers what jobs list --json prints."""
    assert api(web, "/api/jobs/recent?limit=10") == web.cli_json("jobs", "list", "--limit", "10")
    assert len(api(web, "/api/jobs/recent?limit=2")) == 2
    assert api(web, "/api/jobs/recent?limit=2&offset=1") == web.cli_json(
        "jobs", "list", "--limit", "2", "--offset", "1"
    )
    failed = api(web, "/api/jobs/recent?status=failed")
    assert failed == web.cli_json("jobs", "list", "--status", "failed", "--limit", "10")
    assert {j["job_id"] for j in failed} >= {web.jobs["failed"], web.jobs["nonedi"]}
    newest = api(web, "/api/jobs/recent?limit=3")
    after = api(web, f"/api/jobs/recent?limit=2&before={newest[0]['job_id'][:8]}")
    assert (
        after
        == newest[1:]
        == web.cli_json("jobs", "list", "--limit", "2", "--before", newest[0]["job_id"])
    )
    unknown = web.get("/api/jobs/recent?before=ffffffff")
    assert unknown.status == 422 and "no job" in unknown.text


def test_search_is_jobs_search_json(web):
    """/api/jobs/search's filters answer what jobs search --json prints for the same ones."""
    cases = [
        ("po_number=0829223", ["--po-number", "0829223"]),
        ("po_number=%3Csvg", ["--po-number", "<svg"]),
        ("success=false", ["--failure"]),
        ("success=true&since=2020-01-01", ["--success", "--since", "2020-01-01"]),
        ("until=2020-01-01", ["--until", "2020-01-01"]),
        ("vendor_name=x&limit=3", ["--vendor", "x", "--limit", "3"]),
    ]
    for query, args in cases:
        found = api(web, f"/api/jobs/search?{query}")
        assert found == web.cli_json("jobs", "search", *args), query
    assert len(api(web, "/api/jobs/search?po_number=0829223")) == 1
    (named,) = api(web, "/api/jobs/search?po_number=08292233294")
    assert named["job_id"] == web.jobs["named"] and named["total_amount"] == "13045.94"
    (hostile,) = api(web, "/api/jobs/search?po_number=onload")
    assert hostile["po_number"] == HOSTILE_PO


def test_an_empty_search_parameter_is_not_given(web):
    """DESIGN's URL, ``?po_number=&vendor_name=&success=&limit=``, answers as ``?``
    does: an empty parameter means any (the default ``limit``)."""
    every = api(web, "/api/jobs/search")
    assert every and api(web, "/api/jobs/search?po_number=&vendor_name=&success=&limit=") == every
    assert api(web, "/api/jobs/search?success=&limit=2") == every[:2]
    failed = api(web, "/api/jobs/search?success=false")
    assert api(web, "/api/jobs/search?success=false&limit=") == failed
    recent = api(web, "/api/jobs/recent")
    assert recent and api(web, "/api/jobs/recent?limit=&offset=&status=&partner=") == recent


def test_partner_narrows_recent_search_and_stats_as_the_cli_does(web):
    """?partner= on /api/jobs/recent, /search and /stats answers what the CLI's
    --partner prints (alone and with the other filters); an unknown name finds
    nothing, an empty one is every job."""
    cases = [
        ("recent?", ["jobs", "list", "--limit", "10"]),
        ("recent?status=failed&limit=3&", ["jobs", "list", "--status", "failed", "--limit", "3"]),
        ("search?", ["jobs", "search"]),
        ("search?success=false&", ["jobs", "search", "--failure"]),
        ("search?po_number=0000090&", ["jobs", "search", "--po-number", "0000090"]),
        ("stats?", ["stats"]),
        ("stats?since=2020-01-01&", ["stats", "--since", "2020-01-01"]),
    ]
    for name in (*PARTNERS, "nobody"):
        for query, args in cases:
            path = f"/api/jobs/{query}partner={name}"
            assert api(web, path) == web.cli_json(*args, "--partner", name), path
    acme = {web.jobs["acme"], web.jobs["acme_failed"]}
    assert {j["job_id"] for j in api(web, "/api/jobs/recent?partner=acme")} == acme
    assert {j["partner"] for j in api(web, "/api/jobs/search?partner=bolt")} == {"bolt"}
    assert web.jobs["hostile"] in {j["job_id"] for j in api(web, "/api/jobs/search?partner=bolt")}
    (failed,) = api(web, "/api/jobs/search?partner=acme&success=false")
    assert failed["job_id"] == web.jobs["acme_failed"] and failed["file_name"] == HOSTILE_NAME
    stats = api(web, "/api/jobs/stats?partner=acme")
    assert (stats["partner"], stats["total_jobs"], stats["failed_jobs"]) == ("acme", 2, 1)
    assert api(web, "/api/jobs/recent?partner=nobody") == []
    assert api(web, "/api/jobs/stats?partner=nobody")["total_jobs"] == 0
    assert api(web, "/api/jobs/recent?partner=") == web.cli_json("jobs", "list", "--limit", "10")
    assert api(web, "/api/jobs/stats?partner=") == web.cli_json("stats")
    assert web.get("/api/jobs/recent?partner=" + "x" * 65).status == 422


def test_partners_is_partners_json(web):
    """/api/partners answers what partners --json prints: both partners with
    their ids and outbox, files and failures in 24 h, last activity."""
    served = api(web, "/api/partners")
    assert served == web.cli_json("partners")
    assert served["unknown"] == "accept"
    by_name = {p["name"]: p for p in served["partners"]}
    assert list(by_name) == ["acme", "bolt"]
    acme, bolt = by_name["acme"], by_name["bolt"]
    assert acme["ids"] == ["ZZ:ACME"] and bolt["ids"] == ["08:AAAAAAAAAA"]
    assert acme["outbox"] == str(web.root / "acme-out") and bolt["outbox"] is None
    assert (acme["files"], acme["failures"]) == (2, 1) and bolt["files"] >= 2
    assert acme["last_activity"] is not None


def test_job_is_jobs_show_json(web):
    """/api/jobs/{id} (a full id or a unique prefix) answers what jobs show --json prints."""
    for what in ("named", "failed", "hostile"):
        job_id = web.jobs[what]
        doc = api(web, f"/api/jobs/{job_id}")
        assert doc == web.cli_json("jobs", "show", job_id)
        assert doc["steps"] and doc["logs"]
    assert api(web, f"/api/jobs/{web.jobs['named'][:8]}")["job_id"] == web.jobs["named"]


def test_status_is_status_json(web):
    """/api/status answers what status --json prints (the clock-dependent ages aside)."""

    def timeless(doc):
        doc = json.loads(json.dumps(doc))
        doc.pop("now")
        for daemon in doc["daemons"]:
            daemon.pop("heartbeat_age_seconds")
        doc["inbox"].pop("oldest_age_seconds")
        return doc

    web.beat("edi-b", {"queue": 3, "held": 1, "in_flight": 2})
    served = api(web, "/api/status")
    assert timeless(served) == timeless(web.cli_json("status"))
    assert "edi-b" in {d["host"] for d in served["daemons"]}
    assert served["folders"]["failed"] >= 1
    # Per partner, as status --json has it: files, failures and the last error.
    by_name = {p["name"]: p for p in served["partners"]}
    assert list(by_name) == ["acme", "bolt"]
    acme = by_name["acme"]
    assert (acme["files_24h"], acme["failures_24h"]) == (2, 1)
    assert acme["last_error"]["job_id"] == web.jobs["acme_failed"]
    assert acme["last_error"]["file_name"] == HOSTILE_NAME


def test_error_codes_are_json(web):
    """Unknown job 404, bad parameters 422, wrong method 405: each a JSON error."""
    for path, status in (
        ("/api/jobs/00000000-0000-0000-0000-000000000000", 404),
        ("/api/jobs/recent?limit=0", 422),
        ("/api/jobs/recent?limit=abc", 422),
        ("/api/jobs/recent?offset=99999999999999999999", 422),  # past SQLite's integers
        ("/api/jobs/recent?status=bogus", 422),
        ("/api/jobs/search?success=maybe", 422),
        ("/api/jobs/search?limit=abc", 422),
        ("/api/jobs/search?limit=0", 422),
        ("/api/jobs/search?since=yesterday", 422),
        ("/api/jobs/stats?since=2026-13-45", 422),
        ("/api/nothing-here", 404),
    ):
        answer = web.get(path)
        assert answer.status == status, (path, answer.status, answer.body)
        doc = answer.json()
        assert doc["status"] == status and doc["error"], path
    assert web.request("DELETE", "/api/jobs/stats").status == 405


def test_orchestrate_needs_the_bearer_token(web):
    """Without the token 401 (and WWW-Authenticate), with a wrong one 401; nothing is recorded."""
    before = api(web, "/api/jobs/stats")["total_jobs"]
    body = NAMED.read_bytes()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        answer = web.request("POST", "/api/orchestrate", body, headers)
        assert answer.status == 401, answer.body
        assert answer.headers["www-authenticate"] == "Bearer"
        assert "token" in answer.json()["error"]
    assert api(web, "/api/jobs/stats")["total_jobs"] == before


def test_orchestrate_runs_the_pipeline_and_records_the_job(web):
    """An X12 body with the token: the job as process --json gives it, recorded for jobs show."""
    data = make_po(950)
    answer = web.request("POST", "/api/orchestrate?file_name=../up/from-api.edi", data, AUTH)
    assert answer.status == 200, answer.body
    job = answer.json()
    assert job["status"] == "succeeded" and job["success"] is True
    assert job["file_name"] == "from-api.edi" and job["po_number"].endswith("950")
    assert job["orders"][0]["status"] == "posted"
    # The same bytes through process --json: the same shape, and a duplicate of this job.
    upload = web.root / "same.edi"
    upload.write_bytes(data)
    processed = web.cli_json("process", str(upload))
    assert set(job) == set(processed)
    assert processed["status"] == "duplicate" and processed["duplicate_of"] == job["job_id"]
    shown = web.cli_json("jobs", "show", job["job_id"])
    assert shown["status"] == "succeeded" and shown["file_name"] == "from-api.edi"
    assert {k: shown[k] for k in job} == job
    assert api(web, f"/api/jobs/{job['job_id']}") == shown

    bad = web.request("POST", "/api/orchestrate", b"this is not X12 at all\n", AUTH)
    assert bad.status == 200 and bad.json()["success"] is False
    assert "not X12" in bad.json()["error"]


def test_orchestrate_answers_503_while_the_database_is_locked(tmp_path):
    """The SQLite file locked by another process: /api/orchestrate answers 503
    saying nothing was posted (a rejected file too: its 997 waits for the
    database's number), writes no 997; once the lock is gone the same file
    goes through."""
    db_path = tmp_path / "edi.db"
    config_path = write_config(tmp_path, f"sqlite:///{db_path}")
    text = config_path.read_text().replace(
        "[database]\n", "[database]\nbusy_timeout_seconds = 0.3\n", 1
    )
    config_path.write_text(text)
    rejected = make_po(990).replace(b"PO1**6*EA*12", b"PO1**0*EA*12")  # quantity 0
    acks = tmp_path / "state" / "acks"
    with server(config_path, tmp_path) as (port, process):
        running = Site(tmp_path, {"EDI_INBOX_CONFIG": str(config_path)}, port, process, {}, "")
        with database_locked(db_path):
            answer = running.request("POST", "/api/orchestrate?file_name=r.edi", rejected, AUTH)
            assert answer.status == 503, answer.body
            error = answer.json()["error"]
            assert error.startswith("r.edi: nothing was posted: the database is unavailable")
            assert not acks.exists() or list(acks.iterdir()) == []
        answer = running.request("POST", "/api/orchestrate?file_name=r.edi", rejected, AUTH)
        assert answer.status == 200 and answer.json()["status"] == "failed"
        assert sorted(p.suffix for p in acks.iterdir()) == [".997", ".TA1"]  # once each


def test_every_endpoint_answers_503_while_the_sqlite_file_is_gone(tmp_path):
    """The SQLite file moved away under a running serve (scenario 29): every
    endpoint that reads it answers 503, JSON for the API and /metrics, the
    error page for the dashboard's pages; the same file put back, they answer
    again (it is never created anew, empty)."""
    db_path = tmp_path / "edi.db"
    config_path = write_config(tmp_path, f"sqlite:///{db_path}")
    endpoints = ["/api/jobs/stats", "/api/jobs/recent", "/api/jobs/search?po_number=1"]
    endpoints += ["/api/jobs/abc", "/api/status", "/api/partners", "/metrics", "/healthz"]
    pages = ["/", "/jobs", "/jobs/abc", "/partners"]
    with server(config_path, tmp_path) as (port, process):
        running = Site(tmp_path, {"EDI_INBOX_CONFIG": str(config_path)}, port, process, {}, "")
        assert running.get("/api/jobs/stats").status == 200
        db_path.rename(tmp_path / "away.db")
        for path in endpoints:
            answer = running.get(path)
            assert answer.status == 503, path
            assert answer.json()["error"].startswith("the database is not available"), path
        for path in pages:
            answer = running.get(path)
            assert answer.status == 503, path
            assert answer.headers["content-type"].startswith("text/html"), path
            assert "the database is not available" in answer.text, path
        assert not db_path.exists()
        (tmp_path / "away.db").rename(db_path)
        for path in ["/api/jobs/stats", "/api/status", "/metrics", "/", "/jobs"]:
            assert running.get(path).status == 200, path


@pytest.mark.postgres
def test_every_endpoint_answers_503_while_postgres_is_stopped(tmp_path, own_pg_cluster, own_pg_url):
    """The test's own PostgreSQL stopped under a running serve: the API and
    /metrics answer 503 in JSON, the pages the error page; started again,
    everything answers (serve reconnects by itself)."""
    config_path = write_config(tmp_path, own_pg_url)
    with server(config_path, tmp_path) as (port, process):
        running = Site(tmp_path, {"EDI_INBOX_CONFIG": str(config_path)}, port, process, {}, "")
        assert running.get("/api/jobs/stats").status == 200
        pg_ctl("stop", "-m", "fast", datadir=own_pg_cluster.datadir)
        try:
            for path in ["/api/jobs/stats", "/api/jobs/abc", "/metrics", "/healthz"]:
                answer = running.get(path)
                assert answer.status == 503, path
                assert answer.json()["error"].startswith("the database is not available"), path
            for path in ["/", "/jobs", "/jobs/abc"]:
                answer = running.get(path)
                assert answer.status == 503 and "the database is not available" in answer.text
        finally:
            start_again(own_pg_cluster)
        for path in ["/api/jobs/stats", "/metrics", "/", "/jobs"]:
            assert running.get(path).status == 200, path


def test_orchestrate_refuses_bodies_over_max_file_bytes(web):
    """413 for a body over max_file_bytes, announced or streamed chunked; 422 for an empty one."""
    big = b"ISA" + b"x" * MAX_FILE_BYTES
    answer = web.request("POST", "/api/orchestrate", big, AUTH)
    assert answer.status == 413 and "max_file_bytes" in answer.json()["error"]
    chunks = iter([big[:100_000], big[100_000:]])
    answer = web.request("POST", "/api/orchestrate", chunks, AUTH, chunked=True)
    assert answer.status == 413, answer.body
    assert web.request("POST", "/api/orchestrate", b"", AUTH).status == 422


def test_orchestrate_answers_503_while_other_bodies_fill_max_bytes_in_flight(web):
    """A body that would pass ``[daemon] max_bytes_in_flight`` beside one
    still being read is answered 503 with Retry-After (a job holds ~25-35x its
    file in memory); once the first has been run, it goes through. The second
    is sent once the server has read the first as far as it was sent (else
    the first's last bytes, counted after the second's, are the ones refused)."""
    first = MAX_BYTES_IN_FLIGHT - 10_000
    started, go_on = threading.Event(), threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield b"x" * first
        started.set()
        go_on.wait(30)
        yield b"x"

    answers = []
    sender = threading.Thread(
        target=lambda: answers.append(
            web.request("POST", "/api/orchestrate", slow_body(), AUTH, chunked=True)
        )
    )
    sender.start()
    try:
        assert started.wait(30)
        poll_until(lambda: unread_bytes(web.port) == 0, what="the first body read by the server")
        # More than uvicorn may hold unread (64 KiB) and the first's margin.
        second = b"y" * 100_000
        # The server counts the first body's bytes as they arrive.
        busy = poll_until(
            lambda: (
                (a := web.request("POST", "/api/orchestrate", second, AUTH)).status == 503 and a
            ),
            what="503 beside the first body",
        )
        assert busy.headers["retry-after"] == "5"
        assert "max_bytes_in_flight" in busy.json()["error"]
    finally:
        go_on.set()
        sender.join(30)
    assert answers[0].status == 200 and answers[0].json()["success"] is False
    again = web.request("POST", "/api/orchestrate", second, AUTH)
    assert again.status == 200 and "not X12" in again.json()["error"]


def unread_bytes(port: int) -> int:
    """Bytes on 127.0.0.1's established connections to ``port`` that its
    server has not read yet: the clients' send queues and its receive queues
    (``/proc/net/tcp``)."""
    unread = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state, queues = line.split()[1:5]
        if state != "01":  # not ESTABLISHED
            continue
        sending, receiving = (int(q, 16) for q in queues.split(":"))
        if int(local.rsplit(":", 1)[1], 16) == port:
            unread += receiving
        elif int(remote.rsplit(":", 1)[1], 16) == port:
            unread += sending
    return unread


def test_retry_needs_the_token_and_puts_the_file_back(web):
    """POST /api/jobs/{id}/retry: 401 without the token; with it the failed file is in
    the inbox again (as retry --json reports); a second retry is 404."""
    job_id = web.jobs["failed"]
    state = web.root / "state"
    assert web.request("POST", f"/api/jobs/{job_id}/retry").status == 401
    assert (state / "failed" / "bad-po.edi").exists()
    answer = web.request("POST", f"/api/jobs/{job_id}/retry", None, AUTH)
    assert answer.status == 200, answer.body
    (result,) = answer.json()
    assert result == {
        "job_id": job_id,
        "file": "bad-po.edi",
        "retried": True,
        "inbox_name": "bad-po.edi",
        "inbox": str(state / "inbox"),
    }
    assert (state / "inbox" / "bad-po.edi").exists()
    assert not (state / "failed" / "bad-po.edi").exists()
    again = web.request("POST", f"/api/jobs/{job_id}/retry", None, AUTH)
    assert again.status == 404 and "no failed file" in again.json()["error"]
    # Put it back where it was, for the other tests.
    (state / "inbox" / "bad-po.edi").rename(state / "failed" / "bad-po.edi")
    report = {"job_id": job_id, "file_name": "bad-po.edi"}
    (state / "failed" / "bad-po.edi.error.json").write_text(json.dumps(report))


def test_metrics_parse_and_agree_with_stats(web):
    """/metrics in the Prometheus text format: jobs by status, amount, durations,
    orders, the daemon's host and the inbox, as stats and status say."""
    web.beat("edi-b", {"queue": 3, "held": 1, "in_flight": 2, "acks_owed": 4})
    web.beat("edi-c", {"queue": 0}, age_seconds=600)

    def scrape():
        answer = web.get("/metrics")
        assert answer.status == 200 and answer.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(answer.text)}
        # The ERP figures come from a thread's count, done once soon after the start.
        return families if "edi_inbox_orders_posted" in families else None

    families = poll_until(scrape, timeout=30, interval=0.1, what="the ERP figures")
    stats = web.cli_json("stats")
    jobs = {s.labels["status"]: s.value for s in families["edi_inbox_jobs"].samples}
    for status in ("succeeded", "failed", "duplicate", "interrupted"):
        assert jobs[status] == stats["by_status"][status], status
    (amount,) = families["edi_inbox_amount_posted"].samples
    assert amount.value == pytest.approx(float(stats["total_amount_processed"]))
    durations = {
        (s.name, s.labels["status"]): s.value
        for s in families["edi_inbox_job_duration_seconds"].samples
    }
    assert durations[("edi_inbox_job_duration_seconds_count", "succeeded")] == jobs["succeeded"]
    assert durations[("edi_inbox_job_duration_seconds_sum", "succeeded")] > 0
    (posted,) = families["edi_inbox_orders_posted"].samples
    assert posted.value >= 2
    assert families["edi_inbox_erp_attempts"].samples[0].value >= posted.value
    # The order the rules refused (acme's, quantity 0) never reached the ERP.
    assert families["edi_inbox_erp_failures"].samples[0].value == 0
    (last,) = families["edi_inbox_last_success_timestamp_seconds"].samples
    assert last.value > 1.7e9
    status = web.cli_json("status")
    hosts = {d["host"] for d in status["daemons"]}
    up = {s.labels["host"]: s.value for s in families["edi_inbox_daemon_up"].samples}
    assert set(up) == hosts and up["edi-b"] == 1.0 and up["edi-c"] == 0.0
    backlog = {
        (s.labels["host"], s.labels["state"]): s.value
        for s in families["edi_inbox_daemon_backlog"].samples
    }
    assert backlog[("edi-b", "queue")] == 3 and backlog[("edi-b", "in_flight")] == 2
    assert backlog[("edi-b", "acks_owed")] == 4 and backlog[("edi-b", "parked")] == 0
    ages = {
        s.labels["host"]: s.value
        for s in families["edi_inbox_daemon_heartbeat_age_seconds"].samples
    }
    assert ages["edi-c"] >= 600
    (waiting,) = families["edi_inbox_inbox_waiting"].samples
    assert waiting.value == status["inbox"]["waiting"]
    (failed,) = families["edi_inbox_failed_files"].samples
    assert failed.value == status["folders"]["failed"] >= 1


def test_metrics_by_partner(web):
    """/metrics has jobs by partner and final status (partner="" for senders no
    partner claims, said in the help text) and each partner's last activity, as
    stats --partner and partners --json say; the label-less jobs metric stays."""
    from datetime import datetime

    def scrape():
        text = web.get("/metrics").text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        return (families, text) if "edi_inbox_partner_jobs" in families else None

    families, text = poll_until(scrape, timeout=30, interval=0.1, what="the partner figures")
    assert 'partner="" for senders no partner claims' in text
    jobs = {
        (s.labels["partner"], s.labels["status"]): s.value
        for s in families["edi_inbox_partner_jobs"].samples
    }
    assert {partner for partner, _ in jobs} == {"acme", "bolt", ""}
    acme = web.cli_json("stats", "--partner", "acme")
    for status in ("succeeded", "partial", "failed", "duplicate", "interrupted"):
        assert jobs[("acme", status)] == acme["by_status"][status], status
    assert jobs[("bolt", "succeeded")] >= 1 and jobs[("", "failed")] >= 2
    everyone = {s.labels["status"]: s.value for s in families["edi_inbox_jobs"].samples}
    assert {tuple(s.labels) for s in families["edi_inbox_jobs"].samples} == {("status",)}
    for status, n in everyone.items():
        assert sum(v for (_, st), v in jobs.items() if st == status) <= n, status
    last = {
        s.labels["partner"]: s.value
        for s in families["edi_inbox_partner_last_activity_timestamp_seconds"].samples
    }
    listed = {p["name"]: p["last_activity"] for p in web.cli_json("partners")["partners"]}
    assert set(last) == {"acme", "bolt"}
    assert last["acme"] == pytest.approx(datetime.fromisoformat(listed["acme"]).timestamp())


def test_metrics_of_a_partners_own_inbox(tmp_path):
    """A partner with its own inbox ([partners.NAME] inbox): /metrics gives its
    backlog and oldest file's age, as status --json does; a partner without
    one has no series."""
    config_path = write_config(tmp_path, f"sqlite:///{tmp_path / 'edi.db'}")
    bolt_inbox = tmp_path / "bolt-in"
    bolt_inbox.mkdir()
    for n in (1, 2):
        (bolt_inbox / f"po{n}.edi").write_bytes(make_po(970 + n))
    (bolt_inbox / ".po3.edi.part").write_bytes(b"ISA")  # an upload in progress: not counted
    text = config_path.read_text().replace(
        "[partners.bolt]\n", f"[partners.bolt]\ninbox = {json.dumps(str(bolt_inbox))}\n"
    )
    config_path.write_text(text)
    with server(config_path, tmp_path) as (port, process):
        running = Site(tmp_path, {"EDI_INBOX_CONFIG": str(config_path)}, port, process, {}, "")
        families = {f.name: f for f in text_string_to_metric_families(running.get("/metrics").text)}
        (waiting,) = families["edi_inbox_partner_inbox_waiting"].samples
        (oldest,) = families["edi_inbox_partner_inbox_oldest_age_seconds"].samples
        assert waiting.labels["partner"] == oldest.labels["partner"] == "bolt"
        assert waiting.value == 2 and oldest.value >= 0
        bolt = next(p for p in running.cli_json("status")["partners"] if p["name"] == "bolt")
        assert bolt["inbox"]["waiting"] == 2
        assert oldest.value == pytest.approx(bolt["inbox"]["oldest_age_seconds"], abs=30)
        (bolt_inbox / "po1.edi").unlink()
        (bolt_inbox / "po2.edi").unlink()
        families = {f.name: f for f in text_string_to_metric_families(running.get("/metrics").text)}
        (waiting,) = families["edi_inbox_partner_inbox_waiting"].samples
        (oldest,) = families["edi_inbox_partner_inbox_oldest_age_seconds"].samples
        assert waiting.value == 0 and oldest.value == 0


def test_alert_rules_name_metrics_that_exist(web):
    """Every metric an example alert rule uses is one /metrics exposes."""
    rules = (Path(__file__).parent.parent / "config" / "edi-inbox.rules.yml").read_text()
    exposed = {
        s.name for f in text_string_to_metric_families(web.get("/metrics").text) for s in f.samples
    } | {f.name for f in text_string_to_metric_families(web.get("/metrics").text)}
    used = set(__import__("re").findall(r"\b(edi_inbox_[a-z_]+)", rules))
    assert {"edi_inbox_jobs_total", "edi_inbox_daemon_up"} <= used
    assert used <= exposed, used - exposed


def test_healthz_and_openapi(web):
    """/healthz answers ok; /docs serves OpenAPI with the seed's endpoints."""
    assert api(web, "/healthz")["status"] == "ok"
    assert web.get("/docs").status == 200
    paths = set(api(web, "/openapi.json")["paths"])
    assert {
        "/api/jobs/stats",
        "/api/jobs/recent",
        "/api/jobs/search",
        "/api/jobs/{job_id}",
        "/api/orchestrate",
        "/api/status",
        "/api/partners",
        "/healthz",
    } <= paths


def test_orchestrate_and_retry_are_off_without_a_token_file(tmp_path):
    """No [http] token_file: orchestrate and retry answer 403 with a clear error."""
    config_path = write_config(tmp_path, f"sqlite:///{tmp_path / 'edi.db'}", token=False)
    with server(config_path, tmp_path) as (port, process):
        running = Site(tmp_path, {}, port, process, {}, "sqlite")
        for path in ("/api/orchestrate", "/api/jobs/abc/retry"):
            answer = running.request("POST", path, NAMED.read_bytes(), AUTH)
            assert answer.status == 403
            assert "no [http] token_file is configured" in answer.json()["error"]


def test_without_partners_nothing_is_counted_per_partner(tmp_path):
    """No [partners]: /api/partners lists none (as partners --json), /metrics has
    no per-partner series (no pass over the jobs for them), the Partners page
    says so."""
    config_path = write_config(tmp_path, f"sqlite:///{tmp_path / 'edi.db'}", partners=False)
    with server(config_path, tmp_path) as (port, process):
        running = Site(tmp_path, {"EDI_INBOX_CONFIG": str(config_path)}, port, process, {}, "")
        upload = tmp_path / "po.edi"
        upload.write_bytes(make_po(960))
        assert running.cli_json("process", str(upload))["partner"] is None
        assert api(running, "/api/partners") == running.cli_json("partners")
        assert api(running, "/api/partners") == {"unknown": "accept", "partners": []}

        def scrape():
            families = {
                f.name: f for f in text_string_to_metric_families(running.get("/metrics").text)
            }
            return families if "edi_inbox_orders_posted" in families else None

        families = poll_until(scrape, timeout=30, interval=0.1, what="the ERP figures")
        assert "edi_inbox_partner_jobs" not in families
        assert families["edi_inbox_partner_last_activity_timestamp_seconds"].samples == []
        assert "No partner is configured" in running.get("/partners").text


def test_http_settings_defaults_and_errors(tmp_path):
    """[http] listen defaults to 127.0.0.1:8080; a bad listen or a world-readable
    token_file stops the configuration, naming the key."""
    assert config.load(None, {}).http.address() == ("127.0.0.1", 8080)
    toml = tmp_path / "c.toml"
    toml.write_text('[http]\nlisten = "localhost"\n')
    with pytest.raises(ConfigError, match=r"c\.toml: \[http\] key 'listen' must be HOST:PORT"):
        config.load(toml, {})
    token = tmp_path / "token"
    token.write_text("t\n")
    token.chmod(0o644)
    toml.write_text(f'[http]\ntoken_file = "{token}"\n')
    with pytest.raises(ConfigError, match=r"\[http\] key 'token_file'.*world-readable"):
        config.load(toml, {})
    env = {"EDI_INBOX_HTTP_LISTEN": "[::1]:9000"}
    assert config.load(None, env).http.address() == ("::1", 9000)


# -- HEAD, half-sent requests, a silent database --------------------------------------


def raw(port: int, method: str, path: str, *headers: str) -> tuple[int, dict[str, str], bytes]:
    """One request on a connection of its own, closed after the answer: the
    status, the headers and every byte after them, as they came on the wire."""
    head = "".join(f"{h}\r\n" for h in (f"{method} {path} HTTP/1.1", "Host: x", *headers))
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(f"{head}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    top, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = top.decode("latin-1").split("\r\n")
    fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), fields, rest


def test_head_is_answered_as_get_without_a_body(web):
    """HEAD on every GET endpoint, page, /metrics, /dashboard.css and /docs
    answers GET's status and headers with no byte of body on the wire (404 for
    an unknown job too); HEAD on the POST-only actions is a 405 and retries nothing."""
    job = web.jobs["named"]
    paths = ["/healthz", "/api/status", "/api/partners", "/api/jobs/stats"]
    paths += ["/api/jobs/recent?limit=3", "/api/jobs/search?po_number=1", f"/api/jobs/{job}"]
    paths += ["/metrics", "/", "/jobs", f"/jobs/{job}", "/partners", "/failed"]
    paths += ["/dashboard.css", "/docs", "/openapi.json", "/api/jobs/nojob", "/jobs/nojob"]
    for path in paths:
        got = web.get(path)
        status, headers, body = raw(web.port, "HEAD", path)
        assert (status, body) == (got.status, b""), (path, status, body[:200])
        assert headers["content-type"] == got.headers["content-type"], path
        if not path.startswith(("/metrics", "/api/status", "/healthz", "/api/partners")):
            assert int(headers["content-length"]) == len(got.body), path  # as GET's
    failed = web.root / "state" / "failed"
    waiting = sorted(os.listdir(failed))
    for path in (f"/api/jobs/{web.jobs['failed']}/retry", "/api/orchestrate"):
        status, headers, body = raw(web.port, "HEAD", path, f"Authorization: Bearer {TOKEN}")
        assert (status, body) == (405, b""), (path, status)
        assert headers["allow"] == "POST"
    status, _, body = raw(web.port, "HEAD", f"/jobs/{web.jobs['failed']}/retry")
    assert (status, body) == (405, b"")
    assert sorted(os.listdir(failed)) == waiting


@contextlib.contextmanager
def serve_limited(config_path: Path, root: Path, nofile: int) -> Iterator[tuple[int, Path]]:
    """``edi-inbox serve`` with at most ``nofile`` file descriptors, up once it answers."""
    port = free_port()
    log_path = root / f"serve-limited-{port}.log"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "edi_inbox.cli", "serve", "--listen", f"127.0.0.1:{port}"],
            env={**os.environ, "EDI_INBOX_CONFIG": str(config_path)},
            preexec_fn=limit,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def up() -> bool:
            assert process.poll() is None, log_path.read_text()
            try:
                return request(port, "GET", "/healthz").status == 200
            except OSError:
                return False

        try:
            poll_until(up, timeout=60, interval=0.05, what="serve answering")
            yield port, log_path
            assert process.poll() is None, log_path.read_text()
        finally:
            stop(process)


def closed_by_the_server(conn: socket.socket) -> bool:
    try:
        return conn.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_half_sent_requests_are_closed_and_lock_nobody_out(tmp_path):
    """serve at 128 file descriptors (64 connections): 100 connections that
    send half a request head and stay (slowloris) never keep a fresh GET from
    its 200, nor take the process to its descriptor limit (asyncio's accept
    never meets EMFILE); a half-sent head is closed within HEAD_SECONDS; one
    that completes is answered."""
    config_path = write_config(tmp_path, f"sqlite:///{tmp_path / 'edi.db'}")
    with serve_limited(config_path, tmp_path, 128) as (port, log_path):
        slow: list[socket.socket] = []
        try:
            for _ in range(100):
                conn = socket.create_connection(("127.0.0.1", port), timeout=5)
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                slow.append(conn)
            opened = time.monotonic()  # the newest's head began by now: due HEAD_SECONDS on
            fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                fresh.request("GET", "/healthz")
                assert fresh.getresponse().status == 200
            finally:
                fresh.close()
            # The newest half-sent connection: closed once its head is overdue.
            newest = slow[-1]
            newest.settimeout(0.2)
            poll_until(lambda: closed_by_the_server(newest), timeout=HEAD_SECONDS + 5)
            assert time.monotonic() - opened > HEAD_SECONDS - 1  # not before it was due
            # One that finishes its head in time is answered.
            second = socket.create_connection(("127.0.0.1", port), timeout=5)
            with second:
                second.sendall(b"GET /healthz HTTP/1.1\r\n")
                second.sendall(b"Host: x\r\nConnection: close\r\n\r\n")
                assert second.recv(65536).startswith(b"HTTP/1.1 200 ")
        finally:
            for conn in slow:
                conn.close()
    log = log_path.read_text()
    assert "out of system resource" not in log and "Too many open files" not in log, log[-2000:]


def test_past_the_cap_a_new_connection_is_refused_while_all_are_answered(tmp_path):
    """serve at 64 file descriptors (32 connections): with 32 orchestrate
    requests in flight (their handlers waiting for the body), none waiting for a
    head, a new connection's request is answered 503 and the connection closed;
    once they end, a GET is answered again."""
    config_path = write_config(tmp_path, f"sqlite:///{tmp_path / 'edi.db'}")
    with serve_limited(config_path, tmp_path, 64) as (port, _):
        busy: list[socket.socket] = []
        try:
            head = (
                "POST /api/orchestrate HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                f"Authorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n"
            )
            for _ in range(32):
                conn = socket.create_connection(("127.0.0.1", port), timeout=5)
                conn.sendall(head.encode())
                busy.append(conn)
                # Its handler is reading the body: the request is being answered.
                assert conn.recv(100).startswith(b"HTTP/1.1 100 ")
            status, headers, body = raw(port, "GET", "/healthz")
            assert (status, headers["connection"]) == (503, "close"), (status, body)
        finally:
            for conn in busy:
                conn.close()
        poll_until(lambda: raw(port, "GET", "/healthz")[0] == 200, timeout=10, interval=0.1)


class StallingProxy:
    """A TCP proxy on 127.0.0.1 to ``upstream``. ``stall()``: it keeps every
    connection open (and accepts new ones) but forwards nothing, a database
    server up but silent; ``resume()``: it forwards again."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = False
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while not self.closed:
                self.flowing.wait()  # stalled: read nothing, forward nothing
                data = source.recv(65536)
                if not data or self.closed:
                    break
                self.flowing.wait()
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stall(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self.closed = True
        self.flowing.set()
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.mark.postgres
def test_a_silent_database_is_answered_503_in_seconds(tmp_path):
    """PostgreSQL reached through a proxy that stops forwarding (the server up
    but silent): /healthz, the API and a page answer 503 (JSON, the error page)
    within 8 s, all at once; the proxy forwarding again, they answer 200."""
    with private_schema(pg_base_url()) as url:
        parts = urlsplit(url)
        proxy = StallingProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
        try:
            netloc = f"{parts.netloc.rpartition('@')[0]}@127.0.0.1:{proxy.port}"
            config_path = write_config(tmp_path, urlunsplit(parts._replace(netloc=netloc)))
            make_records({"EDI_INBOX_CONFIG": str(config_path)}, tmp_path / "state")
            with server(config_path, tmp_path) as (port, _):
                paths = ["/healthz", "/api/jobs/stats", "/", "/metrics"]
                assert [request(port, "GET", p).status for p in paths] == [200] * 4
                proxy.stall()

                def ask(path: str) -> tuple[int | str, str, float]:
                    started = time.monotonic()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=8)
                    try:
                        conn.request("GET", path)
                        answer = conn.getresponse()
                        text = answer.read().decode()
                        return answer.status, text, time.monotonic() - started
                    except OSError as exc:
                        return repr(exc), "", time.monotonic() - started
                    finally:
                        conn.close()

                with ThreadPoolExecutor(len(paths)) as pool:
                    answers = dict(zip(paths, pool.map(ask, paths), strict=True))
                took = {path: (status, round(t, 1)) for path, (status, _, t) in answers.items()}
                assert {status for status, _ in took.values()} == {503}, took
                assert json.loads(answers["/api/jobs/stats"][1])["error"].startswith(
                    "the database is not available"
                )
                assert "the database is not available" in answers["/"][1]
                proxy.resume()
                poll_until(
                    lambda: request(port, "GET", "/api/jobs/stats").status == 200,
                    timeout=15,
                    interval=0.1,
                    what="serve answering again",
                )
        finally:
            proxy.close()


@pytest.mark.postgres
def test_only_serve_bounds_its_statements():
    """serve's connections (answer_seconds) carry statement_timeout and cut a
    statement that runs past it; the daemon's and the CLI's carry none."""
    settings = config.Settings()
    with private_schema(pg_base_url()) as url:
        daemon = store.open_database(url, settings)
        web = store.open_database(url, settings, retry_seconds=0.5, answer_seconds=0.5)
        try:

            def one(db, sql):
                return store.run_unit(db, lambda: db.execute_sql(sql).fetchone(), write=False)

            assert one(daemon, "SHOW statement_timeout") == ("0",)
            assert one(web, "SHOW statement_timeout") == ("500ms",)
            assert one(daemon, "SELECT pg_sleep(1), 1")[1] == 1
            with pytest.raises(Exception, match="statement timeout"):
                one(web, "SELECT pg_sleep(1)")
        finally:
            store.close_database(web)
            store.close_database(daemon)
