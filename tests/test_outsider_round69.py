"""Outside tester, round 69: the truth of the 997 a partner gets back, set by
set, after the newest structure rules (``segment_out_of_sequence`` AK304 7,
``misplaced_segment`` AK304 2, maximum use, element lengths by release, each
broken segment named).

Inputs are small 850s (round 49's ``interchange``/``order``) and a real file
of the corpus (``ediengine__850.OK.edi``, found as round 49's ``corpus_file``
finds it) run through the real Pipeline in this process (round 49's
``Harness``: what ``edi-inbox process`` runs, a fresh SQLite file per input,
round 17's recording HTTP ERP on 127.0.0.1); the 997s are read back by
splitting on their own ISA's separators. Each structure was checked against
the release's 850 before being called valid or invalid: bots-edi/bots-grammars
``x12/3040/850003040.py``, ``x12/3060/850003060.py``, ``x12/4010/850004010.py``,
``x12/4030/850004030.py``, ``x12/5010/850005010.py`` (segment order, loops,
max use) and ``x12/3040/records003040.py`` (3040's element lengths); AK3's
elements and element 720's codes (1 unrecognized segment id, 2 unexpected, 5
over maximum use, 6 not in the defined set, 7 not in proper sequence) from
published 997 references (Stedi, TrueCommerce, kasoftware's 00303 AK3).

What I tried
- False rejections: every plain header segment of 3040, 3060, 4010 and
  5010 in the release's order (5010's LDT loop after TXI, AMT's FA1/FA2, N9's EFI, LM/LQ,
  SPI/CB1, ADV); loops at their maximum (200 header N1 loops each with 2 N2,
  2 N3, 2 N4, 12 REF, 4 PER; 25 SAC; a line with 1000 PID, 10 DTM, 25 SAC,
  200 N1 loops each full); 3040's NTE after BEG.
- False acceptances and positions: a real file's header DTM moved into its
  N1 loop; a second segment where its loop allows one (AMT loop DTM, SAC
  loop CUR, a line's N1 loop N4, CTP loop CUR); loop-only segments alone in
  the header (CB1, MSG, FA1, FA2, LS, LE, 5010 EFI and MTX); N9/AMT/LM/ADV/
  SPI loops followed by earlier header segments; 3040 elements longer than
  3040 allows (N102, N104, N301, PO101, PO107), a PID09 3040 does not have,
  3040 max uses (header REF 12, N1 loop N4 1 and PER 3); unknown segment ids
  (BSN, HL, QQQ); 12 broken REFs and 12 DTMs (the ten named, a segment over
  its maximum named once).
- Counts and envelope: one interchange of three groups (good+bad, bad,
  good+good): one 997 a group, AK9 P/R/A, sender and receiver swapped, GS08
  and AK1 echoed, SE01; a 3040 group's 997 GS04 of six digits.

What held (plain tests)
- ``test_held_a_real_files_header_date_moved_into_its_n1_loop_is_out_of_sequence``:
  AK3 DTM 12 AK304 7 (counted from ST), AK5 R 5, AK9 R 1 1 0, nothing posted.
- ``test_held_every_header_segment_in_its_releases_order_is_accepted``
  [003040, 003060, 004010, 005010].
- ``test_held_three_groups_each_their_own_997_and_counts``.
- Seen, not pinned: the maximum loops above are posted AK5 A; ``N1, N9``,
  ``N1, AMT``, ``LM LQ, N1``, ``ADV, N1``, ``SPI N1, N9``, ``N9 MSG, REF``,
  ``AMT REF, PER`` each AK304 7 at the right position; 12 broken REFs name
  ten; 12 DTMs name the 11th once (AK304 5); BSN and HL AK304 6; AK303 (loop
  id) is never written -- optional in every 997 release and about LS/LE
  loops, not a defect; order inside a loop is not judged (``SPI CB1 REF N1``,
  ``N1 TD5 PER`` posted; README says so).

Found (strict xfails; 5 of 6 fixed the same session, each test failing
before: a loop's segment past its maximum use there is AK304 5
(``orders._MAX_USE`` by loop); a segment the header holds only in a loop
is misplaced (``orders.HEADER_IN_LOOP_ONLY``, LS/LE in ``LINE_ONLY``);
003040 has its own lengths and maximum uses (``orders._IN_3040``,
``_MAX_USE_3040``, ``Syntax.max_use``). Left: AK304 1)
- ``test_a_loops_segment_past_its_maximum_use_is_not_dropped`` [4010 and 5010
  AMT DTM DTM, 4010 SAC CUR CUR, 4010 and 5010 a line's N1 N4 N4]: posted
  AK5 A with the second segment's content silently dropped (the header's
  delivery date DTM*002, the currency EUR, a second ship-to city). X12 850
  (3060-5010): the AMT loop's DTM and the SAC loop's CUR max 1, a line N1
  loop's N4 max 1; the second stands nowhere: AK304 5 or 7, set refused.
  Cause: ``orders._MAX_USE`` counts none of them, and inside a loop a
  segment of ``_HEADER_LOOPS``/``_LINE_LOOPS`` is skipped unread however
  often it comes.
- ``test_a_loop_only_segment_alone_in_the_header_is_misplaced`` [4010 CB1,
  MSG, FA1, FA2, LS, LE; 5010 EFI, MTX]: posted AK5 A. X12: each stands only
  in its loop (SPI; N9/SPI/CB1; AMT; FA1; PO1; N9; LDT/N9/SPI/CB1/ADV);
  README: a loop's segment alone in the header is ``misplaced_segment``,
  AK304 2. Cause: ``orders.IN_LOOP_ONLY``/``LINE_ONLY`` lack them (round 63
  added IN2/G61/QTY/SCH only); unlisted segments go anywhere.
- ``test_a_3040_element_longer_than_its_release_allows_is_refused`` [N102 36,
  N104 18, N301 40, PO101 12, PO107 40]: posted AK5 A. X12 3040: N102 AN
  1/35, N104 AN 2/17, N301 AN 1/35, PO101 AN 1/11, PO107 AN 1/30: AK4 5 with
  the value. Cause: ``orders._BEFORE_4010`` overlays DTM only; everything
  else before 004010 is judged by 004010's lengths (60, 80, 55, 20, 48).
- ``test_a_3040_pid_with_a_ninth_element_is_refused_ak4_3``: posted AK5 A.
  3040's PID has eight elements (PID09 came with a later release): AK4 9 3, as
  4010's PID10 gets. Same cause (004010's table for every earlier release).
- ``test_a_3040_segment_past_its_releases_maximum_use_is_refused`` [13
  header REFs, two N4s or four PERs in an N1 loop]: posted AK5 A. X12 3040
  850: header REF max 12, header N1 loop N4 max 1 and PER max 3: AK304 5.
  Cause: ``orders._MAX_USE`` is 004010's for every release.
- ``test_an_id_in_no_segment_directory_is_unrecognized_ak304_1``: ``QQQ``
  gets AK304 6 as BSN does. Element 720: 1 "Unrecognized segment ID" for an
  id in no segment directory, 6 "Segment not in defined transaction set"
  for a real segment the set does not use. Cause: ``pipeline``'s rule-code
  table maps ``unknown_segment`` to 6 whatever the id.

About 5 s at -n0; no daemon, no timing, no sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_outsider_round17 import RecordingErp
from test_outsider_round49 import (
    ISA,
    LINE,
    Harness,
    Outcome,
    corpus_file,
    interchange,
    order,
    segments_of,
)

from helpers import http_server


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Iterator[Harness]:
    with http_server() as server:
        erp = RecordingErp(server)
        yield Harness(erp, tmp_path_factory.mktemp("r69"))
        erp.gate.set()


def refused_at(out: Outcome, segment: str, position: int, codes: tuple[str, ...]) -> None:
    """Nothing posted, AK5 R 5, AK9 R 1 1 0, and an AK3 naming ``segment`` at
    ``position`` (ST = 1) with an AK304 among ``codes``."""
    assert out.bodies == [], out.ack
    assert out.ak5 == ["AK5", "R", "5"], out.ack
    assert out.ak9 == ["AK9", "R", "1", "1", "0"], out.ack
    named = [s[1:5] for s in out.ak3 if s[1] == segment and s[2] == str(position)]
    assert named and named[0][3] in codes, out.ack


# --- what held ----------------------------------------------------------------------


# ediengine__850.OK.edi: ST 1, BEG 2, REF 3, REF 4, ITD 5, DTM 6, PKG 7, PKG 8,
# TD5 9, N1 10, N3 11, N4 12, PO1 13 ...
OK_DTM = b"DTM*002*20101214\n"
OK_N4 = b"N4*SOLON*OH*44139\n"


def ok_file() -> bytes:
    return corpus_file("ediengine__850.OK.edi").replace(b"\r\n", b"\n")


def test_held_a_real_files_header_date_moved_into_its_n1_loop_is_out_of_sequence(harness):
    data = ok_file()
    assert OK_DTM in data and OK_N4 in data
    moved = data.replace(OK_DTM, b"").replace(OK_N4, OK_N4 + OK_DTM)
    refused_at(harness.run(moved), "DTM", 12, ("7",))


# Every plain header segment of the release, and its loops, in the release's order
# (bots 850004010.py / 850005010.py: the LDT a plain segment after DTM in 4010, a
# loop QTY MTX REF after TXI in 5010; AMT REF DTM PCT FA1 FA2; N9 EFI in 5010).
HEADER_4010 = (
    "CUR*BY*USD~ REF*ZZ*1~ PER*BD*A~ TAX*1~ FOB*CC~ CTP**RES*1~ PAM*01*5~ CSH*Y~ TC2*A*B~"
    " SAC*C*D240***100~ CUR*BY*USD~ ITD*01~ DIS*ZZ*1*A*1~ INC*1*1~ DTM*002*20240101~"
    " {ldt} LIN**VP*1~ SI*ZZ*1*A~ PID*F****X~ MEA*ZZ*1~ PWK*AA~ PKG*F*68***P~ TD1*CTN*1~"
    " TD5*A~ TD3*TL~ TD4*ZZZ~ MAN*GM*1~ PCT*ZZ*1~ CTB*ZZ*A~ TXI*ST*1~ {ldt_loop}"
    " AMT*TT*25~ REF*ZZ*2~ DTM*011*20240101~ PCT*ZZ*5~ FA1*DZ~ FA2*58*1~ N9*ZZ*X~ {efi}"
    " N1*ST*X~ LM*ZZ~ LQ*0*1~ SPI*00~ CB1*1*A~ ADV*1~"
)
HEADERS = {
    # bots 850003040.py: NTE after BEG, SAC no loop, the LDT plain after DTM, no AMT
    "003040": "NTE*GEN*X~ CUR*BY*USD~ REF*ZZ*1~ PER*BD*A~ TAX*1~ FOB*CC~ CTP**RES*1~ CSH*Y~"
    " SAC*C*D240***100~ ITD*01~ DIS*ZZ*1*A*1~ INC*1*1~ DTM*002*20240101~ LDT*AE*5~"
    " LIN**VP*1~ SI*ZZ*1*A~ PID*F****X~ MEA*ZZ*1~ PWK*AA~ PKG*F*68***P~ TD1*CTN*1~ TD5*A~"
    " TD3*TL~ TD4*ZZZ~ MAN*GM*1~ CTB*ZZ*A~ TXI*ST*1~ N9*ZZ*X~ MSG*A~ N1*ST*X~ N2*A~ N3*B~"
    " N4*AB*NY*10001~ PER*BD*A~",
    # bots 850003060.py: the AMT loop holds AT; the SPI loop MSG
    "003060": "NTE*GEN*X~ CUR*BY*USD~ REF*ZZ*1~ PER*BD*A~ TAX*1~ FOB*CC~ CTP**RES*1~"
    " PAM*01*5~ CSH*Y~ SAC*C*D240***100~ CUR*BY*USD~ ITD*01~ DIS*ZZ*1*A*1~ INC*1*1~"
    " DTM*002*20240101~ LDT*AE*5~ LIN**VP*1~ SI*ZZ*1*A~ PID*F****X~ MEA*ZZ*1~ PWK*AA~"
    " PKG*F*68***P~ TD1*CTN*1~ TD5*A~ TD3*TL~ TD4*ZZZ~ MAN*GM*1~ CTB*ZZ*A~ TXI*ST*1~"
    " AMT*TT*25~ AT*1~ REF*ZZ*2~ DTM*011*20240101~ PCT*ZZ*5~ N9*ZZ*X~ MSG*A~ N1*ST*X~"
    " LM*ZZ~ LQ*0*1~ SPI*00~ MSG*B~ CB1*1*A~",
    "004010": HEADER_4010.format(ldt="LDT*AE*5~", ldt_loop="", efi=""),
    "005010": HEADER_4010.format(
        ldt="", ldt_loop="LDT*AE*5~ QTY*01*1~ MTX*A~ REF*ZZ*3~", efi="EFI*05~"
    ),
}


@pytest.mark.parametrize("version", list(HEADERS))
def test_held_every_header_segment_in_its_releases_order_is_accepted(harness, version):
    out = harness.run(interchange(order(*HEADERS[version].split(), LINE), version=version))
    assert out.ak5 == ["AK5", "A"] and out.ak3 == [], out.ack
    assert len(out.bodies) == 1, out.ack


TOO_LONG_REF = "REF*ZZ*" + "X" * 40 + "~"


def group(gcn: int, *sets: str) -> str:
    return f"GS*PO*ACMEAPP*OURAPP*20240102*1200*{gcn}*X*004010~{''.join(sets)}GE*{len(sets)}*{gcn}~"


def test_held_three_groups_each_their_own_997_and_counts(harness):
    """One interchange, three groups: (good, REF02 too long), (REF02 too long),
    (good, good): one 997 a group, AK9 P 2 2 1 / R 1 1 0 / A 2 2 2, the
    envelope swapped, GS08 echoed, AK1 the group's GS06, SE01 right."""
    po = lambda n: f"BEG*00*SA*PO{n}**20240102~"  # noqa: E731
    data = (
        ISA.format(isa11="U", version="00401", icn="000000049")
        + group(49, order(st="0001", beg=po(1)), order(TOO_LONG_REF, st="0002", beg=po(2)))
        + group(50, order(TOO_LONG_REF, st="0001", beg=po(3)))
        + group(51, order(st="0001", beg=po(4)), order(st="0002", beg=po(5)))
        + "IEA*3*000000049~"
    ).encode()
    before = len(harness.erp.bodies)
    job, settings = harness.job(data, sender="ACME")
    assert str(getattr(job.status, "value", job.status)) == "partial"
    assert [b["po_number"] for b in harness.erp.bodies[before:]] == ["PO1", "PO4", "PO5"]
    acks = {p.name: segments_of(p.read_bytes()) for p in settings.paths.acks.iterdir()}
    name = job.file_name
    assert sorted(acks) == [f"{name}.49.997", f"{name}.50.997", f"{name}.51.997"]
    expected = {
        "49": [["AK5", "A"], ["AK5", "R", "5"], ["AK9", "P", "2", "2", "1"]],
        "50": [["AK5", "R", "5"], ["AK9", "R", "1", "1", "0"]],
        "51": [["AK5", "A"], ["AK5", "A"], ["AK9", "A", "2", "2", "2"]],
    }
    for gcn, ack in ((kept.rsplit(".", 2)[1], ack) for kept, ack in acks.items()):
        assert [s for s in ack if s[0] in ("AK5", "AK9")] == expected[gcn], ack
        isa, gs = ack[0], ack[1]
        assert [isa[5].strip(), isa[6].strip(), isa[7], isa[8].strip()] == [
            "01",
            "123456789",
            "ZZ",
            "ACME",
        ], isa
        assert [gs[1], gs[2], gs[3], gs[8]] == ["FA", "OURAPP", "ACMEAPP", "004010"], gs
        assert ["AK1", "PO", gcn] in ack, ack
        st = next(i for i, s in enumerate(ack) if s[0] == "ST")
        se = next(i for i, s in enumerate(ack) if s[0] == "SE")
        assert int(ack[se][1]) == se - st + 1 and ack[se][2] == ack[st][2], ack


