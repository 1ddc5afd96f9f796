"""Outsider round 11: the 997 order by order, duplicates by content against
what partners really send, money as partners price it, the CLI, hostile
configurations and real files. About 50 s.

Bugs found (each test failed on the code as found; fixed unless marked):

* a test interchange (ISA15 ``T``) is posted to the ERP like production, and
  then swallows the production order (same PO and content) as a duplicate;
* a second change (BEG01 05) of an order is refused ("send a replace");
* a resend writing its numbers differently (``3.5`` for ``3.50``) is refused;
* a PO number padded with trailing spaces is posted twice;
* a byte-identical resend records no PO number (``jobs search`` misses it);
* a partner's 997 is answered with a rejecting 997, the file filed partial;
* a partner's TA1-only interchange is a failed file;
* 997s go out with empty mandatory AK1/AK2 elements (``AK2*850``, ``AK1*PO``);
* PO105 HP/TP (price per hundred/thousand) ignored: a true AMT*TT rejected,
  totals 100x or 1000x;
* AMT*TT summed from per-line amounts rounded to the cent rejected;
* a NUL byte in a partner's name makes the order unpostable on PostgreSQL;
* a complete file whose IEA ends with a separator is held for the grace;
* ``[paths] acks`` (or done, failed, outbox, processing) set to the inbox is
  accepted: the daemon answers its own 997s forever;
* ``process`` on a mistyped path records a failed job.

Left as strict xfails then, fixed since: a buyer's PO split between two
receiver ids (ISA08) refused as changed (other content sent to another
receiver is that receiver's order now); SAC charges and allowances not
modelled. Also found, measured rather than tested (a wall-clock ratio is a
benchmark): each order is judged against every order posted under its PO
number, so releases of one blanket order cost more as they accumulate.

Held probes are marked "Held" in their docstrings (a mixed file's 997s and
TA1; credentials in the ERP URL; the concatenated corpus).

Real parts: ``edi-inbox`` subprocesses (``process``, ``run``, the reading
commands), a real HTTP ERP on 127.0.0.1, real files (uploads by the
partner's uid), SQLite files under ``tmp_path`` and the test PostgreSQL. No
mocks, no fixed sleeps."""

from __future__ import annotations

import io
import json
import time
from decimal import Decimal
from pathlib import Path

import pytest
from daemons import Daemon, daemons, erp

from edi_inbox.x12 import X12Reader

import uids
from helpers import poll_until

__all__ = ["daemons", "erp"]  # fixtures

pytestmark = pytest.mark.e2e

ISA = (
    "ISA*00*          *00*          *ZZ*ACME           *01*123456789      "
    "*240102*1200*U*00401*{icn}*0*{usage}*>~"
)


def order(po: str, quantity: str = "2", st: str = "0001", beg01: str = "00") -> str:
    """An 850 with one line (quantity × 3.50)."""
    return (
        f"ST*850*{st}~BEG*{beg01}*SA*{po}**20240102~"
        f"PO1*1*{quantity}*EA*3.50**VP*X1~CTT*1~SE*5*{st}~"
    )


def group(*sets: str, gs06: str = "77") -> str:
    return (
        f"GS*PO*ACMEAPP*OURAPP*20240102*1200*{gs06}*X*004010~"
        + "".join(sets)
        + f"GE*{len(sets)}*{gs06}~"
    )


def interchange(*groups: str, icn: int = 321, usage: str = "P") -> bytes:
    number = f"{icn:09d}"
    return (
        ISA.format(icn=number, usage=usage) + "".join(groups) + f"IEA*{len(groups)}*{number}~"
    ).encode()


def process(daemon: Daemon, path: Path, data: bytes) -> dict:
    """``edi-inbox process FILE --json`` as an operator runs it; the job as JSON."""
    path.write_bytes(data)
    done = daemon.cli("process", str(path), "--json")
    assert done.stdout.strip(), done.stderr[-2000:]
    shown = json.loads(done.stdout)
    return shown[0] if isinstance(shown, list) else shown


