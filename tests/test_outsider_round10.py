"""Outsider round 10: today's changes attacked from outside.

Held (plain tests): 409 then 201 (posted, 997 accepts); 409 forever (the
ERP unavailable: failed/, AK5 R, "HTTP 409 after 3 attempts", same key);
bodies trickling in within the read timeout (0.6 s and 0.75 s, chunked);
chunked 2xx bodies of exactly 1 MiB (taken) and 1 MiB + 1 (malformed,
retried); a gzip bomb (200 MB inflated) read bounded; a 201 cut short of
its Content-Length (retried); connections reused throughout. One key, one
body: a resend while the first job retries, after a SIGKILL mid-post, a
changed price while the first version is still at the ERP (rejected, never
posted). Acknowledgement names: Cyrillic, CJK, emoji, combining marks,
RTL/bidi, zero-width, 250/254-byte names, names the sanitizer folds onto
one another, a duplicate under such a name. Stalled uploads across SIGKILL
and SIGTERM restarts (failed after their grace, a future mtime too; one
completed after a restart posted). retry prefixes (ambiguous, empty,
blank, uppercase, padded), db reset (fresh, killed -9 long ago, right after
a clean stop), plain status's last error.

Were bugs, fixed the same night: a 103 Early Hints before the 201 taken as
the ERP's refusal; a complete file padded by more than 4 KiB after its IEA
held as truncated for the whole grace.

Real daemon processes, a raw HTTP ERP on 127.0.0.1 recording the client
port (connection reuse) and every body per key, uploads by the partner's
uid, real signals; no mocks, no fixed sleeps."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import threading
import time
import unicodedata
from collections import defaultdict

import pytest
from daemons import Daemon, daemons, erp
from test_outsider_round3 import failed_files
from test_outsider_round7 import cli_json, jobs_by_file, settled
from test_outsider_round9 import RawErp, RawHandler, RawServer, peak_kib, set_erp, with_isa13

from edi_inbox.x12.reader import X12Reader

import uids
from helpers import BAD, make_po, poll_until

pytestmark = pytest.mark.e2e
__all__ = ["daemons", "erp"]  # fixtures

MIB = 1024 * 1024


def po(n: int) -> str:
    return f"{n:08d}"


class WireHandler(RawHandler):
    """Round 9's raw ERP's behaviours, and these."""

    server: RawServer

    def answer_e503(self, key: str) -> None:
        self.send(503, b'{"error": "busy"}', Retry_After="0.4")

    def answer_hold(self, key: str) -> None:
        erp = self.server.erp
        assert isinstance(erp, WireErp)
        erp.held.set()
        erp.release.wait(30)
        self.answer_ok(key)

    def answer_trickle_ok(self, key: str) -> None:
        """201, Content-Length given, the body in 5 pieces 0.12 s apart
        (complete ~0.6 s after the headers; read timeout 1 s)."""
        body = json.dumps({"id": f"ERP-{key[:12]}", "pad": " " * 20}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.flush()
        step = len(body) // 5 + 1
        for i in range(0, len(body), step):
            self.server.erp.stop.wait(0.12)
            self.wfile.write(body[i : i + step])
            self.wfile.flush()

    def answer_trickle_edge(self, key: str) -> None:
        """201, chunked, the id complete at once, then 1-byte chunks 0.15 s
        apart; the last chunk ~0.75 s after the headers (read timeout 1 s)."""
        body = json.dumps({"id": f"ERP-{key[:12]}"}).encode()[:-1] + b", " + b'"x": 1}'
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        start = time.monotonic()
        for i, byte in enumerate(body[-6:]):
            if i == 0:
                head = body[:-6] + bytes([byte])
                self.wfile.write(b"%x\r\n" % len(head) + head + b"\r\n")
            else:
                self.server.erp.stop.wait(max(0.0, start + 0.15 * i - time.monotonic()))
                self.wfile.write(b"1\r\n" + bytes([byte]) + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunked(self, body: bytes) -> None:
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(0, len(body), 65536):
            part = body[i : i + 65536]
            self.wfile.write(b"%x\r\n" % len(part) + part + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _padded(self, key: str, size: int) -> bytes:
        head = json.dumps({"id": f"ERP-{key[:12]}"}).encode()[:-1] + b', "pad": "'
        return head + b" " * (size - len(head) - 2) + b'"}'

    def answer_mib(self, key: str) -> None:
        body = self._padded(key, MIB)
        assert len(body) == MIB
        self._chunked(body)

    def answer_mib1(self, key: str) -> None:
        body = self._padded(key, MIB + 1)
        assert len(body) == MIB + 1
        self._chunked(body)

    def answer_early(self, key: str) -> None:
        """103 Early Hints (RFC 8297; CDNs and proxies send it), then 201."""
        self.wfile.write(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
        self.wfile.flush()
        self.answer_ok(key)

    def answer_gzipbomb(self, key: str) -> None:
        """201, Content-Encoding: gzip, ~200 KB that inflate to 200 MB."""
        erp = self.server.erp
        assert isinstance(erp, WireErp)
        self.send(201, erp.bomb(key), Content_Encoding="gzip")

    def answer_short(self, key: str) -> None:
        """201, Content-Length 200, a complete JSON of fewer bytes, close."""
        body = json.dumps({"id": f"ERP-{key[:12]}"}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "200")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True


class WireErp(RawErp):
    """Round 9's raw ERP with ``WireHandler``'s behaviours; ``hold`` holds a
    post until ``release`` (``held`` says one is held)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.held = threading.Event()
        self._bombs: dict[str, bytes] = {}
        super().__init__(WireHandler)

    def bomb(self, key: str) -> bytes:
        """Built once (compressing 200 MB takes seconds): its id is ERP-bomb."""
        import gzip

        if "bomb" in self._bombs:
            return self._bombs["bomb"]
        head = json.dumps({"id": "ERP-bomb"}).encode()[:-1] + b', "pad": "'
        # gzip members may be concatenated (RFC 1952): one MiB of spaces, 200 times
        block = gzip.compress(b" " * MIB, compresslevel=9)
        data = gzip.compress(head) + block * 200 + gzip.compress(b'"}')
        self._bombs["bomb"] = data
        return self._bombs["bomb"]

    def bodies_per_key(self) -> dict[str, set[bytes]]:
        found: dict[str, set[bytes]] = defaultdict(set)
        with self.lock:
            for r in self.requests:
                found[r["key"]].add(r["body"])
        return found

    def close(self) -> None:
        self.release.set()
        super().close()