# --- found --------------------------------------------------------------------------

# Each a second segment where its loop allows one (X12 850, bots-edi/bots-grammars
# x12/4010/850004010.py and x12/5010/850005010.py): the header's AMT loop "AMT REF
# DTM(max 1) PCT FA1", its SAC loop "SAC CUR(max 1)", a line's N1 loop "... N4(max 1)".
# The second cannot be the loop's and stands nowhere else: AK304 5 (over its
# maximum use) or 7 (out of sequence: the header's DTM and CUR come before AMT/SAC).
OVER_MAX_IN_A_LOOP = {
    # ST 1, BEG 2, AMT 3, DTM 4, DTM 5: the order's delivery date, dropped
    "4010-amt-dtm-dtm": (
        "004010",
        ("AMT*TT*25~", "DTM*011*20240105~", "DTM*002*20240110~", LINE),
        "DTM",
        5,
    ),
    "5010-amt-dtm-dtm": (
        "005010",
        ("AMT*TT*25~", "DTM*011*20240105~", "DTM*002*20240110~", LINE),
        "DTM",
        5,
    ),
    # ST 1, BEG 2, SAC 3, CUR 4, CUR 5: the order's currency EUR, dropped
    "4010-sac-cur-cur": (
        "004010",
        ("SAC*C*D240***100~", "CUR*BY*USD~", "CUR*BY*EUR~", LINE),
        "CUR",
        5,
    ),
    # ST 1, BEG 2, PO1 3, N1 4, N4 5, N4 6: a second ship-to city, dropped
    "4010-line-n1-n4-n4": (
        "004010",
        (LINE, "N1*ST*X~", "N4*AB*NY*10001~", "N4*CD*CA*90001~"),
        "N4",
        6,
    ),
    "5010-line-n1-n4-n4": (
        "005010",
        (LINE, "N1*ST*X~", "N4*AB*NY*10001~", "N4*CD*CA*90001~"),
        "N4",
        6,
    ),
}


