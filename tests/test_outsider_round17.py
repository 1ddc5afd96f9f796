"""Outsider round 17: is what the daemon tells the ERP (the POST body), the
partner (the 997) and the operator (``jobs show --json``, ``error.json``)
the truth of the partner's X12 file? Every check reads the X12 with this
module's own splitter (ISA fixed width: the element separator at byte 3,
the segment terminator at byte 105), not the daemon's reader. About 30 s
(with PostgreSQL).

Tried: every 850 of the public corpus (tests/data/corpus) through one
``edi-inbox process`` with a recording ERP: each body's BEG03, its lines
(count = PO1 count), each line's PO102 and its price (PO104, or the CTP03
of a UCP/CON/NET CTP) as text, the currency, each amount and total_amount
= sum of the lines' amounts; each 997's AK2 per ST (in order), AK5 A/E only
for a set posted (or a duplicate of one), R otherwise, AK9 03/04; every
non-850 file (810, 855, 856, 820, 940, 210, 270, 322, HIPAA) never posted;
the hard-wrapped .16 and the EBCDIC file against their unwrapped text. Two
corpus files (one partial: a line of quantity 0) through a real daemon:
``jobs show --json`` and ``failed/NAME.error.json`` against the ERP.
``jobs show`` totals on SQLite and PostgreSQL (15-digit quantities and
prices, 1E-15, per hundred/thousand). Mutations of an 850: PO105 HP/PE/
``HP ``/``hp``/`` TP``; quantities ``+5``, ``.5``, ``4.``, ``004``,
``1E3``, ``-2``, ``0x10``, ``1_000``, `` 4``, ``4 ``, an Arabic-Indic
digit, 32 digits; prices ``-3.50``, ``-0.00``, ``3,00``, ``NaN``,
``Infinity``, ``0.000000125``; PO104 empty with CTP UCP (CTP09 TP/HP,
CTP04/05 per case, CTP06/07 CSD 0.5), PO104 and a CTP, CTP RES alone;
lowercase ``po1``; ``P01``; CTT01 wrong; AMT*TT wrong, right, twice, with
HP, with an unpriced line; CUR in the header, the PO1 loop, the CTP loop,
after CTT, twice, ``CUR*SE*CAD``, ``CUR*BY*USD*1.3*SE*CAD``; two BEGs, REF
before BEG, a PO1 after CTT; two STs with one PO (same content, other
content, BEG01 05); BEG01 01; two GS groups; GS01 IN, FA (with an 850),
PO (with a 997); ISA16 ``.`` and ``-``; ERP 422 for one of two orders.

Held: the corpus, body by body and 997 by 997; non-850s failed with
"transaction set NNN is not handled", nothing posted; PO105 HP (700 for
200 at 350) and PE; every malformed number refused (AK3 PO1, AK4 element,
AK5 R), never posted; ``.5``/``4.``/``004`` posted as 0.5/4/4; CTP UCP
used when PO104 is empty, PO104 when both, RES never (unpriced); CTT01
wrong: AK5 E, AK3 CTT; AMT*TT wrong: refused, AK3 AMT at its set position,
AK4 2; two STs with one PO: other content refused (AK9 P), identical
posted once (both A), a replace posted; a 422: AK5 R, the order
``rejected`` with the ERP's words in ``jobs show``; ``jobs show`` and
error.json agree with the ERP (statuses, totals, PO1 named for the
quantity 0, AK3 PO1 at position 12 of its set); totals exact on both
databases. Read as documented, not claimed: a partly priced order's
total_amount is the priced lines' sum (``priced`` true, the unpriced
line's ``unit_price`` null); a price of ``-0.00`` posted as written; GS01
IN holding an 850 posted; CTP06/07 multipliers and CUR exchange rates
ignored (their reading varies by guide); CTT02 not checked.

Found (each fixed since; every test here failed before its fix; the symptoms
as the code did it then):

* ``test_a_ctp_priced_per_thousand_reaches_the_erp_per_thousand``:
  ``PO1*1*2000*EA***VP*X1~CTP**UCP*15.00******TP~`` (CTP09 = TP, element
  639, the basis of CTP03: 15.00 per thousand, 30.00) is posted with
  ``unit_price`` 15.00, ``price_basis`` "", total_amount 30000.00; 997 AK5
  A. orders.py ``priced_units`` reads PO105 only ("a CTP price is per
  unit"). ``CTP**UCP*350******HP`` with 200 EA: 70000 for 700.
* ``test_a_currency_the_partner_sent_reaches_the_erp`` [ctp-loop,
  po1-loop, after-ctt]: header ``CUR*BY*USD``, the line priced under
  ``CUR*BY*EUR`` in its CTP loop or right after its PO1 (both 4010 850
  positions; edinet__x12.850.issue135.edi has a CUR after each PO1): the
  ERP gets ``currency`` "USD", 2.25, total 9.00, 997 A, no EUR anywhere
  in the body. A lone CUR after CTT: ``currency`` "", 997 A. (Fixed: a
  line's CUR is its ``currency``; one not the order's is the rule
  ``currency_mismatch``; a segment after CTT but AMT ``misplaced_segment``.)
* ``test_a_ctp_price_per_case_is_not_posted_as_a_price_per_each``:
  ``PO1*1*24*EA***VP*X1~CTP**UCP*48.00*1*CA~`` (48.00 per 1 CA, CTP04/05)
  posted as 24 EA at 48.00 (``unit`` "EA"), total 1152.00, 997 A. (Fixed:
  ``price_unit_mismatch`` refuses a CTP05 unit other than PO103's.)
* ``test_a_small_price_reaches_the_erp_as_the_partner_wrote_it``: PO104
  ``0.000000125`` posted as ``unit_price`` "1.25E-7" (``str(Decimal)``),
  README: "every amount and quantity a decimal string"; 997 A.
* ``test_a_segment_sent_twice_where_x12_allows_one_is_not_acknowledged_clean``
  [second-beg, second-cur]: ``BEG…F-ONE`` then ``BEG…F-TWO`` posts F-ONE
  alone; ``CUR*BY*USD~CUR*BY*EUR`` posts USD; both 997 AK5 A, no AK3 (BEG
  and the header CUR have a maximum use of 1).
* ``test_an_amt_total_is_not_refused_against_a_sum_missing_an_unpriced_line``:
  ``PO1*1*4*EA*3.00`` + ``PO1*2*2*EA***`` (priced by the ERP) +
  ``AMT*TT*20``: job failed "AMT*TT total 20 does not match the lines'
  total 12.00", 997 AK3 AMT / AK4 2 / AK5 R: 12.00 is no total while a
  line is unpriced (the check is skipped only when no line has a price,
  rules.py ``po.total_amount is None``).
* ``test_an_850_in_a_group_labelled_fa_is_not_dropped_as_succeeded``:
  ``GS*FA*…`` holding ``ST*850``: job ``succeeded``, no order, nothing
  posted, no 997 (the TA1 says A); README: such a file goes to done/.
* ``test_an_unrecognized_segment_in_a_set_is_not_acknowledged_clean``:
  ``PO1*1*4…~P01*2*5*EA*3.00…`` (a zero for the O): one line (12.00)
  posted, 997 AK5 A, no AK3 (AK304 1, unrecognized segment ID); ``po1``
  is refused, ``P01`` dropped without a word.
* ``test_a_per_hundred_basis_written_otherwise_is_not_posted_per_unit``
  [padded, lowercase]: PO105 ``HP `` passes the length check (`` TP`` is
  refused for 3 characters, ``HP `` is not) and misses
  ``PRICE_BASIS_UNITS``: body ``price_basis`` "HP " beside amount and
  total 70000 for 200 at 350 per hundred (700); ``hp`` the same; 997 A.

Real parts: ``edi-inbox process`` and ``edi-inbox run`` subprocesses, a
real HTTP ERP on 127.0.0.1 that records each body, SQLite under
``tmp_path`` and a PostgreSQL schema of its own, uploads by the partner's
uid. No mocks, no fixed sleeps.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal, localcontext
from pathlib import Path

import pytest
from daemons import Daemon, Erp, daemons
from test_outsider_round13 import cli, interchange, write_config

import uids
from helpers import CORPUS, http_server, poll_until

__all__ = ["daemons"]  # fixtures

pytestmark = pytest.mark.e2e


# --- an independent reading of X12 ---------------------------------------------


def split(data: bytes) -> list[list[list[str]]]:
    """Each interchange of ``data`` as its segments (lists of elements), read
    from the ISA's fixed width: byte 3 the element separator, byte 105 the
    segment terminator; CR/LF around segments (and spaces before one) dropped."""
    out = []
    at = data.find(b"ISA")
    while at != -1 and at + 106 <= len(data):
        sep, term = data[at + 3 : at + 4], data[at + 105 : at + 106]
        iea = data.find(b"IEA" + sep, at)
        stop = data.find(term, iea) if iea != -1 else -1
        stop = len(data) if stop == -1 else stop + 1
        segments = []
        for raw in data[at:stop].split(term):
            raw = raw.strip(b"\r\n").lstrip(b" ")  # a space or line end between segments
            if raw.strip():
                segments.append(raw.decode("latin-1").split(sep.decode("latin-1")))
        out.append(segments)
        at = data.find(b"ISA", stop)
    return out


def element(segment: list[str], n: int) -> str:
    return segment[n] if len(segment) > n else ""


def sets(data: bytes) -> list[dict]:
    """Every transaction set: its ISA13, GS06, ST01, ST02, BEG03, header CUR02,
    and per PO1 its PO102/PO103/PO104/PO105 and its first CTP."""
    found: list[dict] = []
    for segments in split(data):
        icn, gs06, current = segments[0][13], "", None
        for s in segments:
            tag = s[0]
            if tag == "GS":
                gs06 = element(s, 6)
            elif tag == "ST":
                current = {
                    "icn": icn,
                    "gs06": gs06,
                    "st01": element(s, 1),
                    "st02": element(s, 2),
                    "po": "",
                    "currency": "",
                    "lines": [],
                }
                found.append(current)
            elif current is None:
                continue
            elif tag == "BEG":
                current["po"] = element(s, 3)
            elif tag == "CUR" and not current["lines"] and not current["currency"]:
                current["currency"] = element(s, 2)
            elif tag == "PO1":
                current["lines"].append(
                    {
                        "qty": element(s, 2),
                        "unit": element(s, 3),
                        "price": element(s, 4),
                        "basis": element(s, 5),
                        "ctp": None,
                    }
                )
            elif tag == "CTP" and current["lines"] and current["lines"][-1]["ctp"] is None:
                current["lines"][-1]["ctp"] = s
            elif tag == "SE":
                current = None
    return found


def acks_997(data: bytes) -> list[tuple[str, list[tuple[str, str]], list[str]]]:
    """Each 997 group: (AK102, [(AK202, AK501) in order], AK9)."""
    out = []
    for segments in split(data):
        ak1, answers, ak2 = "", [], ""
        for s in segments:
            if s[0] == "AK1":
                ak1 = element(s, 2)
            elif s[0] == "AK2":
                ak2 = element(s, 2)
            elif s[0] == "AK5":
                answers.append((ak2, element(s, 1)))
            elif s[0] == "AK9":
                out.append((ak1, answers, s))
                ak1, answers = "", []
    return out


# --- the ERP and a run ------------------------------------------------------------


class RecordingErp(Erp):
    """The suite's ERP, keeping every body under the id it answers with."""

    def __init__(self, server) -> None:
        super().__init__(server)
        self.bodies: list[dict] = []
        self.by_id: dict[str, dict] = {}

    def answered(self, key: str, order: dict, status: int) -> None:
        if status == 201:
            self.bodies.append(order)
            self.by_id[f"ERP-{key[:12]}"] = order