@pytest.fixture
def wire():
    erp = WireErp()
    yield erp
    erp.close()


def acks_of(daemon: Daemon, job_id: str) -> list[str]:
    """The acknowledgements a job wrote, as its ``job_finished`` log line says."""
    (done,) = [e for e in daemon.events("job_finished") if e.get("job_id") == job_id]
    return list(done.get("acks") or [])


def ack_codes(daemon: Daemon, file_name: str) -> list[str]:
    """AK5 and AK9 codes of the 997s written for ``file_name`` (from its job's acks)."""
    (job,) = jobs_by_file(daemon)[file_name][-1:]
    codes = []
    for name in acks_of(daemon, job["job_id"]):
        if name.endswith(".997"):
            reader = X12Reader(io.BytesIO((daemon.root / "acks" / name).read_bytes()))
            for s in reader.scanner:
                if s.elements[0] in ("AK5", "AK9"):
                    codes.append(f"{s.elements[0]} {s.elements[1]}")
    return codes


# -- 1. ERP answers -------------------------------------------------------------------


def test_erp_answers_409s_trickles_1mib_bodies_and_keep_alive(tmp_path, wire, daemons):
    """Per order: 409 then 201 (posted, 997 accepts); 409 forever (the ERP
    unavailable: failed/, a rejecting 997, the order's record says
    unavailable, not refused); a body complete 0.6 s after its headers (read
    timeout 1 s: taken at the first attempt); a chunked 2xx of exactly 1 MiB
    (taken) and of 1 MiB + 1 (malformed, retried, same key); then two
    orders of one file after all that: the second post reuses the first's
    connection."""
    plan = {
        po(9301): ["busy"],
        po(9302): ["busy", "busy", "busy"],
        po(9303): ["trickle_ok"],
        po(9304): ["mib"],
        po(9305): ["mib1", "mib1", "mib1"],
        po(9311): ["short"],
        po(9312): ["trickle_edge"],
        po(9803): ["gzipbomb", "gzipbomb", "gzipbomb"],
    }
    wire.plan = {k: list(v) for k, v in plan.items()}
    wire.bomb("warm")  # built once before (the test's memory, not the daemon's)
    daemon = daemons(wire.url, workers=8)
    set_erp(daemon, read_timeout_seconds=1.0, connect_timeout_seconds=1.0)
    daemon.start()
    before = peak_kib(daemon.proc.pid)
    for n in plan:
        uids.upload(daemon.inbox / f"{int(n)}.edi", make_po(int(n)))
    settled(daemon, 8, timeout=30)
    grown = (peak_kib(daemon.proc.pid) - before) // 1024
    assert grown < 60, f"peak memory grew by {grown} MB (a gzip bomb, 1 MiB answers)"
    status = {name: runs[-1]["status"] for name, runs in jobs_by_file(daemon).items()}
    assert status == {
        "9301.edi": "succeeded",
        "9302.edi": "failed",
        "9303.edi": "succeeded",
        "9304.edi": "succeeded",
        "9305.edi": "failed",
        "9311.edi": "succeeded",
        "9312.edi": "succeeded",
        "9803.edi": "failed",  # inflated beyond 1 MiB: malformed, 3 attempts
    }, status
    for n in plan:
        assert len({r["key"] for r in wire.of(n)}) == 1, n
    assert [r["what"] for r in wire.of(po(9301))] == ["busy", "ok"]
    with wire.lock:
        every = [r["port"] for r in wire.requests]
    assert len(set(every)) < len(every), "no connection was ever reused"
    assert len(wire.of(po(9302))) == 3 and len(wire.of(po(9305))) == 3
    assert [r["what"] for r in wire.of(po(9303))] == ["trickle_ok"]  # no second attempt
    assert [r["what"] for r in wire.of(po(9312))] == ["trickle_edge"]
    assert [r["what"] for r in wire.of(po(9304))] == ["mib"]
    assert [r["what"] for r in wire.of(po(9803))] == ["gzipbomb", "ok"] or len(
        wire.of(po(9803))
    ) == 3, [r["what"] for r in wire.of(po(9803))]
    # a 201 cut short of its Content-Length (then close) is not taken: retried
    assert [r["what"] for r in wire.of(po(9311))] == ["short", "ok"]
    assert ack_codes(daemon, "9301.edi") == ["AK5 A", "AK9 A"]
    assert ack_codes(daemon, "9302.edi") == ["AK5 R", "AK9 R"]
    report = json.loads((daemon.failed / "9302.edi.error.json").read_text())
    assert report["orders"][0]["status"] == "rejected"
    (job,) = jobs_by_file(daemon)["9302.edi"]
    shown = cli_json(daemon, "jobs", "show", job["job_id"])
    assert "unavailable after 3 attempts" in json.dumps(shown), shown["error"]
    assert "409" in json.dumps(shown)
    (job,) = jobs_by_file(daemon)["9305.edi"]
    assert "more than 1048576 bytes" in json.dumps(cli_json(daemon, "jobs", "show", job["job_id"]))

    # keep-alive still works: one file, two orders, posted one after the other
    two = two_orders(9306, 9307)
    uids.upload(daemon.inbox / "two.edi", two)
    settled(daemon, 9, timeout=20)
    assert jobs_by_file(daemon)["two.edi"][-1]["status"] == "succeeded"
    first, then = wire.of(po(9306)), wire.of(po(9307))
    assert len(first) == len(then) == 1
    assert first[0]["port"] == then[0]["port"], "the second post opened a new connection"