def ak_segments(path: Path) -> list[str]:
    reader = X12Reader(io.BytesIO(path.read_bytes()))
    return ["*".join(s.elements) for s in reader.scanner if s.elements[0][:2] in ("AK", "TA")]


class BodyErp:
    """Keeps the JSON body of each request the ``erp`` fixture answers."""

    def __init__(self, erp) -> None:
        self.bodies: list[dict] = []
        erp.answered = lambda key, order, status: self.bodies.append(order)


# -- 1. duplicates by content against what partners really send ---------------------


def test_a_test_interchange_does_not_swallow_the_production_order(tmp_path, erp, daemons):
    """Onboarding as every retailer does it: the partner first sends its PO as a
    test interchange (ISA15 ``T``), then the same PO for real (ISA15 ``P``, a
    new ISA13). The production order must reach the ERP as production data.

    Found: the test order is posted to the ERP (ISA15 is neither in the
    order's identity nor acted upon), and the production order is then a
    ``duplicate`` of it: never posted, yet acknowledged ``A`` to the partner."""
    seen = BodyErp(erp)
    daemon = daemons(erp.url)
    test = process(
        daemon, tmp_path / "test.edi", interchange(group(order("PO-T1")), icn=500, usage="T")
    )
    assert test["job_id"]
    real = process(daemon, tmp_path / "real.edi", interchange(group(order("PO-T1")), icn=501))
    production = [b for b in seen.bodies if b["po_number"] == "PO-T1" and b["usage"] == "P"]
    assert production, (
        f"the production order never reached the ERP: job {real['status']}, "
        f"order {real['orders'][0]['status']}: {real['orders'][0]['error']}; "
        f"the ERP got only {[b['usage'] for b in seen.bodies]}"
    )


def test_a_byte_identical_resend_is_found_by_its_po_number(tmp_path, erp, daemons):
    """The most common resend is the same file uploaded again. Support asks
    "did ACME send PO-B1 again on Tuesday?": ``jobs search --po-number``
    must find that job too (a resend under a new ISA13 is found, its order
    shown ``duplicate``).

    Found: a job that is a duplicate by its bytes records no order and no PO
    number: the search finds only the first job, and ``jobs list`` shows the
    resend with an empty PO column."""
    daemon = daemons(erp.url)
    data = interchange(group(order("PO-B1")), icn=760)
    first = process(daemon, tmp_path / "b1.edi", data)
    again = process(daemon, tmp_path / "b1-again.edi", data)
    assert (first["status"], again["status"]) == ("succeeded", "duplicate")
    found = json.loads(daemon.cli("jobs", "search", "--po-number", "PO-B1", "--json").stdout)
    assert sorted(j["file_name"] for j in found) == ["b1-again.edi", "b1.edi"], found
    assert len(erp.requests) == 1


def test_an_order_changed_twice_is_posted_each_time(tmp_path, erp, daemons):
    """A PO is sent (BEG01 00), then changed (BEG01 05: quantity 3), then changed
    again (BEG01 05: quantity 4). README: "A changed order must come as BEG01
    05 (replace)"; the second change does, and must reach the ERP.

    Found: the second replace is rejected, "was posted by job … with other
    content; a change is sent as a replace (BEG01 05) or a cancellation" —
    the partner did send a replace, and has no way left to change its order."""
    seen = BodyErp(erp)
    daemon = daemons(erp.url)
    first = process(daemon, tmp_path / "o.edi", interchange(group(order("PO-C1")), icn=600))
    change1 = process(
        daemon, tmp_path / "c1.edi", interchange(group(order("PO-C1", "3", beg01="05")), icn=601)
    )
    change2 = process(
        daemon, tmp_path / "c2.edi", interchange(group(order("PO-C1", "4", beg01="05")), icn=602)
    )
    assert first["status"] == change1["status"] == "succeeded"
    quantities = [b["lines"][0]["quantity"] for b in seen.bodies if b["po_number"] == "PO-C1"]
    assert change2["status"] == "succeeded" and quantities[-1] == "4", (
        change2["orders"][0]["error"],
        quantities,
    )