@pytest.fixture
def recording():
    with http_server() as server:
        erp = RecordingErp(server)
        yield erp
        erp.gate.set()


def process(root: Path, erp: RecordingErp, *paths: Path) -> list[dict]:
    config = write_config(root, erp.url)
    result = cli(config, "process", *map(str, paths), "--json", timeout=120)
    assert result.stdout, result.stderr
    jobs = json.loads(result.stdout)
    return jobs if isinstance(jobs, list) else [jobs]


def posted_ids(job: dict) -> list[str]:
    return [
        i
        for s in job["steps"]
        if s["step_name"] == "post_to_erp"
        for i in (s["data"] or {}).get("erp_po_ids", [])
        if i
    ]


def one_po(po: str, st: str, *lines: str, header: str = "", ctt: int | None = None) -> str:
    """An 850 set: BEG03 ``po``, ``header`` segments, the PO1 loops, CTT, SE."""
    body = f"ST*850*{st}~BEG*00*SA*{po}**20240102~{header}" + "".join(lines)
    count = sum(1 for line in lines if line.startswith("PO1"))
    body += f"CTT*{count if ctt is None else ctt}~"
    return body + f"SE*{body.count('~') + 1}*{st}~"


def run_one(tmp_path: Path, erp: RecordingErp, x12: str | bytes, name: str = "po.edi"):
    """``x12`` (a set, or a whole file) through ``process``: the job, the
    bodies the ERP took, the 997s' groups."""
    data = interchange(x12, ack="1") if isinstance(x12, str) else x12
    path = tmp_path / name
    path.write_bytes(data)
    (job,) = process(tmp_path, erp, path)
    groups = [
        g
        for a in job["acks"]
        if a.endswith(".997")
        for g in acks_997((tmp_path / "acks" / a).read_bytes())
    ]
    return job, list(erp.bodies), groups


