"""Outside tester round 49: element-level truth against X12 004010 (and 005010).

Each input is a small 850 built here, run through the Pipeline in this
process (what ``edi-inbox process`` runs) with a SQLite file of its own, a
partner ``acme`` (ZZ:ACME; ``ack = "999"`` for the 5010 cases) and the real
recording ERP on 127.0.0.1 (round 17's ``RecordingErp``). The 997/999 and
TA1 are read back with this module's own splitting (the ISA's separators),
the bodies the ERP took compared element by element. The rules relied on are
the 004010 data element dictionary and segment directory (types N0/Nn/R/ID/AN/
DT/TM, minimum/maximum lengths, M/O/X requirements, the syntax notes P/R/C of
each segment), the 850's table of segments (max use, loop repeats, order),
the 997's AK3/AK4 code lists (AK304 720: 2 unexpected, 4 loop over maximum, 5
segment over maximum use, 7 not in sequence, 8 element errors; AK403 723: 1
mandatory missing, 2 conditional required missing, 3 too many elements, 4 too
short, 5 too long, 6 invalid character, 7 invalid code value, 8 invalid date,
9 invalid time; 999 IK403 12 too many repetitions), and TA105 (I18: 010
authorization qualifier, 014 date, 015 time, 019 acknowledgment requested, 020
test indicator). AK302 counts from the set's ST as 1.

What I tried: BEG01/02/03/05 empty, impossible and short dates (20230230,
20230229, 2024012, 6 digits — the documented YYMMDD pivot left alone);
DTM02 impossible in the header and on a line, DTM03 2460/2400/235960/1299/123,
DTM with only DTM01, DTM04 without DTM03, DTM06 without DTM05; numbers with
``+``, a space, an exponent, a comma, leading zeros, a trailing point, ``-0``,
16 to 19 digits in PO102 (R 1/15), PO104 (R 1/17), SAC05 (N2 1/15), CTT01
(N0 1/6), AMT02 (R 1/18); SAC05 negative and written with a point (read as
written: orders.py says so); PO103 of one character, N104 of one, CUR02 of two,
CUR03 of one; PO1 with PO106 and no PO107 and the reverse, PO105 without
PO104; SAC without SAC02/03 and SAC03 without SAC04; N1 without N102/N103 and
N103 without N104 (header and line); REF without REF02/03; PER03 without
PER04; CTP04 without CTP05; PID without PID04/05; AMT03 ``X``; 11 header DTMs,
4 PERs, 3 N3 in an N1 loop, 26 header SAC loops; a DTM before the BEG and a
REF after a DTM; PO101 over 20, N102 over 60, REF02 over 30 in an N1 loop, 28
elements in a PO1; SE01 and SE02 wrong; two sets in a group with the second
in error; ISA01 ``99``, ISA09 240230, ISA10 2460, ISA14 ``2``, ISA15 ``X``,
ISA13 and GS06 with a letter, GS04/GS05 impossible (a group error the 997 has
no code for: left alone), GS07 ``Q``; 5010 with a 999: a bad quantity, a bad
date, a too-long N102, ST03 echoed in AK203, a line-count warning (IK5 E), the
repetition separator ``^`` inside BEG03 and PO107 (and in 4010, where it is
data); trailing and leading spaces in BEG03, N102, PO103 and in numbers and
dates (``10 ``, ``20240102 ``: refused, AK4 6/8). By hand, every 850 of the
corpus scanned for the rules of findings 1, 2, 4, 5 and 8: none breaks them
but ``ediengine__850.SyntaxNotes.ERR.edi`` (finding 12), so refusing them
would refuse no real partner's order here.

What held (plain tests below): the 997's envelope (ISA/GS addressed back,
ISA12 and GS08 as received, ST02 = SE02, SE01 counting ST..SE, GE/IEA pairs),
AK1/AK2 echoes, AK9 counts and A/P/R; AK302 counted from each set's own ST;
AK4 8 on BEG05 and DTM02 impossible dates (header and line), AK4 6 on ``+10``,
`` 10``, ``2.5E0``, ``1,5``; AK4 5 with the bad value copied for elements over
their maximum, AK4 3 for one element too many; AK5 R 4 / R 3 for SE01 / SE02;
decimals posted exactly (``2.500`` stays 2.500, amounts exact, SAC05 N2 scaled
with its sign); valid times and a leap day posted as written, ISO dates; the
999 (ST03 and GS08 005010X231A1, AK1 03 echoing GS08, IK3/IK4/IK5 with the
997's codes). ISA13 ``00000004A`` gets TA1 R 018 and GS06 ``4A`` AK9 R 6.
Left alone as documented or optional: the YYMMDD pivot in DT 8/8 elements, a
decimal point in SAC05 (orders.py), ID values in any case or padded for
CTP02/PO105/CUR02 (README), AK4 7 for business-rule values (a quantity 0, a
CTT01 or AMT*TT mismatch: pipeline.py), AK303/AK402 and IK303/IK402 left out
(optional in the standard), no AK404 copy for rule problems (optional).

Found (strict xfails; findings 1-7, 9-11 fixed the next session, each
test failing before: ``orders.SEGMENT_ELEMENTS`` checks mandatory
elements, minimum and maximum lengths (a number's by its digits), AMT03's
codes and 5010 repetitions; rule ``invalid_time``; the ISA's codes, date
and time; ``orders._MAX_USE`` the maximum use of what an order reads;
``orders._SYNTAX_NOTES`` the syntax notes; 8 two sessions later, the
rule ``segment_out_of_sequence``; then every broken segment of a set named
(``orders._Checker``, ``errors.SetErrors``). Left: 12, whose second broken
segment is a PO4, a segment the order does not read nor judge):

1. ``test_a_missing_mandatory_element_is_refused_ak4_1`` [BEG01, BEG02; 997
   and 999]: an 850 whose BEG01 (purpose) or BEG02 (type) is empty — both M
   ID 2/2 — is posted (``purpose`` "", ``order_type`` "") and acknowledged
   AK5/IK5 A; expected refused with AK3 BEG 2 8, AK4 1/2 code 1.
2. ``test_an_impossible_time_is_refused_ak4_9`` [2460, 2400, 235960, 1299 in
   a header and a line DTM03]: TM is HHMM[SS] with hours 00-23, minutes and
   seconds 00-59, yet the time is posted as written with AK5 A; expected AK4
   3 code 9, nothing posted.
3. ``test_a_number_over_its_maximum_digits_is_refused_ak4_5`` [PO102, PO104,
   SAC05, CTT01, AMT02]: numbers are let through up to 20 characters whatever
   the element's maximum (orders.ELEMENT_MAXIMA's comment says rules judge
   them; none does): a 16-digit PO102 is posted (amount 3086419725308640.00),
   CTT01 of 7 digits is only a line-count warning (AK4 7, AK5 E), AMT02 of 19
   digits is refused as AK4 7; expected AK4 5 (too long) and the set refused.
4. ``test_an_element_under_its_minimum_length_is_refused_ak4_4`` [PO103 "E",
   N104 "1", CUR02 "US", CUR03 "1", DTM03 "123"]: no minimum length is
   checked; each is posted (``unit`` "E", ``currency`` "US") with AK5 A;
   expected AK4 4.
5. ``test_a_broken_syntax_rule_is_refused_ak4_2`` [15 cases]: no P/R/C syntax
   note is checked: PO1 P0607 both ways (a product id qualifier ``VP`` posted
   with no id, an id with no qualifier), PO1 C0504, DTM R020305 (a DTM with no
   date, time or period posted), DTM C0403, DTM P0506, SAC R0203 and P0304, N1
   R0203 (an N1 naming no one) and P0304, REF R0203, PER P0304, CTP P0405 (the
   line priced from it), PID R0405; all AK5 A; expected AK3 8 with AK4 code 2
   on an element of the rule, the set refused.
6. ``test_an_invalid_code_value_is_refused_ak4_7``: AMT03 (ID 1/1, 478: C or
   D) ``X`` is accepted, AK5 A; expected AK4 3 code 7.
7. ``test_a_segment_over_its_maximum_use_is_refused_ak3_5`` [DTM x11, PER x4,
   N3 x3 in an N1 loop, SAC loop x26]: maximum use is enforced for BEG, CUR
   and CTT only; these are posted with AK5 A; expected AK3 code 5 (code 4 for
   the loop) at the first segment past the maximum.
8. ``test_a_header_segment_out_of_sequence_is_refused`` [DTM before BEG, REF
   after DTM]: header segments are read in any order (BEG is position 020,
   right after ST; REF 050 precedes DTM 150); AK5 A; expected AK3 code 7 (or
   2) and the set refused.
9. ``test_an_invalid_interchange_element_gets_ta1_r`` [ISA09 240230, ISA10
   2460, ISA01 99, ISA14 2, ISA15 X]: the ISA's values are never checked: the
   order is posted (``interchange_date`` "240230"), no TA1, and for ISA15 the
   997 itself goes out as ``X``; expected TA1 R with note 014/015/010/019/020
   (README: a TA1 is written when the interchange envelope is wrong) and
   nothing posted.
10. ``test_a_repetition_in_a_5010_element_that_does_not_repeat_is_refused``
    [BEG03, PO107]: in 005010 ISA11 ``^`` is the repetition separator, yet
    BEG03 ``PO^49`` is posted as PO number "PO^49" and PO107 ``W-1^W-2`` as one
    id, IK5 A; expected IK4 code 12 (too many repetitions), nothing posted.
11. ``test_the_same_through_edi_inbox_process``: 1 and 5 (BEG02 empty, PO106
    without PO107) reproduced through the ``edi-inbox process`` command with
    round 17's configuration: posted, AK5 A.
12. ``test_the_corpus_file_that_breaks_syntax_notes_is_refused_where_it_breaks_them``:
    the corpus' ``ediengine__850.SyntaxNotes.ERR.edi`` (its ISA12 ``00400``
    made ``00401``, the only thing the daemon refuses it for now) breaks PO1
    P0607 at segment 13 (``PO1*1*120*EA*9.25*TE*CB**PR…``: PO106 without
    PO107) and PO4 C0506/P0607 at segment 30, as EdiEngine's own test
    (``SyntaxNote_Edi850Fail``) expects; the daemon posts it with AK5 A;
    expected AK3 PO1 13 and PO4 30 (AK304 8) with AK4 7 code 2, refused.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_outsider_round17 import RecordingErp, recording, run_one  # noqa: F401

from edi_inbox import store
from edi_inbox.config import (
    DaemonSettings,
    ErpSettings,
    PartnerId,
    PartnerSettings,
    PartnersSettings,
    PathSettings,
    Settings,
)
from edi_inbox.pipeline import Pipeline

from helpers import http_server

SENDER = "ACME"
CORPUS = Path(__file__).parent / "data" / "corpus"
ISA = (
    "ISA*00*          *00*          *ZZ*ACME           *01*123456789      "
    "*240102*1200*{isa11}*{version}*{icn}*0*P*>~"
)


def interchange(*sets: str, version: str = "004010", icn: str = "000000049") -> bytes:
    """One interchange (ISA12 from ``version``), one PO group (GS06 49) of ``sets``."""
    isa = ISA.format(isa11="^" if version >= "004020" else "U", version="0" + version[1:5], icn=icn)
    return (
        isa
        + f"GS*PO*ACMEAPP*OURAPP*20240102*1200*49*X*{version}~"
        + "".join(sets)
        + f"GE*{len(sets)}*49~IEA*1*{icn}~"
    ).encode()


LINE = "PO1*1*10*EA*2.50**VP*W-1~"


def order(
    *body: str,
    st: str = "0001",
    beg: str = "BEG*00*SA*PO49**20240102~",
    ctt: str | None = None,
    summary: tuple[str, ...] = (),
) -> str:
    """An 850: ST, BEG, ``body`` (default one PO1), CTT (counting the PO1s),
    ``summary`` (AMT), SE."""
    segments = [f"ST*850*{st}~", beg, *(body or (LINE,))]
    lines = sum(1 for s in segments if s.startswith("PO1*"))
    segments.append(ctt if ctt is not None else f"CTT*{lines}~")
    segments.extend(summary)
    segments.append(f"SE*{len(segments) + 1}*{st}~")
    return "".join(segments)


def segments_of(data: bytes) -> list[list[str]]:
    text = data.decode("latin-1")
    element, terminator = text[3], text[105]
    return [s.strip("\r\n").split(element) for s in text.split(terminator) if s.strip("\r\n")]


@dataclass
class Outcome:
    status: str
    bodies: list[dict]
    ack: list[list[str]]  # the segments of the one 997/999
    kind: str
    ta1: list[list[list[str]]]  # the segments of each TA1

    def tags(self, *tags: str) -> list[list[str]]:
        return [s for s in self.ack if s[0] in tags]

    @property
    def ak5(self) -> list[str]:
        return self.tags("AK5", "IK5")[0]

    @property
    def ak3(self) -> list[list[str]]:
        return self.tags("AK3", "IK3")

    @property
    def ak4(self) -> list[list[str]]:
        return self.tags("AK4", "IK4")

    @property
    def ak9(self) -> list[str]:
        return self.tags("AK9")[0]


class Harness:
    """The Pipeline in this process (what ``edi-inbox process`` runs), a fresh
    SQLite file per input, the real recording ERP on 127.0.0.1."""

    def __init__(self, erp: RecordingErp, root: Path) -> None:
        self.erp, self.root, self.counter = erp, root, itertools.count()

    def job(
        self,
        data: bytes,
        ack: str = "997",
        sender: str = SENDER,
        daemon: DaemonSettings | None = None,
    ) -> tuple[Any, Settings]:
        """``data`` run as partner acme (``sender`` its ISA06), under ``daemon``
        settings if given: its job and settings."""
        n = next(self.counter)
        root = self.root / f"r{n}"
        partner = PartnerSettings(name="acme", ids=(PartnerId("ZZ", sender),), ack=ack)
        settings = Settings(
            paths=PathSettings(root=root),
            erp=ErpSettings(url=self.erp.url, max_attempts=1),
            partners=PartnersSettings(partners=(partner,)),
            daemon=daemon or DaemonSettings(),
        )
        settings.paths.create()
        db = store.open_database(settings.database_url, settings)
        try:
            store.init(db)
            with Pipeline(settings, store.DatabaseRecorder(db)) as pipeline:
                path = root / f"po{n}.edi"
                path.write_bytes(data)
                return pipeline.run(path), settings
        finally:
            store.close_database(db)

    def run(self, data: bytes, ack: str = "997") -> Outcome:
        before = len(self.erp.bodies)
        job, settings = self.job(data, ack)
        acks = [p for p in sorted(settings.paths.acks.iterdir()) if p.suffix in (".997", ".999")]
        assert len(acks) <= 1, [p.name for p in acks]
        return Outcome(
            str(job.status.value if hasattr(job.status, "value") else job.status),
            self.erp.bodies[before:],
            segments_of(acks[0].read_bytes()) if acks else [],
            acks[0].suffix[1:] if acks else "",
            [
                segments_of(p.read_bytes())
                for p in sorted(settings.paths.acks.iterdir())
                if p.suffix == ".TA1"
            ],
        )


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Iterator[Harness]:
    with http_server() as server:
        erp = RecordingErp(server)
        yield Harness(erp, tmp_path_factory.mktemp("r49"))
        erp.gate.set()


def rejected_at(out: Outcome, segment: str, position: int, element: int, code: str) -> None:
    """The set refused (nothing posted, AK5 R 5, AK9 R) with AK3 naming
    ``segment`` at ``position`` (ST = 1), AK304 8, and an AK4 on ``element``
    with syntax error ``code``."""
    assert out.bodies == [], out.ack
    assert out.ak5[:2] in (["AK5", "R"], ["IK5", "R"]), out.ack
    assert out.ak9[1] == "R", out.ack
    ak3 = [s for s in out.ak3 if s[1] == segment and s[2] == str(position)]
    assert ak3 and ak3[0][4:5] == ["8"], out.ack
    assert [str(element), code] in [[s[1], s[3]] for s in out.ak4], out.ack


def accepted(out: Outcome) -> dict:
    assert out.ak5 in (["AK5", "A"], ["IK5", "A"]), out.ack
    assert out.ak9[1:] == ["A", "1", "1", "1"], out.ack
    (body,) = out.bodies
    return body


# --- what held ----------------------------------------------------------------------


def test_held_a_plain_order(harness):
    body = accepted(harness.run(interchange(order())))
    assert body["po_number"] == "PO49"
    assert body["lines"][0]["quantity"] == "10"
    assert body["lines"][0]["unit_price"] == "2.50"


def test_held_the_997_envelope_and_counts(harness):
    """Two sets: the 997's ISA/GS addressed back, AK1/AK2 echoing GS01/GS06
    and ST01/ST02, SE01 counting ST to SE, the control numbers paired."""
    data = interchange(order(st="0001"), order(st="0002", beg="BEG*00*SA*PO50**20240102~"))
    out = harness.run(data)
    ack = out.ack
    isa, gs, st = ack[0], ack[1], ack[2]
    assert (isa[5], isa[6].strip(), isa[7], isa[8].strip()) == ("01", "123456789", "ZZ", "ACME")
    assert isa[12] == "00401" and len(isa[13]) == 9 and isa[14] == "0"
    assert gs[1:4] == ["FA", "OURAPP", "ACMEAPP"] and gs[8] == "004010"
    assert len(gs[4]) == 8 and len(gs[5]) in (4, 6, 7, 8)
    assert st[1] == "997"
    se = next(s for s in ack if s[0] == "SE")
    assert int(se[1]) == ack.index(se) - ack.index(st) + 1 and se[2] == st[2]
    ge, iea = ack[-2], ack[-1]
    assert ge == ["GE", "1", gs[6]] and iea == ["IEA", "1", isa[13]]
    assert out.tags("AK1") == [["AK1", "PO", "49"]]
    assert out.tags("AK2") == [["AK2", "850", "0001"], ["AK2", "850", "0002"]]
    assert out.tags("AK5") == [["AK5", "A"], ["AK5", "A"]]
    assert out.ak9 == ["AK9", "A", "2", "2", "2"]


def test_held_ak302_counts_from_the_sets_own_st(harness):
    """An error in the second set of a group: AK302 is counted from that
    set's ST (1), not from the ISA or the group."""
    bad = order("PO1*1*X*EA*2.50**VP*W-1~", st="0002", beg="BEG*00*SA*PO50**20240102~")
    out = harness.run(interchange(order(st="0001"), bad))
    assert out.tags("AK5") == [["AK5", "A"], ["AK5", "R", "5"]], out.ack
    assert [s[1:3] for s in out.ak3] == [["PO1", "3"]]
    assert out.ak4 == [["AK4", "2", "", "6", "X"]] or [s[1:4] for s in out.ak4] == [["2", "", "6"]]
    assert out.ak9 == ["AK9", "P", "2", "2", "1"]
    assert len(out.bodies) == 1 and out.bodies[0]["po_number"] == "PO49"