def test_one_po_number_split_between_two_receivers_is_two_orders(tmp_path, erp, daemons):
    """A supplier with two divisions has two ISA ids (ISA08 123456789 and
    987654321); a buyer splits its PO-1 by division and sends each its own
    850 under the same PO number, other lines. Each division's order must be
    posted: they are addressed to different receivers.

    Found: an order's identity is sender + PO number + release + purpose, the
    receiver left out: the second division's order is rejected as "posted
    by job … with other content; a change is sent as a replace". (Fixed:
    other content sent to another receiver is that receiver's order; the
    same content sent to both is still one order, a duplicate.)"""
    daemon = daemons(erp.url)
    first = interchange(group(order("PO-DIV1")), icn=780)
    second = interchange(group(order("PO-DIV1", "5").replace("VP*X1", "VP*Y9")), icn=781).replace(
        b"*01*123456789      *", b"*01*987654321      *"
    )
    a = process(daemon, tmp_path / "division_a.edi", first)
    b = process(daemon, tmp_path / "division_b.edi", second)
    assert a["status"] == "succeeded"
    assert b["status"] == "succeeded", b["orders"][0]["error"]
    assert [po for _, po in erp.requests] == ["PO-DIV1", "PO-DIV1"]
    # the first division's order sent again to the second: the same order, not posted
    misdirected = first.replace(b"*01*123456789      *", b"*01*987654321      *")
    misdirected = misdirected.replace(b"000000780", b"000000782")
    c = process(daemon, tmp_path / "misdirected.edi", misdirected)
    assert [o["status"] for o in c["orders"]] == ["duplicate"], c
    # and a third content to the first division: a change, sent as an original
    changed = interchange(group(order("PO-DIV1", "7")), icn=783)
    d = process(daemon, tmp_path / "changed.edi", changed)
    assert [o["status"] for o in d["orders"]] == ["rejected"], d
    assert len(erp.requests) == 2


def test_a_resend_that_writes_its_numbers_differently_is_the_same_order(tmp_path, erp, daemons):
    """The same order resent from the partner's web portal (or after a
    translator upgrade) writes its numbers another way: quantity ``2.0`` for
    ``2``, unit price ``3.5`` for ``3.50``. X12 R values compare by value: it
    is the same order, a duplicate — not posted again, acknowledged ``A``.

    Found: the canonical content keeps each number as written
    (``Decimal("3.5")`` and ``Decimal("3.50")`` print differently), so the
    resend is "posted by job … with other content": rejected, AK5 R, the
    partner told to send a replace for an order it did not change."""
    daemon = daemons(erp.url)
    first = process(daemon, tmp_path / "fmt1.edi", interchange(group(order("PO-FMT1")), icn=790))
    resend = order("PO-FMT1").replace("PO1*1*2*EA*3.50*", "PO1*1*2.0*EA*3.5*")
    again = process(daemon, tmp_path / "fmt2.edi", interchange(group(resend), icn=791))
    assert first["status"] == "succeeded"
    assert [o["status"] for o in again["orders"]] == ["duplicate"], again["orders"][0]["error"]
    assert len(erp.requests) == 1


def test_a_po_number_padded_with_trailing_spaces_is_the_same_po(tmp_path, erp, daemons):
    """Fixed-width exports pad the PO number: ``BEG*00*SA*PO-PAD1      *``. In
    X12 an AN value's trailing spaces are not significant (they "should be
    suppressed"): it is PO-PAD1. The same order resent once plain, once padded
    is one order: posted once.

    Found: BEG03 is kept with its spaces, so the padded copy is another
    order (its identity and Idempotency-Key differ): the ERP gets PO-PAD1
    twice, the second as ``'PO-PAD1      '`` — a double order."""
    daemon = daemons(erp.url)
    first = process(daemon, tmp_path / "plain.edi", interchange(group(order("PO-PAD1")), icn=830))
    padded = order("PO-PAD1").replace("BEG*00*SA*PO-PAD1*", "BEG*00*SA*PO-PAD1      *")
    again = process(daemon, tmp_path / "padded.edi", interchange(group(padded), icn=831))
    assert first["status"] == "succeeded"
    assert [po for _, po in erp.requests] == ["PO-PAD1"], (
        f"posted twice: {[po for _, po in erp.requests]}; the resend {again['status']}"
    )