@pytest.mark.parametrize("case", list(OVER_MAX_IN_A_LOOP))
def test_a_loops_segment_past_its_maximum_use_is_not_dropped(harness, case):
    version, body, segment, position = OVER_MAX_IN_A_LOOP[case]
    refused_at(
        harness.run(interchange(order(*body), version=version)), segment, position, ("5", "7")
    )


# Segments that stand only inside a loop (bots 850004010.py, 850005010.py): CB1 in
# the SPI loop, MSG in the N9, SPI and CB1 loops (4010 has no NTE), FA1 in the AMT
# loop, FA2 in the FA1 loop, LS/LE only in a line (PO1 loop); in 005010 EFI only in
# the N9 loop, MTX only in the LDT, N9, SPI, CB1 and ADV loops. Alone in the header,
# after the DTM: ST 1, BEG 2, DTM 3, it 4.
LOOP_ONLY = [
    ("004010", "CB1*1*A~"),
    ("004010", "MSG*TEXT~"),
    ("004010", "FA1*DZ~"),
    ("004010", "FA2*58*1~"),
    ("004010", "LS*1~"),
    ("004010", "LE*1~"),
    ("005010", "EFI*05~"),
    ("005010", "MTX*AAA*TEXT~"),
]


@pytest.mark.parametrize(
    "version, segment", LOOP_ONLY, ids=[f"{v[2:6]}-{s.split('*')[0]}" for v, s in LOOP_ONLY]
)
def test_a_loop_only_segment_alone_in_the_header_is_misplaced(harness, version, segment):
    out = harness.run(interchange(order("DTM*002*20240110~", segment, LINE), version=version))
    refused_at(out, segment.split("*")[0], 4, ("2",))