@pytest.mark.parametrize(
    "beg, element",
    [("BEG*00*SA*PO49**20230230~", 5), ("BEG*00*SA*PO49**20230229~", 5)],
)
def test_held_an_impossible_beg05_is_ak4_8(harness, beg, element):
    rejected_at(harness.run(interchange(order(beg=beg))), "BEG", 2, element, "8")


@pytest.mark.parametrize("raw", ["20240231", "20241301", "20240100"])
def test_held_an_impossible_dtm02_is_ak4_8_header_and_line(harness, raw):
    rejected_at(harness.run(interchange(order(f"DTM*002*{raw}~", LINE))), "DTM", 3, 2, "8")
    rejected_at(harness.run(interchange(order(LINE, f"DTM*002*{raw}~"))), "DTM", 4, 2, "8")


def test_held_leap_day_and_valid_times_posted_as_written(harness):
    body = accepted(
        harness.run(interchange(order("DTM*002*20240229*2359~", LINE, "DTM*010*20240301*000000~")))
    )
    assert body["dates"] == [{"qualifier": "002", "date": "2024-02-29", "time": "2359"}]
    assert body["lines"][0]["dates"] == [
        {"qualifier": "010", "date": "2024-03-01", "time": "000000"}
    ]


@pytest.mark.parametrize(
    "po1, element",
    [
        ("PO1*1*+10*EA*2.50**VP*W-1~", 2),  # X12: a plus sign is never sent
        ("PO1*1* 10*EA*2.50**VP*W-1~", 2),
        ("PO1*1*10*EA*2.5E0**VP*W-1~", 4),
        ("PO1*1*1,5*EA*2.50**VP*W-1~", 2),
    ],
)
def test_held_a_malformed_number_is_ak4_6(harness, po1, element):
    rejected_at(harness.run(interchange(order(po1))), "PO1", 3, element, "6")