# -- 2. one key, one body ----------------------------------------------------------


def test_a_resend_while_the_first_job_retries_carries_the_first_body(tmp_path, wire, daemons):
    """The first post of X is taken after the read timeout; its retries get
    503 (Retry-After 1). While that job is still retrying, the partner resends
    X under a new ISA13. Every request under X's key carries one body; the
    ERP sees one key; one of the files ends posted or duplicate."""
    wire.plan = {po(9401): ["slowish", "e503", "e503", "e503", "e503"]}
    daemon = daemons(wire.url, workers=3)
    set_erp(daemon, read_timeout_seconds=1.0, connect_timeout_seconds=1.0, max_attempts=3)
    daemon.start()
    uids.upload(daemon.inbox / "first.edi", make_po(9401))
    poll_until(lambda: len(wire.of(po(9401))) >= 2, timeout=15, what="first job retrying")
    uids.upload(daemon.inbox / "resent.edi", with_isa13(make_po(9401), 9402))
    settled(daemon, 2, timeout=30)
    keys = {r["key"] for r in wire.of(po(9401))}
    assert len(keys) == 1, keys
    bodies = wire.bodies_per_key()
    assert all(len(b) == 1 for b in bodies.values()), {k: len(b) for k, b in bodies.items()}


def test_a_resend_written_otherwise_after_an_unanswered_send_keeps_the_first_key(
    tmp_path, wire, daemons
):
    """X's first post is taken after the read timeout and its retries get
    503: the job fails, the ERP may hold X. The partner resends X writing
    the unit price ``12.0`` for ``12`` (the same order: numbers compare by
    value), so today's key for it differs. It must go out under X's first
    key with the first body: the ERP sees one key, one body (it was a
    second key, and the ERP booked the order twice)."""
    wire.plan = {po(9407): ["slowish", "e503", "e503"]}
    daemon = daemons(wire.url, workers=2)
    set_erp(daemon, read_timeout_seconds=1.0, connect_timeout_seconds=1.0, max_attempts=3)
    daemon.start()
    uids.upload(daemon.inbox / "first.edi", make_po(9407))
    settled(daemon, 1, timeout=30)
    assert len(wire.of(po(9407))) == 3
    written_otherwise = make_po(9407).replace(b"PO1**6*EA*12**", b"PO1**6*EA*12.0**", 1)
    assert written_otherwise != make_po(9407)
    uids.upload(daemon.inbox / "resent.edi", with_isa13(written_otherwise, 9408))
    settled(daemon, 2, timeout=30)
    assert len({r["key"] for r in wire.of(po(9407))}) == 1
    bodies = wire.bodies_per_key()
    assert all(len(b) == 1 for b in bodies.values()), {k: len(b) for k, b in bodies.items()}
    assert jobs_by_file(daemon)["resent.edi"][-1]["status"] == "succeeded"