def line_amount(line: dict) -> Decimal:
    units = {"HP": 100, "TP": 1000}.get(line["basis"], 1) if line["price"] else 1
    price = line["price"] or element(line["ctp"] or [], 3)
    return Decimal(line["qty"]) * Decimal(price) / units


# --- the corpus --------------------------------------------------------------------

# Read as plain X12 by the splitter (the hard-wrapped, EBCDIC and BOM/NBSP
# files are left to the daemon's own tests).
CORPUS_850 = [
    "botsplugins__850-004010-01.x12",
    "botsplugins__850-004010-02.x12",
    "botsplugins__850-004010-03.x12",
    "botsplugins__850-004010-04.x12",
    "botsplugins__850-004010-05.x12",
    "botsplugins__850-004010-06.x12",
    "botsplugins__850-004010-07.x12",
    "botsplugins__850-004010-10.x12",
    "botsplugins__850-004010-12.x12",
    "botsplugins__850-004010-ascii-lf.x12",
    "botsplugins__850-004010.13.x12",
    "botsplugins__850-004010.14.x12",
    "botsplugins__850-004010.15.x12",
    "botsplugins__850-004010VICS-01.x12",
    "botsplugins__850-004030-02.x12",
    "botsplugins__850_01.x12",
    "botsplugins__mailbag01.x12",
    "nodex12__850.edi",
    "nodex12__850_fat.edi",
    "ediengine__850.OK.edi",
    "ediengine__850.Composite.SLN.OK.edi",
    "ediengine__850.SyntaxNotes.ERR.edi",
    # edinet__x12.850.issue135.edi: no ISA16 (byte 105 is the LF, ST02 reads "0001~")
]
NOT_850 = [
    "botsplugins__810-004010-01.x12",
    "botsplugins__855-004010UCS-01.x12",
    "botsplugins__856_1.x12",
    "botsplugins__PARTNER2_20130123_1.x12",
    "botsplugins__testx12020.x12.txt",
    "ediengine__856.Crossdock.OK.edi",
    "ediengine__MultipleInterchangesAndGroups.edi",
    "fifoa__sample_message",
    "nodex12__855.edi",
    "nodex12__856.edi",
    "omniparser__2_ups_edi_210.input.txt",
    "oopx12__Example1_IG_0x1D.txt",
    "stedi__inbound.edi",
    "vscodex12__old.edi",
]