def test_held_decimals_posted_exactly(harness):
    """R values as written (PO104 ``2.500`` stays 2.500), N2 SAC05 scaled
    by its two implied decimals with its sign."""
    out = harness.run(
        interchange(
            order(
                "SAC*A*C310***-1250~",
                "PO1*1*3*EA*2.500**VP*W-1~",
                "SAC*C*D240***5~",
            )
        )
    )
    body = accepted(out)
    line = body["lines"][0]
    assert (line["quantity"], line["unit_price"], line["amount"]) == ("3", "2.500", "7.500")
    assert body["charges"][0]["amount"] == "-12.50"
    assert line["charges"][0]["amount"] == "0.05"


def test_held_an_element_over_its_maximum_is_ak4_5_with_a_copy(harness):
    name = "N" * 61  # N102 is AN 1/60
    out = harness.run(interchange(order(LINE, f"N1*ST*{name}~")))
    rejected_at(out, "N1", 4, 2, "5")
    assert out.ak4 == [["AK4", "2", "", "5", name]]


def test_held_too_many_elements_is_ak4_3(harness):
    out = harness.run(interchange(order("PO1*1*10*EA*2.50**VP*W-1" + "*" * 20 + "*X~")))
    rejected_at(out, "PO1", 3, 26, "3")  # the first position past PO1's 25


