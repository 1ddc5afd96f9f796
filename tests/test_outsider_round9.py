"""Outsider round 9: trading partners' folders and outboxes, an ERP that
misbehaves on the wire, two hosts on one PostgreSQL with a SIGKILL, and
hostile objects and X12 layouts dropped into the inbox.

Held (plain tests): 500/429/timeout/reset/HTML 201/redirect each under one
key; the same PO number from two partners' folders; outboxes the daemon
cannot write or that are missing (owed, then written late, 0640, readable by
the partner); a file mixing two partners refused; 200 files on two hosts
with one SIGKILLed; newline, Unicode, non-UTF-8 and 255-byte names,
symlink, FIFO, directory, 50 MB, odd delimiters, BOM, two interchanges, a
planted report; ack/TA1 settings; odd partner names.

Bugs (strict xfails): a 409 for a key in progress taken as a rejection; a
job handed back at SIGTERM left ``running``; one Idempotency-Key sent with
two bodies; an ERP answer read whole (100 MB) and without a deadline
(never-ending body); a non-ASCII name's 997 and a long name's 997/TA1
named so the partner cannot match them; a refusal said twice; a directory
counted as a waiting upload; two partners under one ISA id sharing an
order identity.

Real daemon processes (``daemons``), a real HTTP ERP on 127.0.0.1 (here also
a raw one that resets connections, redirects, answers slowly or never
finishes its body), real uploads by the partner's uid, real signals. No
mocks, no fixed sleeps."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import socket
import stat
import struct
import subprocess
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from daemons import Daemon, daemon_command, daemons, erp
from test_outsider_round3 import failed_files
from test_outsider_round7 import cli_json, jobs_by_file, settled

from edi_inbox import config
from edi_inbox.errors import ConfigError

import uids
from helpers import BAD, claimed, make_po, poll_until, sent_by, write_config
from uids import shared_root

pytestmark = pytest.mark.e2e
__all__ = ["daemons", "erp", "shared_root"]  # fixtures


def po(n: int) -> str:
    return f"{n:08d}"


def set_erp(daemon: Daemon, **values: object) -> None:
    """``[erp]`` keys set in the daemon's config (before it starts)."""
    head, rest = daemon.base_config.split("[daemon]\n", 1)
    for key, value in values.items():
        line = f"{key} = {json.dumps(value)}\n"
        head, found = re.subn(rf"(?m)^{key} = .*\n", line, head)
        if not found:
            head += line
    daemon.base_config = head + "[daemon]\n" + rest
    daemon.config.write_text(daemon.base_config)


# -- 2. an ERP that misbehaves on the wire ---------------------------------------


