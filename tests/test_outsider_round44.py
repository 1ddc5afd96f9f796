"""Outside tester, round 44: this session's changes (orders encoded a line at
a time, heads of orders, the compact outbox, DTM04-06 in the JSON and
JSON_VERSION 2, Retry-After against the answer's Date) and the upgrade to
them from 939403b with work in flight.

What I tried
- ``orders.encode`` against ``document_key(po.to_json())`` and ``dumps``: every
  corpus file and six mutations of each (segments repeated, dropped,
  swapped) read by HEAD and by 939403b: the keys agree wherever no DTM has
  DTM04-06; BEG03 ``","lines":[``, REF values ``"lines":[]\\``, quotes and
  backslashes: posted once, found again as duplicates, outbox file once and
  compact (held).
- ``orders.head`` of compact and pretty bodies with hostile values (held).
- The outbox: 939403b's pretty file, then HEAD on the same order with the
  database lost: one file (same key, held); two files of the same PO held
  at the ERP at once (rivals), the second the same or with changed lines,
  judged with its lines dropped after ``validate`` (held).
- The upgrade from 939403b with work in flight, on SQLite and PostgreSQL:
  an order with DTM04 sent unanswered (939403b killed mid-POST) and resumed
  by HEAD; posted then killed on the next order; timed out then resent by
  the partner or ``retry --all-failed``; half a file refused (503) then
  retried; a replace or an original changed only in DTM04/DTM06 after one
  939403b posted; the same without DTM04 (bodies differ in
  ``interchange_date`` only: sent as before, held).
- Memory (peak RSS growth, ``VmHWM`` after ``clear_refs`` 5, ratios only):
  files of 20,000-500,000 PO1 lines of several shapes (ids, 10 id pairs:
  26-42x, held), without and with the daemon's SQLite recorder (20,000
  README lines ~65x with it, 100,000 ~57x, 260,000 ~42x: the database's
  overhead is tens of MB, a ratio only on small files; not pinned), 3,000
  small ordinary orders (~37x, ~51x with the recorder; not pinned).
- ``Retry-After`` dates against ``Date`` in RFC 850 and asctime forms, a
  Date unreadable or impossible, a Retry-After before the Date (held).

Found (strict xfails; 1, 2 and 5 settled the same session — 1 fixed: a
pending order of an interrupted job counts as sent, so the resumed job
takes the key it went under; 2, and 1's PostgreSQL case, were this
file's: ``Daemon()`` wrote its SQLite config over the old site's before it
was read back, so the new daemon ran on an empty database (read first
now); 5: README now gives the cost a line, the test checks that. 3 and 4
fixed the session after: an order an older version recorded is read again
from its job's kept bytes and compared field for field, ``Pipeline._same_as``)
1. 939403b killed while the ERP holds the POST of an order with a DTM04
   zone: HEAD's resumed claim posts it again under its new key (two keys,
   two orders at the ERP), SQLite and PostgreSQL; it should go again under
   the key it was sent under (as a resend or a retry of a timed-out job
   does). ``test_a_zoned_order_sent_unanswered_by_939403b_is_resent_under_its_key``
2. On PostgreSQL only, a DTM04 order 939403b posted and recorded before it
   was killed (on the file's next order) is posted again by HEAD's resumed
   claim under its new key; SQLite holds.
   ``test_a_zoned_order_939403b_posted_before_it_was_killed_is_not_posted_again[pg]``
3. A replace (BEG01 05) that moves only its ship window (DTM05/06) after a
   replace 939403b posted is filed as a duplicate (versions compared on
   common fields: the old JSON has no ``period``): the ERP never gets the
   move; HEAD's own two replaces are both posted.
   ``test_a_replace_moving_the_window_after_the_upgrade_is_posted``
4. An original (00) resent after the upgrade with only its DTM04 changed
   (ET -> PT) is filed as a duplicate and acknowledged, where HEAD rejects
   it when it posted the first itself.
   ``test_an_original_changed_in_its_zone_after_the_upgrade_is_rejected``
5. A file of short priced lines ``PO1*n*1*EA*1`` peaks ~53-57x its size
   (20,000 and 80,000 lines; 47x at 500,000, 8.9 MB), ``PO1*n*1`` ~80x:
   "a file made mostly of lines ~35-45x" holds for lines of ~30 bytes, not
   for shorter ones (a line's objects cost about the same whatever its length).
   ``test_a_file_of_short_priced_lines_stays_within_the_readme_s_45x``
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from daemons import Daemon, erp
from test_hostile import ISA, peak_growth
from test_truth import file_of

from helpers import archived_daemon, poll_until

__all__ = ["erp"]  # fixtures

PREVIOUS = "939403b"  # the commit before this session's changes
HERE = Path(__file__).resolve().parent.parent / "daemon"


@pytest.fixture
def scratch():
    where = Path(tempfile.mkdtemp(prefix="edi-r44-"))
    os.chmod(where, 0o755)
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


def zoned(n: int, quantity: str = "2", dtm: str = "DTM*002*20240201*1200*ET") -> str:
    """An 850 with one line and a DTM carrying DTM04 (its key changed in 2)."""
    return (
        f"ST*850*{n:04d}~BEG*00*SA*PO-{n}**20240102~{dtm}~"
        f"PO1*1*{quantity}*EA*3.50**VP*X1~CTT*1~SE*6*{n:04d}~"
    )


def _listing(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith(".")) if folder.exists() else []


def _start(daemon: Daemon, code: Path | None, monkeypatch) -> None:
    with monkeypatch.context() as m:
        m.setenv("PYTHONPATH", str(code if code is not None else HERE))
        daemon.start()


def _old_site(scratch: Path, erp, db_url: str | None = None) -> tuple[Path, Daemon]:
    code = archived_daemon(PREVIOUS, scratch / "previous")
    root = scratch / "site"
    root.mkdir()
    old = Daemon(root, erp.url)
    if db_url is not None:
        sqlite = json.dumps("sqlite:///" + str(root / "edi-inbox.db"))
        old.config.write_text(old.base_config.replace(sqlite, json.dumps(db_url)))
    return code, old


DBS = ["sqlite", pytest.param("pg", marks=pytest.mark.postgres)]


def _resumed_keys(scratch, erp, db, request, monkeypatch, dtm: str) -> dict[str, set[str]]:
    """939403b killed while the ERP holds PO-4401's POST; HEAD resumes the
    claim. The keys the ERP was sent, by PO number."""
    db_url = request.getfixturevalue("pg_url") if db == "pg" else None
    code, old = _old_site(scratch, erp, db_url)
    new = None
    erp.gate.clear()
    try:
        _start(old, code, monkeypatch)
        (old.inbox / "po4401.edi").write_bytes(file_of(zoned(4401, dtm=dtm), icn="000004401"))
        poll_until(lambda: erp.requests, timeout=15, what="939403b posting PO 4401")
        old.kill()
        erp.gate.set()
        config = old.config.read_text()  # (Daemon() writes its own over the same file)
        new = Daemon(old.root, erp.url)
        new.config.write_text(config)
        _start(new, None, monkeypatch)
        poll_until(lambda: _listing(new.done) or _listing(new.failed), timeout=20, what="filed")
        return dict(erp.keys_by_po())
    finally:
        erp.gate.set()
        if new is not None:
            new.close()
        old.close()


@pytest.mark.parametrize("db", DBS)
def test_an_unzoned_order_sent_unanswered_by_939403b_is_resent_under_its_key(
    scratch, erp, db, request, monkeypatch
):
    """Holds: a DTM without DTM04-06 keeps its key across the upgrade: one key."""
    keys = _resumed_keys(scratch, erp, db, request, monkeypatch, "DTM*002*20240201*1200")
    assert list(keys) == ["PO-4401"] and len(keys["PO-4401"]) == 1, keys


@pytest.mark.parametrize("db", DBS)
def test_a_zoned_order_sent_unanswered_by_939403b_is_resent_under_its_key(
    scratch, erp, db, request, monkeypatch
):
    """939403b is killed while the ERP holds PO-4401's POST (DTM*002 with
    DTM04 ``ET``); HEAD resumes the claim: the order goes to the ERP under
    one Idempotency-Key (the one it was sent under), or the ERP holds two."""
    keys = _resumed_keys(scratch, erp, db, request, monkeypatch, "DTM*002*20240201*1200*ET")
    assert list(keys) == ["PO-4401"] and len(keys["PO-4401"]) == 1, keys


def _edi(code: Path | None, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``edi-inbox --config CONFIG ARGS`` of ``code`` (an archived daemon/) or HEAD."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDI_INBOX_")}
    env["PYTHONPATH"] = str(code if code is not None else HERE)
    command = [sys.executable, "-m", "edi_inbox.cli", "--config", str(config), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, cwd="/")


def _site(root: Path, erp_url: str, db_url: str, erp: str = "") -> Path:
    cfg = root / "edi-inbox.toml"
    cfg.write_text(
        f"[paths]\nroot = {json.dumps(str(root / 'state'))}\n"
        f"[database]\nurl = {json.dumps(db_url)}\n"
        f"[erp]\nurl = {json.dumps(erp_url)}\n{erp}"
        "[daemon]\nsettle_seconds = 0.05\nprocesses = 1\n"
    )
    for d in ("inbox", "processing", "done", "failed", "acks", "outbox"):
        (root / "state" / d).mkdir(parents=True, exist_ok=True)
    return cfg


def _db(scratch: Path, db: str, request) -> str:
    if db == "pg":
        return request.getfixturevalue("pg_url")
    return "sqlite:///" + str(scratch / "edi-inbox.db")


def _timed_out_by_previous(scratch: Path, erp, db: str, request, n: int) -> Path:
    """939403b posts PO-n (DTM04 ``ET``) from ``a.edi``; the ERP takes it but
    answers after the read timeout: the file fails (the ERP may hold it).
    The site's config."""
    old = archived_daemon(PREVIOUS, scratch / "previous")
    cfg = _site(
        scratch,
        erp.url,
        _db(scratch, db, request),
        "read_timeout_seconds = 0.3\nmax_attempts = 1\n",
    )
    (scratch / "state" / "inbox" / "a.edi").write_bytes(file_of(zoned(n), icn=f"{n:09d}"))
    erp.gate.clear()
    try:
        result = _edi(old, cfg, "run", "--once")
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
    finally:
        erp.gate.set()
    assert "a.edi" in _listing(scratch / "state" / "failed"), result.stderr[-2000:]
    return cfg