def test_held_a_999_for_005010(harness):
    """A 5010 partner asking for 999s: ST03 and GS08 005010X231A1, AK1 echoing
    GS08, IK3/IK4/IK5 where the 997 has AK3/AK4/AK5, the same codes."""
    out = harness.run(interchange(order("PO1*1*X*EA*2.50**VP*W-1~"), version="005010"), ack="999")
    assert out.kind == "999"
    ack = out.ack
    assert ack[0][12] == "00501" and ack[0][11] == "^"
    assert ack[1][8] == "005010X231A1"
    assert ack[2][1] == "999" and ack[2][3] == "005010X231A1"
    assert out.tags("AK1") == [["AK1", "PO", "49", "005010"]]
    rejected_at(out, "PO1", 3, 2, "6")
    se = next(s for s in ack if s[0] == "SE")
    assert int(se[1]) == ack.index(se) - 1


@pytest.mark.parametrize(
    "old, new, ak9",
    [
        (b"GE*1*49", b"GE*2*49", ["AK9", "R", "2", "1", "0", "5"]),
        (b"GE*1*49", b"GE*1*48", ["AK9", "R", "1", "1", "0", "4"]),
    ],
    ids=["GE01", "GE02"],
)
def test_held_ge01_and_ge02_in_ak9(harness, old, new, ak9):
    """AK902 is GE01 as received, AK903 the sets read, AK905 the group's code."""
    out = harness.run(interchange(order()).replace(old, new))
    assert out.bodies == []
    assert out.ak9 == ak9, out.ack