def test_a_resend_after_a_sigkill_mid_post_carries_the_first_body(tmp_path, wire, daemons):
    """The daemon is SIGKILLed while the ERP holds X's first post (it will
    take it). The partner resends X under a new ISA13; the daemon starts
    again: the taken-over first file and the resend both post under X's one
    key with the first body."""
    wire.plan = {po(9403): ["hold"]}
    daemon = daemons(wire.url, workers=3)
    set_erp(daemon, read_timeout_seconds=5.0, connect_timeout_seconds=1.0)
    daemon.start()
    uids.upload(daemon.inbox / "first.edi", make_po(9403))
    assert wire.held.wait(15)
    daemon.kill()
    wire.release.set()
    uids.upload(daemon.inbox / "resent.edi", with_isa13(make_po(9403), 9404))
    daemon.start()
    settled(daemon, 2, timeout=30)
    assert len({r["key"] for r in wire.of(po(9403))}) == 1
    bodies = wire.bodies_per_key()
    assert all(len(b) == 1 for b in bodies.values()), {k: len(b) for k, b in bodies.items()}
    status = sorted(runs[-1]["status"] for runs in jobs_by_file(daemon).values())
    assert status in (["duplicate", "succeeded"], ["succeeded", "succeeded"]), status


def test_the_same_order_with_a_changed_price_never_reuses_the_key(tmp_path, wire, daemons):
    """X posted; then X again with another unit price (same PO number, other
    content): README says such a second version is rejected as other content.
    Whatever happens, the ERP never sees X's key with another body."""
    wire.plan = {po(9405): ["hold"]}
    daemon = daemons(wire.url, workers=2)
    set_erp(daemon, read_timeout_seconds=10.0)
    daemon.start()
    uids.upload(daemon.inbox / "v1.edi", make_po(9405))
    assert wire.held.wait(15)
    # v2 arrives while v1 is still at the ERP
    changed = with_isa13(make_po(9405), 9406).replace(b"PO1**6*EA*12**", b"PO1**6*EA*13**", 1)
    uids.upload(daemon.inbox / "v2.edi", changed)
    poll_until(lambda: len(daemon.jobs()) == 2, timeout=15, what="v2's job started")
    wire.release.set()
    settled(daemon, 2, timeout=20)
    assert jobs_by_file(daemon)["v1.edi"][-1]["status"] == "succeeded"
    bodies = wire.bodies_per_key()
    assert all(len(b) == 1 for b in bodies.values())
    job = jobs_by_file(daemon)["v2.edi"][-1]
    assert job["status"] == "failed", job["status"]
    shown = cli_json(daemon, "jobs", "show", job["job_id"])
    assert [o["status"] for o in shown["orders"]] == ["rejected"]
    assert len(wire.of(po(9405))) == 1  # the second version never reached the ERP
    assert ack_codes(daemon, "v2.edi") == ["AK5 R", "AK9 R"]
    # README: db reset is refused while a daemon runs, "stop it first": after a
    # clean stop it goes through at once (not 15 s later, when the beat is stale)
    assert daemon.cli("db", "reset", "--yes").returncode == 1
    assert daemon.terminate(timeout=20) == 0
    done = daemon.cli("db", "reset", "--yes")
    assert done.returncode == 0, (done.stdout, done.stderr)