@pytest.mark.parametrize("db", DBS)
def test_a_zoned_order_939403b_timed_out_on_then_resent_is_held_once(scratch, erp, db, request):
    """Holds: 939403b posts PO-4402 (DTM04 ``ET``); the ERP takes it but answers after
    the read timeout (the job fails: the ERP may hold it). The partner sends
    the order again (a new ISA13); HEAD sends it under the key the ERP holds
    it by (or not at all): the ERP is never given a second key for one order."""
    cfg = _timed_out_by_previous(scratch, erp, db, request, 4402)
    inbox = scratch / "state" / "inbox"
    (inbox / "b.edi").write_bytes(file_of(zoned(4402), icn="000004403"))
    after = _edi(None, cfg, "run", "--once")
    assert "Traceback" not in after.stderr, after.stderr[-2000:]
    keys = erp.keys_by_po()
    assert list(keys) == ["PO-4402"] and len(keys["PO-4402"]) == 1, erp.requests


def replace_of(n: int, dtm: str) -> str:
    """PO-n's replace (BEG01 05) with one line and ``dtm``."""
    return zoned(n, dtm=dtm).replace("BEG*00*", "BEG*05*")


def test_a_replace_moving_the_window_after_the_upgrade_is_posted(scratch, erp):
    """939403b posts PO-4403's replace with a ship window DTM*002 ... RD8
    20240301-20240315; after the upgrade the partner replaces it again, the
    window now 20240301-20240322 (a new ISA13). The second replace is other
    content (HEAD's own two replaces would be: round 43) and is posted, not
    recorded as a duplicate of the first."""
    old = archived_daemon(PREVIOUS, scratch / "previous")
    cfg = _site(scratch, erp.url, _db(scratch, "sqlite", None))
    inbox, done = scratch / "state" / "inbox", scratch / "state" / "done"
    first = "DTM*002*20240301***RD8*20240301-20240315"
    (inbox / "r1.edi").write_bytes(file_of(replace_of(4403, first), icn="000004403"))
    result = _edi(old, cfg, "run", "--once")
    assert _listing(done) == ["r1.edi"] and len(erp.requests) == 1, result.stderr[-2000:]
    second = "DTM*002*20240301***RD8*20240301-20240322"
    (inbox / "r2.edi").write_bytes(file_of(replace_of(4403, second), icn="000004404"))
    after = _edi(None, cfg, "run", "--once")
    assert "Traceback" not in after.stderr, after.stderr[-2000:]
    assert len(erp.requests) == 2, (erp.requests, _listing(done), _listing(done.parent / "failed"))