def test_held_the_corpus_850s_reach_the_erp_and_the_997_as_the_x12_says(tmp_path, recording):
    """Every body against the X12, every 997 against what was posted."""
    names = CORPUS_850 + NOT_850
    jobs = process(tmp_path, recording, *(CORPUS / n for n in names))
    by_file = {j["file_name"]: j for j in jobs}
    assert sorted(by_file) == sorted(names)
    problems: list[str] = []
    checked = 0
    for name in names:
        job, data = by_file[name], (CORPUS / name).read_bytes()
        ours = sets(data)
        if name in NOT_850:
            assert job["status"] == "failed", name
            assert "is not handled" in job["error"], name
            posted_pos = {recording.by_id[i]["po_number"] for i in posted_ids(job)}
            assert not posted_pos, name
            continue
        if job["status"] == "duplicate":
            continue  # all of it posted by an earlier file of this run
        bodies = [recording.by_id[i] for i in posted_ids(job) if i in recording.by_id]
        posted: set[tuple[str, str, str]] = set()
        for body in bodies:
            key = (
                body["interchange_control_number"],
                body["group_control_number"],
                body["set_control_number"],
            )
            mine = [s for s in ours if (s["icn"], s["gs06"], s["st02"]) == key]
            match = [s for s in mine if s["po"] == body["po_number"]]
            if not match:
                problems.append(f"{name} {key}: PO {body['po_number']} is in no such set")
                continue
            s = match[0]
            posted.add(key)
            checked += 1
            lines = body["lines"]
            if len(lines) != len(s["lines"]):
                problems.append(f"{name} {s['po']}: {len(lines)} lines, X12 {len(s['lines'])}")
                continue
            total = Decimal(0)
            for got, want in zip(lines, s["lines"], strict=True):
                if Decimal(got["quantity"]) != Decimal(want["qty"]):
                    problems.append(f"{name} {s['po']}: qty {got['quantity']} X12 {want['qty']}")
                price = want["price"] or element(want["ctp"] or [], 3)
                if price and Decimal(got["unit_price"]) != Decimal(price):
                    problems.append(f"{name} {s['po']}: price {got['unit_price']} X12 {price}")
                if price:
                    total += line_amount(want)
                    if Decimal(got["amount"]) != line_amount(want):
                        problems.append(f"{name} {s['po']}: amount {got['amount']}")
            if body["total_amount"] is not None and Decimal(body["total_amount"]) != total:
                problems.append(f"{name} {s['po']}: total {body['total_amount']} X12 {total}")
            if body["currency"] != s["currency"]:
                problems.append(f"{name} {s['po']}: currency {body['currency']!r}")
        # the 997s: AK2 per ST of the group (in order), A/E only for a posted set
        for ack in job["acks"]:
            if not ack.endswith(".997"):
                continue
            for gs06, answers, ak9 in acks_997((tmp_path / "acks" / ack).read_bytes()):
                group = [s for s in ours if s["gs06"] == gs06]
                accepted = sum(1 for _, code in answers if code in "AE")
                if int(element(ak9, 4)) != accepted:
                    problems.append(f"{ack}: AK9 04 {element(ak9, 4)}, {accepted} accepted")
                if int(element(ak9, 3)) != len(answers):
                    problems.append(f"{ack}: AK9 03 {element(ak9, 3)}, {len(answers)} AK2")
                icns = {s["icn"] for s in group}
                for st02, code in answers:
                    was = any((icn, gs06, st02) in posted for icn in icns)
                    if code == "A" and not was:
                        problems.append(f"{ack}: ST {st02} A, not posted")
                    if code == "R" and was and len([a for a in answers if a[0] == st02]) == 1:
                        problems.append(f"{ack}: ST {st02} R, posted")
    assert not problems, problems
    assert checked >= 25  # bodies compared line by line


