"""Outside tester round 35: the last hour's changes (serve's connection
guards ``web.serving.guarded``, ``HeadAsGet``, serve's bounded PostgreSQL,
``Recorder.held_by``, ``x12.scan._first_encoding`` and the ISA's NBSPs read
after decoding) attacked from outside.

What I tried:

* Connections against a real ``edi-inbox serve`` on 127.0.0.1 (SQLite):
  three pipelined requests in one write; HTTP/1.0 without a Host; a HEAD
  carrying a body followed by a GET on the same connection; HEAD on
  ``/api/orchestrate`` with the token and a whole 850 as its body; a
  ``POST /api/orchestrate`` whose body trickles in over 8 s (an eighth a
  second at a time); ``Expect: 100-continue`` with the body sent 6 s after
  the 100; a keep-alive client pausing 4 s between requests; a slow reader
  (SO_RCVBUF 1 KiB, 30 pipelined ``/openapi.json`` unread for 7 s).
* At 64 descriptors (32 connections): 34 slow readers each pipelining 1,500
  ``/dashboard.css`` (more than the kernel's send buffer), to see whether
  answers nobody reads pin the cap (connections busy answering are neither
  timed out nor closed for a newcomer); 32, 40 and 60 clients at once, and
  rounds of 32 connections each then asking at once (within the cap); the
  serve process' descriptors counted in /proc after bursts at 128.
* A file of two orders SIGKILLed while the ERP sat on its first, its second
  never sent, restarted with ``line_count_mismatch = "error"``; compared
  with dfc2410 (before this hour's ``held_by``) run from ``git archive``.
* Serve on PostgreSQL (a private schema) while another session holds an
  ACCESS EXCLUSIVE lock on control_numbers, orders or job_rollups during
  ``POST /api/orchestrate``.
* The ISA read after decoding: element, segment and component separators
  outside ASCII (¦, 0x85, 0xA0, ÿ), in cp1252 and latin-1, NBSP padding
  beside a non-ASCII separator, each compared with 8eb3714's and dfc2410's
  reader run from ``git archive``.

Found (strict xfails; the two decoding ones fixed the same session, each
test failing before its fix — text is scanned as cp1252 reads it, its gaps
as latin-1, and the ISA's NBSPs replaced element by element; the fourth the
session after — serve's thread pool sized to the descriptors left to it,
``web.serving.budget``; the third left, named in README):

1. ``test_a_separator_in_0x80_0x9f_keeps_cp1252_punctuation`` (three cases):
   a cp1252 interchange whose segment terminator is 0x85 (NEL, as files
   converted from EBCDIC have it) or whose element separator is 0x85 or 0x95
   is now read as latin-1: "O’Brien €5" reaches the ERP as "O\\x92Brien
   \\x805"; 8eb3714 read cp1252 (checked from ``git archive``). Likely
   ``x12/scan.py`` ``_first_encoding``: "latin-1 for one in 0x80-0x9F"
   (round 34's fix took cp1252 only for 0xA0-0xFF; cp1252 decodes 0x85 and
   0x95 to one character each, so the separator could be mapped to it).
2. ``test_an_interchange_whose_element_separator_is_nbsp_is_read``: an
   interchange whose element separator is 0xA0 (NBSP; ISA04 onwards split on
   it) is refused whole ("segment ISA 00 00 ZZ ACME … comes after the IEA,
   outside any interchange"), where 8eb3714 and dfc2410 read its order. Likely
   ``x12/scan.py`` ``SegmentScanner``: the ISA, joined again with its
   separator and decoded, has every "\\xa0" replaced by a space as NBSP
   padding, the separator included (sniff_isa replaced it per element, after
   the split).
3. ``test_an_order_never_sent_before_a_crash_meets_the_stricter_rules``: a
   file of PO-1 and PO-2 (CTT miscounted: a warning by default) SIGKILLed
   while the ERP sat on PO-1, PO-2 never having reached the ERP, restarted
   under ``line_count_mismatch = "error"``: PO-2 is posted (AK5 E,
   ``rules_changed_after_sending``) though README says a changed level
   applies from then on except to orders the earlier run posted or sent
   (dfc2410 did the same: not this hour's regression). Likely the order rows
   written ``pending`` when the job starts, before any POST, taken as "sent
   without an answer": ``Recorder.held_by`` (``status == 'pending'``) and
   ``sent_unanswered`` (a row without an ERP id).
4. ``test_clients_within_the_cap_never_run_the_database_out_of_descriptors``:
   serve at 64 descriptors (cap 32 connections): rounds of 32 connections
   asking ``/api/jobs/stats`` at once get 3-36 answers 503 "the database is
   not available" (SQLite: "cannot be opened: Too many open files") and
   asyncio's accept logs "out of system resource". At 128 descriptors the
   idle process held 87 descriptors after a few bursts (the threadpool's
   SQLite connections, ~2 a thread, 40 threads), more than the half
   ``web.serving.max_connections`` leaves to the database; 60 clients at once
   (under the cap of 64) got 13 such 503s. Only small limits are hit (the
   shipped unit has LimitNOFILE=16384), but README's guarantee and test_web's
   tests are stated at 64/128.

What held:

* Pipelined requests (three answers, in order), HTTP/1.0, a HEAD with a body
  then a GET on one connection (two answers, the HEAD's without a body); HEAD
  on ``/api/orchestrate`` with a body: 405, nothing recorded.
* A body trickling in for 8 s and a 100-continue body sent 6 s late: both
  recorded ``succeeded``, the connection never cut (the head deadline stops
  at the head); a keep-alive pause of 4 s; a slow reader got all 30 answers.
* 34 slow readers at 32 connections: a fresh ``GET /healthz`` was answered
  200 throughout 20 s (several readers' connections were closed while
  between two pipelined requests, a newcomer taking their place; I could not
  make a lock-out deterministic, so no test). At 4096 descriptors 32 clients
  at once all got 200.
* Orchestrate under a held PostgreSQL lock: 503 within 2-4 s (lock_timeout),
  "nothing was posted" for control_numbers and orders; for job_rollups
  "the ERP accepted PO … but the job is not recorded" and the job left
  ``running`` (as README's ``process`` outage case says; not this hour's).
* Mailbags mixing a latin-1 (0x85 separator) or cp1252 (¦) interchange with
  UTF-8 ones (Š in ISA06 or not), either order: each decoded by its own
  bytes (kept as a test). Separators ¦ (cp1252 and latin-1 bytes), 0x85
  with latin-1 text, NBSP as segment terminator: read as 8eb3714 read them
  (0xFF is refused as a separator, as before); ISA11 = 0xA0 (00501) kept as
  the repetition separator (8eb3714 lost it). ISA16 or ISA11 = 0xA0 draws a
  "padded with non-breaking spaces" warning that is not padding, as in
  8eb3714 (not kept).
"""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest
from daemons import daemons, erp
from test_outsider_round7 import ledger
from test_outsider_round34 import interchange