def test_heads_own_replace_moving_the_window_is_posted(scratch, erp):
    """Holds (control): HEAD posts both replaces when it posted the first too."""
    cfg = _site(scratch, erp.url, _db(scratch, "sqlite", None))
    inbox = scratch / "state" / "inbox"
    first = "DTM*002*20240301***RD8*20240301-20240315"
    (inbox / "r1.edi").write_bytes(file_of(replace_of(4403, first), icn="000004403"))
    _edi(None, cfg, "run", "--once")
    second = "DTM*002*20240301***RD8*20240301-20240322"
    (inbox / "r2.edi").write_bytes(file_of(replace_of(4403, second), icn="000004404"))
    after = _edi(None, cfg, "run", "--once")
    assert "Traceback" not in after.stderr, after.stderr[-2000:]
    assert len(erp.requests) == 2, erp.requests


@pytest.mark.parametrize("db", DBS)
def test_a_zoned_file_half_posted_by_939403b_is_retried_once_by_head(scratch, erp, db, request):
    """Holds: 939403b posts PO-4404 (DTM04) and is refused PO-4405 (a 503,
    one attempt): the file fails. HEAD's ``retry --all-failed`` runs it again:
    PO-4404 is known as posted under the old key (not posted again), PO-4405
    is posted once."""
    old = archived_daemon(PREVIOUS, scratch / "previous")
    cfg = _site(scratch, erp.url, _db(scratch, db, request), "max_attempts = 1\n")
    inbox, failed = scratch / "state" / "inbox", scratch / "state" / "failed"
    data = file_of(zoned(4404), zoned(4405), icn="000004405")
    (inbox / "two.edi").write_bytes(data)
    erp.answers[:] = [201, 503]
    result = _edi(old, cfg, "run", "--once")
    assert "two.edi" in _listing(failed), result.stderr[-2000:]
    retried = _edi(None, cfg, "retry", "--all-failed")
    assert retried.returncode == 0, retried.stderr[-2000:]
    after = _edi(None, cfg, "run", "--once")
    assert "Traceback" not in after.stderr, after.stderr[-2000:]
    assert _listing(scratch / "state" / "done") == ["two.edi"], after.stderr[-2000:]
    keys = erp.keys_by_po()
    assert {po: len(k) for po, k in keys.items()} == {"PO-4404": 1, "PO-4405": 1}, erp.requests