def test_held_a_second_beg_is_ak3_5(harness):
    out = harness.run(interchange(order("BEG*00*SA*PO50**20240102~", LINE)))
    assert out.bodies == []
    assert [s[1:5] for s in out.ak3] == [["BEG", "3", "", "5"]], out.ack
    assert out.ak5 == ["AK5", "R", "5"]


# --- found --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "beg, element",
    [("BEG**SA*PO49**20240102~", 1), ("BEG*00**PO49**20240102~", 2)],
    ids=["BEG01", "BEG02"],
)
@pytest.mark.parametrize("version, ack", [("004010", "997"), ("005010", "999")])
def test_a_missing_mandatory_element_is_refused_ak4_1(harness, beg, element, version, ack):
    out = harness.run(interchange(order(beg=beg), version=version), ack=ack)
    assert out.kind == ack
    rejected_at(out, "BEG", 2, element, "1")


@pytest.mark.parametrize("time", ["2460", "2400", "235960", "1299"])
@pytest.mark.parametrize("where", ["header", "line"])
def test_an_impossible_time_is_refused_ak4_9(harness, time, where):
    dtm = f"DTM*002*20240110*{time}~"
    segments = (dtm, LINE) if where == "header" else (LINE, dtm)
    out = harness.run(interchange(order(*segments)))
    rejected_at(out, "DTM", 3 if where == "header" else 4, 3, "9")