# -- 2. the 997, order by order, against the X12 standard -----------------------------

FA_GROUP = (
    "GS*FA*ACMEAPP*OURAPP*20240102*1200*90*X*004010~ST*997*0001~AK1*PR*12~"
    "AK9*A*1*1*1~SE*4*0001~GE*1*90~"
)


def test_a_functional_acknowledgment_from_the_partner_is_never_acknowledged(tmp_path, erp, daemons):
    """Partners batch the 997s they owe us (for our 855/810s) with their next
    POs: one interchange, a PO group and an FA group. X12: a functional
    acknowledgment is itself never acknowledged (no 997 answers a 997 — else
    two EDI systems ack each other's acks), and it is not an error.

    Found: the FA group gets a 997 of its own, ``AK1*FA*90``, ``AK2*997``,
    ``AK5*R*1`` (rejected, "not supported"), and the job is ``partial``: a
    file whose every order was posted lands in ``failed/`` with an
    error.json telling the partner its 997 was rejected."""
    daemon = daemons(erp.url)
    job = process(daemon, tmp_path / "po_and_ack.edi", interchange(group(order("PO-F1")), FA_GROUP))
    assert [o["status"] for o in job["orders"]] == ["posted"]
    answers = {name: ak_segments(daemon.root / "acks" / name) for name in job.get("acks") or []}
    answering_fa = [
        name for name, segs in answers.items() if any(s.startswith("AK1*FA") for s in segs)
    ]
    assert not answering_fa, f"a 997 answering the partner's 997: {answers[answering_fa[0]]}"
    assert job["status"] == "succeeded", (job["status"], job["error"])


def test_a_ta1_from_the_partner_is_not_a_failed_file(tmp_path, erp, daemons):
    """A partner acknowledges our interchanges with a TA1: an interchange that
    holds only ``TA1`` (IEA01 0, no group). It is a well-formed interchange
    answering us, not a broken purchase order.

    Found: "the file holds no transaction set": the job is ``failed``
    (``edi_inbox_jobs_total{status="failed"}`` alerts the operator) and, in
    the daemon, the file lands in ``failed/`` with an error.json for the
    partner."""
    daemon = daemons(erp.url)
    isa = ISA.format(icn="000000840", usage="P")
    data = (isa + "TA1*000004711*240101*1200*A*000~IEA*0*000000840~").encode()
    job = process(daemon, tmp_path / "ta1.edi", data)
    assert job["status"] != "failed", job["error"]


def test_no_997_goes_out_with_its_mandatory_control_elements_empty(tmp_path, erp, daemons):
    """AK101/AK102 (the group's GS01/GS06) and AK201/AK202 (the set's ST01/ST02)
    are mandatory in a 997: an AK2 without its ST02 cannot be matched by the
    partner's translator, which rejects the whole 997. README: a 997 is
    addressed only from values that fit, "else none is written and the job's
    acknowledge step says why" — no 997 rather than a broken one.

    Found: a set sent without ST01 or ST02, or a group without GS06, gets
    a 997 anyway, with ``AK2**0002``, ``AK2*850`` or ``AK1*PO`` in it
    (named ``NAME..997``)."""
    daemon = daemons(erp.url)
    no_st = interchange(
        group(
            order("PO-S1", st="0001"),
            order("PO-S2", st="0002").replace("ST*850*0002", "ST**0002"),
            order("PO-S3", st="0003").replace("ST*850*0003", "ST*850"),
        ),
        icn=770,
    )
    no_gs06 = interchange(
        group(order("PO-S4")).replace("*77*X*", "**X*").replace("GE*1*77", "GE*1*"), icn=771
    )
    broken = []
    for name, data in (("no_st.edi", no_st), ("no_gs06.edi", no_gs06)):
        job = process(daemon, tmp_path / name, data)
        for ack in job.get("acks") or []:
            for seg in ak_segments(daemon.root / "acks" / ack):
                elements = seg.split("*")
                if elements[0] in ("AK1", "AK2") and (len(elements) < 3 or "" in elements[1:3]):
                    broken.append((ack, seg))
    assert not broken, broken