# --- the operator's view, through a real daemon --------------------------------------


def test_held_jobs_show_and_error_json_tell_what_the_erp_got(daemons, recording):
    """A real daemon, two corpus files: 05 (two orders, CRLF) and .15 (four
    orders, ``|`` separators, one line of quantity 0). ``jobs show --json``
    and ``failed/….error.json`` against the ERP's bodies."""
    d: Daemon = daemons(recording.url)
    d.start()
    good, mixed = "botsplugins__850-004010-05.x12", "botsplugins__850-004010.15.x12"
    uids.upload(d.inbox / good, (CORPUS / good).read_bytes())
    uids.upload(d.inbox / mixed, (CORPUS / mixed).read_bytes())
    poll_until(lambda: (d.done / good).exists() and (d.failed / mixed).exists(), 30)
    poll_until(lambda: (d.failed / f"{mixed}.error.json").exists(), 10)
    by_po = {b["po_number"]: b for b in recording.bodies}
    assert len(by_po) == len(recording.bodies) == 5  # 2 + 3, each once
    for name in (good, mixed):
        (row,) = [j for j in d.jobs() if j["file_name"] == name]
        shown = json.loads(d.cli("jobs", "show", row["job_id"], "--json").stdout)
        ours = sets((CORPUS / name).read_bytes())
        ids = posted_ids(shown)
        total = sum(Decimal(recording.by_id[i]["total_amount"] or 0) for i in ids)
        assert Decimal(shown["total_amount"] or 0) == total
        assert sorted(recording.by_id[i]["po_number"] for i in ids) == sorted(
            s["po"] for s in ours if s["po"] in by_po
        )
        for order in shown["orders"]:  # each order's status and total, as the ERP has it
            assert (order["status"] == "posted") == (order["po_number"] in by_po), order
            if order["status"] == "posted":
                erp_total = by_po[order["po_number"]]["total_amount"]
                assert order["total_amount"] == erp_total, order
    report = json.loads((d.failed / f"{mixed}.error.json").read_text())
    mixed_pos = {s["po"] for s in sets((CORPUS / mixed).read_bytes())}
    posted = {o["po_number"] for o in report["orders"] if o["status"] == "posted"}
    assert posted == mixed_pos & set(by_po)
    (rejected,) = [o for o in report["orders"] if o["status"] == "rejected"]
    assert rejected["po_number"] not in by_po
    text = json.dumps(rejected)
    assert "PO1" in text and "quantity" in text
    # the 997's AK3 points at that PO1 by its position in its set
    (segments,) = split((CORPUS / mixed).read_bytes())
    zero = next(i for i, seg in enumerate(segments) if seg[0] == "PO1" and seg[2] == "0")
    st = max(i for i, seg in enumerate(segments[:zero]) if seg[0] == "ST")
    (ack,) = [a for a in os.listdir(d.root / "acks") if a.startswith(mixed) and a.endswith(".997")]
    ((ack_segments,),) = [split((d.root / "acks" / ack).read_bytes())]
    ak3 = [seg for seg in ack_segments if seg[0] == "AK3"]
    assert [(seg[1], int(seg[2])) for seg in ak3] == [("PO1", zero - st + 1)]


# --- mutations: held -------------------------------------------------------------------

