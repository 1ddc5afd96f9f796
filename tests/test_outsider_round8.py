"""Outsider round 8: the HTTP side, the command line's contract and hostile
uploads, attacked from outside.

The HTTP API, the dashboard and /metrics of a real ``edi-inbox serve`` over
the database a real daemon is filling: their JSON against ``--json`` of the
same commands, hostile paths and query parameters (never a 500 or a
traceback), markup in a PO number escaped, retry of a file that is not
failed refused. The CLI with a missing or bad config and an unreachable
database (SQLite file missing, unreadable, not a database; PostgreSQL not
listening): exit codes, messages, ``--json``. Uploads by the partner's uid:
a zero-byte file, a file that grows after it looked settled, a file of two
orders one of them malformed (partial; the 997 says which).

Real daemon processes (``daemons``), a real HTTP ERP on 127.0.0.1, real
uploads by the partner's uid, real signals. No mocks, no fixed sleeps."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from daemons import daemons, erp
from test_outsider_round3 import failed_files
from test_outsider_round7 import TOKEN, cli_json, jobs_by_file, settled, with_http_token

from edi_inbox.x12 import X12Reader

import uids
from helpers import make_po, poll_until
from web_site import request, server, with_po_number

__all__ = ["daemons", "erp"]  # fixtures

HOSTILE_PO = "a\"'><script>x</script>"  # 22 characters: BEG03's maximum


def two_sets_one_bad(n: int) -> bytes:
    """One interchange, one group, two 850s: the first good, the second
    ordering 0 of a line (an error)."""
    text = make_po(n).decode("latin-1")
    start, end = text.index("ST*850*"), text.index("GE*")
    first = text[start:end]
    second = first.replace("ST*850*4567", "ST*850*4568").replace("SE*39*4567", "SE*39*4568")
    second = re.sub(r"BEG\*00\*SA\*\d+", f"BEG*00*SA*{n + 1:08d}", second)
    second = second.replace("PO1**6*EA*12**CB*17920108", "PO1**0*EA*12**CB*17920108", 1)
    text = text[:start] + first + second + text[end:].replace("GE*1*", "GE*2*", 1)
    return text.encode("latin-1")


def ak_codes(daemon, job: dict) -> tuple[list[str], list[str]]:
    """The AK5 and AK9 codes of the 997s the job says it wrote."""
    ak5, ak9 = [], []
    for name in job.get("acks") or []:
        if not name.endswith(".997") and ".997." not in name:
            continue
        reader = X12Reader(io.BytesIO((daemon.root / "acks" / name).read_bytes()))
        for s in reader.scanner:
            if s.elements[0] == "AK5":
                ak5.append(s.elements[1])
            if s.elements[0] == "AK9":
                ak9.append(s.elements[1])
    return ak5, ak9


# -- 1. the HTTP side ----------------------------------------------------------


def test_http_api_agrees_with_the_cli_and_answers_hostile_requests_clearly(tmp_path, erp, daemons):
    """A daemon files a good order, an order whose PO number is markup with
    quotes, and a failed file; ``serve`` over its database. Each endpoint's
    JSON equals ``--json``; ids that are not ids, traversal, bad and huge
    query parameters, wrong methods and unknown paths answer a JSON 4xx
    (never 500, never a traceback); the dashboard escapes the PO number; a
    retry over HTTP of a job whose file is not failed is refused clearly."""
    daemon = daemons(erp.url, workers=2)
    with_http_token(daemon, tmp_path)
    daemon.start()
    uids.upload(daemon.inbox / "good.edi", make_po(8101))
    uids.upload(daemon.inbox / "hostile.edi", with_po_number(make_po(8102), HOSTILE_PO))
    uids.upload(daemon.inbox / "bad.edi", b"ISA*this is not x12~")
    settled(daemon, 3)
    jobs = {name: runs[-1] for name, runs in jobs_by_file(daemon).items()}
    assert jobs["good.edi"]["status"] == "succeeded"
    assert jobs["hostile.edi"]["po_number"] == HOSTILE_PO, jobs["hostile.edi"]
    assert jobs["bad.edi"]["status"] == "failed"
    with server(daemon.config, tmp_path) as (port, _):

        def call(method: str, path: str, headers: dict[str, str] | None = None):
            answer = request(port, method, path, headers=headers)
            return answer.status, answer.headers, answer.body

        def get_json(path: str):
            status, _, body = call("GET", path)
            assert status == 200, (path, body[:300])
            return json.loads(body)

        # the same JSON as --json
        assert get_json("/api/jobs/stats") == cli_json(daemon, "stats")
        assert get_json("/api/jobs/recent?limit=10") == cli_json(
            daemon, "jobs", "list", "--limit", "10"
        )
        for job in jobs.values():
            assert get_json(f"/api/jobs/{job['job_id']}") == cli_json(
                daemon, "jobs", "show", job["job_id"]
            )
        found = get_json("/api/jobs/search?po_number=" + f"{8101:08d}")
        assert [j["job_id"] for j in found] == [jobs["good.edi"]["job_id"]]

        # hostile requests: a JSON 4xx, never a 500 or a traceback
        hostile = [
            ("GET", "/api/jobs/not-an-id", 404),
            ("GET", "/api/jobs/..%2F..%2F..%2Fetc%2Fpasswd", 404),
            ("GET", "/api/jobs/%00", 404),
            ("GET", "/api/jobs/" + "9" * 400, 404),
            ("GET", "/api/jobs/recent?limit=abc", 422),
            ("GET", "/api/jobs/recent?limit=-1", 422),
            ("GET", "/api/jobs/recent?limit=" + "9" * 40, 422),
            ("GET", "/api/jobs/recent?offset=" + "9" * 40, 422),
            ("GET", "/api/jobs/recent?status=exploded", 422),
            ("GET", "/api/jobs/search?success=maybe", 422),
            ("GET", "/api/jobs/search?since=yesterday", 422),
            ("GET", "/api/jobs/search?until=2026-13-45", 422),
            ("GET", "/api/jobs/search?po_number=" + "x" * 5000, 422),
            ("GET", "/api/jobs/stats?since=%00", 422),
            ("DELETE", "/api/jobs/stats", 405),
            ("PUT", "/api/jobs/recent", 405),
            ("GET", "/api/orchestrate", 405),
            ("POST", "/metrics", 405),
            ("POST", "/healthz", 405),
            ("PATCH", "/api/status", 405),
            ("GET", "/api/nothing-here", 404),
            ("POST", "/api/jobs/not-an-id/retry", 401),
        ]
        token = {"Authorization": f"Bearer {TOKEN}"}
        wrong = []
        for method, path, expected in hostile:
            status, headers, body = call(method, path)
            text = body.decode("utf-8", "replace")
            if status != expected or "Traceback" in text:
                wrong.append((method, path[:80], status, text[:200]))
                continue
            doc = json.loads(body)
            if doc.get("status") != status or not doc.get("error"):
                wrong.append((method, path[:80], status, text[:200]))
        assert wrong == [], "\n".join(map(repr, wrong))

        # retry over HTTP: a job whose file is in done/ is refused, clearly
        for what, job_id in (("done", jobs["good.edi"]["job_id"]), ("unknown", "0" * 32)):
            status, _, body = call("POST", f"/api/jobs/{job_id}/retry", token)
            assert status == 404, (what, status, body[:300])
            assert "no failed file" in json.loads(body)["error"], (what, body[:300])
        status, _, body = call("POST", "/api/jobs/..%2F..%2Fetc/retry", token)
        assert status == 404 and json.loads(body)["status"] == 404, body[:300]
        assert daemon.listing(daemon.done) == ["good.edi", "hostile.edi"]

        # the dashboard escapes the PO number on every page showing it
        for path in ("/", "/jobs", f"/jobs/{jobs['hostile.edi']['job_id']}", "/jobs?po_number=a"):
            status, headers, body = call("GET", path)
            assert status == 200, (path, body[:300])
            page = body.decode()
            assert "<script>x</script>" not in page and "a\"'>" not in page, path
            assert "&lt;script&gt;x&lt;/script&gt;" in page or path == "/jobs?po_number=a", path
        status, headers, body = call("GET", "/jobs/not-an-id")
        assert status == 404 and "Traceback" not in body.decode(), body[:300]

        # the dashboard's pages: a bad filter is said on the page (200), a
        # hostile path or method answers 4xx; never a 500 or a traceback
        for method, path, low, high in (
            ("GET", "/jobs?page=" + "9" * 40, 200, 499),
            ("GET", "/jobs?page=-5", 200, 499),
            ("GET", "/jobs?status=exploded", 200, 499),
            ("GET", "/jobs?since=yesterday", 200, 499),
            ("GET", "/jobs?po_number=" + "x" * 5000, 200, 499),
            ("GET", "/jobs/..%2F..%2Fetc%2Fpasswd", 404, 404),
            ("GET", "/jobs/" + "%00" * 10, 404, 404),
            ("GET", "/no/such/page", 404, 404),
            ("POST", "/jobs/not-an-id/retry", 400, 499),
            ("DELETE", "/", 405, 405),
        ):
            status, _, body = call(method, path)
            text = body.decode("utf-8", "replace")
            assert low <= status <= high and "Traceback" not in text, (path, status, text[:300])

        # a URL of 70 kB: refused, and the server still answers
        status, _, body = call("GET", "/api/jobs/search?po_number=" + "x" * 70_000)
        assert 400 <= status < 500, (status, body[:300])
        assert call("GET", "/healthz")[0] == 200

        # orchestrate with a file name that climbs out: the name's last part only
        answer = request(
            port,
            "POST",
            "/api/orchestrate?file_name=..%2F..%2F..%2Ftmp%2Fround8-pwn.edi",
            body=make_po(8104),
            headers={**token, "Content-Type": "application/edi-x12"},
        )
        made = answer.json()
        assert answer.status == 200, made
        assert made["file_name"] == "round8-pwn.edi", made["file_name"]
        assert not any("/" in name for name in made.get("acks") or []), made.get("acks")
        assert not [p for p in Path("/tmp").iterdir() if p.name.startswith("round8-pwn")]

        # while a job runs (held at the ERP): the API and the CLI agree
        erp.gate.clear()
        uids.upload(daemon.inbox / "held.edi", make_po(8103))
        poll_until(
            lambda: any(po == f"{8103:08d}" for _, po in erp.requests), what="held.edi at the ERP"
        )
        held = jobs_by_file(daemon)["held.edi"][-1]
        assert held["status"] == "running", held
        try:
            assert get_json(f"/api/jobs/{held['job_id']}") == cli_json(
                daemon, "jobs", "show", held["job_id"]
            )
            assert get_json("/api/jobs/recent?limit=10") == cli_json(
                daemon, "jobs", "list", "--limit", "10"
            )
            assert get_json("/api/jobs/stats") == cli_json(daemon, "stats")
            api, shell = get_json("/api/status"), cli_json(daemon, "status")
            assert sorted(api) == sorted(shell)
            for key in sorted(api):
                if not isinstance(api[key], (dict, list)):
                    assert api[key] == shell[key] or key == "now" or "age" in key, key
        finally:
            erp.gate.set()
        settled(daemon, 4)

        # /metrics: text, no traceback
        status, headers, body = call("GET", "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain")
        assert "Traceback" not in body.decode()
    assert daemon.terminate(15) == 0


def test_serve_binds_127_0_0_1_by_default(tmp_path):
    """No ``[http] listen``: ``serve`` listens on 127.0.0.1:8080 only."""
    from edi_inbox import config

    path = tmp_path / "edi-inbox.toml"
    path.write_text(f"[paths]\nroot = {json.dumps(str(tmp_path / 'state'))}\n")
    settings = config.load(str(path), {})
    assert settings.http.address() == ("127.0.0.1", 8080)


# -- 2. the command line's contract --------------------------------------------


def cli(config: Path | None, *args: str, user: bool = False) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "edi_inbox.cli"]
    if config is not None:
        command += ["--config", str(config)]
    command += list(args)
    if user:
        command = uids.as_daemon_command(command)
    env = {k: v for k, v in os.environ.items() if k != "EDI_INBOX_CONFIG"}
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, cwd="/")


READS = (
    ("status", "--json"),
    ("jobs", "list"),
    ("jobs", "show", "0" * 32, "--json"),
    ("stats", "--json"),
)


def test_read_commands_with_a_bad_config_or_an_unreachable_database(tmp_path):
    """Each read command, plain and ``--json``: a missing config, a config
    with an unknown key, a SQLite file that is missing, unreadable by the
    daemon's user, or not a database, and a PostgreSQL URL where nothing
    listens. Never exit 0, never a traceback, a message naming the problem
    (on stderr, or as ``status --json``'s ``error``) on one line each (no
    driver's ``\\n\\t`` escaped), the unreadable file by its path, stdout
    empty or JSON; PostgreSQL given up after 2 s, with one warning."""
    uids.need_root()
    base = Path(os.environ.get("TMPDIR", "/tmp"))
    shared = Path(subprocess.check_output(["mktemp", "-d", "-p", str(base)], text=True).strip())
    os.chmod(shared, 0o755)
    try:
        configs: dict[str, tuple[Path | None, str]] = {}
        configs["missing config"] = (shared / "nope.toml", "nope.toml")
        unknown = shared / "unknown.toml"
        unknown.write_text("[daemon]\nworkerz = 3\n")
        configs["unknown key"] = (unknown, "workerz")

        def sqlite_config(name: str, db: Path) -> Path:
            path = shared / f"{name}.toml"
            path.write_text(
                f"[paths]\nroot = {json.dumps(str(shared / name))}\n"
                f"[database]\nurl = {json.dumps('sqlite:///' + str(db))}\n"
            )
            os.chmod(path, 0o644)
            (shared / name).mkdir()
            os.chmod(shared / name, 0o755)
            return path

        configs["sqlite missing"] = (sqlite_config("gone", shared / "gone" / "x.db"), "")
        unreadable = shared / "locked" / "x.db"
        path = sqlite_config("locked", unreadable)
        unreadable.write_bytes(b"")
        subprocess.run(
            [sys.executable, "-c", f"import sqlite3; sqlite3.connect({str(unreadable)!r}).close()"],
            check=True,
        )
        os.chmod(unreadable, 0o600)
        configs["sqlite unreadable"] = (path, "locked/x.db cannot be opened: Permission denied")
        garbage = shared / "garbage" / "x.db"
        path = sqlite_config("garbage", garbage)
        garbage.write_bytes(b"this is not a database\n" * 200)
        os.chmod(garbage, 0o644)
        configs["sqlite not a database"] = (path, "")
        pg = shared / "pg.toml"
        pg.write_text(
            f"[paths]\nroot = {json.dumps(str(shared / 'pg'))}\n"
            '[database]\nurl = "postgresql://edi:edi@127.0.0.1:1/edi"\n'
        )
        os.chmod(pg, 0o644)
        # A read command gives up after 2 s (cli.READ_PATIENCE), not after the
        # daemon's reconnect_seconds (10 s), and says so once.
        configs["postgres not listening"] = (pg, "retrying for up to 2 s")
        runs = [(what, args) for what in configs for args in READS]
        # a config that cannot be loaded: one command each is enough
        runs = [r for r in runs if ("config" not in r[0] and "key" not in r[0]) or r[1] == READS[0]]

        def judge(run: tuple[str, tuple[str, ...]]):
            what, args = run
            config, named = configs[what]
            done = cli(config, *args, user=True)
            why = []
            if done.returncode == 0:
                why.append("exit 0")
            if "Traceback" in done.stderr + done.stdout:
                why.append("traceback")
            said = done.stderr
            if done.stdout.strip():
                try:
                    doc = json.loads(done.stdout)
                except ValueError:
                    why.append("stdout not JSON")
                else:  # status --json: the error in its JSON
                    said += str(doc.get("error", "")) if isinstance(doc, dict) else ""
            if not said.strip():
                why.append("no message")
            if "\\n" in said or "\\t" in said:  # a driver's line breaks, escaped
                why.append("escaped line breaks")
            if said.count("retrying") > 1:
                why.append("a warning an attempt")
            if named and named not in said:
                why.append(f"does not name {named}")
            if why:
                return (what, " ".join(args), done.returncode, why, said[-300:])
            return None

        with ThreadPoolExecutor(2) as pool:
            wrong = [w for w in pool.map(judge, runs) if w]
        assert wrong == [], "\n".join(map(repr, wrong))
    finally:
        subprocess.run(["rm", "-rf", str(shared)], check=False)


def test_a_database_the_user_may_not_reach_is_not_called_missing(tmp_path):
    """The database exists, in a folder (0750 root:root) the daemon's user may
    not search: ``stats`` and ``status --json`` as that user fail naming the
    permission problem, never saying the file is missing."""
    uids.need_root()
    base = Path(subprocess.check_output(["mktemp", "-d", "-p", "/tmp"], text=True).strip())
    try:
        os.chmod(base, 0o755)
        state = base / "state"
        state.mkdir()
        db = state / "edi-inbox.db"
        config = base / "edi-inbox.toml"
        config.write_text(
            f"[paths]\nroot = {json.dumps(str(state))}\n"
            f"[database]\nurl = {json.dumps('sqlite:///' + str(db))}\n"
        )
        os.chmod(config, 0o644)
        assert cli(config, "db", "init").returncode == 0
        assert db.exists()
        os.chmod(state, 0o750)
        said = []
        for args in (("stats",), ("status", "--json")):
            done = cli(config, *args, user=True)
            assert done.returncode not in (0, 3), done
            said.append(done.stderr + done.stdout)
        assert not [s for s in said if "missing" in s], said
        assert all("ermission" in s for s in said), said
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


# -- 3. hostile uploads --------------------------------------------------------


def test_a_zero_byte_file_and_a_file_that_grows_after_it_looked_settled(tmp_path, erp, daemons):
    """The partner uploads a zero-byte file (failed with a reason, never
    posted) and a file whose first half sits unchanged longer than the settle
    time (the daemon holds it: no IEA yet) before the rest arrives: one job
    on the whole file, its order posted once, the file in done/."""
    daemon = daemons(erp.url, workers=2)
    daemon.start()
    uids.upload(daemon.inbox / "empty.edi", b"")
    whole = make_po(8201)
    half = daemon.inbox / "slow.edi"
    uids.upload(half, whole[: len(whole) // 2])
    poll_until(
        lambda: any(e.get("file") == "slow.edi" for e in daemon.events("upload_held")),
        timeout=15,
        what="the daemon holds the half file",
    )
    with open(half, "ab") as fh:
        fh.write(whole[len(whole) // 2 :])
    settled(daemon, 2)
    jobs = jobs_by_file(daemon)
    assert [j["status"] for j in jobs["empty.edi"]] == ["failed"], jobs["empty.edi"]
    assert jobs["empty.edi"][-1]["error"], jobs["empty.edi"]
    assert [j["status"] for j in jobs["slow.edi"]] == ["succeeded"], jobs["slow.edi"]
    assert [po for _, po in erp.requests] == [f"{8201:08d}"]
    assert failed_files(daemon) == ["empty.edi"]
    assert daemon.listing(daemon.done) == ["slow.edi"]
    assert (daemon.done / "slow.edi").read_bytes() == whole
    assert daemon.terminate(15) == 0


def test_a_file_of_two_orders_one_malformed_is_partial_with_each_order_once(tmp_path, erp, daemons):
    """One interchange, two 850s, the second ordering 0 of a line: the job is
    partial, the good order posted once, the 997 AK5 A then R and AK9 P, and
    ``jobs show --json`` lists each order once, as error.json does."""
    daemon = daemons(erp.url, workers=2)
    daemon.start()
    uids.upload(daemon.inbox / "half-bad.edi", two_sets_one_bad(8210))
    settled(daemon, 1)
    jobs = jobs_by_file(daemon)["half-bad.edi"]
    assert [j["status"] for j in jobs] == ["partial"], jobs
    assert [po for _, po in erp.requests] == [f"{8210:08d}"]
    shown = cli_json(daemon, "jobs", "show", jobs[-1]["job_id"])
    assert ak_codes(daemon, shown) == (["A", "R"], ["P"]), shown.get("acks")
    report = json.loads((daemon.failed / "half-bad.edi.error.json").read_text())
    assert [(o["po_number"], o["status"]) for o in report["orders"]] == [
        (f"{8210:08d}", "posted"),
        (f"{8211:08d}", "rejected"),
    ]
    assert daemon.terminate(15) == 0
    assert [(o["po_number"], o["status"]) for o in shown["orders"]] == [
        (f"{8210:08d}", "posted"),
        (f"{8211:08d}", "rejected"),
    ], shown["orders"]


def test_a_held_half_upload_renamed_over_by_a_whole_other_file(tmp_path, erp, daemons):
    """The partner uploads half of one order (the daemon holds it: no IEA),
    then renames a whole other order over the same name (SFTP's
    posix-rename): one job on the new bytes, only its order posted, done/
    holding exactly the new bytes."""
    daemon = daemons(erp.url, workers=2)
    daemon.start()
    first, second = make_po(8501), make_po(8502)
    uids.upload(daemon.inbox / "r.edi", first[: len(first) // 2])
    poll_until(
        lambda: any(e.get("file") == "r.edi" for e in daemon.events("upload_held")),
        timeout=15,
        what="the daemon holds the half file",
    )
    os.rename(uids.upload(daemon.inbox / ".r.edi.part", second), daemon.inbox / "r.edi")
    settled(daemon, 1)
    jobs = jobs_by_file(daemon)["r.edi"]
    assert [j["status"] for j in jobs] == ["succeeded"], jobs
    assert [po for _, po in erp.requests] == [f"{8502:08d}"]
    assert (daemon.done / "r.edi").read_bytes() == second
    assert daemon.terminate(15) == 0