# -- 3. acknowledgement names ---------------------------------------------------------

NAMES = [
    "заказ.edi",
    "订单.edi",
    "😀order.edi",
    "cafe\u0301.edi",  # e + combining acute (NFD)
    "caf\u00e9.edi",  # é (NFC): the sanitizer makes both one name
    "\u202eide.exe.edi",  # RTL override
    "zero\u200bwidth\u200d.edi",
    "a b.edi",
    "a_b.edi",
    "a\u2066b\u2069.edi",  # bidi isolates
    "订" * 82 + ".edi",  # 250 bytes
    "x" * 120 + "ä" * 65 + ".edi",  # 254 bytes
    "\u05e9\u05dc\u05d5\u05dd.edi",  # Hebrew (RTL letters)
]


def test_acknowledgement_names_are_distinct_safe_and_keep_their_kind(tmp_path, wire, daemons):
    daemon = daemons(wire.url, workers=4)
    daemon.start()
    for i, name in enumerate(NAMES):
        assert len(name.encode()) <= 255
        uids.upload(daemon.inbox / name, make_po(9500 + i))
    settled(daemon, len(NAMES), timeout=30)
    by_file = {name: runs[-1] for name, runs in jobs_by_file(daemon).items()}
    assert sorted(by_file) == sorted(NAMES)
    for job in by_file.values():
        job["acks"] = acks_of(daemon, job["job_id"])
    assert all(j["status"] == "succeeded" for j in by_file.values())
    acks = os.listdir(daemon.root / "acks")
    claimed_by: dict[str, str] = {}
    for name, job in by_file.items():
        kinds = sorted(a.rsplit(".", 1)[1] for a in job["acks"])
        assert kinds == ["997", "TA1"], (name, job["acks"])
        for a in job["acks"]:
            assert a in acks, a
            assert a not in claimed_by, f"{name!r} and {claimed_by[a]!r} share {a!r}"
            claimed_by[a] = name
            assert len(a.encode()) <= 255
            assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in a), a
    assert len(acks) == 2 * len(NAMES), sorted(acks)
    # each 997 answers its own file's interchange
    for job in by_file.values():
        (a997,) = [a for a in job["acks"] if a.endswith(".997")]
        text = (daemon.root / "acks" / a997).read_bytes()
        assert b"AK5*A" in text
    # the same bytes again under a name the sanitizer folds onto another's:
    # a duplicate, but its own acknowledgements, not the first file's
    uids.upload(daemon.inbox / "dup x.edi", make_po(9590))
    settled(daemon, len(NAMES) + 1, timeout=20)
    uids.upload(daemon.inbox / "dup_x.edi", make_po(9590))
    settled(daemon, len(NAMES) + 2, timeout=20)
    runs = jobs_by_file(daemon)
    first, again = runs["dup x.edi"][-1], runs["dup_x.edi"][-1]
    assert again["status"] == "duplicate", again["status"]
    a1, a2 = acks_of(daemon, first["job_id"]), acks_of(daemon, again["job_id"])
    assert len(a2) == 2 and not set(a1) & set(a2), (a1, a2)
    # long names whose file is rejected: failed/, a report each, AK9 R
    longs = ["订" * 82 + "x.edi", "y" * 120 + "ä" * 65 + ".edi"]
    for i, name in enumerate(longs):
        assert len(name.encode()) in (251, 254)
        uids.upload(daemon.inbox / name, with_isa13(BAD, 9900 + i))
    settled(daemon, len(NAMES) + 4, timeout=20)
    assert sorted(set(failed_files(daemon))) == sorted(longs)
    reports = [n for n in daemon.listing(daemon.failed) if n.endswith(".error.json")]
    assert len(reports) == 2, reports
    for report in reports:
        doc = json.loads((daemon.failed / report).read_text())
        assert doc["file_name"] in longs and doc["status"] == "failed"
    for name in longs:
        assert ack_codes(daemon, name)[-1] == "AK9 R"
    # the Cyrillic/CJK/Hebrew names still say which file they answer
    for name in ("заказ.edi", "订单.edi", "\u05e9\u05dc\u05d5\u05dd.edi"):
        assert any(a.startswith(name + ".") for a in by_file[name]["acks"]), by_file[name]["acks"]