LINE = "PO1*1*4*EA*3.00**VP*X1~"
HELD = {
    # name: (set, expected status, expected (quantity, price, total) or None)
    "hp": (one_po("M-HP", "0001", "PO1*1*200*EA*350*HP*VP*X1~"), "succeeded", "700"),
    "hp-amt": (
        one_po("M-HPA", "0001", "PO1*1*200*EA*350*HP*VP*X1~")
        .replace("CTT*1~", "CTT*1~AMT*TT*700~")
        .replace("SE*5*", "SE*6*"),
        "succeeded",
        "700",
    ),
    "dot5": (one_po("M-D5", "0001", "PO1*1*.5*EA*3.50**VP*X1~"), "succeeded", "1.75"),
    "plus": (one_po("M-PL", "0001", "PO1*1*+5*EA*3.50**VP*X1~"), "failed", None),
    "exp": (one_po("M-EX", "0001", "PO1*1*1E3*EA*3.50**VP*X1~"), "failed", None),
    "neg": (one_po("M-NG", "0001", "PO1*1*-2*EA*3.50**VP*X1~"), "failed", None),
    "trail": (one_po("M-TR", "0001", "PO1*1*4 *EA*3.00 **VP*X1~"), "failed", None),
    "nan": (one_po("M-NN", "0001", "PO1*1*4*EA*NaN**VP*X1~"), "failed", None),
    "ctp": (one_po("M-CT", "0001", "PO1*1*4*EA***VP*X1~CTP**UCP*2.25~"), "succeeded", "9.00"),
    "ctt": (one_po("M-CC", "0001", LINE, ctt=3), "succeeded", "12.00"),
    "amt": (
        one_po("M-AM", "0001", LINE)
        .replace("CTT*1~", "CTT*1~AMT*TT*999~")
        .replace("SE*5*", "SE*6*"),
        "failed",
        None,
    ),
}


def test_held_mutations_of_numbers_and_totals(tmp_path, recording):
    """One ``process`` of every held mutation: the ERP's total, the 997's AK5."""
    paths = []
    for name, (x12, _, _) in HELD.items():
        path = tmp_path / f"{name}.edi"
        path.write_bytes(interchange(x12, ack="1", icn=f"{len(paths) + 1:09d}"))
        paths.append(path)
    jobs = {j["file_name"]: j for j in process(tmp_path, recording, *paths)}
    totals = {b["po_number"]: b["total_amount"] for b in recording.bodies}
    for name, (x12, status, total) in HELD.items():
        job = jobs[f"{name}.edi"]
        po = sets(interchange(x12))[0]["po"]
        assert job["status"] == status, (name, job["error"])
        (ack,) = [a for a in job["acks"] if a.endswith(".997")]
        ((_, answers, _),) = acks_997((tmp_path / "acks" / ack).read_bytes())
        if total is None:
            assert po not in totals and answers == [("0001", "R")], name
        else:
            assert Decimal(totals[po]) == Decimal(total), name
            assert answers[0][1] in "AE", name


# --- findings ---------------------------------------------------------------------------


def test_a_ctp_priced_per_thousand_reaches_the_erp_per_thousand(tmp_path, recording):
    x12 = one_po("F-TP", "0001", "PO1*1*2000*EA***VP*X1~CTP**UCP*15.00******TP~")
    _, bodies, groups = run_one(tmp_path, recording, x12)
    ((_, answers, _),) = groups
    if answers == [("0001", "A")]:  # posted as accepted: then at the X12's price
        (body,) = bodies
        assert Decimal(body["total_amount"]) == Decimal("30.00"), body["lines"]


@pytest.mark.parametrize(
    ("line", "header", "after"),
    [
        pytest.param(
            "PO1*1*4*EA***VP*X1~CTP**UCP*2.25~CUR*BY*EUR~", "CUR*BY*USD~", "", id="ctp-loop"
        ),
        pytest.param("PO1*1*4*EA*2.25**VP*X1~CUR*BY*EUR~", "CUR*BY*USD~", "", id="po1-loop"),
        pytest.param("PO1*1*4*EA*2.25**VP*X1~", "", "CUR*BY*EUR~", id="after-ctt"),
    ],
)
def test_a_currency_the_partner_sent_reaches_the_erp(tmp_path, recording, line, header, after):
    """The 4010 850 has a CUR in the PO1 loop (after PO1) and in its CTP loop;
    edinet__x12.850.issue135.edi, a real partner's, has ``CUR*BY*USD`` after
    each PO1. A price in euros reaches the ERP as dollars (the header's
    currency), or with no currency at all when the only CUR comes after CTT
    (out of place: an error for the 997 then, not a silent A)."""
    x12 = one_po("F-CUR", "0001", line, header=header)
    if after:
        x12 = x12.replace("CTT*1~", "CTT*1~" + after).replace("SE*5*", "SE*6*")
    _, bodies, groups = run_one(tmp_path, recording, x12)
    ((_, answers, _),) = groups
    if answers == [("0001", "A")]:
        (body,) = bodies
        said = json.dumps(body)
        assert "EUR" in said, (body["currency"], body["lines"][0]["unit_price"])