class RawHandler(http.server.BaseHTTPRequestHandler):
    """A ``RawErp``'s requests: each answered as the order's plan says
    (``answer_<behaviour>``); a subclass adds behaviours."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: RawServer

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        erp = self.server.erp
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        key = self.headers.get("Idempotency-Key", "")
        number = json.loads(body)["po_number"]
        with erp.lock:
            steps = erp.plan.get(number, [])
            what = steps.pop(0) if steps else "ok"
            first = erp.bodies.setdefault(key, body)
            if erp.fingerprint and first != body:
                what = "reused"
            erp.requests.append(
                {
                    "key": key,
                    "po": number,
                    "what": what,
                    "at": time.monotonic(),
                    "port": self.client_address[1],
                    "body": body,
                }
            )
        with contextlib.suppress(OSError):
            getattr(self, "answer_" + what)(key)

    def send(self, code: int, body: bytes, **headers: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def answer_reused(self, key: str) -> None:
        self.send(422, b'{"error": "Idempotency-Key reused with a different payload"}')

    def answer_ok(self, key: str) -> None:
        self.send(201, json.dumps({"id": f"ERP-{key[:12]}"}).encode())

    def answer_e500(self, key: str) -> None:
        self.send(500, b'{"error": "database deadlock"}')

    def answer_e429(self, key: str) -> None:
        self.send(429, b'{"error": "slow down"}', Retry_After="1")

    def answer_slow(self, key: str) -> None:
        self.server.erp.stop.wait(2.5)  # beyond the read timeout (1 s); it still takes it
        self.answer_ok(key)

    def answer_e429long(self, key: str) -> None:
        self.send(429, b'{"error": "come back in a minute"}', Retry_After="60")

    def answer_busy(self, key: str) -> None:
        """The first post of the key is still being processed: 409, as the
        IETF Idempotency-Key draft has a server answer a concurrent retry."""
        self.send(409, b'{"error": "a request with this Idempotency-Key is in progress"}')

    def answer_slowish(self, key: str) -> None:
        self.server.erp.stop.wait(1.6)  # beyond the read timeout (1 s), then it takes it
        self.answer_ok(key)

    def answer_reset(self, key: str) -> None:
        self.wfile.write(b"HTTP/1.1 201 Created\r\nContent-Le")
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def answer_badjson(self, key: str) -> None:
        self.send(201, b"<html>Created</html>", Content_Type="text/html")

    def answer_redirect(self, key: str) -> None:
        self.send(307, b"", Location="http://erp-new.example/orders?token=hunter2-secret")

    def answer_huge(self, key: str) -> None:
        """201 and the id, padded to 100 MB."""
        pad = b" " * 100_000_000
        head = json.dumps({"id": f"ERP-{key[:12]}"}).encode()
        self.send(201, head[:-1] + b', "pad": "' + pad + b'"}')

    def answer_trickle(self, key: str) -> None:
        """201 and the id, then a body that never ends (a byte every 0.2 s)."""
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.write(b"1\r\n{\r\n")
        self.wfile.flush()
        while not self.server.erp.stop.wait(0.2):
            self.wfile.write(b"1\r\n \r\n")
            self.wfile.flush()
        self.close_connection = True


class RawServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    erp: RawErp


class RawErp:
    """An ERP on a raw ``http.server``: what it answers depends on the order's
    PO number (``plan[po]``: one behaviour per attempt, then ``ok``). Records
    each request (key, po, behaviour, monotonic time, client port, body)."""

    def __init__(self, handler: type[RawHandler] = RawHandler) -> None:
        self.plan: dict[str, list[str]] = {}
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        # IETF Idempotency-Key draft: a key reused with another payload is a 422
        self.fingerprint = False
        self.bodies: dict[str, bytes] = {}  # key -> the body of its first post
        self.server = RawServer(("127.0.0.1", 0), handler)
        self.server.erp = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/orders"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, number: str) -> list[dict]:
        """The requests for PO ``number``, in order."""
        with self.lock:
            return [r for r in self.requests if r["po"] == number]

    def keys(self, number: str) -> list[str]:
        return [r["key"] for r in self.of(number)]

    def times(self, number: str) -> list[float]:
        return [r["at"] for r in self.of(number)]

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def raw_erp():
    erp = RawErp()
    yield erp
    erp.close()


def test_an_erp_misbehaving_on_the_wire_never_gets_an_order_under_two_keys(
    tmp_path, raw_erp, daemons
):
    """Per order: 500 then 201; 429 with Retry-After 1 then 201; an answer
    slower than the read timeout (the ERP took it) then 201; a connection
    reset mid status line then 201; a 201 whose body is HTML (never an id);
    a 307 redirect to another host with a token in its query. Every retry
    carries the order's one Idempotency-Key; the recoverable ones end in
    done/, posted; the others in failed/ with a reason the partner can read
    and no secret of the Location."""
    plan = {
        po(9101): ["e500"],
        po(9102): ["e429"],
        po(9103): ["slow"],
        po(9104): ["reset"],
        po(9105): ["badjson", "badjson", "badjson"],
        po(9106): ["redirect"],
    }
    raw_erp.plan = {k: list(v) for k, v in plan.items()}
    daemon = daemons(raw_erp.url, workers=6)
    set_erp(daemon, read_timeout_seconds=1.0, connect_timeout_seconds=1.0)
    daemon.start()
    for n in range(9101, 9107):
        uids.upload(daemon.inbox / f"{n}.edi", make_po(n))
    settled(daemon, 6, timeout=40)
    jobs = {name: runs[-1] for name, runs in jobs_by_file(daemon).items()}
    status = {name: job["status"] for name, job in jobs.items()}
    assert status == {
        "9101.edi": "succeeded",
        "9102.edi": "succeeded",
        "9103.edi": "succeeded",
        "9104.edi": "succeeded",
        "9105.edi": "failed",
        "9106.edi": "failed",
    }, status
    assert daemon.listing(daemon.done) == [f"{n}.edi" for n in range(9101, 9105)]
    assert failed_files(daemon) == ["9105.edi", "9106.edi"]
    # one key per order, whatever the wire did
    for n in range(9101, 9107):
        keys = raw_erp.keys(po(n))
        assert len(set(keys)) == 1, (n, keys)
    assert len(raw_erp.keys(po(9101))) == 2
    assert len(raw_erp.keys(po(9103))) == 2  # the timed-out post was sent again, same key
    assert len(raw_erp.keys(po(9105))) == 3  # max_attempts
    assert len(raw_erp.keys(po(9106))) == 1  # a redirect is not followed nor retried
    first, second = raw_erp.times(po(9102))
    assert second - first >= 0.95, "Retry-After: 1 not honoured"
    # what the partner reads
    for name, words in (("9105.edi", "without an 'id'"), ("9106.edi", "HTTP 307")):
        report = (daemon.failed / f"{name}.error.json").read_text()
        assert "hunter2" not in report and "erp-new.example" not in report, report
        doc = json.loads(report)
        assert doc["orders"][0]["status"] == "rejected", doc
        shown = cli_json(daemon, "jobs", "show", jobs[name]["job_id"])
        assert words in json.dumps(shown), (name, shown["error"])
        assert "hunter2" not in json.dumps(shown)


def test_a_409_for_a_key_still_in_progress_is_not_a_rejection(tmp_path, raw_erp, daemons):
    """The first post times out (the ERP takes 1.6 s, the read timeout is 1 s);
    the retry 0.2 s later finds it still in progress: 409. The ERP takes the
    order at 1.6 s. The job must not end with the order rejected: it is
    posted (the next retry gets the 201), or at worst the job is failed as
    the ERP unavailable, never as a refusal."""
    raw_erp.plan = {po(9601): ["slowish", "busy"]}
    daemon = daemons(raw_erp.url, workers=2)
    set_erp(
        daemon,
        read_timeout_seconds=1.0,
        connect_timeout_seconds=1.0,
        backoff_initial_seconds=0.3,
        backoff_max_seconds=1.0,
    )
    daemon.start()
    uids.upload(daemon.inbox / "9601.edi", make_po(9601))
    settled(daemon, 1, timeout=20)
    (job,) = daemon.jobs()
    assert set(raw_erp.keys(po(9601))) and len(set(raw_erp.keys(po(9601)))) == 1
    shown = cli_json(daemon, "jobs", "show", job["job_id"])
    assert [o["status"] for o in shown["orders"]] == ["posted"], (shown["error"], shown["orders"])
    assert daemon.listing(daemon.done) == ["9601.edi"]


def test_a_job_handed_back_at_sigterm_is_not_left_running_on_record(tmp_path, raw_erp, daemons):
    """A job waiting out a 429's Retry-After: 60 when SIGTERM comes (a 1 s
    shutdown timeout): its file is handed back, and the job is recorded
    interrupted at the stop. Was a bug (round 9): it stayed ``running`` until
    this host started again, ``status`` counting a running job with no daemon."""
    raw_erp.plan = {po(9107): ["e429long"]}
    daemon = daemons(raw_erp.url, workers=2, shutdown_timeout_seconds=1.0)
    daemon.start()
    uids.upload(daemon.inbox / "9107.edi", make_po(9107))
    poll_until(lambda: raw_erp.keys(po(9107)), what="the ERP answered 429")
    assert daemon.terminate(timeout=20) == 0
    assert os.listdir(daemon.inbox) == ["9107.edi"]  # handed back
    assert daemon.events("handed_back")
    ((status,),) = [(j["status"],) for j in daemon.jobs()]
    assert status != "running", "the handed-back job is still running on record"


def with_isa13(data: bytes, number: int) -> bytes:
    """``data`` (one interchange) under another ISA13/IEA02: the same order resent."""
    old = data[90:99]
    new = f"{number:09d}".encode()
    return data[:90] + new + data[99:].replace(b"IEA*1*" + old, b"IEA*1*" + new)


def test_one_idempotency_key_always_carries_one_body(tmp_path, raw_erp, daemons):
    """First file: the post is taken by the ERP after the read timeout, then
    503s: the job fails, the ERP unavailable. The partner resends the same
    order in a new interchange (another ISA13). Its post carries the same
    key: it must carry the same body, so that the ERP answers it as the
    order it has."""
    raw_erp.fingerprint = True
    raw_erp.plan = {po(9108): ["slowish", "e500", "e500"]}
    daemon = daemons(raw_erp.url, workers=2)
    set_erp(daemon, read_timeout_seconds=1.0, connect_timeout_seconds=1.0)
    daemon.start()
    uids.upload(daemon.inbox / "first.edi", make_po(9108))
    settled(daemon, 1, timeout=20)
    assert failed_files(daemon) == ["first.edi"]
    poll_until(lambda: len(raw_erp.bodies) == 1 and not raw_erp.plan[po(9108)], what="ERP done")
    uids.upload(daemon.inbox / "resent.edi", with_isa13(make_po(9108), 9109))
    settled(daemon, 2, timeout=20)
    (key,) = set(raw_erp.keys(po(9108)))  # one order, one key
    with raw_erp.lock:
        kinds = [r["what"] for r in raw_erp.requests if r["key"] == key]
    assert "reused" not in kinds, kinds
    assert daemon.listing(daemon.done) == ["resent.edi"]


def peak_kib(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status)[1])


def test_a_huge_erp_answer_does_not_balloon_the_daemon(tmp_path, raw_erp, daemons):
    raw_erp.plan = {po(9202): ["huge"]}
    daemon = daemons(raw_erp.url, workers=2)
    daemon.start()
    before = peak_kib(daemon.proc.pid)
    uids.upload(daemon.inbox / "9202.edi", make_po(9202))
    settled(daemon, 1, timeout=30)
    assert len(set(raw_erp.keys(po(9202)))) == 1
    grown = (peak_kib(daemon.proc.pid) - before) // 1024
    assert grown < 50, f"peak memory grew by {grown} MB for one answer"


def test_an_erp_body_that_never_ends_does_not_hold_the_job_forever(tmp_path, raw_erp, daemons):
    """The ERP sends 201 and '{' then a space every 0.2 s, forever. With a
    1 s read timeout and 3 attempts (some 3.5 s at most), the job must end,
    posted or not, within 6 s."""
    raw_erp.plan = {po(9201): ["trickle", "trickle", "trickle"]}
    daemon = daemons(raw_erp.url, workers=2)
    set_erp(daemon, read_timeout_seconds=1.0, connect_timeout_seconds=1.0)
    daemon.start()
    uids.upload(daemon.inbox / "9201.edi", make_po(9201))
    poll_until(lambda: raw_erp.keys(po(9201)), what="the ERP asked")
    try:
        settled(daemon, 1, timeout=6)
    finally:
        raw_erp.stop.set()  # let the daemon go


# -- 1. trading partners: folders, outboxes, the same PO number --------------------


def sftp_account(
    base: Path, name: str, uid: int, out_owner: int | None = None
) -> tuple[Path, Path]:
    """A partner's ``in`` (it writes, the daemon renames out through the group)
    and ``out`` (owned by ``out_owner``, the daemon's user unless told)."""
    home = base / "sftp" / name
    inbox, outbox = home / "in", home / "out"
    owner = uids.DAEMON if out_owner is None else out_owner
    for folder, who, mode in ((inbox, uid, 0o2770), (outbox, owner, 0o2750)):
        folder.mkdir(parents=True)
        os.chown(folder, who, uids.GROUP)
        os.chmod(folder, mode)
    return inbox, outbox


def section(name: str, sender: str, **more: object) -> str:
    lines = [f"[partners.{name}]", f"ids = [{json.dumps(sender)}]"]
    lines += [f"{k} = {json.dumps(str(v) if isinstance(v, Path) else v)}" for k, v in more.items()]
    return "\n".join(lines) + "\n"


def two_interchanges(first: bytes, second: bytes) -> bytes:
    return first.rstrip(b"\n") + b"\n" + second


def test_partners_outboxes_the_same_po_number_and_an_outbox_the_daemon_cannot_write(
    shared_root, erp
):
    """acme and globex upload the same PO number from their own folders:
    both posted, under two keys. globex's outbox belongs to globex's
    account (the daemon cannot write it): its 997 is owed, then written
    once the folder is handed to the daemon. initech (shared inbox) has an
    outbox that does not exist yet. acme's folder gets a file whose second
    interchange is globex's: refused whole, nothing posted. Every file in an
    outbox: mode 0640, the partners' group, readable by the partner."""
    base = shared_root.parent
    acme_in, acme_out = sftp_account(base, "acme", uids.PARTNER)
    globex_in, globex_out = sftp_account(base, "globex", uids.PARTNER2, out_owner=uids.PARTNER2)
    initech_out = base / "sftp" / "initech" / "out"
    partners = (
        section("acme", "ZZ:ACME", inbox=acme_in, outbox=acme_out, ta1="never")
        + section("globex", "ZZ:GLOBEX", inbox=globex_in, outbox=globex_out, ta1="never")
        + section("initech", "ZZ:INITECH", outbox=initech_out, ta1="never")
    )
    daemon = Daemon(shared_root, erp.url, user=True, extra=partners)
    try:
        daemon.start()
        same = make_po(9301)
        uids.upload(acme_in / "po.edi", sent_by(same, "ZZ:ACME"), uids.PARTNER)
        uids.upload(globex_in / "po.edi", sent_by(same, "ZZ:GLOBEX"), uids.PARTNER2)
        uids.upload(daemon.inbox / "initech.edi", sent_by(make_po(9302), "ZZ:INITECH"))
        mixed = two_interchanges(
            sent_by(make_po(9303), "ZZ:ACME"), sent_by(make_po(9304), "ZZ:GLOBEX")
        )
        uids.upload(acme_in / "mixed.edi", mixed, uids.PARTNER)
        poll_until(lambda: len(erp.requests) >= 3, what="three orders posted")
        # the same PO number from two partners: two orders, two keys
        keys = erp.keys_by_po()
        assert len(keys[po(9301)]) == 2 and len(keys[po(9302)]) == 1, keys
        assert po(9303) not in keys and po(9304) not in keys  # the mixed file: nothing
        poll_until(
            lambda: (
                sorted(e["file"] for e in daemon.events("acks_owed")) == ["initech.edi", "po.edi"]
            ),
            what="globex's and initech's acknowledgements owed",
        )
        poll_until(
            lambda: (
                "2 job(s) waiting to write their acknowledgements" in daemon.cli("status").stdout
            ),
            what="status says two jobs owe their acknowledgements",
        )
        # the folders are put right: globex's handed to the daemon, initech's made
        os.chown(globex_out, uids.DAEMON, uids.GROUP)
        os.chmod(globex_out, 0o2750)
        initech_out.mkdir(parents=True)
        os.chown(initech_out, uids.DAEMON, uids.GROUP)
        os.chmod(initech_out, 0o2750)
        settled(daemon, 4, timeout=30)
        assert sorted(daemon.listing(daemon.done)) == ["initech.edi", "po.1.edi", "po.edi"]
        assert failed_files(daemon) == ["mixed.edi"]
        by_partner = {j["partner"]: j for j in daemon.jobs() if j["file_name"] == "po.edi"}
        assert {p: j["status"] for p, j in by_partner.items()} == {
            "acme": "succeeded",
            "globex": "succeeded",
        }
        mixed = next(j for j in daemon.jobs() if j["file_name"] == "mixed.edi")
        assert mixed["status"] == "failed" and mixed["partner"] == "acme"
        assert "ZZ:GLOBEX" in mixed["error"]
        # what each partner finds in its outbox: whole, 0640, its group, readable
        found = {}
        for name, outbox, uid in (
            ("acme", acme_out, uids.PARTNER),
            ("globex", globex_out, uids.PARTNER2),
            ("initech", initech_out, uids.PARTNER),
        ):
            found[name] = sorted(os.listdir(outbox))
            for entry in found[name]:
                st = os.stat(outbox / entry)
                assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o640, uids.GROUP), entry
                assert uids.run_as(uid, uids.GROUP, (outbox / entry).read_bytes)
        assert [f for f in found["acme"] if f.startswith("po.edi")] == ["po.edi.123456789.997"]
        assert "mixed.edi.error.json" in found["acme"]
        assert found["globex"] == ["po.edi.123456789.997"], found
        assert found["initech"] == ["initech.edi.123456789.997"], found
        assert not any(n.endswith(".997") for n in os.listdir(shared_root / "acks"))
        ack = (globex_out / "po.edi.123456789.997").read_bytes()
        assert b"ZZ*GLOBEX" in ack and b"AK5*A" in ack, ack
        assert len(erp.requests) == 3
        assert daemon.terminate(timeout=10) == 0
    finally:
        daemon.close()