# -- 4. stalled uploads across restarts ---------------------------------------------


def truncated(data: bytes) -> bytes:
    return data[: data.index(b"IEA*")]


def test_a_stalled_upload_fails_after_its_grace_despite_restarts_and_a_completed_one_posts(
    tmp_path, wire, daemons
):
    """grace 3 s. stalled.edi (no IEA) stays; resumed.edi (no IEA) is
    completed by the partner after the first restart. The daemon is
    restarted every ~1 s (SIGKILL and SIGTERM in turn). stalled.edi must
    reach failed/ (truncated) within ~grace of its upload despite the
    restarts; resumed.edi must be posted, never failed."""
    daemon = daemons(wire.url, workers=2, incomplete_grace_seconds=3.0)
    stalled, resumed = make_po(9601), make_po(9602)
    uids.upload(daemon.inbox / "stalled.edi", truncated(stalled))
    uids.upload(daemon.inbox / "resumed.edi", truncated(resumed))
    uids.upload(daemon.inbox / "future.edi", truncated(make_po(9603)))
    # its mtime a day ahead (the ctime cannot be set: it is now)
    subprocess.run(["touch", "-d", "+1 day", str(daemon.inbox / "future.edi")], check=True)
    uploaded = time.monotonic()
    daemon.start()
    for i in range(6):
        held = len(daemon.events("upload_held"))
        poll_until(
            lambda held=held: (
                len(daemon.events("upload_held")) > held or (daemon.failed / "stalled.edi").exists()
            ),
            timeout=10,
            what="the daemon looked at the stalled upload",
        )
        if (daemon.failed / "stalled.edi").exists():
            break
        if i % 2:
            assert daemon.terminate(timeout=20) == 0
        else:
            daemon.kill()
        if i == 0:  # the partner resumes the upload (reput appends; the owner stays)
            with open(daemon.inbox / "resumed.edi", "ab") as fh:
                fh.write(resumed[len(truncated(resumed)) :])
        daemon.start()
    poll_until(
        lambda: (
            (daemon.failed / "stalled.edi").exists()
            and (daemon.failed / "future.edi").exists()
            and (daemon.done / "resumed.edi").exists()
        ),
        timeout=15,
        what="stalled failed, resumed done",
    )
    took = time.monotonic() - uploaded
    assert took < 3.0 + 6.0, f"failed {took:.1f} s after the upload (grace 3 s)"
    report = json.loads((daemon.failed / "stalled.edi.error.json").read_text())
    assert "trunc" in json.dumps(report).lower() or "IEA" in json.dumps(report), report
    assert len(wire.of(po(9602))) == 1
    assert not wire.of(po(9601))