def test_a_ctp_price_per_case_is_not_posted_as_a_price_per_each(tmp_path, recording):
    x12 = one_po("F-CA", "0001", "PO1*1*24*EA***VP*X1~CTP**UCP*48.00*1*CA~")
    _, bodies, groups = run_one(tmp_path, recording, x12)
    ((_, answers, _),) = groups
    if answers == [("0001", "A")]:
        (body,) = bodies
        line = body["lines"][0]
        assert (line["unit"], line["unit_price"]) != ("EA", "48.00"), body["total_amount"]


def test_a_small_price_reaches_the_erp_as_the_partner_wrote_it(tmp_path, recording):
    """README: every amount and quantity a decimal string. PO104 (R, up to 17
    characters) ``0.000000125``: Python's ``str(Decimal)`` turns it into
    ``1.25E-7``, which an ERP reading "decimal strings" (``^-?\\d+(\\.\\d+)?$``)
    cannot take, and which is not the text of the X12."""
    x12 = one_po("F-SMALL", "0001", "PO1*1*1000000*EA*0.000000125**VP*X1~")
    _, bodies, groups = run_one(tmp_path, recording, x12)
    ((_, answers, _),) = groups
    assert answers == [("0001", "A")]
    (body,) = bodies
    line = body["lines"][0]
    for text in (line["quantity"], line["unit_price"], line["amount"], body["total_amount"]):
        assert "E" not in text.upper(), line
    assert Decimal(line["unit_price"]) == Decimal("0.000000125")


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("BEG*00*SA*F-TWO**20240102~", id="second-beg"),
        pytest.param("CUR*BY*USD~CUR*BY*EUR~", id="second-cur"),
    ],
)
def test_a_segment_sent_twice_where_x12_allows_one_is_not_acknowledged_clean(
    tmp_path, recording, header
):
    """BEG and the header CUR have a maximum use of 1 in the 850. A set that
    carries two says two different things (two PO numbers; two currencies);
    the ERP is told one of them. The partner's 997 must not say the set was
    accepted clean: AK5 E (with an AK3 for the segment, code 5 "exceeds
    maximum use") or R, never a bare A."""
    x12 = one_po("F-ONE", "0001", "PO1*1*4*EA*3.00**VP*X1~", header=header)
    _, _, groups = run_one(tmp_path, recording, x12)
    ((_, answers, _),) = groups
    assert answers != [("0001", "A")], answers


def test_an_amt_total_is_not_refused_against_a_sum_missing_an_unpriced_line(tmp_path, recording):
    """README: a line without PO104 or a counted CTP is priced by the ERP
    (``unit_price`` null); an order with no price at all skips the AMT*TT
    check. One priced line and one unpriced line with the partner's total
    (its contract price of 4.00 for line 2): 12.00 is not the lines' total,
    there is none to compare AMT*TT with, and the X12 contradicts nothing.
    The order is refused and the partner told AMT02 is wrong."""
    x12 = one_po(
        "F-PART",
        "0001",
        "PO1*1*4*EA*3.00**VP*X1~",
        "PO1*2*2*EA***VP*X2~",
    ).replace("CTT*2~", "CTT*2~AMT*TT*20~")
    x12 = x12.replace("SE*6*", "SE*7*")
    job, bodies, groups = run_one(tmp_path, recording, x12)
    ((_, answers, _),) = groups
    assert answers[0][1] in "AE", (answers, job["error"])
    (body,) = bodies
    assert body["lines"][1]["unit_price"] is None


def test_held_hard_wrapped_and_ebcdic_850s_reach_the_erp_as_written(tmp_path, recording):
    """.16 (CRLF inside segments and the ISA) and the EBCDIC file: the bodies
    against the file with its line ends removed (EBCDIC decoded first)."""
    names = ["botsplugins__850-004010.16.x12", "botsplugins__ebcdic.x12"]
    jobs = process(tmp_path, recording, *(CORPUS / n for n in names))
    assert [j["status"] for j in jobs] == ["succeeded", "succeeded"]
    want = []
    for name in names:
        data = (CORPUS / name).read_bytes()
        if "ebcdic" in name:
            data = data.decode("cp500").replace("\x85", "~").encode("latin-1")
        data = data.replace(b"\r", b"").replace(b"\n", b"")
        want += [(s["po"], [(li["qty"], li["price"]) for li in s["lines"]]) for s in sets(data)]
    got = [
        (b["po_number"], [(li["quantity"], li["unit_price"]) for li in b["lines"]])
        for b in recording.bodies
    ]
    assert got == want


