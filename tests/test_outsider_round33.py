"""Outside tester round 33: the operator's HTTP side (``edi-inbox serve``:
the JSON API, the dashboard, ``/metrics``) after the changes since round 19
(partial jobs, refused orders, partner folders, retry, owed 997s, hosts).
About 26 s at -n0.

What I tried:

- a real ``serve`` over a real SQLite file (``web_site.site``: jobs made by
  ``process`` and ``run --once``), plus a partial file (two orders, one the
  rules refuse) processed while it serves;
- hostile query strings on every job endpoint and page: negative, huge and
  repeated ``limit``/``offset``/``page``, non-UTF-8 percent-encodings, NUL,
  LIKE wildcards (``%``, ``_``) as job id prefixes, ``..%2f`` in job ids,
  dates at the ends of the calendar (``9999-12-31T23:59``,
  ``0001-01-01T00:00+14:00``) as ``since``/``until``;
- HEAD and OPTIONS on every kind of endpoint, the retry action included;
  a wrong and a Basic token; the dashboard's retry form without a token;
  links to ``/failed`` carrying ``retried=``/``problem=``;
- ``/metrics`` parsed by ``prometheus_client.parser`` and compared with
  ``/api/jobs/stats`` and ``stats --json`` after the partial job;
- the overview page (its "Last 24 h" card and its chart) after a partial job;
- a port already taken at start; many clients that send half a request
  and stay (slowloris) against a server with a file-descriptor limit; 40
  clients at once;
- PostgreSQL reached through a TCP proxy of the test's own, the URL holding
  a password: every page, JSON, metric and the serve log searched for it;
  the proxy then stops forwarding (a server up but silent);
- 10,050 jobs (a real job's row copied under new ids) under the dashboard's
  search, its paging and its status filter;
- orders in EUR and in USD (a header CUR) on the overview and ``/metrics``;
- the counters across a parked job (its record owed), the stop that marks it
  interrupted and the start that records it, through the daemon's own calls;
- real Chromium on the partial job's page and a job whose vendor name
  (N1*VN) is markup with a right-to-left override, its file name 240 bytes.

Found (strict xfails; all 11 fixed the same session, each test failing
before its fix):

- ``test_a_date_at_the_end_of_the_calendar_is_a_422_not_a_500``: ``since``
  or ``until`` near year 1 or 9999 (``/api/jobs/stats?since=9999-12-31T23:59``,
  ``/api/jobs/search?until=0001-01-01T00:00%2B14:00``, the dashboard's
  ``/jobs?since=…``) answers a bare ``500 Internal Server Error`` in
  text/plain, not README's JSON 422 (nor the dashboard's error page): an
  ``OverflowError`` in ``store.fields.as_utc`` / ``queries._ceil``, which
  ``web.app.when`` lets through.
- ``test_the_failed_page_announces_only_a_retry_that_happened``: the
  "Back in the inbox: NAME" notice and the problem line on ``/failed`` are
  whatever the link's ``retried=``/``problem=`` say
  (``web.dashboard.failed``): anyone can send the operator a link that says
  a file was retried while it still waits in failed/.
- ``test_head_is_answered_where_get_is``: ``HEAD /healthz`` (and every
  other GET endpoint and page) is a 405; RFC 9110 makes HEAD mandatory
  wherever GET is, and monitors that probe with HEAD see the service down.
- ``test_the_overview_counts_partial_jobs``: after a partial job the
  overview's "Last 24 h" card shows succeeded, failed, duplicate and
  interrupted, never partial, and the chart counts only succeeded and failed
  (``templates/overview.html``, ``dashboard.hourly``), while
  ``status --json``'s ``last_24h`` has ``partial: 1``.
- ``test_the_partners_page_counts_a_partners_partial_files``: the same on
  the Partners page: files and failures per partner, no partial count
  (``templates/partners.html``), though ``/api/partners`` has ``partial``.
- ``test_clients_sending_half_a_request_do_not_lock_out_the_others``:
  uvicorn never times out a connection that sent half a request head; with
  the serve process at 128 file descriptors, 150 such connections leave a
  fresh ``GET /healthz`` unanswered (``web.app.serve`` runs uvicorn with no
  connection limit and no header timeout).
- ``test_the_job_page_shows_a_997_kept_in_the_partners_outbox``: for a
  partner with its own ``outbox`` the job page says the 997 is "no longer in
  acks/" and shows none while it waits in that outbox
  (``web.dashboard._ack`` looks in ``[paths] acks`` only).
- ``test_a_hung_database_is_answered_503_in_seconds`` (PostgreSQL, through a
  proxy that stops forwarding): ``/healthz`` gets no answer within 8 s
  instead of README's 503 within ~2 s; serve's connections carry no
  ``statement_timeout`` and the keepalives cannot see a server that is up
  but silent (``store.database.PostgresStore``, ``PG_OPTIONS``).
- ``test_a_dashboard_search_finds_every_match_past_ten_thousand``: the
  dashboard's ``/jobs`` search reads at most the newest 10,000 matches and
  cuts pages and the status filter from them (``web.dashboard.jobs``): with
  10,052 jobs since 2000, ``/jobs?since=2000-01-01&status=failed`` says "No
  jobs" beside a failed one, and page 400 of 403 has no "older" link
  (README: "jobs with search and paging").
- ``test_the_overview_does_not_add_euros_to_dollars``: an order of 100 EUR
  and one of 100 USD show as "amount 200" on the overview (and
  ``edi_inbox_amount_posted_total 200.0``, ``total_amount_processed`` "200"):
  one sum of two currencies, naming neither (``queries.stats``, rollups).
- ``test_a_counter_never_goes_down_when_a_parked_job_is_recorded_late``:
  a job parked because its final record could not be written, marked
  interrupted at the stop and recorded at the next start takes its
  ``interrupted`` back: ``edi_inbox_jobs_total{status="interrupted"}`` goes
  1 -> 0 (``store.recorder.job_finished`` subtracts the old status's rollup;
  the counter is read from ``job_rollups`` in ``web.metrics``). Prometheus
  takes it for a counter reset.

What held:

- ``limit=-1``, ``offset=10**20``, ``%ff`` and NUL in parameters: JSON 422s
  or empty answers, never a 500; ``%`` and ``_`` as job id prefixes match
  nothing (404); ``..%2f..`` in a job id is a 404;
- ``HEAD``/``OPTIONS``/``GET``/``PUT``/``DELETE`` on ``/api/jobs/ID/retry``
  neither retry nor answer 2xx; no token, a wrong or a Basic one: 401; the
  dashboard's retry form without the token is a 401 page; the file stays in
  failed/;
- ``problem=<script>`` on ``/failed`` is escaped;
- ``/metrics`` parses, ``edi_inbox_jobs_total`` per status equals
  ``/api/jobs/stats`` and ``stats --json`` with a partial job among them, no
  NaN;
- a port already taken at start: exit 3 with "address already in use",
  no traceback;
- the PostgreSQL site through a proxy, its URL holding a password: no page,
  JSON, metric or serve log line shows the password;
- a heartbeat whose host name holds a quote, a backslash, a newline, markup
  and U+202E: ``/metrics`` parses and carries it exactly, the overview
  escapes it;
- ``serve`` with ``[http] listen = "127.0.0.1:PORT"`` answers there and
  not on ::1 nor on the machine's other address;
- 40 clients asking 200 questions at once beside five half-sent requests:
  every answer a 200, the same counts in each;
- in Chromium: the partial job's page (partial, one order posted, one
  rejected), a vendor name of markup and U+202E (no element made, the
  override shown as ``\\u202e``), a 240-character file name listed.

Not a finding: ``serve`` has no reload (the unit has no ``ExecReload``;
``[http]`` changes need a restart, and the daemon does not serve HTTP);
``/api/status`` calls a daemon whose heartbeat says ``stopping`` alive while
``edi_inbox_daemon_up`` is 0 during its stop's drain (transient, left alone).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import resource
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_outsider_round13 import interchange, order
from test_web import StallingProxy

import web_site
from helpers import BAD, make_po, poll_until
from web_site import TOKEN, Site, free_port, request, stop

VENDOR = "<b id=evil>E</b>\u202egnp.exe"  # markup and a right-to-left override
LONG_NAME = "L" * 236 + ".edi"


@pytest.fixture(scope="module")
def web():
    root = Path(tempfile.mkdtemp(prefix="outsider33-"))
    try:
        with web_site.site("sqlite", root) as running:
            partial = root / "partial.edi"
            partial.write_bytes(
                interchange(order("R33-1", "0001"), order("R33-2", "0002", "0"), icn="33")
            )
            result = running.cli("process", "--json", str(partial))
            running.jobs["partial"] = json.loads(result.stdout)["job_id"]
            hostile = root / LONG_NAME
            hostile.write_bytes(
                make_po(933).replace(b"N1*SF**92*222", ("N1*VN*" + VENDOR).encode())
            )
            result = running.cli("process", "--json", str(hostile))
            running.jobs["vendor"] = json.loads(result.stdout)["job_id"]
            yield running
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_partial_job_is_partial(web: Site):
    shown = web.get(f"/api/jobs/{web.jobs['partial']}").json()
    assert shown["status"] == "partial", shown
    assert shown["partner"] == "acme", shown
    vendor = web.get(f"/api/jobs/{web.jobs['vendor']}").json()
    assert vendor["status"] == "succeeded" and vendor["vendor_name"] == VENDOR, vendor


def test_the_job_page_shows_a_997_kept_in_the_partners_outbox(web: Site):
    shown = web.get(f"/api/jobs/{web.jobs['partial']}").json()
    (name,) = [a if isinstance(a, str) else a.get("name", a.get("file")) for a in shown["acks"]]
    assert (web.root / "acme-out" / name).exists(), sorted(os.listdir(web.root / "acme-out"))
    page = web.get(f"/jobs/{web.jobs['partial']}").text
    assert "no longer in acks/" not in page
    assert "AK9*" in page, page


# -- dates at the ends of the calendar ------------------------------------------------

EDGE_DATES = [
    "/api/jobs/stats?since=9999-12-31T23:59",
    "/api/jobs/stats?since=0001-01-01T00:00%2B14:00",
    "/api/jobs/search?until=0001-01-01T00:00%2B14:00",
    "/api/jobs/search?since=9999-12-31T23:59-14:00",
    "/jobs?since=0001-01-01T00:00%2B14:00",
]


@pytest.mark.parametrize("path", EDGE_DATES)
def test_a_date_at_the_end_of_the_calendar_is_a_422_not_a_500(web: Site, path: str):
    answer = web.get(path)
    assert answer.status != 500, (answer.status, answer.body[:200])
    if path.startswith("/api/"):
        assert answer.headers.get("content-type", "").startswith("application/json")
        assert answer.status == 422 or answer.status == 200, answer.body


def test_hostile_parameters_are_4xx_or_empty_never_500(web: Site):
    for path in (
        "/api/jobs/recent?limit=-1",
        "/api/jobs/recent?offset=99999999999999999999",
        "/api/jobs/recent?limit=abc",
        "/api/jobs/search?success=maybe",
        "/api/jobs/stats?since=2026-13-45",
    ):
        answer = web.get(path)
        assert answer.status == 422, (path, answer.status, answer.body)
        assert answer.json()["status"] == 422
    for path in (
        "/api/jobs/search?po_number=%ff%fe",
        "/api/jobs/search?po_number=%00",
        "/api/jobs/recent?limit=1&limit=2&offset=0&offset=1",
        "/jobs?page=99999999999999999999",
        "/jobs?page=-1",
        "/jobs?po_number=%ff%fe&page=999999999999",
        "/api/jobs/recent?offset=9223372036854775807",
    ):
        answer = web.get(path)
        assert answer.status == 200, (path, answer.status, answer.body[:300])
    for job_id in ("%25", "_", "%25%25", "..%2f..%2fetc%2fpasswd", "%ff"):
        answer = web.get(f"/api/jobs/{job_id}")
        assert answer.status == 404, (job_id, answer.status, answer.body)
        assert web.get(f"/jobs/{job_id}").status == 404


# -- the retry action ----------------------------------------------------------------


def test_retry_only_by_post_with_the_token(web: Site):
    job = web.jobs["failed"]
    failed = web.root / "state" / "failed"
    assert (failed / "bad-po.edi").exists()
    for method in ("HEAD", "OPTIONS", "GET", "PUT", "DELETE"):
        answer = web.request(method, f"/api/jobs/{job}/retry")
        assert answer.status >= 400, (method, answer.status)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        answer = web.request("POST", f"/api/jobs/{job}/retry", headers=headers)
        assert answer.status == 401, (headers, answer.status, answer.body)
    form = web.request(
        "POST",
        f"/jobs/{job}/retry",
        body="token=",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status == 401, form.status
    assert (failed / "bad-po.edi").exists()  # none of these retried it
    page = web.get("/failed?problem=%3Cscript%3Ealert(1)%3C/script%3E").text
    # (Escaped when found; since the fix of the next test not shown at all.)
    assert "<script>alert(1)" not in page and "alert(1)" not in page


def test_the_failed_page_announces_only_a_retry_that_happened(web: Site):
    assert (web.root / "state" / "failed" / "bad-po.edi").exists()
    page = web.get("/failed?retried=bad-po.edi&problem=call+the+help+desk+at+555").text
    assert "Back in the inbox" not in page, page
    assert "help desk" not in page, page


# -- HEAD ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/api/status", "/metrics", "/"])
def test_head_is_answered_where_get_is(web: Site, path: str):
    assert web.get(path).status == 200
    head = web.request("HEAD", path)
    assert head.status == 200, head.status
    assert head.body == b""


# -- truth: metrics, stats, the overview ---------------------------------------------


def test_metrics_agree_with_stats_after_a_partial_job(web: Site):
    stats = web.get("/api/jobs/stats").json()
    assert stats == web.cli_json("stats")
    text = web.get("/metrics").text
    jobs: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert not math.isnan(sample.value), sample
            if sample.name == "edi_inbox_jobs_total":
                jobs[sample.labels["status"]] = sample.value
    assert jobs["partial"] == stats["partial_jobs"] == 1, (jobs, stats)
    assert jobs["duplicate"] == stats["duplicates"]
    assert sum(jobs.values()) == stats["total_jobs"], (jobs, stats)
    assert jobs["succeeded"] == stats["successful_jobs"]


def test_the_overview_counts_partial_jobs(web: Site):
    day = web.cli_json("status")["last_24h"]
    assert day["partial"] == 1, day
    page = web.get("/").text
    card = page.split("Last 24 h", 1)[1].split("</div>", 1)[0]
    assert "partial" in card, card


def test_the_partners_page_counts_a_partners_partial_files(web: Site):
    listed = {p["name"]: p for p in web.get("/api/partners").json()["partners"]}
    assert listed["acme"]["partial"] == 1, listed["acme"]
    row = web.get("/partners").text.split('id="partner-acme"', 1)[1].split("</tr>", 1)[0]
    assert "partial" in row, row


# -- the server's own failure modes -------------------------------------------------


def test_a_port_already_taken_at_start_is_said_plainly(web: Site):
    env = {**os.environ, **web.env}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ran = subprocess.run(
            [sys.executable, "-m", "edi_inbox.cli", "serve", "--listen", f"127.0.0.1:{port}"],
            env=env,
            capture_output=True,
            timeout=60,
        )
    out = ran.stdout + ran.stderr
    assert ran.returncode != 0
    assert b"address already in use" in out, out[-2000:]
    assert b"Traceback" not in out, out[-2000:]


@contextlib.contextmanager
def limited_server(config: str, nofile: int):
    """``serve`` with at most ``nofile`` file descriptors, up once it listens."""
    port = free_port()

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    process = subprocess.Popen(
        [sys.executable, "-m", "edi_inbox.cli", "serve", "--listen", f"127.0.0.1:{port}"],
        env={**os.environ, "EDI_INBOX_CONFIG": config},
        preexec_fn=limit,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def up() -> bool:
        assert process.poll() is None, "serve exited"
        try:
            return request(port, "GET", "/healthz").status == 200
        except OSError:
            return False

    try:
        poll_until(up, timeout=60, interval=0.05, what="serve answering")
        yield port
    finally:
        stop(process)


def test_clients_sending_half_a_request_do_not_lock_out_the_others(web: Site):
    with limited_server(web.env["EDI_INBOX_CONFIG"], 128) as port:
        slow = []
        try:
            for _ in range(150):
                conn = socket.create_connection(("127.0.0.1", port), timeout=5)
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                slow.append(conn)
            fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                fresh.request("GET", "/healthz")
                status = fresh.getresponse().status
            except OSError as exc:
                status = repr(exc)
            finally:
                fresh.close()
            assert status == 200, status
        finally:
            for conn in slow:
                conn.close()


# -- PostgreSQL: through a proxy that can stall (test_web's), the URL with a password -------


SECRET = "hunter2-db-password"


@contextlib.contextmanager
def proxied_pg_site(root: Path):
    from conftest import pg_base_url, private_schema

    with private_schema(pg_base_url()) as url:
        parts = urlsplit(url)
        proxy = StallingProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
        try:
            user = parts.username or "postgres"
            netloc = f"{user}:{SECRET}@127.0.0.1:{proxy.port}"
            db_url = urlunsplit(parts._replace(netloc=netloc))
            config = web_site.write_config(root, db_url)
            env = {"EDI_INBOX_CONFIG": str(config)}
            jobs = web_site.make_records(env, root / "state")
            with web_site.server(config, root) as (port, process):
                yield Site(root, env, port, process, jobs, "postgresql"), proxy
        finally:
            proxy.close()


@pytest.fixture
def scratch():
    root = Path(tempfile.mkdtemp(prefix="outsider33-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.postgres
def test_the_database_password_is_never_shown(scratch: Path):
    with proxied_pg_site(scratch) as (site, _):
        for path in ("/api/status", "/metrics", "/", "/partners", "/healthz", "/jobs"):
            answer = site.get(path)
            assert answer.status == 200, (path, answer.status)
            assert SECRET not in answer.body.decode("utf-8", "replace"), path
        log = "".join(p.read_text(errors="replace") for p in scratch.glob("serve-*.log"))
        assert SECRET not in log


@pytest.mark.postgres
def test_a_hung_database_is_answered_503_in_seconds(scratch: Path):
    with proxied_pg_site(scratch) as (site, proxy):
        assert site.get("/api/jobs/stats").status == 200
        proxy.stall()
        conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=8)
        try:
            conn.request("GET", "/healthz")
            status: object = conn.getresponse().status
        except OSError as exc:
            status = repr(exc)
        finally:
            conn.close()
            proxy.close()  # the hung requests end, so serve stops at once
        assert status == 503, status


# -- the dashboard in Chromium ------------------------------------------------------


def test_browser_shows_partial_and_hostile_jobs_as_they_are(web: Site):
    """In Chromium: the partial job's page says partial with one order posted and
    one rejected; a vendor name holding markup and U+202E makes no element and
    shows the override as an escape; a 240-character file name is listed."""
    from selenium.webdriver.common.by import By
    from test_dashboard import browser

    profile = Path(tempfile.mkdtemp(prefix="outsider33-chromium-"))
    driver = browser(profile)
    try:
        driver.get(f"{web.url}/jobs/{web.jobs['partial']}")
        assert driver.find_element(By.CSS_SELECTOR, "h1 .badge").text == "partial"
        badges = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "section.order h3 .badge")]
        assert badges == ["posted", "rejected"], badges
        driver.get(f"{web.url}/jobs/{web.jobs['vendor']}")
        assert driver.find_elements(By.ID, "evil") == []
        shown = driver.find_element(By.XPATH, "//dt[.='Vendor']/following-sibling::dd[1]").text
        assert shown == "<b id=evil>E</b>\\u202egnp.exe", shown
        driver.get(f"{web.url}/jobs?vendor_name=gnp")
        files = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "table.jobs td.file")]
        assert LONG_NAME in files, files
        assert driver.find_elements(By.ID, "evil") == []
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# -- a large database: the dashboard's search past 10,000 matches ----------------------


def test_a_dashboard_search_finds_every_match_past_ten_thousand(scratch: Path):
    from click.testing import CliRunner

    from edi_inbox.cli import main

    config = web_site.write_config(scratch, f"sqlite:///{scratch / 'edi-inbox.db'}")
    env = {"EDI_INBOX_CONFIG": str(config)}
    ids = {}
    for what, data in (("bad", BAD), ("good", make_po(950))):
        path = scratch / f"{what}.edi"
        path.write_bytes(data)
        ran = CliRunner().invoke(main, ["process", "--json", str(path)], env=env)
        ids[what] = json.loads(ran.stdout)["job_id"]
    # 10,050 more jobs like the good one (its row copied under new ids): a busy month.
    with contextlib.closing(sqlite3.connect(scratch / "edi-inbox.db")) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(jobs)") if row[1] != "id"]
        chosen = ", ".join(
            "lower(hex(randomblob(16)))" if c == "job_id" else f'"{c}"' for c in columns
        )
        names = ", ".join(f'"{c}"' for c in columns)
        conn.execute(
            f"INSERT INTO jobs ({names}) SELECT {chosen} FROM jobs,"
            " (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10050)"
            " SELECT i FROM n) WHERE jobs.job_id = ?",
            (ids["good"],),
        )
        conn.commit()
    with web_site.server(config, scratch) as (port, _):
        assert ids["bad"] in request(port, "GET", "/jobs?status=failed").text
        api = request(port, "GET", "/api/jobs/search?since=2000-01-01&success=false").json()
        assert [j["job_id"] for j in api] == [ids["bad"]]
        failed = request(port, "GET", "/jobs?since=2000-01-01&status=failed").text
        last = request(port, "GET", "/jobs?since=2000-01-01&page=400").text
        assert ids["bad"] in failed, "the failed job since 2000 is not listed"
        assert 'rel="next"' in last, "page 400 of 403 has no link to older jobs"


def test_many_clients_at_once_beside_a_few_slow_ones(web: Site):
    """Five connections that sent half a request stay open while 40 clients ask
    200 questions at once: every answer a 200, the counts the same in each."""
    from concurrent.futures import ThreadPoolExecutor

    slow = [socket.create_connection(("127.0.0.1", web.port), timeout=5) for _ in range(5)]
    try:
        for conn in slow:
            conn.sendall(b"GET /api/status HTTP/1.1\r\nHost: x\r\n")
        paths = ["/api/jobs/stats", "/metrics", "/", "/api/jobs/recent?limit=50", "/failed"]

        def ask(i: int) -> tuple[str, int, bytes]:
            path = paths[i % len(paths)]
            answer = web.get(path)
            return path, answer.status, answer.body

        with ThreadPoolExecutor(40) as pool:
            answers = list(pool.map(ask, range(200)))
        assert {status for _, status, _ in answers} == {200}
        totals = {json.loads(b)["total_jobs"] for p, _, b in answers if p == "/api/jobs/stats"}
        assert len(totals) == 1, totals
    finally:
        for conn in slow:
            conn.close()


def test_the_overview_does_not_add_euros_to_dollars(scratch: Path):
    from click.testing import CliRunner

    from edi_inbox.cli import main

    config = web_site.write_config(scratch, f"sqlite:///{scratch / 'edi-inbox.db'}")
    env = {"EDI_INBOX_CONFIG": str(config)}
    for currency, icn in (("EUR", "41"), ("USD", "42")):
        body = (
            f"ST*850*0001~BEG*00*SA*C-{currency}**20240102~CUR*BY*{currency}~"
            "PO1*1*1*EA*100**VP*X1~CTT*1~SE*6*0001~"
        )
        path = scratch / f"{currency}.edi"
        path.write_bytes(interchange(body, icn=icn))
        ran = CliRunner().invoke(main, ["process", "--json", str(path)], env=env)
        assert json.loads(ran.stdout)["status"] == "succeeded", ran.stdout
    with web_site.server(config, scratch) as (port, _):
        card = request(port, "GET", "/").text.split("Last 24 h", 1)[1].split("</div>", 1)[0]
        amount = card.split("amount", 1)[1]
        assert "EUR" in amount and "USD" in amount, card


def test_a_hostile_host_name_in_metrics_and_the_overview(web: Site):
    """A heartbeat whose host holds a quote, a backslash, a newline, markup and
    U+202E: /metrics stays valid and carries it exactly; the overview escapes it."""
    host = 'ev"il\\ho\nst <i id=hostile>\u202e'
    web.beat(host, {"queue": 1, "acks_owed": 2})
    text = web.get("/metrics").text
    up = {
        s.labels["host"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "edi_inbox_daemon_up"
    }
    assert up.get(host) == 1.0, up
    page = web.get("/").text
    assert "<i id=hostile>" not in page and "&lt;i id=hostile&gt;" in page


def other_address() -> str | None:
    """An address of this machine other than loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # no packet is sent
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_serve_listens_where_http_listen_says_and_nowhere_else(scratch: Path):
    config = web_site.write_config(scratch, f"sqlite:///{scratch / 'edi-inbox.db'}")
    port = free_port()
    config.write_text(
        config.read_text().replace("[http]\n", f'[http]\nlisten = "127.0.0.1:{port}"\n')
    )
    env = {**os.environ, "EDI_INBOX_CONFIG": str(config)}
    process = subprocess.Popen(
        [sys.executable, "-m", "edi_inbox.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def up() -> bool:
            assert process.poll() is None, "serve exited"
            try:
                return request(port, "GET", "/healthz").status == 200
            except OSError:
                return False

        poll_until(up, timeout=60, interval=0.05, what="serve on [http] listen")
        elsewhere = [("::1", socket.AF_INET6)]
        if (address := other_address()) is not None:
            elsewhere.append((address, socket.AF_INET))
        for host, family in elsewhere:
            with socket.socket(family) as sock:
                sock.settimeout(5)
                try:
                    sock.connect((host, port))
                except OSError:
                    continue  # refused (or no IPv6): not listening there
                raise AssertionError(f"serve also answers on {host}:{port}")
    finally:
        stop(process)


# -- counters: a parked job recorded late ---------------------------------------------


def jobs_total(port: int) -> dict[str, float]:
    text = request(port, "GET", "/metrics").text
    return {
        s.labels["status"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "edi_inbox_jobs_total"
    }


def test_a_counter_never_goes_down_when_a_parked_job_is_recorded_late(scratch: Path):
    """The daemon's own calls in its order: a job whose final record cannot be
    written (the database locked) is parked (``NotRecorded``); the stop marks
    it interrupted (``store.mark_interrupted``, service.py's last step); the
    next start writes its owed record (``Pipeline.record_owed``, the
    worker's ``_settle``). /metrics scraped between the two."""
    from edi_inbox import config, store
    from edi_inbox.errors import DatabaseUnavailable, NotRecorded
    from edi_inbox.pipeline import Pipeline

    path = web_site.write_config(scratch, f"sqlite:///{scratch / 'edi-inbox.db'}", partners=False)
    settings = config.load(str(path), {})
    settings.paths.create()
    db = store.open_database(settings.database_url, settings)
    store.init(db)
    locked = threading.Event()
    locked.set()

    class Locked(store.DatabaseRecorder):
        def job_finished(self, *args, **kwargs):
            if locked.is_set():
                raise DatabaseUnavailable("database is locked")
            return super().job_finished(*args, **kwargs)

    pipeline = Pipeline(settings, Locked(db), host="edi-a")
    try:
        upload = scratch / "po.edi"
        upload.write_bytes(make_po(961))
        with pytest.raises(NotRecorded) as parked:
            pipeline.run(upload)
        assert len(store.mark_interrupted(db, "edi-a")) == 1
        with web_site.server(path, scratch) as (port, _):
            before = jobs_total(port)
            assert before["interrupted"] == 1.0, before
            locked.clear()
            pipeline.record_owed(parked.value)
            after = jobs_total(port)
            assert after["succeeded"] == 1.0, after
            for status, value in before.items():
                assert after[status] >= value, (status, before, after)
    finally:
        pipeline.close()
        store.close_database(db)