def _lines_file(lines: list[str]) -> bytes:
    body = ["ST*850*0001", "BEG*00*SA*PO-LINES**20240102", *lines, f"CTT*{len(lines)}"]
    segments = [ISA, "GS*PO*HOSTILE*RECEIVER*20240102*1200*1*X*004010", *body]
    segments += [f"SE*{len(body) + 1}*0001", "GE*1*1", "IEA*1*000000001"]
    return ("~".join(segments) + "~").encode()


def test_a_file_of_ordinary_lines_stays_within_the_readme_s_45x(tmp_path):
    """Holds: 20,000 lines ``PO1*n*1*EA*2.5**VP*Xn`` (the README's case)."""
    data = _lines_file([f"PO1*{n}*1*EA*2.5**VP*X{n}" for n in range(1, 20_001)])
    status, grown = peak_growth(tmp_path, data)
    assert status == "succeeded" and grown < 45 * len(data), f"{grown / len(data):.1f}x"


def test_a_file_of_short_priced_lines_costs_what_the_readme_says_a_line(tmp_path):
    """README (as corrected after this finding): a line costs ~0.7-0.8 KB at
    the job's peak, whatever its length, so ~35-45x a file of 30-byte lines
    and ~55x one of ``PO1*n*1*EA*1`` (measured ~53-57x at 20,000 and 80,000
    lines, 47x at 500,000). 20,000 such lines succeed and the peak RSS
    grows by less than 1 KB a line. (Pinned first as a strict xfail: the
    README said "~35-45x" of any file made mostly of lines.)"""
    lines = [f"PO1*{n}*1*EA*1" for n in range(1, 20_001)]
    data = _lines_file(lines)
    status, grown = peak_growth(tmp_path, data)
    assert status == "succeeded" and grown < 1024 * len(lines), f"{grown / len(lines):.0f} B a line"