# -- 3. money as partners price it ----------------------------------------------------


def test_a_price_per_hundred_or_thousand_is_not_taken_as_a_price_per_unit(tmp_path, erp, daemons):
    """PO105 (element 639, basis of unit price) says what PO104 prices: ``HP``
    per hundred, ``TP`` per thousand (screws, labels, packaging are priced so).
    2,000 screws at 15.00 per thousand are 30.00; 500 labels at 4.00 per
    hundred are 20.00.

    Found: PO105 is read (``price_basis`` in the JSON) but the amount is
    quantity × PO104 whatever it says: the screws' order, whose AMT*TT says
    the true 30.00, is rejected ("does not match the lines' total
    30000.00") and the labels' order is posted as worth 2000.00 — 100 times
    its value, in the ERP's ``total_amount`` and in ``stats``."""
    seen = BodyErp(erp)
    daemon = daemons(erp.url)
    screws = (
        "ST*850*0001~BEG*00*SA*PO-TP1**20240102~PO1*1*2000*EA*15.00*TP*VP*SCREW-M4~"
        "CTT*1~AMT*TT*30.00~SE*6*0001~"
    )
    labels = "ST*850*0002~BEG*00*SA*PO-HP1**20240102~PO1*1*500*EA*4.00*HP*VP*LABEL~CTT*1~SE*5*0002~"
    job = process(daemon, tmp_path / "basis.edi", interchange(group(screws, labels), icn=700))
    totals = {
        o["po_number"]: (o["status"], Decimal(o["total_amount"]), o["error"]) for o in job["orders"]
    }
    assert totals["PO-TP1"][:2] == ("posted", Decimal("30.00")), totals["PO-TP1"]
    assert totals["PO-HP1"][:2] == ("posted", Decimal("20.00")), totals["PO-HP1"]
    assert {b["po_number"]: Decimal(b["total_amount"]) for b in seen.bodies} == {
        "PO-TP1": Decimal("30.00"),
        "PO-HP1": Decimal("20.00"),
    }


def test_charges_and_allowances_count_in_the_order_and_its_total(tmp_path, erp, daemons):
    """SAC is how an 850 carries freight charges and allowances (SAC01 C/A,
    SAC02 the code, SAC05 the amount, two implied decimals), and AMT*TT —
    the total transaction amount — includes them: 10 × 5.00 plus 50.00
    freight is 100.00.

    Found: SAC is dropped without a word ("segments the order does not
    model"): the order is rejected by ``total_mismatch`` (an error by
    default) as "AMT*TT total 100.00 does not match the lines' total
    50.00", and with the rule off the ERP would get the order without its
    freight (README: the body keeps "every segment's field")."""
    seen = BodyErp(erp)
    daemon = daemons(erp.url)
    freight = (
        "ST*850*0001~BEG*00*SA*PO-SAC1**20240102~SAC*C*D240***5000~PO1*1*10*EA*5.00**VP*X1~"
        "CTT*1~AMT*TT*100.00~SE*7*0001~"
    )
    job = process(daemon, tmp_path / "freight.edi", interchange(group(freight), icn=710))
    (shown,) = job["orders"]
    assert shown["status"] == "posted", shown["error"]
    (body,) = seen.bodies
    assert "D240" in json.dumps(body), "the ERP got the order without its freight charge"