# -- 5. retry, db reset, status ------------------------------------------------------


def age_heartbeats(daemon: Daemon, seconds: float) -> None:
    """Every daemon's heartbeat made ``seconds`` older (as if it died then)."""
    import datetime as dt
    import sqlite3

    with contextlib.closing(sqlite3.connect(daemon.root / "edi-inbox.db", timeout=10)) as conn:
        for rowid, beat in conn.execute("SELECT id, heartbeat_at FROM daemons").fetchall():
            old = dt.datetime.fromisoformat(beat) - dt.timedelta(seconds=seconds)
            text = old.isoformat(sep=" ") if " " in beat else old.isoformat()
            conn.execute("UPDATE daemons SET heartbeat_at = ? WHERE id = ?", (text, rowid))
        conn.commit()


def test_retry_prefixes_db_reset_and_status_last_error(tmp_path, wire, daemons):
    daemon = daemons(wire.url, workers=4)
    daemon.start()
    count = 17  # 17 failed jobs: two of them share a first hex digit
    for i in range(count):
        uids.upload(daemon.inbox / f"bad{i}.edi", with_isa13(BAD, 9700 + i))
    settled(daemon, count, timeout=30)
    ids = sorted(runs[-1]["job_id"] for runs in jobs_by_file(daemon).values())
    assert len(ids) == count
    firsts = defaultdict(list)
    for job_id in ids:
        firsts[job_id[0]].append(job_id)
    shared = next(v for v in firsts.values() if len(v) > 1)
    # ambiguous prefix: refused, nothing moved
    done = daemon.cli("retry", shared[0][0])
    assert done.returncode != 0 and "several" in (done.stdout + done.stderr), done
    assert "Traceback" not in done.stderr
    assert len(failed_files(daemon)) == count
    # empty and blank prefixes: refused
    for arg in ("", "   "):
        done = daemon.cli("retry", arg)
        assert done.returncode != 0 and "Traceback" not in done.stderr, (arg, done)
        assert len(failed_files(daemon)) == count
    # a unique prefix, uppercase, padded with whitespace: that job alone
    unique = next(v[0] for v in firsts.values() if len(v) == 1)
    done = daemon.cli("retry", f"  {unique[:8].upper()} ")
    assert done.returncode == 0, (done.stdout, done.stderr)
    poll_until(lambda: len(daemon.jobs()) == count + 1, timeout=20, what="the retry ran")
    settled(daemon, count, timeout=20)
    # back in failed/: the daemon has taken the retry's outcome (and its error)
    # before the refused reload below, the last error it sees
    poll_until(lambda: len(failed_files(daemon)) == count, timeout=20, what="filed again")
    retried = [j for j in daemon.jobs() if j["retry_of"]]
    assert [j["retry_of"] for j in retried] == [unique], retried
    # jobs show takes the same prefix as retry does
    shown = daemon.cli("jobs", "show", unique[:8].upper())
    assert shown.returncode == 0, (shown.stdout, shown.stderr)

    # plain status shows the daemon's last error (a refused reload)
    daemon.sighup("[bogus]\nkey = 1\n")
    poll_until(lambda: daemon.events("reload_refused"), timeout=10, what="reload refused")
    daemon.config.write_text(daemon.base_config)  # the CLI reads it too
    # (the heartbeat after the refusal carries it: status reads heartbeats)
    status = poll_until(
        lambda: (done := daemon.cli("status")).returncode == 0 and "bogus" in done.stdout and done,
        timeout=20,
        what="status shows the refused reload",
    )
    assert "last error" in status.stdout, status.stdout

    # db reset under a fresh heartbeat: refused; after a SIGKILL, once stale: done
    done = daemon.cli("db", "reset", "--yes")
    assert done.returncode != 0 and "running" in done.stderr, done
    assert len(daemon.jobs()) == count + 1
    daemon.kill()
    age_heartbeats(daemon, 120)  # killed -9 two minutes ago
    assert daemon.cli("status").returncode == 3
    done = daemon.cli("db", "reset", "--yes")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert daemon.jobs() == []