@pytest.mark.parametrize(
    "segments, tag, position, element",
    [
        (("PO1*1*1234567890123456*EA*2.50**VP*W-1~",), "PO1", 3, 2),  # PO102 R 1/15
        (("PO1*1*1*EA*123456789012345678**VP*W-1~",), "PO1", 3, 4),  # PO104 R 1/17
        (("SAC*C*D240***1234567890123456~", LINE), "SAC", 3, 5),  # SAC05 N2 1/15
        ((LINE, "CTT*1234567~"), "CTT", 4, 1),  # CTT01 N0 1/6
        ((LINE, "CTT*1~", "AMT*TT*1234567890123456789~"), "AMT", 5, 2),  # AMT02 R 1/18
    ],
    ids=["PO102", "PO104", "SAC05", "CTT01", "AMT02"],
)
def test_a_number_over_its_maximum_digits_is_refused_ak4_5(
    harness, segments, tag, position, element
):
    if tag in ("CTT", "AMT"):
        data = order(segments[0], ctt=segments[1], summary=segments[2:])
    else:
        data = order(*segments)
    rejected_at(harness.run(interchange(data)), tag, position, element, "5")


@pytest.mark.parametrize(
    "segments, tag, position, element",
    [
        (("PO1*1*10*E*2.50**VP*W-1~",), "PO1", 3, 3),
        (("N1*ST*NAME*92*1~", LINE), "N1", 3, 4),
        (("CUR*BY*US~", LINE), "CUR", 3, 2),
        (("CUR*BY*USD*1~", LINE), "CUR", 3, 3),
        (("DTM*002*20240110*123~", LINE), "DTM", 3, 3),
    ],
    ids=["PO103", "N104", "CUR02", "CUR03", "DTM03"],
)
def test_an_element_under_its_minimum_length_is_refused_ak4_4(
    harness, segments, tag, position, element
):
    rejected_at(harness.run(interchange(order(*segments))), tag, position, element, "4")