# -- 3. two hosts on one inbox and one PostgreSQL, one SIGKILLed ----------------------


def on_database(daemon: Daemon, url: str) -> None:
    sqlite = f"url = {json.dumps('sqlite:///' + str(daemon.root / 'edi-inbox.db'))}"
    daemon.base_config = daemon.base_config.replace(sqlite, f"url = {json.dumps(url)}", 1)
    daemon.config.write_text(daemon.base_config)


@pytest.mark.postgres
def test_two_hosts_on_postgres_one_sigkilled_mid_run_every_file_once(
    tmp_path, erp, daemons, pg_url
):
    """Hosts alpha and beta share one inbox and one PostgreSQL; 200 uploads
    by the partner's uid; alpha is SIGKILLed after some 60 posts, its claims
    left in processing/alpha/. beta goes on and takes them over once alpha's
    heartbeat is stale. Every file ends once in done/, every order has one
    Idempotency-Key (posted again only under that key), the latest job of
    each file succeeded, and ``stats`` agrees with the ERP."""
    erp.delay = 0.01
    alpha = daemons(erp.url, host="alpha", workers=4)
    on_database(alpha, pg_url)
    beta = daemons(erp.url, host="beta", workers=4)
    beta.base_config = alpha.base_config
    beta.config.write_text(beta.base_config)
    alpha.start()
    beta.start()
    count = 200
    for n in range(count):
        uids.upload(alpha.inbox / f"p{n:03d}.edi", make_po(9400 + n))
    poll_until(lambda: len(erp.requests) >= 60, timeout=30, what="60 posts")
    alpha.kill()
    left = claimed(alpha.processing / "alpha") if (alpha.processing / "alpha").exists() else []
    poll_until(
        lambda: len(beta.listing(beta.done)) == count and not claimed(beta.processing),
        timeout=45,
        what="every file in done/, nothing claimed",
    )
    assert beta.listing(beta.done) == sorted(f"p{n:03d}.edi" for n in range(count))
    assert failed_files(beta) == [] and os.listdir(beta.inbox) == []
    keys = erp.keys_by_po()
    assert sorted(keys) == [po(9400 + n) for n in range(count)]
    assert [p for p, k in keys.items() if len(k) != 1] == []
    posts = erp.posts_per_key()
    twice = sorted(k for k, c in posts.items() if c > 1)
    assert len(twice) <= 4, twice  # only what alpha's 4 workers had at the ERP
    by_file = jobs_by_file(beta)
    assert len(by_file) == count
    final = {name: runs[-1]["status"] for name, runs in by_file.items()}
    assert set(final.values()) == {"succeeded"}, Counter(final.values())
    stats = cli_json(beta, "stats")
    one = cli_json(beta, "jobs", "show", by_file["p000.edi"][-1]["job_id"])

    assert Decimal(stats["total_amount_processed"]) == count * Decimal(one["total_amount"])
    assert stats["successful_jobs"] == count, stats
    # alpha's claims were taken over by beta, each once
    taken = beta.events("taken_over")
    assert sorted(e["file"] for e in taken) == sorted(n.rsplit(".", 1)[0] for n in left)
    assert {e["from_host"] for e in taken} <= {"alpha"}
    # Every 997 accepts. A file alpha had acknowledged but not yet recorded
    # when it died is run again by beta and acknowledged a second time (the
    # case README leaves open); no other file has two.
    acks = sorted(os.listdir(tmp_path / "acks"))
    per_file = Counter(a.split(".edi.")[0] + ".edi" for a in acks if a.endswith(".997"))
    assert set(per_file) == set(final)
    twice_acked = {f for f, c in per_file.items() if c > 1}
    assert twice_acked <= {e["file"] for e in taken}, twice_acked
    for name in acks:
        if name.endswith(".997"):
            text = (tmp_path / "acks" / name).read_bytes()
            assert b"AK5*A" in text and b"AK9*A" in text, (name, text)
    assert beta.terminate(timeout=15) == 0