HOSTILE_PO = '","lines":['


@pytest.mark.parametrize("db", DBS)
def test_a_po_number_reading_like_the_lines_key_is_found_again(scratch, erp, db, request):
    """Holds: BEG03 ``","lines":[`` (and a REF value ``"lines":[]``) posted,
    then resent under a new ISA13: the heads read back find it (a duplicate:
    one POST), and the ERP's body reads back to the same key."""
    cfg = _site(scratch, erp.url, _db(scratch, db, request))
    inbox, done = scratch / "state" / "inbox", scratch / "state" / "done"
    sets = zoned(4406).replace("PO-4406", HOSTILE_PO)
    sets = sets.replace("DTM*", 'REF*ZZ*"lines":[]\\~DTM*').replace("SE*6*", "SE*7*")
    for n, icn in enumerate(("000004406", "000004407")):
        (inbox / f"h{n}.edi").write_bytes(file_of(sets, icn=icn))
        result = _edi(None, cfg, "run", "--once")
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert _listing(done) == ["h0.edi", "h1.edi"], _listing(done.parent / "failed")
    assert [po for _, po in erp.requests] == [HOSTILE_PO], erp.requests


def test_a_hostile_po_number_s_outbox_file_is_its_body(scratch):
    """Holds: with no ERP url, BEG03 ``","lines":[`` is written once into the
    outbox, as the compact body; the resend is a duplicate, nothing written."""
    cfg = _site(scratch, "", _db(scratch, "sqlite", None))
    inbox, outbox = scratch / "state" / "inbox", scratch / "state" / "outbox"
    sets = zoned(4407).replace("PO-4407", HOSTILE_PO)
    for n, icn in enumerate(("000004408", "000004409")):
        (inbox / f"o{n}.edi").write_bytes(file_of(sets, icn=icn))
        result = _edi(None, cfg, "run", "--once")
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
    written = _listing(outbox)
    assert len(written) == 1, written
    text = (outbox / written[0]).read_text()
    assert json.loads(text)["po_number"] == HOSTILE_PO and "\n" not in text.rstrip("\n")


@pytest.mark.parametrize("db", DBS)
def test_a_zoned_order_939403b_timed_out_on_is_retried_under_its_key(scratch, erp, db, request):
    """939403b posts PO-4408 (DTM04 ``ET``); the ERP takes it but answers after
    the read timeout: the file fails (the ERP may hold it). The operator runs
    HEAD's ``retry --all-failed``: the order is sent again under the key it
    was sent under (the ERP answers with the order it holds), never a second."""
    cfg = _timed_out_by_previous(scratch, erp, db, request, 4408)
    retried = _edi(None, cfg, "retry", "--all-failed")
    assert retried.returncode == 0, retried.stderr[-2000:]
    after = _edi(None, cfg, "run", "--once")
    assert "Traceback" not in after.stderr, after.stderr[-2000:]
    keys = erp.keys_by_po()
    assert list(keys) == ["PO-4408"] and len(keys["PO-4408"]) == 1, erp.requests