def test_a_total_summed_from_line_amounts_rounded_to_the_cent_is_accepted(tmp_path, erp, daemons):
    """Retail unit prices carry four decimals (PO104 1.2345). The partner's
    system, as every ERP and invoice does, rounds each line's extended amount
    to the cent (3 × 1.2345 = 3.7035 → 3.70) and sums those: seven such
    lines make AMT*TT 25.90. Summing first and rounding once gives 25.92.
    Two cents of rounding convention are not "a wrong price".

    Found: ``total_mismatch`` (an error by default) knows only round(Σ):
    "AMT*TT total 25.90 does not match the lines' total 25.92", the whole
    order rejected (AK5 R) and never posted."""
    daemon = daemons(erp.url)
    lines = "".join(f"PO1*{i}*3*EA*1.2345**VP*X{i}~" for i in range(1, 8))
    st = f"ST*850*0001~BEG*00*SA*PO-R1**20240102~{lines}CTT*7~AMT*TT*25.90~SE*12*0001~"
    job = process(daemon, tmp_path / "rounded.edi", interchange(group(st), icn=740))
    (shown,) = job["orders"]
    assert shown["status"] == "posted", shown["error"]
    assert [po for _, po in erp.requests] == ["PO-R1"]


# -- 4. PostgreSQL, where several hosts share one inbox -------------------------------


@pytest.mark.postgres
def test_a_nul_byte_in_a_partners_name_does_not_make_the_order_unpostable_on_postgres(
    tmp_path, erp, daemons, pg_url
):
    """Legacy exporters pad fixed-width names with NUL bytes: ``N1*VN*ACME\\0CORP``.
    On SQLite such an order is posted (and shown escaped, ``ACME\\x00CORP``).
    The same file on PostgreSQL — the database README recommends for a
    shared inbox — must be posted too, and findable by its PO number.

    Found: psycopg2 refuses the string ("A string literal cannot contain NUL
    (0x00) characters"), taken as a record the database can never hold: the
    job fails before the ERP call, the partner gets ``AK5*R`` with no code,
    and the record kept lacks the PO number (``jobs search --po-number``
    finds nothing: "what happened to PO-N1?" has no answer)."""
    seen = BodyErp(erp)
    daemon = daemons(erp.url)
    daemon.config.write_text(
        daemon.base_config.replace(
            json.dumps("sqlite:///" + str(daemon.root / "edi-inbox.db")), json.dumps(pg_url)
        )
    )
    st = (
        "ST*850*0001~BEG*00*SA*PO-N1**20240102~N1*VN*ACME\0CORP~"
        "PO1*1*2*EA*3.50**VP*X1~CTT*1~SE*6*0001~"
    )
    job = process(daemon, tmp_path / "nul.edi", interchange(group(st), icn=720))
    assert [o["status"] for o in job["orders"]] == ["posted"], job["error"]
    assert [b["po_number"] for b in seen.bodies] == ["PO-N1"]
    found = json.loads(daemon.cli("jobs", "search", "--po-number", "PO-N1", "--json").stdout)
    assert [j["job_id"] for j in found] == [job["job_id"]]


# -- 5. real files at the daemon's door ----------------------------------------------


def test_a_complete_file_whose_iea_ends_with_a_separator_is_not_held(tmp_path, erp, daemons):
    """Generators that always write every element leave a trailing separator:
    ``IEA*1*000000730*~``. The reader takes such a file (the order posts when
    it is run), so it is complete: README, "A complete file, whatever its
    delimiters, is never held."

    Found: the watcher's trailer test (``x12.scan.trailer_present``) allows
    at most one character after IEA02, so the file is held as an upload
    still arriving for the whole ``incomplete_grace_seconds`` (300 s by
    default; ``status`` says it waits for its X12 trailer), and only then
    run."""
    daemon = daemons(erp.url, incomplete_grace_seconds=60.0)
    daemon.start()
    data = interchange(group(order("PO-IEA1")), icn=730).replace(b"*000000730~", b"*000000730*~")
    assert data.endswith(b"IEA*1*000000730*~")
    uids.upload(daemon.inbox / "sloppy.edi", data)
    poll_until(
        lambda: daemon.listing(daemon.done) == ["sloppy.edi"],
        timeout=6,
        what="the complete file run at once, not held for its trailer",
    )
    assert [po for _, po in erp.requests] == ["PO-IEA1"]