# -- 4. hostile objects and X12 layouts in the inbox -------------------------------


def delimited(data: bytes, sep: bytes, term: bytes, sub: bytes | None = None) -> bytes:
    """``data`` (``*`` elements, ``\\n`` segments, ``@`` components) with other delimiters."""
    text = data.replace(b"*", sep).replace(b"\n", term)
    if sub is not None:
        text = text[:104] + sub + text[105:]
    return text


def test_hostile_objects_and_x12_layouts_dropped_into_the_inbox(tmp_path, erp, daemons):
    """Into the inbox, as the partner: names with a newline, with Unicode,
    255 bytes long; a symlink to a good order outside the inbox; a FIFO; a
    directory named like an order (holding one); 50 MB over a 1 MB cap;
    orders ending segments in ``~\\r\\n``, in ``\\r``, in a control
    character, one with a BOM and a Ctrl-Z, one 5010 with a repetition
    separator, a file of two interchanges with different delimiters. Every
    order that is one is posted once and filed in done/; every object that
    is not a file is refused unread into failed/ (or left alone) with a
    reason; nothing hangs."""
    daemon = daemons(erp.url, workers=4, max_file_bytes=1_000_000)
    daemon.start()
    good: dict[str, bytes] = {
        "new\nline.edi": make_po(9501),
        "заказ-ü.edi": make_po(9502),
        ("x" * 251) + ".edi": make_po(9503),
        "tilde-crlf.edi": delimited(make_po(9504), b"*", b"~\r\n"),
        "cr.edi": delimited(make_po(9505), b"*", b"\r"),
        "control.edi": delimited(make_po(9506), b"\x1d", b"\x1c", b"\x1f"),
        "bom.edi": b"\xef\xbb\xbf" + make_po(9507) + b"\x1a",
        "two.edi": delimited(make_po(9508), b"|", b"~\n") + delimited(make_po(9509), b"^", b"'"),
        os.fsdecode(b"caf\xe9.edi"): make_po(9513),  # not UTF-8
    }
    # a good interchange, then one whose IEA02 is wrong: the whole file refused
    broken = make_po(9514) + make_po(9515).replace(b"IEA*1*000009515", b"IEA*1*000009599")
    uids.upload(daemon.inbox / "broken-second.edi", broken)
    # a report planted by the partner under the name of the next file's report
    uids.upload(daemon.inbox / "bad.edi.error.json", b'{"error": "planted", "orders": []}')
    poll_until(lambda: (daemon.failed / "bad.edi.error.json").exists(), what="planted filed")
    uids.upload(daemon.inbox / "bad.edi", BAD)
    for name, data in good.items():
        uids.upload(daemon.inbox / name, data)
    outside = tmp_path / "outside.edi"
    outside.write_bytes(make_po(9510))
    os.symlink(outside, daemon.inbox / "link.edi")
    os.mkfifo(daemon.inbox / "fifo.edi")
    (daemon.inbox / "dir.edi").mkdir()
    uids.upload(daemon.inbox / "dir.edi" / "inner.edi", make_po(9511))
    with open(daemon.inbox / "big.edi", "wb") as fh:
        fh.write(make_po(9512))
        fh.write(b" " * 50_000_000)
    poll_until(
        lambda: (
            len(daemon.listing(daemon.done)) == len(good)
            and len(daemon.listing(daemon.failed)) == 12
            and not claimed(daemon.processing)
        ),
        timeout=30,
        what="every upload filed",
    )
    assert daemon.listing(daemon.done) == sorted(good)
    uploads = [n for n in daemon.listing(daemon.failed) if not n.endswith(".error.json")]
    assert sorted(uploads) == ["bad.1.edi", "big.edi", "broken-second.edi", "fifo.edi", "link.edi"]
    # each failed upload's report beside it is its own, never the planted one
    for name in [*uploads, "bad.edi.error.json"]:
        report = json.loads((daemon.failed / f"{name}.error.json").read_text())
        assert report["file"] == name and report["job_id"], (name, report)
    planted = json.loads((daemon.failed / "bad.edi.error.json").read_text())
    assert planted["error"] == "planted"  # the partner's own upload, filed under its name
    keys = erp.keys_by_po()
    # not 9510 (the link's target), 9511 (in the directory), 9512 (too big), 9514/9515
    assert sorted(keys) == [po(n) for n in (*range(9501, 9510), 9513)]
    assert set(erp.posts_per_key().values()) == {1}
    reasons = {
        "big.edi": "over the limit of 1000000 bytes",
        "fifo.edi": "FIFO",
        "link.edi": "symbolic link",
    }
    for name, words in reasons.items():
        report = json.loads((daemon.failed / f"{name}.error.json").read_text())
        assert words in report["error"], report
    # the directory is left where it is, said once in the log, its content unread
    left = daemon.events("inbox_entry_left")
    assert [e["file"] for e in left] == ["dir.edi"] and "directory" in left[0]["reason"]
    assert os.listdir(daemon.inbox) == ["dir.edi"]
    assert outside.read_bytes() == make_po(9510)
    # the newline is escaped in the log and in the 997's name
    finished = {e["file"]: e for e in daemon.events("job_finished")}
    assert "new\\nline.edi" in finished
    assert all("\n" not in a for e in finished.values() for a in e["acks"])
    two = next(j for j in cli_json(daemon, "jobs", "list") if j["file_name"] == "two.edi")
    assert two["status"] == "succeeded"
    assert daemon.terminate(timeout=10) == 0