def test_an_original_changed_in_its_zone_after_the_upgrade_is_rejected(scratch, erp):
    """939403b posts PO-4409 (BEG01 00, DTM*002 ... 1200 ``ET``); after the
    upgrade the partner sends BEG01 00 again with the time now ``PT`` (a new
    ISA13). HEAD, had it posted the first, rejects the second (other content:
    a change is a replace); after the upgrade it must too, not file it as a
    duplicate the ERP never hears of."""
    old = archived_daemon(PREVIOUS, scratch / "previous")
    cfg = _site(scratch, erp.url, _db(scratch, "sqlite", None))
    inbox, done = scratch / "state" / "inbox", scratch / "state" / "done"
    (inbox / "e.edi").write_bytes(file_of(zoned(4409), icn="000004409"))
    result = _edi(old, cfg, "run", "--once")
    assert _listing(done) == ["e.edi"] and len(erp.requests) == 1, result.stderr[-2000:]
    pacific = zoned(4409, dtm="DTM*002*20240201*1200*PT")
    (inbox / "p.edi").write_bytes(file_of(pacific, icn="000004410"))
    after = _edi(None, cfg, "run", "--once")
    assert "Traceback" not in after.stderr, after.stderr[-2000:]
    assert "p.edi" in _listing(scratch / "state" / "failed"), _listing(done)


def test_heads_own_original_changed_in_its_zone_is_rejected(scratch, erp):
    """Holds (control): HEAD posted the ``ET`` original; the ``PT`` one fails."""
    cfg = _site(scratch, erp.url, _db(scratch, "sqlite", None))
    inbox = scratch / "state" / "inbox"
    (inbox / "e.edi").write_bytes(file_of(zoned(4409), icn="000004409"))
    _edi(None, cfg, "run", "--once")
    pacific = zoned(4409, dtm="DTM*002*20240201*1200*PT")
    (inbox / "p.edi").write_bytes(file_of(pacific, icn="000004410"))
    after = _edi(None, cfg, "run", "--once")
    assert "Traceback" not in after.stderr, after.stderr[-2000:]
    assert "p.edi" in _listing(scratch / "state" / "failed"), after.stderr[-2000:]
    assert len(erp.requests) == 1, erp.requests


@pytest.mark.parametrize(
    ("retry_after", "date", "seconds"),
    [
        ("Sun, 06 Nov 1994 08:49:47 GMT", "Sun, 06 Nov 1994 08:49:37 GMT", 10.0),
        ("Sun, 06 Nov 1994 08:49:47 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", 10.0),  # RFC 850
        ("Sun, 06 Nov 1994 08:49:47 GMT", "Sun Nov  6 08:49:37 1994", 10.0),  # asctime
        ("Sunday, 06-Nov-94 08:49:47 GMT", "Sun, 06 Nov 1994 08:49:37 GMT", 10.0),
        ("Sun, 06 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:47 GMT", 0.0),  # past
        ("Sun, 06 Nov 1994 08:49:47 GMT", "not a date", 0.0),  # ours: long past
        ("Sun, 06 Nov 1994 08:49:47 GMT", "Sun, 31 Feb 1994 08:49:37 GMT", 0.0),
        ("120", "Sun, 06 Nov 1994 08:49:37 GMT", 120.0),  # delta-seconds: no Date needed
        ("-1", "Sun, 06 Nov 1994 08:49:37 GMT", None),
    ],
)
def test_retry_after_is_read_against_the_answer_s_date(retry_after, date, seconds):
    """Holds: ``Retry-After`` dates read against the answer's ``Date`` in all
    three HTTP date forms; an unreadable ``Date`` falls back to our clock."""
    from edi_inbox.erp import _retry_after

    assert _retry_after(retry_after, date) == seconds


def test_head_of_a_body_reads_every_field_before_its_lines():
    """Holds: ``orders.head`` of a body written the compact way, a pretty one
    (an older outbox's) gives the fields the
    duplicate checks read: sender, PO number, purpose."""
    from edi_inbox import orders
    from edi_inbox.jsontext import dumps

    document = {
        "sender_qualifier": "ZZ",
        "sender_id": 'A"B',
        "po_number": HOSTILE_PO,
        "purpose": "00",
        "references": [{"value": '"lines":[]\\'}],
        "lines": [{"number": "1"}],
        "totals": None,
    }
    wanted = {k: document[k] for k in ("sender_qualifier", "sender_id", "po_number", "purpose")}
    for text in (dumps(document), json.dumps(document, indent=2)):
        found = orders.head(text)
        assert {k: found.get(k) for k in wanted} == wanted, text