# 003040's element dictionary (bots-grammars x12/3040/records003040.py): N102 AN 1/35,
# N104 AN 2/17, N201 AN 1/35, N301 AN 1/35, PO101 AN 1/11, PO107 AN 1/30 (004010:
# 1/60, 2/80, 1/60, 1/55, 1/20, 1/48).
TOO_LONG_IN_3040 = {
    # ST 1, BEG 2, N1 3
    "n102-36": (("N1*ST*" + "N" * 36 + "~", LINE), "N1", 3, "2", "N" * 36),
    "n104-18": (("N1*ST*X*92*" + "1" * 18 + "~", LINE), "N1", 3, "4", "1" * 18),
    # ST 1, BEG 2, N1 3, N3 4
    "n301-40": (("N1*ST*X~", "N3*" + "A" * 40 + "~", LINE), "N3", 4, "1", "A" * 40),
    # ST 1, BEG 2, PO1 3
    "po101-12": (("PO1*LINE00000001*10*EA*2.50**VP*W-1~",), "PO1", 3, "1", "LINE00000001"),
    "po107-40": (("PO1*1*10*EA*2.50**VP*" + "W" * 40 + "~",), "PO1", 3, "7", "W" * 40),
}


@pytest.mark.parametrize("case", list(TOO_LONG_IN_3040))
def test_a_3040_element_longer_than_its_release_allows_is_refused(harness, case):
    body, segment, position, element, value = TOO_LONG_IN_3040[case]
    out = harness.run(interchange(order(*body), version="003040"))
    refused_at(out, segment, position, ("8",))
    assert [element, "", "5", value] in [s[1:5] for s in out.ak4], out.ack