def run_process(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EDI_INBOX_CONFIG"}
    return subprocess.run(
        daemon_command(config, "process", *args),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_the_997_of_a_file_with_a_non_ascii_name_says_which_file_it_answers(tmp_path):
    config = write_config(tmp_path, "")
    files = {"заказ.edi": make_po(9701), "счёт.edi": make_po(9702)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    done = run_process(config, *(str(tmp_path / n) for n in files))
    assert done.returncode == 0, done.stderr[-2000:]
    acks = sorted(os.listdir(tmp_path / "state" / "acks"))
    stems = {re.sub(r"\.123456789(\.\d+)?\.997$", "", a) for a in acks if a.endswith(".997")}
    assert len(stems) == 2 and "edi" not in stems, acks


def test_a_file_mixing_partners_says_its_refusal_once(tmp_path):
    """A file in acme's folder whose second interchange is globex's: its
    error says the refusal once. Was a bug (round 9, minor): once per
    interchange."""
    partners = section("acme", "ZZ:ACME") + section("globex", "ZZ:GLOBEX")
    config = write_config(tmp_path, partners)
    mixed = two_interchanges(sent_by(make_po(9703), "ZZ:ACME"), sent_by(make_po(9704), "ZZ:GLOBEX"))
    (tmp_path / "mixed.edi").write_bytes(mixed)
    done = run_process(config, "--partner", "acme", "--json", str(tmp_path / "mixed.edi"))
    assert done.returncode == 1, done.stderr[-2000:]
    found = json.loads(done.stdout)
    (job,) = found if isinstance(found, list) else [found]
    assert job["status"] == "failed", job["status"]
    messages = [d["message"] for d in job["error_details"]]
    assert len(messages) == len(set(messages)), messages


def test_a_directory_in_the_inbox_is_not_counted_as_a_waiting_upload(tmp_path, erp, daemons):
    """A directory named like an order is left in place, logged once, and not
    counted as an upload waiting. Was a bug (round 9): ``status`` counted it
    for as long as it was there, its age growing into the EdiInboxOldFile
    alert; README said directories went to failed/."""
    daemon = daemons(erp.url, workers=2)
    daemon.start()
    (daemon.inbox / "dir.edi").mkdir()
    poll_until(lambda: daemon.events("inbox_entry_left"), what="the directory left in place")
    status = cli_json(daemon, "status")
    assert status["inbox"]["waiting"] == 0, status["inbox"]


def test_two_partners_under_one_isa_id_may_use_the_same_po_number(tmp_path):
    """Was a bug (round 9): two partners told apart by GS02 under one ISA id
    (README's '01:123456789:ACMEWEST' form) shared one order identity:
    acmeeast's PO 9901 was rejected as 'posted by job … with other content'
    because acmewest used the same PO number. Their GS02 is now part of
    each order's identity (``sender_group``); with the same content the two
    orders get two keys, not one the ERP would answer with the first's id."""
    partners = section("acmewest", "01:123456789:ACMEWEST") + section(
        "acmeeast", "01:123456789:ACMEEAST"
    )
    config = write_config(tmp_path, partners)
    west = sent_by(make_po(9901), "01:123456789", "ACMEWEST")
    east = sent_by(make_po(9901), "01:123456789", "ACMEEAST").replace(
        b"REF*DP*845", b"REF*DP*846", 1
    )
    (tmp_path / "west.edi").write_bytes(west)
    (tmp_path / "east.edi").write_bytes(east)
    done = run_process(config, "--json", str(tmp_path / "west.edi"), str(tmp_path / "east.edi"))
    found = json.loads(done.stdout)
    jobs = {j["file_name"]: j for j in (found if isinstance(found, list) else [found])}
    assert {n: j["partner"] for n, j in jobs.items()} == {
        "west.edi": "acmewest",
        "east.edi": "acmeeast",
    }
    assert {n: j["status"] for n, j in jobs.items()} == {
        "west.edi": "succeeded",
        "east.edi": "succeeded",
    }, jobs["east.edi"]["error"]
    assert len(os.listdir(tmp_path / "state" / "outbox")) == 2
    # The same order from each division: two orders, two keys; sent again by
    # west: a duplicate of west's, not posted.
    for name, division in (
        ("west2.edi", "ACMEWEST"),
        ("east2.edi", "ACMEEAST"),
        ("west3.edi", "ACMEWEST"),
    ):
        (tmp_path / name).write_bytes(sent_by(make_po(9902), "01:123456789", division))
    done = run_process(
        config, "--json", *(str(tmp_path / n) for n in ("west2.edi", "east2.edi", "west3.edi"))
    )
    found = json.loads(done.stdout)
    statuses = {j["file_name"]: [o["status"] for o in j["orders"]] for j in found}
    assert statuses == {
        "west2.edi": ["posted"],
        "east2.edi": ["posted"],
        "west3.edi": ["duplicate"],
    }, statuses
    bodies = [
        json.loads(p.read_text())
        for p in (tmp_path / "state" / "outbox").iterdir()
        if p.name.startswith("00009902.")
    ]
    assert sorted(b["sender_group"] for b in bodies) == ["ACMEEAST", "ACMEWEST"]


def asks_ta1(data: bytes, flag: bytes) -> bytes:
    isa = data[:105].split(b"*")
    isa[14] = flag
    return b"*".join(isa) + data[105:]


def test_each_partners_ack_and_ta1_settings_for_a_broken_envelope(tmp_path):
    """``ta1 = "never"`` sends no TA1 even for a broken envelope (IEA02 wrong)
    but still the rejecting 997; ``ack = "none"`` sends nothing at all;
    ``ta1 = "always"`` with ``ack = "999"`` answers a 4010 file (ISA14 0)
    with a TA1 and a 997 (the 999 does not exist before 5010)."""
    partners = (
        section("acme", "ZZ:ACME", ta1="never")
        + section("quiet", "ZZ:QUIET", ack="none", ta1="never")
        + section("loud", "ZZ:LOUD", ta1="always", ack="999")
    )
    config = write_config(tmp_path, partners)

    def broken(n: int, sender: str) -> bytes:
        return sent_by(make_po(n), sender).replace(
            f"IEA*1*{n:09d}".encode(), f"IEA*1*{n + 1:09d}".encode()
        )

    files = {
        "acme.edi": broken(9911, "ZZ:ACME"),
        "quiet.edi": broken(9913, "ZZ:QUIET"),
        "loud.edi": asks_ta1(sent_by(make_po(9915), "ZZ:LOUD"), b"0"),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    done = run_process(config, *(str(tmp_path / n) for n in files))
    assert done.returncode == 1, done.stderr[-2000:]
    acks = sorted(os.listdir(tmp_path / "state" / "acks"))
    assert acks == [
        "acme.edi.123456789.997",
        "loud.edi.000009915.TA1",
        "loud.edi.123456789.997",
    ], acks
    assert b"AK9*R" in (tmp_path / "state" / "acks" / "acme.edi.123456789.997").read_bytes()
    assert len(os.listdir(tmp_path / "state" / "outbox")) == 1  # loud's order alone


@pytest.mark.parametrize(
    "name", ["..", ".", "a b", "a/b", "x/../y", "", "-x", "..x", "ü", "a\nb", "a" * 65]
)
def test_odd_partner_names_are_refused_naming_the_rule(tmp_path, name):
    """A partner's name becomes a folder (processing/.partners/NAME) and a
    command-line value: '..', a slash, a space, a leading dash are refused."""
    (tmp_path / "in").mkdir()
    path = write_config(
        tmp_path, f'[partners.{json.dumps(name)}]\nids = ["ZZ:ACME"]\ninbox = "{tmp_path}/in"\n'
    )
    with pytest.raises(ConfigError, match="a partner's name is 1 to 64 letters"):
        config.load(path, environ={})


def test_a_dotted_partner_name_gets_its_own_processing_folder(tmp_path):
    (tmp_path / "in").mkdir()
    path = write_config(tmp_path, f'[partners."a.b"]\nids = ["ZZ:ACME"]\ninbox = "{tmp_path}/in"\n')
    (partner,) = config.load(path, environ={}).partners.partners
    assert partner.name == "a.b"
    assert partner.processing == tmp_path / "state" / "processing" / ".partners" / "a.b"


def test_the_acknowledgements_of_a_long_named_file_keep_their_kind(tmp_path):
    config_path = write_config(tmp_path, "")
    name = "p" * 251 + ".edi"
    (tmp_path / name).write_bytes(make_po(9716))  # ISA14 1: a TA1 as well
    done = run_process(config_path, str(tmp_path / name))
    assert done.returncode == 0, done.stderr[-2000:]
    acks = sorted(os.listdir(tmp_path / "state" / "acks"))
    assert len(acks) == 2
    assert sorted(a.rsplit(".", 1)[-1] for a in acks) == ["997", "TA1"], acks