# (segments, segment id, its position from ST, the elements of the broken
# syntax rule: an AK4 2 on one of them)
CONDITIONS = {
    "PO1-P0607-no-07": (("PO1*1*10*EA*2.50**VP~",), "PO1", 3, (7,)),
    "PO1-P0607-no-06": (("PO1*1*10*EA*2.50***W-1~",), "PO1", 3, (6,)),
    "PO1-C0504": (("PO1*1*10*EA**PE*VP*W-1~",), "PO1", 3, (4,)),
    "DTM-R020305": (("DTM*002~", LINE), "DTM", 3, (2, 3, 5)),
    "DTM-C0403": (("DTM*002*20240110**ET~", LINE), "DTM", 3, (3,)),
    "DTM-P0506": (("DTM*002*****20240101-20240102~", LINE), "DTM", 3, (2, 3, 5)),
    "SAC-R0203": (("SAC*C****5000~", LINE), "SAC", 3, (2, 3)),
    "SAC-P0304": (("SAC*C*D240*ZZ**5000~", LINE), "SAC", 3, (4,)),
    "N1-R0203": (("N1*ST~", LINE), "N1", 3, (2, 3)),
    "N1-P0304": (("N1*ST*NAME*92~", LINE), "N1", 3, (4,)),
    "line-N1-R0203": ((LINE, "N1*ST~"), "N1", 4, (2, 3)),
    "REF-R0203": (("REF*DP~", LINE), "REF", 3, (2, 3)),
    "PER-P0304": (("PER*BD*JOE*TE~", LINE), "PER", 3, (4,)),
    "CTP-P0405": (("PO1*1*10*EA***VP*W-1~", "CTP**UCP*2.50*10~"), "CTP", 4, (5,)),
    "PID-R0405": ((LINE, "PID*F~"), "PID", 4, (4, 5)),
}


@pytest.mark.parametrize("case", sorted(CONDITIONS))
def test_a_broken_syntax_rule_is_refused_ak4_2(harness, case):
    segments, tag, position, elements = CONDITIONS[case]
    out = harness.run(interchange(order(*segments)))
    assert out.bodies == [], out.ack
    assert out.ak5[:2] == ["AK5", "R"], out.ack
    assert [s[1:3] + s[4:5] for s in out.ak3] == [[tag, str(position), "8"]], out.ack
    assert any(s[3] == "2" and int(s[1]) in elements for s in out.ak4), out.ack


@pytest.mark.parametrize(
    "segments, tag, position, code",
    [
        ([f"DTM*{100 + i:03d}*20240110~" for i in range(11)], "DTM", 13, "5"),
        (["PER*BD*JOE~"] * 4, "PER", 6, "5"),
        (["N1*ST*NAME~", "N3*A~", "N3*B~", "N3*C~"], "N3", 6, "5"),
        (["SAC*C*D240***100~"] * 26, "SAC", 28, "4"),  # AK304 4: loop over its maximum
    ],
    ids=["DTM-x11", "PER-x4", "N3-x3", "SAC-loop-x26"],
)
def test_a_segment_over_its_maximum_use_is_refused_ak3_5(harness, segments, tag, position, code):
    out = harness.run(interchange(order(*segments, LINE)))
    assert out.bodies == [], out.ack
    assert out.ak5[:2] == ["AK5", "R"], out.ack
    assert [tag, str(position), "", code] in [s[1:5] for s in out.ak3], out.ack


@pytest.mark.parametrize(
    "set_, tag, position, element",
    [
        (order(beg="BEG*00*SA*PO^49**20240102~"), "BEG", 2, 3),
        (order("PO1*1*10*EA*2.50**VP*W-1^W-2~"), "PO1", 3, 7),
    ],
    ids=["BEG03", "PO107"],
)
def test_a_repetition_in_a_5010_element_that_does_not_repeat_is_refused(
    harness, set_, tag, position, element
):
    out = harness.run(interchange(set_, version="005010"), ack="999")
    assert out.kind == "999"
    rejected_at(out, tag, position, element, "12")  # IK403 12: too many repetitions