from helpers import make_po

__all__ = ["daemons", "erp", "ledger"]  # fixtures
from web_site import TOKEN, server, write_config


def read(data: bytes) -> tuple[list, list]:
    """(N1 elements, (encoding, ISA06) per interchange) as the daemon reads ``data``."""
    from edi_inbox.x12.reader import X12Reader

    reader = X12Reader(io.BytesIO(data))
    sets = list(reader.transaction_sets())
    names = [seg.elements for ts in sets for seg in ts.segments if seg.elements[0] == "N1"]
    return names, [(ic.encoding, ic.sender_id.strip()) for ic in reader.interchanges]


# --- the ISA after decoding ---------------------------------------------------------


def test_an_interchange_whose_element_separator_is_nbsp_is_read():
    data = interchange("ACME", "Café", elem="\xa0").encode("cp1252")
    names, summaries = read(data)
    assert names == [["N1", "ST", "Café"]]
    assert summaries == [("cp1252", "ACME")]


@pytest.mark.parametrize(
    ("byte", "placeholder"), [(b"\x85", b"~"), (b"\x85", b"*"), (b"\x95", b"*")]
)
def test_a_separator_in_0x80_0x9f_keeps_cp1252_punctuation(byte, placeholder):
    data = interchange("ACME", "O’Brien €5").encode("cp1252").replace(placeholder, byte)
    names, summaries = read(data)
    assert names == [["N1", "ST", "O’Brien €5"]]
    assert summaries == [("cp1252", "ACME")]


@pytest.mark.parametrize(
    "parts",
    [
        (("ACME", "Café", "\x85", "latin-1"), ("ŠKODA", "Škoda Café", "*", "utf-8")),
        (("ŠKODA", "Škoda Café", "*", "utf-8"), ("BETA", "O’Brien", "¦", "cp1252")),
        (("BETA", "O’Brien", "¦", "cp1252"), ("SKODA", "Škoda Café", "*", "utf-8")),
    ],
)
def test_a_mailbag_decodes_each_interchange_by_its_own_bytes(parts):
    data = b"".join(
        interchange(sender, name, elem=elem).replace("000000001", f"00000000{n}").encode(enc)
        for n, (sender, name, elem, enc) in enumerate(parts, 1)
    )
    names, summaries = read(data)
    assert names == [["N1", "ST", name] for _, name, _, _ in parts]
    # Latin-1 bytes that cp1252 reads alike are labelled cp1252 (as 8eb3714 did,
    # since the fix of the 0x80-0x9F separators).
    labels = {"latin-1": "cp1252"}
    assert summaries == [(labels.get(enc, enc), sender) for sender, _, _, enc in parts]


@pytest.mark.parametrize(
    ("elem", "term", "encoding"),
    [("¦", "~", "cp1252"), ("\x85", "~", "latin-1"), ("*", "\xa0", "cp1252")],
)
def test_non_ascii_separators_outside_nbsp_padding_are_read(elem, term, encoding):
    names, summaries = read(interchange("ACME", "Café", elem=elem, term=term).encode(encoding))
    assert names == [["N1", "ST", "Café"]]
    # Latin-1 bytes that cp1252 reads alike are labelled cp1252 (as 8eb3714 did).
    assert summaries == [("cp1252", "ACME")]


