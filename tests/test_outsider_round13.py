"""Outsider round 13: what DESIGN.md ("Contracts the outside world relies
on") and README (Commands, the ERP contract, 997 and TA1, the HTTP API, the
journal, "What the daemon guarantees") promise, checked literally from
outside. About 60 s.

Bugs found (each test failed on the code as found; all fixed since, the
tests plain):

* a ``post_to_erp`` step that fails after ``max_attempts`` HTTP attempts
  records ``attempts`` 1 (a success after retries records them all);
* a group refused for its GE01 count says so once per set: the job's error,
  ``error_details`` and error.json repeat it, as segment ``GS`` without a
  number where the message names segment 13 (GE), element 1;
* ``GET /api/jobs/search?po_number=&vendor_name=&success=&limit=``, as
  DESIGN.md writes it, answers 422 (empty ``success``/``limit`` refused,
  empty ``po_number``/``since``/``until``/``partner`` taken as "any");
* ``jobs search --vendor`` matches only a file's first order's vendor;
* the journal: ``handed_back`` (a job given back at SIGTERM) has no
  ``job_id``, ``acks_written_late`` no ``file``;
* README's job ``file_path`` ("where the file is") is recorded but shown by
  no command or endpoint;
* a job's ``total_amount`` (and ``stats``) is summed to 28 significant
  digits, unlike its order's total and the ERP body (absurd sizes only);
* ``run --max-jobs N`` runs every file it took: 5 jobs for ``--max-jobs 2``;
* a daemon stopped while a job is between two orders: ``jobs search
  --po-number`` (3+ characters) cannot find the PO the ERP accepted (``HB``
  can).

Read otherwise: the ended ``interrupted`` job shows the order it sent
without an answer ``pending`` (DESIGN: "never pending once the job has
ended"); it is documented now (README: such an order reads ``pending``
until the run of its file settles it), and tested with that run.

Held (plain tests, and probes left out for their time): the ERP request
(headers, Bearer token from ``token_file``, one key across retries, decimal
strings, Retry-After, numeric ids, 400 at once with the ERP's words kept);
a partly accepted group's 997 and TA1, ``process``/``status`` exit codes,
``stats``; a step retried to success counts its attempts. Probed without a
test: 408, 429 and 503 retried, 400/422 refused at once, Retry-After as an
HTTP date, 2xx without an id; env overrides and unknown keys; the example
config's keys and defaults against the code's; every read command's
``--json`` and ``--help`` example; the API's 401/403/404/409/413/422 JSON
errors, hostile ``file_name``s, the dashboard's pages; /metrics against
``stats`` (jobs, amount, orders, ERP attempts); UTF-8, Latin-1 and cp1252
names searched; 3040 dates; a 5010 999 (IK3/IK4/IK5, AK9 P); GE missing,
GE02, SE missing; ``db reset`` keeps the control-number sequence; a
Retry-After longer than the stop's deadline (threads and processes: handed
back within it); a SIGKILL mid-post (orders carried on, none pending); the
public corpus through ``process`` one by one and through a daemon with
worker processes at once (every file filed, each failed one with its
report, each key posted once, the outcomes those of corpus_outcomes.txt
up to which of ediengine's three versions of PO 08292233294 comes first).

Real parts: ``edi-inbox`` subprocesses (``process``, ``run``, ``serve``, the
reading commands), real daemons (``daemons``), a real HTTP ERP on 127.0.0.1
(``erp``, or a handler of this module's), uploads by the partner's uid,
SQLite under ``tmp_path``, real SIGTERMs. No mocks, no fixed sleeps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from daemons import Daemon, daemons, erp
from werkzeug import Request, Response

import uids
from helpers import http_server, poll_until
from web_site import request, server

__all__ = ["daemons", "erp"]  # fixtures

pytestmark = pytest.mark.e2e

ISA = (
    "ISA*00*          *00*          *ZZ*ACME           *01*123456789      "
    "*240102*1200*U*00401*{icn}*{ack}*P*>~"
)


def order(po: str, st: str, quantity: str = "2") -> str:
    """An 850 with one line (quantity x 3.50), five segments."""
    return f"ST*850*{st}~BEG*00*SA*{po}**20240102~PO1*1*{quantity}*EA*3.50**VP*X1~CTT*1~SE*5*{st}~"


def interchange(
    *sets: str, icn: str = "000000001", ge01: int | None = None, ack: str = "0"
) -> bytes:
    """One interchange, one PO group (GS06 77) holding ``sets``; GE01 as given."""
    count = len(sets) if ge01 is None else ge01
    return (
        ISA.format(icn=icn, ack=ack)
        + "GS*PO*ACMEAPP*OURAPP*20240102*1200*77*X*004010~"
        + "".join(sets)
        + f"GE*{count}*77~IEA*1*{icn}~"
    ).encode()


def write_config(root: Path, erp_url: str = "", extra: str = "") -> Path:
    """A configuration under ``root``: SQLite there, the ERP at ``erp_url``
    (empty: the outbox), three attempts with short waits."""
    config = root / "edi-inbox.toml"
    config.write_text(
        "[paths]\n"
        f"root = {json.dumps(str(root))}\n"
        "[database]\n"
        f"url = {json.dumps('sqlite:///' + str(root / 'edi-inbox.db'))}\n"
        "[erp]\n"
        f"url = {json.dumps(erp_url)}\n"
        "max_attempts = 3\n"
        "backoff_initial_seconds = 0.05\n"
        "backoff_max_seconds = 0.1\n"
        "backoff_jitter_seconds = 0.0\n" + extra
    )
    (root / "inbox").mkdir(exist_ok=True)
    return config


def cli(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EDI_INBOX_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "edi_inbox.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def process_json(config: Path, path: Path) -> dict:
    result = cli(config, "process", str(path), "--json")
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


def step(job: dict, name: str) -> dict:
    return next(s for s in job["steps"] if s["step_name"] == name)


# --- findings -----------------------------------------------------------------


def test_a_failed_erp_step_reports_the_attempts_it_made(tmp_path, erp):
    """DESIGN: a job's ``steps[] (step_name, status, attempts, error, data)``;
    the project's own test_pipeline says "503, 503, 201: the step reports three
    attempts". Here the ERP answers 503 three times (max_attempts = 3): the
    ERP saw three POSTs, the order's error says "after 3 attempts", /metrics'
    edi_inbox_erp_attempts_total counts 3 — and the step says 1."""
    config = write_config(tmp_path, erp.url)
    erp.answers = [503, 503, 503]
    path = tmp_path / "po.edi"
    path.write_bytes(interchange(order("ATT-1", "0001")))
    job = process_json(config, path)
    assert len(erp.requests) == 3
    assert job["status"] == "failed"
    assert "after 3 attempts" in job["orders"][0]["error"]
    post = step(job, "post_to_erp")
    assert post["status"] == "failed"
    assert post["attempts"] == 3, post


def test_held_a_step_retried_to_success_reports_its_attempts(tmp_path, erp):
    """Held: 503, 503, 201 — the step reports 3 attempts, one key."""
    config = write_config(tmp_path, erp.url)
    erp.answers = [503, 503]
    path = tmp_path / "po.edi"
    path.write_bytes(interchange(order("ATT-2", "0001")))
    job = process_json(config, path)
    assert job["status"] == "succeeded", job["error"]
    assert step(job, "post_to_erp")["attempts"] == 3
    assert len(erp.posts_per_key()) == 1


def test_a_group_refused_for_its_ge01_says_so_once(tmp_path):
    """README, parse step: "any envelope error — the reason names segment
    number, segment id and element". A group of two good sets whose GE01 says
    3 is refused (AK9 R, AK905 5: held); the job's ``error`` then repeats
    "functional group '77' is rejected: segment 13 (GE), element 1: GE01 says
    '3' …" twice, and ``error_details`` holds two copies, each naming segment
    ``GS`` with no segment number or element, where the message says segment
    13 (GE), element 1. An IEA01 miscount (ediengine__WrongGroupsAndTranCount)
    is said once, as segment 9 (IEA), element 1."""
    config = write_config(tmp_path)
    path = tmp_path / "ge01.edi"
    path.write_bytes(interchange(order("GE-1", "0001"), order("GE-2", "0002"), ge01=3))
    job = process_json(config, path)
    assert job["status"] == "failed"
    ack = (tmp_path / "acks" / "ge01.edi.77.997").read_text()
    assert "AK9*R*3*2*0*5~" in ack  # held: the 997 is right
    assert job["error"].count("GE01 says '3'") == 1, job["error"]
    assert len(job["error_details"]) == 1, job["error_details"]
    detail = job["error_details"][0]
    assert (detail["segment_number"], detail["segment_id"], detail["element"]) == (13, "GE", 1)


def test_the_search_url_as_design_writes_it_answers(tmp_path):
    """DESIGN.md: "GET /api/jobs/search?po_number=&vendor_name=&success=&limit=".
    A script that fills in only what it knows (the empty ones meaning "any", as
    README says of ``partner``: "empty means every job") gets a 422 for the
    empty ``success`` and ``limit``, while empty ``po_number``, ``since``,
    ``until`` and ``partner`` are taken as "any"."""
    config = write_config(tmp_path)
    path = tmp_path / "po.edi"
    path.write_bytes(interchange(order("WEB-1", "0001")))
    assert process_json(config, path)["status"] == "succeeded"
    with server(config, tmp_path) as (port, _):
        held = request(port, "GET", "/api/jobs/search?po_number=&since=&until=&partner=")
        assert held.status == 200 and len(held.json()) == 1
        answer = request(port, "GET", "/api/jobs/search?po_number=&vendor_name=&success=&limit=")
        assert answer.status == 200, answer.body[:300]
        assert [j["po_number"] for j in answer.json()] == ["WEB-1"]


def vendor_order(po: str, st: str, vendor: str) -> str:
    """An 850 with its vendor (N1*VN) and one line, six segments."""
    return (
        f"ST*850*{st}~BEG*00*SA*{po}**20240102~N1*VN*{vendor}~"
        f"PO1*1*2*EA*3.50**VP*X1~CTT*1~SE*6*{st}~"
    )


def search(config: Path, *args: str) -> list[str]:
    result = cli(config, "jobs", "search", *args, "--json")
    assert result.returncode == 0, result.stderr
    return sorted(j["file_name"] for j in json.loads(result.stdout))


def test_vendor_search_finds_every_order_of_a_file(tmp_path):
    """README, Commands: "jobs search [--po-number] [--vendor] … | PO and vendor
    match case-insensitively on a prefix or substring"; DESIGN: support and
    finance answer "what happened to PO 4711 from ACME" with ``jobs search``.
    A file of two orders (one interchange, as a VAN's mailbag or the corpus's
    botsplugins__850-004010-10.x12, whose second order is REN-WIL INC.'s):
    both posted; ``--po-number`` finds the job by either order (held), but
    ``--vendor`` finds it only by the first order's vendor."""
    config = write_config(tmp_path)
    path = tmp_path / "two_vendors.edi"
    path.write_bytes(
        interchange(
            vendor_order("VEN-1", "0001", "ALPHA FOODS"),
            vendor_order("VEN-2", "0002", "BETA SUPPLY CO"),
        )
    )
    job = process_json(config, path)
    assert job["status"] == "succeeded", job["error"]
    assert [o["vendor_name"] for o in job["orders"]] == ["ALPHA FOODS", "BETA SUPPLY CO"]
    assert search(config, "--po-number", "VEN-2") == ["two_vendors.edi"]  # held
    assert search(config, "--vendor", "alpha") == ["two_vendors.edi"]  # held
    assert search(config, "--vendor", "beta supply") == ["two_vendors.edi"]


def test_a_job_handed_back_at_a_stop_is_in_the_journal_under_its_job_id(daemons, erp):
    """README, "Read the journal": "every event of a job carries job_id and
    file", with ``jq 'select(.job_id == "3f2a9c1e-…")'`` as the way to follow
    one. A job whose ERP call outlasts ``shutdown_timeout_seconds`` is handed
    back at SIGTERM and recorded ``interrupted`` under its id; the journal's
    ``handed_back`` line names the file only (``jobs_interrupted`` a count),
    so the job's own lines end at its POST."""
    d = daemons(erp.url, shutdown_timeout_seconds=0.5)
    d.start()
    erp.gate.clear()  # the ERP holds the POST past the stop's deadline
    uids.upload(d.inbox / "held.edi", interchange(order("HB-1", "0001")))
    poll_until(lambda: erp.requests, 20, what="the POST at the ERP")
    assert d.terminate(30) == 0
    assert (d.inbox / "held.edi").exists()  # handed back (held)
    jobs = json.loads(d.cli("jobs", "list", "--json").stdout)
    assert [(j["file_name"], j["status"]) for j in jobs] == [("held.edi", "interrupted")]
    job_id = jobs[0]["job_id"]
    handed = d.events("handed_back")
    assert [e["file"] for e in handed] == ["held.edi"]
    assert handed[0].get("job_id") == job_id, handed


def test_a_jobs_file_path_is_shown(daemons, erp):
    """README, "What the daemon guarantees": "A job's `file_path` is where the
    file is: in `done/` or `failed/`, still in `processing/<host>/` while a
    move fails (the job's log says why), or empty if someone removed the
    claimed file by hand." The daemon records it (the database's
    ``jobs.file_path`` holds done/NAME), but ``jobs show --json`` has no
    ``file_path`` and ``jobs show`` prints no such row: an operator cannot
    ask where a job's file is (only a ``moved_to`` inside a log line's
    details says where it was going)."""
    d = daemons(erp.url)
    d.start()
    uids.upload(d.inbox / "where.edi", interchange(order("FP-1", "0001")))
    poll_until(lambda: (d.done / "where.edi").exists(), 20, what="filed in done/")
    poll_until(lambda: d.jobs() and d.jobs()[0]["status"] == "succeeded", 20)
    assert d.jobs()[0]["file_path"] == str(d.done / "where.edi")  # recorded (held)
    job_id = d.jobs()[0]["job_id"]
    text = d.cli("jobs", "show", job_id)
    assert text.returncode == 0, text.stderr
    shown = json.loads(d.cli("jobs", "show", job_id, "--json").stdout)
    assert shown.get("file_path") == str(d.done / "where.edi"), sorted(shown)
    assert str(d.done / "where.edi") in text.stdout


def test_acknowledgements_owed_then_written_are_in_the_journal_under_the_file(daemons, erp):
    """README, "Read the journal": "every event of a job carries job_id and
    file"; and of owed acknowledgements: "the log has `acks_owed`" and the
    step says ``written_late``. With acks/ a plain file while a good file
    runs, then a folder again: the order is posted once, the 997 written
    late (held); ``acks_written_late`` carries the job_id but no ``file``."""
    d = daemons(erp.url)
    d.start()
    acks = d.root / "acks"
    acks.mkdir(exist_ok=True)
    acks.rename(d.root / "acks-aside")
    acks.write_bytes(b"not a folder")
    uids.upload(d.inbox / "late.edi", interchange(order("LATE-1", "0001")))
    poll_until(lambda: d.events("acks_owed"), 20, what="acks_owed")
    acks.unlink()
    (d.root / "acks-aside").rename(acks)
    poll_until(lambda: (d.done / "late.edi").exists(), 30, what="filed once acks/ is back")
    assert sorted(os.listdir(acks)) == ["late.edi.77.997"]
    assert len(erp.requests) == 1
    late = d.events("acks_written_late")
    assert len(late) == 1 and late[0].get("job_id")
    owed = d.events("acks_owed")
    assert [(e.get("job_id"), e.get("file")) for e in owed] == [(late[0]["job_id"], "late.edi")]
    assert late[0].get("file") == "late.edi", late


def test_a_jobs_total_is_its_orders_total_exactly(tmp_path, erp):
    """DESIGN: "Money is exact (Decimal), never float"; README: "`stats` counts
    each posted order once". One order, one line: PO102 15 digits, PO104 17
    characters (within X12 4010's widths), no AMT. The ERP gets
    ``total_amount`` 1524157875323875554031470766.65 and so does the order's
    record; the job's ``total_amount`` says …767 and ``stats`` sums that.
    (Only totals past 28 significant digits are hit: not a real order, but the
    record and the ERP disagree about the same money.)"""
    config = write_config(tmp_path, erp.url)
    path = tmp_path / "big.edi"
    path.write_text(
        ISA.format(icn="000000001", ack="0")
        + "GS*PO*ACMEAPP*OURAPP*20240102*1200*77*X*004010~ST*850*0001~"
        "BEG*00*SA*BIG-1**20240102~PO1*1*123456789012345*EA*12345678901234.57**VP*X1~"
        "CTT*1~SE*5*0001~GE*1*77~IEA*1*000000001~"
    )
    exact = "1524157875323875554031470766.65"
    job = process_json(config, path)
    assert job["status"] == "succeeded", job["error"]
    assert [o["total_amount"] for o in job["orders"]] == [exact]  # held
    stats = json.loads(cli(config, "stats", "--json").stdout)
    assert (job["total_amount"], stats["total_amount_processed"]) == (exact, exact)


def test_run_max_jobs_runs_at_most_that_many_jobs(tmp_path):
    """README, Commands: "run [--once] [--max-jobs N]"; ``run --help``:
    "Run at most this many jobs, then exit". Five good files
    wait in the inbox (uploaded by the partner's uid) when ``run --max-jobs 2``
    starts: it exits 0 having run and recorded two jobs; the other three stay
    in the inbox, unclaimed (``workers`` = 4 once took all five at once)."""
    config = write_config(
        tmp_path, extra="[daemon]\nsettle_seconds = 0.2\nprocesses = 1\nworkers = 4\n"
    )
    for n in range(1, 6):
        data = interchange(order(f"MAX-{n}", "0001"), icn=f"00000000{n}")
        uids.upload(tmp_path / "inbox" / f"po{n}.edi", data)
    result = cli(config, "run", "--max-jobs", "2", timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    listed = json.loads(cli(config, "jobs", "list", "--json").stdout)
    left = sorted(os.listdir(tmp_path / "inbox"))
    assert (len(listed), len(left)) == (2, 3), (len(listed), left)


def stopped_between_two_orders(daemons, erp) -> tuple[Daemon, str]:
    """A file of two orders; the ERP takes HB-1 and holds HB-2 past the
    stop's deadline; SIGTERM: the job is handed back, ``interrupted``, and
    the daemon stays stopped (as for maintenance). The daemon and the job id."""
    hold = threading.Event()
    erp.wait_for = lambda po: hold.wait(30) if po == "HB-2" else None
    d = daemons(erp.url, shutdown_timeout_seconds=0.5)
    d.start()
    uids.upload(d.inbox / "two.edi", interchange(order("HB-1", "0001"), order("HB-2", "0002")))
    poll_until(lambda: [po for _, po in erp.requests] == ["HB-1", "HB-2"], 20, what="both POSTs")
    assert d.terminate(30) == 0
    hold.set()
    jobs = json.loads(d.cli("jobs", "list", "--json").stdout)
    assert [j["status"] for j in jobs] == ["interrupted"]
    return d, jobs[0]["job_id"]


def test_a_po_the_erp_accepted_is_found_while_its_job_waits_to_run_again(daemons, erp):
    """DESIGN: an operator answers "what happened to PO 4711?" in one command,
    ``edi-inbox jobs search --po-number 4711``; README: "A job is recorded …
    as `running` … just before its first ERP call, then each order's ERP id
    the moment the ERP answers". Stopped between two orders, the job's record
    holds HB-1 ``posted`` with its ERP id (``jobs show``, held), and
    ``--po-number HB`` (a term under 3 characters, matched against the
    orders) finds the job; ``--po-number HB-1`` (3 characters or more,
    matched in the PO index written with the final record) finds nothing
    until the daemon runs the file again. The same while a job waits at a
    slow ERP."""
    d, job_id = stopped_between_two_orders(daemons, erp)
    show = json.loads(d.cli("jobs", "show", job_id, "--json").stdout)
    assert (show["orders"][0]["po_number"], show["orders"][0]["status"]) == ("HB-1", "posted")
    assert show["orders"][0]["erp_po_id"]
    # A term under 3 characters matches orders' PO numbers as a prefix: found.
    short = json.loads(d.cli("jobs", "search", "--po-number", "HB", "--json").stdout)
    assert [j["job_id"] for j in short] == [job_id]
    found = json.loads(d.cli("jobs", "search", "--po-number", "HB-1", "--json").stdout)
    assert [j["job_id"] for j in found] == [job_id]


def test_an_interrupted_jobs_unanswered_order_is_pending_until_its_file_runs_again(daemons, erp):
    """README: "An order's status is `posted`, `rejected` or `duplicate` once
    its job has ended; a job ended `interrupted` hands its file on to run
    again, and an order it sent without an answer reads `pending` until that
    run settles it." (The outside tester read DESIGN's "never pending once
    the job has ended" as covering an interrupted job; none of the three is
    true of an order the ERP may or may not hold, so the record says
    ``pending``.) Stopped between two orders: HB-2 is ``pending``; started
    again, the file runs, HB-2 is settled (posted, under its one key) and no
    order of any job is pending."""
    d, job_id = stopped_between_two_orders(daemons, erp)
    show = json.loads(d.cli("jobs", "show", job_id, "--json").stdout)
    assert show["status"] == "interrupted" and show["completed_at"]
    assert {o["po_number"]: o["status"] for o in show["orders"]} == {
        "HB-1": "posted",
        "HB-2": "pending",
    }
    d.start()
    poll_until(lambda: (d.done / "two.edi").exists(), 30, what="the file run again and filed")
    jobs = json.loads(d.cli("jobs", "list", "--json").stdout)
    statuses = [
        (o["po_number"], o["status"])
        for j in jobs
        for o in json.loads(d.cli("jobs", "show", j["job_id"], "--json").stdout)["orders"]
    ]
    assert "pending" not in {status for _, status in statuses}, statuses
    assert sorted(erp.posts_per_key().values()) == [1, 2]  # HB-2 resent under its key


# --- held ---------------------------------------------------------------------


def test_held_the_erp_request_and_answers_as_readme_says(tmp_path):
    """Held: README's ERP contract, literally. ``POST [erp] url`` with
    ``Content-Type: application/json``, ``Idempotency-Key`` (one per order,
    the same on every retry) and ``Authorization: Bearer <token>`` from
    ``[erp] token_file``; every amount and quantity a decimal string; a 503
    with ``Retry-After: 0`` retried, then a 2xx whose numeric ``id`` becomes
    the ``erp_po_id`` as text; a 400 fails at once (one request), the ERP's
    words in the order's error, ours in the job's."""
    token = tmp_path / "erp-token"
    token.write_text("s3cr3t-t0ken\n")
    os.chmod(token, 0o600)
    seen: list[tuple[str, dict, dict]] = []
    lock = threading.Lock()

    def handler(request: Request) -> Response:
        body = json.loads(request.get_data())
        with lock:
            seen.append((request.method + " " + request.path, dict(request.headers), body))
            tries = sum(1 for _, _, b in seen if b["po_number"] == body["po_number"])
        if body["po_number"] == "BAD-1":
            return Response(json.dumps({"error": "unknown buyer 42"}), status=400)
        if tries == 1:
            return Response("busy", status=503, headers={"Retry-After": "0"})
        return Response(json.dumps({"id": 4711}), status=201, content_type="application/json")

    with http_server() as server:
        server.expect_request("/api/orders", method="POST").respond_with_handler(handler)
        config = write_config(
            tmp_path, server.url_for("/api/orders"), f"token_file = {json.dumps(str(token))}\n"
        )
        good, bad = tmp_path / "good.edi", tmp_path / "bad.edi"
        good.write_bytes(interchange(order("OK-1", "0001")))
        bad.write_bytes(interchange(order("BAD-1", "0001"), icn="000000002"))
        job = process_json(config, good)
        refused = process_json(config, bad)
    assert job["status"] == "succeeded", job["error"]
    assert [o["erp_po_id"] for o in job["orders"]] == ["4711"]
    assert step(job, "post_to_erp")["attempts"] == 2
    posts = [(where, headers, body) for where, headers, body in seen if body["po_number"] == "OK-1"]
    assert [where for where, _, _ in posts] == ["POST /api/orders"] * 2
    keys = {headers["Idempotency-Key"] for _, headers, _ in posts}
    assert len(keys) == 1 and keys != {""}
    for _, headers, body in posts:
        assert headers["Content-Type"] == "application/json"
        assert headers["Authorization"] == "Bearer s3cr3t-t0ken"
        line = body["lines"][0]
        assert (line["quantity"], line["unit_price"], line["amount"]) == ("2", "3.50", "7.00")
        assert body["total_amount"] == "7.00" and body["priced"] is True
    assert refused["status"] == "failed"
    assert len([1 for _, _, b in seen if b["po_number"] == "BAD-1"]) == 1
    assert refused["error"] == "the ERP rejected order BAD-1 (HTTP 400)"
    assert "unknown buyer 42" in refused["orders"][0]["error"]


def test_held_a_partly_accepted_group_its_997_ta1_and_exit_codes(tmp_path):
    """Held: README's 997 for a group of three sets, the middle one breaking a
    rule: AK5 A, R (AK3/AK4, code 5), A; AK9 P 3 3 2; ISA14 1 gets a TA1
    (A, 000); the job is ``partial`` and ``process`` exits 1; ``status``
    exits 3 with no daemon; ``stats`` counts the two posted orders once."""
    config = write_config(tmp_path)
    path = tmp_path / "mixed.edi"
    path.write_bytes(
        interchange(
            order("MIX-1", "0001"),
            order("MIX-2", "0002", quantity="0"),
            order("MIX-3", "0003"),
            ack="1",
        )
    )
    result = cli(config, "process", str(path), "--json")
    assert result.returncode == 1
    job = json.loads(result.stdout)
    assert job["status"] == "partial"
    assert [(o["po_number"], o["status"]) for o in job["orders"]] == [
        ("MIX-1", "posted"),
        ("MIX-2", "rejected"),
        ("MIX-3", "posted"),
    ]
    acks = tmp_path / "acks"
    assert sorted(os.listdir(acks)) == ["mixed.edi.000000001.TA1", "mixed.edi.77.997"]
    segments = [s.strip() for s in (acks / "mixed.edi.77.997").read_text().split("~")]
    body = [s for s in segments if s[:2] in ("AK", "IK")]
    assert body == [
        "AK1*PO*77",
        "AK2*850*0001",
        "AK5*A",
        "AK2*850*0002",
        "AK3*PO1*3**8",
        "AK4*2**7",
        "AK5*R*5",
        "AK2*850*0003",
        "AK5*A",
        "AK9*P*3*3*2",
    ]
    assert "TA1*000000001*240102*1200*A*000" in (acks / "mixed.edi.000000001.TA1").read_text()
    assert cli(config, "status", "--json").returncode == 3
    stats = json.loads(cli(config, "stats", "--json").stdout)
    assert (stats["partial_jobs"], stats["total_amount_processed"]) == (1, "14.00")