@pytest.mark.parametrize("db", DBS)
def test_a_zoned_order_939403b_posted_before_it_was_killed_is_not_posted_again(
    scratch, erp, db, request, monkeypatch
):
    """939403b posts PO-4410 (DTM04, answered and recorded), then is killed
    while the ERP holds PO-4411's POST (that one: see the test above); HEAD
    resumes the claim: PO-4410 is known as posted, never posted again under
    its new key (on both databases: the PostgreSQL case's new daemon first
    ran on an empty SQLite file, this file's own mistake)."""
    db_url = request.getfixturevalue("pg_url") if db == "pg" else None
    code, old = _old_site(scratch, erp, db_url)
    hold = threading.Event()
    erp.wait_for = lambda po: hold.wait(60) if po == "PO-4411" else None
    new = None
    try:
        _start(old, code, monkeypatch)
        data = file_of(zoned(4410), zoned(4411), icn="000004410")
        (old.inbox / "two.edi").write_bytes(data)
        poll_until(lambda: len(erp.requests) == 2, timeout=15, what="939403b at PO 4411")
        old.kill()
        hold.set()
        config = old.config.read_text()  # (Daemon() writes its own over the same file)
        new = Daemon(old.root, erp.url)
        new.config.write_text(config)
        _start(new, None, monkeypatch)
        poll_until(lambda: _listing(new.done) or _listing(new.failed), timeout=20, what="filed")
        assert len(erp.keys_by_po()["PO-4410"]) == 1, erp.requests
    finally:
        hold.set()
        if new is not None:
            new.close()
        old.close()


_KEYS = """
import io, json, sys
from edi_inbox import orders
from edi_inbox.x12.reader import X12Reader
out = {}
for path in json.load(sys.stdin):
    found = []
    try:
        with open(path, "rb") as f:
            sets = list(X12Reader(io.BytesIO(f.read())).transaction_sets())
    except Exception as exc:
        out[path] = [["unread", type(exc).__name__, None]]
        continue
    for ts in sets:
        if ts.code != "850":
            continue
        try:
            po = orders.from_transaction(ts)
        except Exception as exc:
            found.append(["refused", type(exc).__name__, None])
            continue
        found.append([po.po_number, orders.idempotency_key(po), po.to_json()])
    out[path] = found
print(json.dumps(out, default=str))
"""


def _zoned_json(document: dict | None) -> bool:
    dates = list((document or {}).get("dates", []))
    dates += [d for line in (document or {}).get("lines", []) for d in line.get("dates", [])]
    return any("time_code" in d or "period" in d for d in dates)


def test_corpus_orders_and_mutations_keep_their_keys_across_the_upgrade(scratch):
    """Holds: every corpus file and 6 mutations of each (a segment repeated,
    dropped, two swapped), read by 939403b and by HEAD: the same orders, the
    same keys, but where a DTM has DTM04-06 (which changed on purpose)."""
    import random

    from helpers import CORPUS, script_json

    old = archived_daemon(PREVIOUS, scratch / "previous")
    paths = [p for p in sorted(CORPUS.iterdir()) if p.suffix != ".md"]
    rng = random.Random(44)
    (scratch / "mutated").mkdir()
    for path in list(paths):
        data = path.read_bytes()
        if len(data) < 106:
            continue
        segments = data.split(data[105:106])
        for k in range(6):
            if len(segments) < 8:
                break
            cut = list(segments)
            i = rng.randrange(3, len(cut) - 3)
            if k % 3 == 0:
                cut.insert(i, cut[i])
            elif k % 3 == 1:
                del cut[i]
            else:
                cut[i], cut[i + 1] = cut[i + 1], cut[i]
            mutated = scratch / "mutated" / f"{path.name}.{k}"
            mutated.write_bytes(data[105:106].join(cut))
            paths.append(mutated)
    names = [str(p) for p in paths]
    head, before = script_json(HERE, _KEYS, names), script_json(old, _KEYS, names)
    differ = [
        (name, new[0], new[1], was[1])
        for name in names
        for new, was in zip(head[name], before[name], strict=True)
        if new[1] != was[1] and not _zoned_json(new[2]) and not _refused_since(name, new)
    ]
    assert len(names) > 150 and differ == []