# --- serve's connections -------------------------------------------------------------


def _read_all(conn: socket.socket, timeout: float = 10.0) -> bytes:
    conn.settimeout(timeout)
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def test_pipelined_http10_and_head_with_a_body_are_answered(tmp_path: Path):
    config_path = write_config(tmp_path, f"sqlite:///{tmp_path / 'edi.db'}")
    with server(config_path, tmp_path) as (port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(
                b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /api/jobs/stats HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            data = _read_all(conn)
        assert data.count(b"HTTP/1.1 200 ") == 3, data[:500]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            assert _read_all(conn).startswith(b"HTTP/1.1 200 ")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(
                b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            data = _read_all(conn)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and rest.startswith(b"HTTP/1.1 200 "), data
        assert rest.endswith(b'"status":"ok","version":"0.1.0"}') or b'"status":"ok"' in rest
        po = make_po(777)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(
                (
                    "HEAD /api/orchestrate?file_name=h.edi HTTP/1.1\r\nHost: x\r\n"
                    f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(po)}\r\n"
                    "Connection: close\r\n\r\n"
                ).encode()
                + po
            )
            data = _read_all(conn)
        assert data.startswith(b"HTTP/1.1 405 ") and data.endswith(b"\r\n\r\n"), data
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET /api/jobs/recent HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert b"h.edi" not in _read_all(conn)


# --- an order never sent, in a run cut short ------------------------------------------


@pytest.mark.e2e
@pytest.mark.xfail(
    strict=True,
    reason="an order the ERP never saw, in a file cut short while its first order was at the"
    " ERP, is posted (AK5 E) after the rules were made stricter, instead of refused (AK5 R)",
)
def test_an_order_never_sent_before_a_crash_meets_the_stricter_rules(daemons, ledger):
    """PO-1 good, PO-2 miscounted (CTT*2 over one line: a warning by default).
    The daemon is SIGKILLed while the ERP sits on PO-1, PO-2 never having
    reached it; restarted with ``line_count_mismatch = "error"``. README: a
    changed level applies from then on; only orders the earlier run posted or
    sent are kept as warnings."""
    import threading

    from test_outsider_round7 import ak5s, cli_json, jobs_by_file
    from test_outsider_round32 import STRICT, settled
    from test_truth import file_of
    from test_truth import order as one_line_order

    import uids
    from helpers import poll_until

    daemon = daemons(ledger.url)
    data = file_of(one_line_order(1), one_line_order(2).replace("CTT*1~", "CTT*2~"))
    hold = ledger.hold["PO-1"] = threading.Event()
    daemon.start()
    uids.upload(daemon.inbox / "two.edi", data)
    poll_until(lambda: ledger.arrived["PO-1"] >= 1, what="PO-1 at the ERP")
    daemon.kill()
    assert ledger.arrived["PO-2"] == 0  # PO-2 never left the daemon
    hold.set()
    daemon.config.write_text(daemon.base_config + STRICT)
    daemon.start()
    settled([daemon], 1)
    last = cli_json(daemon, "jobs", "show", jobs_by_file(daemon)["two.edi"][-1]["job_id"])
    statuses = {o["po_number"]: o["status"] for o in last["orders"]}
    assert statuses["PO-1"] == "posted", statuses  # the ERP holds it: kept
    assert "PO-2" not in {po for po, _ in ledger.accepted().values()}
    assert ak5s(daemon, last) == ["A", "R"], statuses


# --- the descriptors left to the database -------------------------------------------


def test_clients_within_the_cap_never_run_the_database_out_of_descriptors(tmp_path: Path):
    """serve at 64 file descriptors (32 connections): four rounds of 32
    connections, each then asking ``/api/jobs/stats`` at once. README: serve
    keeps at most half its descriptors as connections; the other half is the
    database's (``web.serving.max_connections``)."""
    import collections

    from test_web import serve_limited

    config_path = write_config(tmp_path, f"sqlite:///{tmp_path / 'edi.db'}")
    answers: collections.Counter[bytes] = collections.Counter()
    ask = b"GET /api/jobs/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with serve_limited(config_path, tmp_path, 64) as (port, log_path):
        for _ in range(4):  # until a round goes wrong: each ends within seconds
            conns: list[socket.socket] = []
            try:
                for _ in range(32):
                    try:
                        conns.append(socket.create_connection(("127.0.0.1", port), timeout=2))
                    except OSError as exc:
                        answers[f"connect: {type(exc).__name__}".encode()] += 1
                        break
                for conn in conns:
                    conn.sendall(ask)
                for conn in conns:
                    try:
                        answers[_read_all(conn, timeout=5)[:12]] += 1
                    except OSError as exc:
                        answers[type(exc).__name__.encode()] += 1
            finally:
                for conn in conns:
                    conn.close()
            if set(answers) != {b"HTTP/1.1 200"}:
                break
    log = log_path.read_text()
    assert "Too many open files" not in log and "out of system resource" not in log
    assert dict(answers) == {b"HTTP/1.1 200": 128}, dict(answers)