def test_held_a_caret_in_a_4010_element_is_data(harness):
    """ISA11 ``U`` (4010): ``^`` is no separator, the id is posted as written."""
    body = accepted(harness.run(interchange(order("PO1*1*10*EA*2.50**VP*W-1^W-2~"))))
    assert body["lines"][0]["product_ids"] == [{"qualifier": "VP", "id": "W-1^W-2"}]


@pytest.mark.parametrize(
    "old, new, code",
    [("SE*5*0001~", "SE*6*0001~", "4"), ("SE*5*0001~", "SE*5*0002~", "3")],
    ids=["SE01", "SE02"],
)
def test_held_se01_and_se02_refuse_the_set(harness, old, new, code):
    out = harness.run(interchange(order().replace(old, new)))
    assert out.bodies == []
    assert out.ak5 == ["AK5", "R", code], out.ack
    assert out.ak9 == ["AK9", "R", "1", "1", "0"]


@pytest.mark.parametrize(
    "segments, tag, position",
    [
        (["ST*850*0001~", "DTM*002*20240110~", "BEG*00*SA*PO49**20240102~"], "BEG", 3),
        (["ST*850*0001~", "BEG*00*SA*PO49**20240102~", "DTM*002*20240110~", "REF*DP*1~"], "REF", 4),
    ],
    ids=["DTM-before-BEG", "REF-after-DTM"],
)
def test_a_header_segment_out_of_sequence_is_refused(harness, segments, tag, position):
    body = [*segments, LINE, "CTT*1~"]
    data = interchange("".join(body) + f"SE*{len(body) + 1}*0001~")
    out = harness.run(data)
    assert out.bodies == [], out.ack
    assert out.ak5[:2] == ["AK5", "R"], out.ack
    # AK304 7 (not in proper sequence) or 2 (unexpected), on either segment swapped
    assert any(s[4:5] in (["7"], ["2"]) for s in out.ak3), out.ack


def test_an_invalid_code_value_is_refused_ak4_7(harness):
    out = harness.run(interchange(order(summary=("AMT*TT*25*X~",))))
    rejected_at(out, "AMT", 5, 3, "7")


@pytest.mark.parametrize(
    "old, new, note",
    [
        (b"*240102*1200*", b"*240230*1200*", "014"),  # ISA09 DT YYMMDD
        (b"*240102*1200*", b"*240102*2460*", "015"),  # ISA10 TM HHMM
        (b"ISA*00*", b"ISA*99*", "010"),  # ISA01 I01: 00-06
        (b"*0*P*>~", b"*2*P*>~", "019"),  # ISA14 I13: 0, 1
        (b"*0*P*>~", b"*0*X*>~", "020"),  # ISA15 I14: I, P, T
    ],
    ids=["ISA09", "ISA10", "ISA01", "ISA14", "ISA15"],
)
def test_an_invalid_interchange_element_gets_ta1_r(harness, old, new, note):
    data = interchange(order()).replace(old, new, 1)
    out = harness.run(data)
    assert out.bodies == [], out.ack
    assert [t[1][4:6] for t in out.ta1] == [["R", note]], out.ta1


def test_the_same_through_edi_inbox_process(tmp_path, recording):  # noqa: F811
    x12 = order("PO1*1*10*EA*2.50**VP~", beg="BEG*00**PO49**20240102~")
    job, bodies, groups = run_one(tmp_path, recording, x12)
    assert bodies == [], job["status"]
    assert groups[0][1] == [("0001", "R")], groups


def corpus_file(name: str) -> bytes:
    path = CORPUS / name
    if not path.exists():
        if os.environ.get("CI"):
            raise AssertionError(f"{path} is missing")
        pytest.skip(f"{path} is missing")
    return path.read_bytes()


@pytest.mark.xfail(
    strict=True,
    reason="EdiEngine's 850.SyntaxNotes.ERR (ISA12 made 00401): refused at PO1 segment 13,"
    " but PO4 C0506/P0607 at 30, which EdiEngine's own test expects, is not named: the"
    " order does not read PO4, so its elements are not judged",
)
def test_the_corpus_file_that_breaks_syntax_notes_is_refused_where_it_breaks_them(harness):
    data = corpus_file("ediengine__850.SyntaxNotes.ERR.edi").replace(b"*00400*", b"*00401*", 1)
    out = harness.run(data)
    assert out.bodies == [], out.ack
    assert out.ak5[:2] == ["AK5", "R"], out.ack
    assert ["PO1", "13", "", "8"] in [s[1:5] for s in out.ak3], out.ack
    assert ["PO4", "30", "", "8"] in [s[1:5] for s in out.ak3], out.ack
    assert ["7", "", "2"] in [s[1:4] for s in out.ak4], out.ack