# -- 6. configuration -----------------------------------------------------------------


def test_acks_written_into_the_inbox_are_never_read_back(tmp_path, erp, daemons):
    """An SFTP set-up with one folder per direction-less partner account puts
    ``[paths] acks`` in the inbox itself (the partner downloads its 997s where
    it uploads). README: "Folders are checked when the configuration is
    read: … no inbox is a folder the daemon writes (an outbox, acks/, done/,
    failed/, a processing folder: it would read its own answers back)".
    Either the daemon refuses to start, naming the folder, or it never takes
    its own 997 for an upload.

    Found: the shared inbox is not checked against ``[paths]`` (acks, done,
    failed, outbox, processing all accepted): the daemon starts, reads back
    the 997 it wrote for the PO, answers it with a rejecting 997 (a 997 is
    "not handled"), reads that back, and so on for ever — dozens of failed
    jobs a second, each 997's name longer (``po.edi.4.997.218676369.997…``)."""
    daemon = daemons(erp.url)
    root_line = f"root = {json.dumps(str(daemon.root))}\n"
    daemon.base_config = daemon.base_config.replace(
        root_line, root_line + f"acks = {json.dumps(str(daemon.inbox))}\n"
    )
    daemon.config.write_text(daemon.base_config)
    try:
        daemon.start()
    except AssertionError as refused:  # refused at start: what README promises
        assert "acks" in str(refused) or "inbox" in str(refused), refused
        return
    uids.upload(daemon.inbox / "po.edi", interchange(group(order("PO-LOOP1")), icn=800))
    poll_until(lambda: daemon.listing(daemon.done) == ["po.edi"], what="the PO posted")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(daemon.jobs()) < 4:
        time.sleep(0.05)
    jobs = daemon.jobs()
    assert len(jobs) == 1, (
        f"{len(jobs)} jobs: the daemon reads back its own acknowledgements: "
        f"{sorted(j['file_name'][:60] for j in jobs)[:4]}"
    )


# -- held probes (behaviour correct; kept as cheap regression tests) -----------------


def test_held_a_mixed_file_gets_one_true_997_per_group_and_a_ta1(tmp_path, erp, daemons):
    """Held. One interchange (ISA14 1), two groups: group 77 holds a posted 850,
    an 810 and an 850 with a zero quantity; group 78 a posted 850. Each group
    gets its own 997, sender and receiver swapped, AK2/AK5 set by set (A, R 1,
    R 5 with AK3/AK4), AK9 P 3 3 1 and A 1 1 1; a TA1 A 000; ISA13, GS06 and
    ST02 of each acknowledgement one number, none shared."""
    daemon = daemons(erp.url)
    invoice = "ST*810*0002~BIG*20240102*INV-1~SE*3*0002~"
    data = interchange(
        group(order("PO-M1"), invoice, order("PO-M3", "0", st="0003")),
        group(order("PO-M4", st="0004"), gs06="78"),
        icn=810,
    ).replace(b"*000000810*0*P*", b"*000000810*1*P*")
    job = process(daemon, tmp_path / "mixed.edi", data)
    assert job["status"] == "partial"
    assert sorted(po for _, po in erp.requests) == ["PO-M1", "PO-M4"]
    acks = {name.rsplit(".", 2)[-2] + "." + name.rsplit(".", 1)[-1]: name for name in job["acks"]}
    assert set(acks) == {"000000810.TA1", "77.997", "78.997"}
    assert ak_segments(daemon.root / "acks" / acks["000000810.TA1"]) == [
        "TA1*000000810*240102*1200*A*000"
    ]
    assert ak_segments(daemon.root / "acks" / acks["77.997"]) == [
        "AK1*PO*77", "AK2*850*0001", "AK5*A", "AK2*810*0002", "AK5*R*1",
        "AK2*850*0003", "AK3*PO1*3**8", "AK4*2**7", "AK5*R*5", "AK9*P*3*3*1",
    ]  # fmt: skip
    assert ak_segments(daemon.root / "acks" / acks["78.997"]) == [
        "AK1*PO*78", "AK2*850*0004", "AK5*A", "AK9*A*1*1*1",
    ]  # fmt: skip
    numbers = []
    for name in acks.values():
        reader = X12Reader(io.BytesIO((daemon.root / "acks" / name).read_bytes()))
        segs = {s.elements[0]: s.elements for s in reader.scanner}
        isa = segs["ISA"]
        assert (isa[6].strip(), isa[8].strip()) == ("123456789", "ACME")
        if "GS" in segs:
            assert (segs["GS"][2], segs["GS"][3]) == ("OURAPP", "ACMEAPP")
            assert int(isa[13]) == int(segs["GS"][6]) == int(segs["ST"][2])
        numbers.append(int(isa[13]))
    assert len(set(numbers)) == 3