def test_a_3040_pid_with_a_ninth_element_is_refused_ak4_3(harness):
    out = harness.run(interchange(order(LINE, "PID*F****DESC****EN~"), version="003040"))
    refused_at(out, "PID", 4, ("8",))  # ST 1, BEG 2, PO1 3, PID 4
    assert ["9", "", "3", "EN"] in [s[1:5] for s in out.ak4], out.ack


# The 003040 850 (bots 850003040.py): the header's REF max 12, its N1 loop's N4 max 1
# and PER max 3 (004010 lifts all three; round 60 saw the PER's 3, left it).
OVER_MAX_IN_3040 = {
    # ST 1, BEG 2, REF 3..15
    "header-13-ref": (tuple(f"REF*ZZ*R{i}~" for i in range(13)), "REF", 15),
    # ST 1, BEG 2, N1 3, N4 4, N4 5: a second address
    "n1-loop-2-n4": (("N1*ST*X~", "N4*AB*NY*10001~", "N4*CD*CA*90001~"), "N4", 5),
    # ST 1, BEG 2, N1 3, PER 4..7
    "n1-loop-4-per": (("N1*ST*X~", *(f"PER*BD*{c}~" for c in "ABCD")), "PER", 7),
}


@pytest.mark.parametrize("case", list(OVER_MAX_IN_3040))
def test_a_3040_segment_past_its_releases_maximum_use_is_refused(harness, case):
    body, segment, position = OVER_MAX_IN_3040[case]
    out = harness.run(interchange(order(*body, LINE), version="003040"))
    refused_at(out, segment, position, ("5",))


@pytest.mark.xfail(
    strict=True,
    reason="a segment whose id is in no X12 segment directory (QQQ) gets AK304 6 (segment"
    " not in the defined transaction set), as BSN or HL do; X12 element 720: 1"
    " Unrecognized segment ID for an id the directory does not hold, 6 for a defined"
    " segment the set does not use. pipeline's rule-to-code table maps unknown_segment"
    " to 6 whatever the id",
)
def test_an_id_in_no_segment_directory_is_unrecognized_ak304_1(harness):
    out = harness.run(interchange(order("DTM*002*20240110~", "QQQ*1~", LINE)))
    refused_at(out, "QQQ", 4, ("1",))