def two_orders(first: int, second: int) -> bytes:
    """One interchange, one group, two 850s (PO numbers ``first``, ``second``)."""
    data = make_po(first).replace(b"GE*1*", b"GE*2*")
    other = make_po(second)
    st = other[other.index(b"ST*850") : other.index(b"GE*")]
    at = data.index(b"GE*")
    return data[:at] + st.replace(b"4567", b"4568") + data[at:]


def test_an_informational_1xx_before_the_201_is_not_the_answer(tmp_path, wire, daemons):
    """RFC 9110 15.2: a client must be able to parse one or more 1xx answers
    before the final one. The ERP (or a proxy in front of it) sends
    ``103 Early Hints`` then ``201`` for the first order of a two-order file;
    the second order is posted next on the same connection. Both orders must
    end posted, each with its own ERP id."""
    wire.plan = {po(9801): ["early"]}
    daemon = daemons(wire.url, workers=1)
    set_erp(daemon, read_timeout_seconds=1.0, connect_timeout_seconds=1.0)
    daemon.start()
    uids.upload(daemon.inbox / "early.edi", two_orders(9801, 9802))
    settled(daemon, 1, timeout=20)
    (job,) = jobs_by_file(daemon)["early.edi"]
    shown = cli_json(daemon, "jobs", "show", job["job_id"])
    got = {o["po_number"]: (o["status"], o["erp_po_id"]) for o in shown["orders"]}
    keys = {r["po"]: r["key"] for r in wire.requests}
    assert got == {
        po(9801): ("posted", f"ERP-{keys[po(9801)][:12]}"),
        po(9802): ("posted", f"ERP-{keys.get(po(9802), '?')[:12]}"),
    }, (got, shown["error"])
    assert ack_codes(daemon, "early.edi") == ["AK5 A", "AK5 A", "AK9 A"]


def test_a_complete_file_padded_after_its_trailer_is_not_held(tmp_path, wire, daemons):
    """DESIGN: "A complete file, whatever its delimiters, is never held";
    trailing whitespace, NULs and Ctrl-Z are allowed after the IEA. A file
    padded with 5000 NULs (or newlines) after it must not wait the grace."""
    daemon = daemons(wire.url, workers=2, incomplete_grace_seconds=2.0)
    daemon.start()
    uids.upload(daemon.inbox / "nul.edi", make_po(9920) + b"\0" * 5000)
    uids.upload(daemon.inbox / "nl.edi", make_po(9921) + b"\r\n" * 2500)
    settled(daemon, 2, timeout=15)
    held = [e["file"] for e in daemon.events("upload_held")]
    assert not held, f"held: {held}"
    assert daemon.listing(daemon.done) == ["nl.edi", "nul.edi"]