def _refused_since(name: str, new: list) -> bool:
    """A mutation (or the corpus file broken on purpose) the element checks
    of round 49 refuse (a PO108 of ten characters, a CTP05 without CTP04…),
    which 939403b read: refused on purpose, no key to compare (``SetErrors``,
    an ``X12Error`` naming each broken segment)."""
    mutated = Path(name).parent.name == "mutated" or name.endswith("SyntaxNotes.ERR.edi")
    return mutated and new[0] == "refused" and new[1] in ("X12Error", "SetErrors")


@pytest.mark.parametrize("quantity", ["2", "7"], ids=["same", "changed_lines"])
def test_a_rival_file_of_the_same_po_waits_and_is_judged_on_its_lines(
    scratch, erp, monkeypatch, quantity
):
    """Holds: file A's PO-4412 is at the ERP (held) when file B brings PO-4412
    again (a new ISA13; the same line, or the line changed). B (claimed while
    A is held) waits for A, or finds it posted, and is judged with its lines
    dropped after ``validate``: a duplicate (no POST), or rejected as other
    content (no POST). One POST in all."""
    root = scratch / "site"
    root.mkdir()
    daemon = Daemon(root, erp.url)
    hold = threading.Event()
    erp.wait_for = lambda po: hold.wait(60) if not hold.is_set() else None
    try:
        _start(daemon, None, monkeypatch)
        (daemon.inbox / "a.edi").write_bytes(file_of(zoned(4412), icn="000004412"))
        poll_until(lambda: erp.requests, timeout=15, what="A at the ERP")
        again = file_of(zoned(4412, quantity=quantity), icn="000004413")
        (daemon.inbox / "b.edi").write_bytes(again)
        poll_until(lambda: "b.edi" not in _listing(daemon.inbox), timeout=15, what="B claimed")
        hold.set()
        poll_until(
            lambda: len(_listing(daemon.done) + _listing(daemon.failed)) >= 2,
            timeout=20,
            what="both filed",
        )
        assert len(erp.requests) == 1, erp.requests
        filed_b = "b.edi" in _listing(daemon.failed)
        assert filed_b == (quantity != "2"), (_listing(daemon.done), _listing(daemon.failed))
    finally:
        hold.set()
        daemon.close()


def test_an_outbox_file_939403b_wrote_pretty_is_not_written_again_compact(scratch):
    """Holds: 939403b writes PO-4414 (no DTM04) into the outbox as pretty JSON;
    the database is then lost and HEAD reads the same order again: its key is
    the same, so the outbox keeps the one file (939403b's), not a second."""
    old = archived_daemon(PREVIOUS, scratch / "previous")
    database = scratch / "edi-inbox.db"
    cfg = _site(scratch, "", "sqlite:///" + str(database))
    inbox, outbox = scratch / "state" / "inbox", scratch / "state" / "outbox"
    (inbox / "a.edi").write_bytes(file_of(zoned(4414, dtm="DTM*002*20240201"), icn="000004414"))
    result = _edi(old, cfg, "run", "--once")
    written = _listing(outbox)
    assert len(written) == 1 and "\n  " in (outbox / written[0]).read_text(), result.stderr
    for path in scratch.glob("edi-inbox.db*"):
        path.unlink()
    again = file_of(zoned(4414, dtm="DTM*002*20240201"), icn="000004415")
    (inbox / "b.edi").write_bytes(again)
    after = _edi(None, cfg, "run", "--once")
    assert "Traceback" not in after.stderr, after.stderr[-2000:]
    assert "b.edi" in _listing(scratch / "state" / "done"), after.stderr[-2000:]
    assert _listing(outbox) == written