def test_an_850_in_a_group_labelled_fa_is_not_dropped_as_succeeded(tmp_path, recording):
    """README: a group of 997s or 999s (GS01 ``FA``) gets no 997 and is
    neither posted nor counted. A partner's translator that labels its group
    FA (GS01 does not match ST01 850) sends a purchase order all the same:
    the file ``succeeded`` with no order, the ERP got nothing and the
    partner no 997 (its TA1 says A). Posted, or refused with a 997 / a
    failed job, never a silent success."""
    data = interchange(one_po("F-FA", "0001", LINE), ack="1").replace(b"GS*PO*", b"GS*FA*")
    job, bodies, groups = run_one(tmp_path, recording, data)
    assert bodies or job["status"] != "succeeded", (job["status"], job["acks"], groups)


def test_an_unrecognized_segment_in_a_set_is_not_acknowledged_clean(tmp_path, recording):
    """A set with ``PO1`` and ``P01`` (a zero for the O: a line of 5 at 3.00,
    no CTT). ``po1`` is refused as no segment ID; ``P01`` has the form of one,
    is in no 850, and is dropped: the ERP gets one line (12.00), the partner
    a clean AK5 A. X12 has AK304 1 (unrecognized segment ID) for it."""
    x12 = "ST*850*0001~BEG*00*SA*F-P01**20240102~PO1*1*4*EA*3.00**VP*X1~"
    x12 += "P01*2*5*EA*3.00**VP*X2~SE*5*0001~"
    _, bodies, groups = run_one(tmp_path, recording, x12)
    ((_, answers, _),) = groups
    posted_two = len(bodies) == 1 and len(bodies[0]["lines"]) == 2
    assert posted_two or answers != [("0001", "A")], answers


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_held_jobs_show_totals_are_the_erps_on_both_databases(
    tmp_path, recording, request, database
):
    """Held: ``jobs show --json`` (the job's and each order's total) equals
    the ERP's bodies, Decimal for Decimal: 15-digit quantities at 15-digit
    prices, per hundred and per thousand, a price of 1E-15."""
    x12 = interchange(
        one_po(
            "H-BIG",
            "0001",
            "PO1*1*999999999999999*EA*99999999999999.9**VP*X1~",
            "PO1*2*999999999999999*EA*0.000000000000001**VP*X2~",
        ),
        one_po("H-HP", "0002", "PO1*1*7*EA*0.35*HP*VP*X1~", "PO1*2*3*EA*1.5*TP*VP*X2~"),
        ack="1",
    )
    path = tmp_path / "big.edi"
    path.write_bytes(x12)
    config = write_config(tmp_path, recording.url)
    if database == "postgresql":
        url = request.getfixturevalue("pg_url")
        sqlite = json.dumps("sqlite:///" + str(tmp_path / "edi-inbox.db"))
        config.write_text(config.read_text().replace(sqlite, json.dumps(url)))
    result = cli(config, "process", str(path), "--json")
    job = json.loads(result.stdout)
    shown = json.loads(cli(config, "jobs", "show", job["job_id"], "--json").stdout)
    erp_totals = {b["po_number"]: Decimal(b["total_amount"]) for b in recording.bodies}
    assert erp_totals["H-HP"] == Decimal("0.0245") + Decimal("0.0045")
    assert {o["po_number"]: Decimal(o["total_amount"]) for o in shown["orders"]} == erp_totals
    with localcontext() as exact:
        exact.prec = 200  # the sum of both, not rounded to 28 digits
        assert Decimal(shown["total_amount"]) == sum(erp_totals.values())


@pytest.mark.parametrize("basis", ["HP ", "hp"], ids=["padded", "lowercase"])
def test_a_per_hundred_basis_written_otherwise_is_not_posted_per_unit(tmp_path, recording, basis):
    """``PO1*1*200*EA*350*HP *…``: PO105 ' TP' (a leading space) is refused
    (3 characters, over PO105's 2) but 'HP ' passes the length check (its
    trailing space dropped there) and then misses ``PRICE_BASIS_UNITS``; the
    body says ``price_basis`` "HP " beside an ``amount`` of 70000. 'hp' is no
    X12 code (ID values are upper-case) and is taken as per unit too. Either
    per hundred (700) or refused; never 100 times the order."""
    x12 = one_po("F-HP", "0001", f"PO1*1*200*EA*350*{basis}*VP*X1~")
    _, bodies, groups = run_one(tmp_path, recording, x12)
    ((_, answers, _),) = groups
    if answers[0][1] in "AE":
        (body,) = bodies
        assert Decimal(body["total_amount"]) == Decimal(700), body["lines"][0]