def test_held_credentials_in_the_erp_url_reach_no_record_or_report(tmp_path, daemons):
    """Held. ``[erp] url`` with a user, password and ``api_key`` in it, the ERP
    not listening: the job's record (``jobs show --json``), the log and the
    partner's error.json never carry the password or the key."""
    url = "http://erpuser:S3cretPw@127.0.0.1:9/orders?api_key=K3YK3Y"
    daemon = daemons(url)
    job = process(daemon, tmp_path / "po.edi", interchange(group(order("PO-CRED1")), icn=820))
    assert job["status"] == "failed"
    shown = daemon.cli("jobs", "show", job["job_id"], "--json")
    texts = [shown.stdout, shown.stderr, json.dumps(job)]
    texts += [
        p.read_text(errors="replace")
        for p in daemon.root.rglob("*")
        if p.is_file() and p.suffix != ".toml" and not p.name.startswith("edi-inbox.db")
    ]
    assert not [t for t in texts if "S3cretPw" in t or "K3YK3Y" in t]


def test_held_the_concatenated_corpus_posts_each_order_once(tmp_path, erp, daemons):
    """Held. Every corpus file whose job succeeds alone (EBCDIC aside),
    concatenated into one 70 KB file of 40 interchanges with CR, LF, CRLF,
    ``~``, ``|`` and 0x15 terminators: each order posted at most once per
    key, copies of an order from other files duplicates, the job partial
    (three orders reuse a PO number with other content), every 997 in acks/."""
    corpus = Path(__file__).parent / "data" / "corpus"
    outcomes = (Path(__file__).parent / "data" / "corpus_outcomes.txt").read_text()
    names = [
        line.split(":")[0] for line in outcomes.splitlines()
        if not line.startswith(" ") and ": succeeded" in line and "ebcdic" not in line
    ]  # fmt: skip
    assert len(names) >= 20
    data = b"".join((corpus / name).read_bytes() for name in names)
    daemon = daemons(erp.url)
    job = process(daemon, tmp_path / "all.edi", data)
    assert job["status"] == "partial", job["error"]
    keys = erp.posts_per_key()
    assert keys and max(keys.values()) == 1
    statuses = [o["status"] for o in job["orders"]]
    assert statuses.count("posted") == len(keys)
    assert statuses.count("duplicate") >= 4


def test_a_mistyped_path_given_to_process_records_no_failed_job(tmp_path, erp, daemons):
    """``edi-inbox process /srv/edi/inbox/po_4711.ed`` — a typo. Nothing was
    received: the command says the file does not exist and exits non-zero,
    and the record (``stats``, ``jobs list``, the failed-jobs alert
    ``increase(edi_inbox_jobs_total{status="failed"}[15m]) > 0``) is left alone.

    Found: a ``failed`` job is recorded for the missing file ("the file
    could not be read: No such file or directory"): ``stats`` counts a
    failed file, the failed-file alert fires for an operator's typo."""
    daemon = daemons(erp.url)
    done = daemon.cli("process", str(tmp_path / "po_4711.ed"))
    assert done.returncode != 0
    stats = json.loads(daemon.cli("stats", "--json").stdout)
    assert stats["total_jobs"] == 0 and stats["failed_jobs"] == 0, stats
