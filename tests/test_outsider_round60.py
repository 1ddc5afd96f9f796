"""Outside tester, round 60: false rejections — does the stricter 997 now
refuse valid real-world 850s?

Inputs are valid 850s written the way partners' translators write them
(VICS/UCS-style retail orders with CUR, REF and its REF04 composite, PER,
FOB, ITD, SAC allowances by percent and charges by rate, DTM, TD5, N9/MSG,
N1 loops with N2/N3/N4/REF/PER, PO1 with CTP, PID, PO4, SDQ, line SACs,
summary AMT; Amazon-, Target- and Home Depot-style orders), in 003040,
003060, 004010, 004010VICS, 004030, 004040, 005010, 006020 and 008010,
run through round 49's in-process harness (the real Pipeline, a fresh
SQLite file per input, the recording HTTP ERP on 127.0.0.1). Each
structure and length was checked against that release before being called
valid: bots-edi's 850 grammars per release (bots-edi/bots-grammars
x12/3040/850003040.py, x12/3060/850003060.py, x12/4030/850004030.py,
x12/5010/850005010.py; bots' 850004010.py as Ardast-Team/raspimapper
keeps it in bots/usersys/grammars/x12), Stedi's X12 reference
per release (x12-004040 REF: element 127 AN 1/50; x12-004020 element 127
AN 1/30; x12-003040...008040 SAC), stupidedi's 005010 dictionary (E364
Communication Number AN 1/256, E127 AN 1/50) and its 005010 PER/CTP
segment definitions, and the 8010 N4 (stedi.com/edi/x12/segment/N4,
x12_alt release_8010 n4.rs: N408, element 1702).

What I tried
- A full retail order in seven versions, three partner styles, line N1
  loops with their LDT/MAN, everything ``posted`` below asserts (AK5 A,
  AK9 A 1 1 1, no AK3/AK4).
- Per version, the places where the standard moved or widened what the
  daemon judges: element lengths that grew (364 in 005010, 127 from
  004040: REF02 was widened, SAC13 not; 782 in CTP08), loops that gained
  segments (IN2 in N1 loops from 004030, PWK/EFI/MTX in the N9 loop, AT in
  3060's AMT loop, LDT made a header loop placed after TXI from 004030),
  maximum uses that differ between the header's and the line's N1 loop
  (PER), segments added to a segment (N408 in 008010).
- Envelopes of other versions: GS04 YYMMDD in 003040, GS05 HHMMSS and
  HHMMSSDD, ST03 in 005010, ISA14 1 with ISA15 T in 00501, GS07 T, a
  nine-digit GS06, a nine-character ST02, CR/LF after each terminator.
- the public corpus (``corpus/public/``, beside the checkout) through ``tests/corpus_outcomes.py``'s
  ``table()`` (by hand): byte for byte ``tests/data/corpus_outcomes.txt``
  (173 lines, 57 files).

What held (plain tests)
- ``test_held_a_retail_order_is_posted_in_every_version`` [003040 003060
  004010 004010VICS 004030 005010 006020]: the same retail order (percent
  allowance SAC06/07 with SAC12, rate charge SAC08/09/10, REF04, CTP RES
  and UCP with CTP04/05, SDQ, summary AMT TT) posted, AK5 A.
- ``test_held_other_partner_styles_are_posted`` [amazon-4010, amazon-5010,
  home-depot-4010].
- ``test_held_a_line_n1_loop_with_its_ldt_and_man`` [004010, 005010].
- By hand, not kept: every envelope variant above (AK5 A, TA1 A); a
  plain order in 002040, 003010, 003020, 003030 (YYMMDD dates); a
  Target-style 4010 order (PO4, SDQ, N9 with two MSGs); 5010 N9
  with MTX; LS/LDT/LE in a line; header SI and CTP; DTM periods (RD8),
  4010 DTM05 centuries, 3040 BEG05 YYMMDD; REF with REF03 only, PER09,
  N105/N106, N405/N406, PID structured, CTP06/07, CUR with its dates; the
  corpus as the table says.
- Seen, not followed: an AMT*TT that includes the TXI tax is refused by
  ``total_mismatch`` (AK3 AMT / AK4 2 code 7) — a documented business
  rule, not the 997's syntax (AK403 7 "invalid code value" on a monetary
  amount is an odd code for it); CTP08 is element 782 (R 1/18) but
  ``_SEGMENT_ELEMENTS`` gives R 1/15 (only a 16-18-digit amount differs).

Found (strict xfails; each asserts the order posted, AK5 A; all 8 fixed the
same session, each test failing before: ``orders._FROM_4040`` SAC13 and
``_FROM_5010`` PER lines; the header's N1 loop counted apart from a line's
(no PER limit); ``Syntax.later``: elements past a segment's last not refused
after 005010; the loops of every release together (IN2, MTX/PWK/EFI, AT,
the header's LDT loop, placed anywhere in the header))
1. ``test_a_5010_per04_of_up_to_256_characters_is_posted`` [header, N1
   loop]: a 120-character e-mail in PER04 of a 005010 order is refused
   AK3 PER / AK4 4 code 5, order not posted. 005010's element 364
   (Communication Number) is AN 1/256 (stupidedi FiftyTen ElementDefs;
   004010's is 1/80). Cause: ``orders._SEGMENT_ELEMENTS["PER"]`` is
   004010's line for every version; ``_FROM_5010`` overlays REF and N4 only.
2. ``test_a_sac13_of_up_to_50_characters_is_posted_from_4040`` [004040,
   005010]: a 40-character SAC13 is refused AK4 13 code 5. SAC13 is
   element 127, AN 1/50 from 004040 (Stedi x12-004040 REF02, the same
   element; 1/30 in 004020). Cause: ``orders._FROM_4040`` widens REF02 and
   C040 (``C040.50``) but not SAC13.
3. ``test_four_contacts_in_a_header_n1_loop_are_posted`` [003060, 004010,
   005010]: a bill-to with four PERs (buyer, payables, receiving, after
   hours) is refused AK304 5 at the fourth. The header N1 loop's PER has
   max use >1 from 003060 (004010 position 360; bots 850003060/850004010/
   850004030/850005010), the line N1 loop's 3 (and 3040's header 3).
   Cause: ``orders._MAX_USE["an N1 loop"]`` PER 3, one table for header
   and line N1 loops (``_PartyBuilder`` always counts with it).
4. ``test_a_header_ldt_loop_after_td5_is_in_sequence_from_4030`` [004030,
   005010]: ``DTM, TD5, LDT, REF, N1`` is refused AK304 7 at the LDT and at
   its REF. From 004030 the header's LDT is a loop (LDT QTY MTX REF) placed
   after TXI, before the AMT, N9 and N1 loops (bots 850004030/850005010;
   in 004010 LDT is position 160, after DTM). Cause:
   ``orders._HEADER_SEQUENCE`` is 004010's order for every version, and
   ``_HEADER_LOOPS`` has no LDT loop.
5. ``test_an_n1_loop_with_in2_is_posted_from_4030`` [header, line,
   subline]: ``N1, IN2, IN2, N3, N4`` (a consumer ship-to) is refused
   AK304 2 ``misplaced_segment`` at N3 and N4. From 004030 the N1 loops
   (header, PO1, SLN) hold IN2 after N2, before N3. Cause:
   ``orders._HEADER_LOOPS``/``_LINE_LOOPS`` N1 and SLN lack IN2, so the IN2
   closes the loop and N3/N4 are ``IN_LOOP_ONLY`` outside it.
6. ``test_a_pwk_inside_a_5010_n9_loop_is_posted``: ``N9, MTX, PWK`` is
   refused AK304 7 at the PWK. From 004030 the header N9 loop is N9 DTM MTX
   PWK EFI. Cause: ``orders._HEADER_LOOPS["N9"]`` is 004010's ``DTM MSG``:
   the PWK closes the loop and is judged as the header's PWK, which the
   header places before N9.
7. ``test_a_3060_amt_loop_with_at_then_ref_is_posted``: ``AMT, AT, REF``
   in a 003060 header is refused AK304 7 at the REF. 003060's header AMT
   loop is AMT AT REF DTM PCT (bots 850003060). Cause:
   ``orders._HEADER_LOOPS["AMT"]`` lacks AT.
8. ``test_an_8010_n4_with_its_formatted_postal_code_is_posted``: an 008010
   N4 with N408 (element 1702, the postal code as formatted) is refused
   AK4 8 code 3 (too many elements). Cause: ``orders._TABLES``' newest
   table is 005010's: N4 has seven elements for every later version.

The common cause of 4-7: the loop and sequence tables are 004010's for
every release (``Syntax.of`` picks element tables by version, not
structure). About 2 s at -n0; no daemon, no timing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_outsider_round17 import RecordingErp
from test_outsider_round49 import LINE, Harness, interchange, order

from helpers import http_server


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Iterator[Harness]:
    """Round 49's harness (the Pipeline in this process, a fresh SQLite file
    per input, the recording ERP on 127.0.0.1), a module of its own."""
    with http_server() as server:
        erp = RecordingErp(server)
        yield Harness(erp, tmp_path_factory.mktemp("r60"))
        erp.gate.set()


def posted(out) -> dict:
    """The one set posted and acknowledged AK5 A, AK9 A 1 1 1; its body."""
    assert [s for s in out.ack if s[0] in ("AK3", "AK4", "IK3", "IK4")] == [], out.ack
    assert out.ak5 in (["AK5", "A"], ["IK5", "A"]), out.ack
    assert out.ak9[1:] == ["A", "1", "1", "1"], out.ack
    assert out.ta1 == [] or all(s[4] == "A" for t in out.ta1 for s in t if s[0] == "TA1")
    (body,) = out.bodies
    return body


# --- what held ----------------------------------------------------------------------

# A retail 850 the way VICS/UCS-style guides write one (Walmart/Target-like):
# CUR, REF (department, vendor number, REF04 composite), PER, FOB, a header
# SAC allowance by percent (SAC06/07) with SAC12, ITD terms, DTMs, TD5
# routing, N9/MSG notes, ship-to and buyer N1 loops with N2/N3/N4/PER/REF,
# lines with CTP retail price, PID, PO4 pack, SDQ store quantities, a line
# SAC with a rate (SAC08/09/10), summary AMT. Valid in every version tried
# (every element and position as 3040-6020 define them; DTM02 in CCYYMMDD,
# which older versions write YYMMDD but which the daemon reads alike).
RETAIL = (
    "CUR*BY*USD~",
    "REF*DP*00092~",
    "REF*IA*123456789~",
    "REF*ZZ*NOTE**VN>V-1~",
    "PER*BD*JOHN BUYER*TE*5015551234*EM*john@example.com~",
    "FOB*CC~",
    "SAC*A*C310***5000*3*2.5*****02~",
    "ITD*01*3*2**30**60~",
    "DTM*002*20240110~",
    "DTM*001*20240120~",
    "TD5*****UPS GROUND~",
    "N9*L1*SPECIAL INSTRUCTIONS~",
    "MSG*DELIVER TO DOCK 4~",
    "N1*ST*STORE 12*UL*0078742000008~",
    "N2*RECEIVING~",
    "N3*1 MAIN ST*SUITE 2~",
    "N4*BENTONVILLE*AR*72716*US~",
    "REF*ST*0012~",
    "PER*RE*DOCK*TE*5015550000~",
    "N1*BY*BUYER CO*92*1234~",
    "PO1*1*10*EA*2.50*PE*UP*012345678905*IN*123*VN*W-1~",
    "CTP**RES*4.99~",
    "PID*F****WIDGET BLUE~",
    "PO4*6*1*EA~",
    "SAC*C*D240***150***0.15*EA*10~",
    "SDQ*EA*UL*0078742000008*5*0078742000015*5~",
    "PO1*2*4*CA***UP*012345678912~",
    "CTP**UCP*12.00*4*CA~",
    "PID*F*08***GADGET~",
    "DTM*010*20240115~",
)


@pytest.mark.parametrize(
    "version", ["003040", "003060", "004010", "004010VICS", "004030", "005010", "006020"]
)
def test_held_a_retail_order_is_posted_in_every_version(harness, version):
    out = harness.run(interchange(order(*RETAIL, summary=("AMT*TT*73~",)), version=version))
    body = posted(out)
    assert body["po_number"] == "PO49"
    assert [line["quantity"] for line in body["lines"]] == ["10", "4"]
    assert body["lines"][1]["unit_price"] == "12.00"


AMAZON_STYLE = (
    "REF*IA*12345678~",
    "FOB*PP~",
    "CSH*N~",
    "DTM*064*20240110~",
    "DTM*063*20240117~",
    "N1*ST*AMAZON.COM*15*ABE2~",
    "PO1*1*5*EA*10.00**UP*012345678905*VN*ABC-1~",
    "CTP**SLP*9.99~",
    "PID*F****ITEM DESC~",
    "PO1*2*3*EA*1.00**EN*4006381333931~",
)
HOME_DEPOT_STYLE = (
    "REF*DP*025~",
    "PER*BD*BUYER*TE*7705551234~",
    "FOB*PP*DE~",
    "ITD*01*3*2**30**60~",
    "DTM*002*20240110~",
    "TD5*B*2*ABCD*M~",
    "N9*L1*TERMS~",
    "MSG*SEE AGREEMENT~",
    "N1*ST*HOME DEPOT STORE 123*92*0123~",
    "N3*1 MAIN ST~",
    "N4*ATLANTA*GA*30301~",
    "N1*BT*HOME DEPOT*92*9999~",
    "PO1*1*10*EA*4.50**IN*123456*UP*012345678905*VN*SKU1~",
    "PID*F****HAMMER~",
    "REF*ZZ*X~",
)


@pytest.mark.parametrize(
    "body, version",
    [(AMAZON_STYLE, "004010"), (AMAZON_STYLE, "005010"), (HOME_DEPOT_STYLE, "004010")],
    ids=["amazon-4010", "amazon-5010", "home-depot-4010"],
)
def test_held_other_partner_styles_are_posted(harness, body, version):
    posted(harness.run(interchange(order(*body), version=version)))


@pytest.mark.parametrize("version", ["004010", "005010"])
def test_held_a_line_n1_loop_with_its_ldt_and_man(harness, version):
    """4010/5010 line N1 loop (position 350 on): N1 N2 N3 N4 QTY NX2 REF PER
    SI DTM FOB SCH TD1 TD5 TD3 TD4 PKG and the LDT loop (LDT, MAN, QTY, MSG/MTX, REF)."""
    body = (
        LINE,
        "N1*ST*STORE*92*1234~",
        "N3*1 MAIN ST~",
        "N4*TORONTO*ON*M5V2T6*CA~",
        "QTY*01*10~",
        "REF*ZZ*X~",
        "DTM*002*20240110~",
        "LDT*AE*30~",
        "MAN*GM*123~",
    )
    posted(harness.run(interchange(order(*body), version=version)))


# --- found --------------------------------------------------------------------------

# How each finding was checked: the 850 and its segments per release as
# bots-edi's grammars write them (bots-edi/bots-grammars x12/3040/850003040.py,
# x12/4030/850004030.py, x12/5010/850005010.py; bots' 850004010.py as
# Ardast-Team/raspimapper keeps it in bots/usersys/grammars/x12),
# element lengths per release as Stedi's X12 reference writes them
# (stedi.com/edi/x12-004040/segment/REF: REF02, element 127, AN 1/50; 004020
# element 127: AN 1/30) and stupidedi's 005010 element dictionary
# (E364 Communication Number AN 1/256; 004010's AN 1/80).


@pytest.mark.parametrize("where", ["header", "N1 loop"])
def test_a_5010_per04_of_up_to_256_characters_is_posted(harness, where):
    email = "purchasing.department.north.american.operations." + "x" * 60 + "@example.com"
    per = f"PER*BD*JOHN*EM*{email}~"
    body = (per, LINE) if where == "header" else ("N1*ST*STORE*92*1234~", per, LINE)
    assert 81 <= len(email) <= 256
    posted(harness.run(interchange(order(*body), version="005010")))


@pytest.mark.parametrize("version", ["004040", "005010"])
def test_a_sac13_of_up_to_50_characters_is_posted_from_4040(harness, version):
    sac = "SAC*A*F800***100*******02*" + "PROMO-2024-SPRING-NATIONAL-AD-0000012345~"
    assert len(sac.split("*")[13].rstrip("~")) == 40
    posted(harness.run(interchange(order(sac, LINE), version=version)))


@pytest.mark.parametrize("version", ["003060", "004010", "005010"])
def test_four_contacts_in_a_header_n1_loop_are_posted(harness, version):
    body = (
        "N1*BT*ACME STORES*92*0001~",
        "N3*1 MAIN ST~",
        "N4*BENTONVILLE*AR*72716~",
        "PER*BD*BUYER*TE*5015551111~",
        "PER*AP*PAYABLES*TE*5015552222~",
        "PER*RE*RECEIVING*TE*5015553333~",
        "PER*IC*AFTER HOURS*TE*5015554444~",
        LINE,
    )
    posted(harness.run(interchange(order(*body), version=version)))


@pytest.mark.parametrize("version", ["004030", "005010"])
def test_a_header_ldt_loop_after_td5_is_in_sequence_from_4030(harness, version):
    body = (
        "DTM*002*20240110~",
        "TD5*****UPS GROUND~",
        "LDT*AE*30~",
        "REF*ZZ*LEASE-7~",
        "N1*ST*STORE*92*1234~",
        LINE,
    )
    posted(harness.run(interchange(order(*body), version=version)))


@pytest.mark.parametrize("where", ["header", "line", "subline"])
def test_an_n1_loop_with_in2_is_posted_from_4030(harness, where):
    party = (
        "N1*ST*JANE DOE~",
        "IN2*02*JANE~",
        "IN2*05*DOE~",
        "N3*1 MAIN ST~",
        "N4*BOSTON*MA*02101*US~",
    )
    body = {
        "header": (*party, LINE),
        "line": (LINE, *party),
        "subline": (LINE, "SLN*1**I*2*EA~", *party),
    }[where]
    posted(harness.run(interchange(order(*body), version="005010")))


def test_a_pwk_inside_a_5010_n9_loop_is_posted(harness):
    body = ("N9*L1*ATTACHMENTS~", "MTX**SEE DRAWING~", "PWK*DW*EL~", "N1*ST*STORE*92*1234~", LINE)
    posted(harness.run(interchange(order(*body), version="005010")))


def test_a_3060_amt_loop_with_at_then_ref_is_posted(harness):
    body = ("AMT*TT*25~", "AT*1~", "REF*ZZ*BUDGET-7~", "N1*ST*STORE*92*1234~", LINE)
    posted(harness.run(interchange(order(*body), version="003060")))


def test_an_8010_n4_with_its_formatted_postal_code_is_posted(harness):
    body = ("N1*ST*STORE*92*1234~", "N4*OTTAWA*ON*K1A0B1*CA****K1A 0B1~", LINE)
    posted(harness.run(interchange(order(*body), version="008010")))
